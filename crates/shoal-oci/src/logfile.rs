//! The container log conmon writes (CRI's `k8s-file` format), read back: one line per
//! write, `<RFC 3339 time> <stdout|stderr> <F|P> <text>`, where `P` marks a partial line
//! that the next one continues. Pure: the caller reads the file.

/// One line of what the container wrote, reassembled from its partial pieces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// When conmon read it (RFC 3339 with nanoseconds and an offset, as conmon writes it).
    pub time: String,
    pub stderr: bool,
    pub text: String,
}

/// The entries of a k8s-file log, in order; lines that are not in the format are skipped
/// (a line cut short by a crash while it was written).
pub fn parse(log: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut pending: Option<Entry> = None;
    for line in log.lines() {
        let mut parts = line.splitn(4, ' ');
        let (Some(time), Some(stream), Some(tag)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let text = parts.next().unwrap_or("");
        if !matches!(stream, "stdout" | "stderr") || !matches!(tag, "F" | "P") {
            continue;
        }
        let stderr = stream == "stderr";
        let entry = match pending.take() {
            Some(mut e) if e.stderr == stderr => {
                e.text.push_str(text);
                e
            }
            other => {
                out.extend(other);
                Entry {
                    time: time.to_string(),
                    stderr,
                    text: text.to_string(),
                }
            }
        };
        if tag == "P" {
            pending = Some(entry);
        } else {
            out.push(entry);
        }
    }
    out.extend(pending);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_partial_lines() {
        let log = "2026-12-01T05:43:56.002791099+00:00 stdout F hello\n\
                   2026-12-01T05:43:57.000000000+00:00 stderr P par\n\
                   2026-12-01T05:43:57.100000000+00:00 stderr F tial\n\
                   garbage\n\
                   2026-12-01T05:43:58.000000000+00:00 stdout F \n";
        let e = parse(log);
        assert_eq!(e.len(), 3, "{e:?}");
        assert_eq!(
            e[0],
            Entry {
                time: "2026-12-01T05:43:56.002791099+00:00".into(),
                stderr: false,
                text: "hello".into()
            }
        );
        assert_eq!((e[1].text.as_str(), e[1].stderr), ("partial", true));
        assert_eq!(e[1].time, "2026-12-01T05:43:57.000000000+00:00");
        assert_eq!(e[2].text, "");
    }
}
