//! Following a service's log (`service logs -f`, the CLI's and the Engine API's): which
//! lines of a later read were not sent yet. Pure.

use std::collections::BTreeMap;

use crate::LogLine;

/// Nanoseconds since the Unix epoch.
pub type Nanos = i128;

/// A time as nanoseconds since the Unix epoch (negative before it).
pub fn nanos(t: std::time::SystemTime) -> Nanos {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as Nanos,
        Err(e) => -(e.duration().as_nanos() as Nanos),
    }
}

/// An RFC 3339 time as conmon writes it (`…T05:43:56.002791099+00:00`) or with `Z`.
/// humantime reads only UTC (`Z` or none), so the offset is taken off here.
pub fn rfc3339_nanos(s: &str) -> Option<Nanos> {
    let (base, offset) = match s.strip_suffix('Z') {
        Some(b) => (b, 0),
        None => {
            let cut = s.len().checked_sub(6)?;
            let (b, off) = (s.get(..cut)?, s.get(cut..)?);
            let sign = match off.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (h, m) = off[1..].split_once(':')?;
            let minutes = h.parse::<i64>().ok()? * 60 + m.parse::<i64>().ok()?;
            (b, sign * minutes * 60)
        }
    };
    if !base.contains('T') {
        return None;
    }
    let t = humantime::parse_rfc3339_weak(base).ok()?;
    Some(nanos(t) - Nanos::from(offset) * 1_000_000_000)
}

/// Where following has got to in one task's log.
#[derive(Debug, Default)]
struct Seen {
    /// Host commands' lines: how many were printed (their log only grows).
    count: usize,
    /// Containers' lines: the time of the last one printed (their log may start over
    /// when it reaches its size limit, so a count would be wrong).
    last: Option<Nanos>,
}

/// Where following has got to in each task's log.
#[derive(Debug, Default)]
pub struct Follow(BTreeMap<String, Seen>);

impl Follow {
    /// The lines of a later read that were not sent yet, and notes them as sent.
    pub fn new_lines<'a>(&mut self, lines: &'a [LogLine]) -> Vec<&'a LogLine> {
        let seen = &mut self.0;
        let mut count: BTreeMap<&str, usize> = BTreeMap::new();
        let mut out = Vec::new();
        for l in lines {
            let s = seen.entry(l.task.clone()).or_default();
            match l.timestamp.as_deref().and_then(rfc3339_nanos) {
                Some(t) => {
                    if s.last.is_none_or(|last| t > last) {
                        s.last = Some(t);
                        out.push(l);
                    }
                }
                None => {
                    let n = count.entry(&l.task).or_default();
                    *n += 1;
                    if *n > s.count {
                        s.count = *n;
                        out.push(l);
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(task: &str, time: Option<&str>, text: &str) -> LogLine {
        LogLine {
            task: task.into(),
            node: "node1".into(),
            line: text.into(),
            timestamp: time.map(str::to_string),
        }
    }

    #[test]
    fn following_prints_what_is_new_also_after_a_log_starts_over() {
        let mut seen = Follow::default();
        let first = vec![
            line("a.1", Some("2026-12-01T00:00:01Z"), "a1"),
            line("b.1", None, "b1"),
        ];
        assert_eq!(seen.new_lines(&first).len(), 2);
        // a's log started over (only its newest line is left); b's grew.
        let later = vec![
            line("a.1", Some("2026-12-01T00:00:05Z"), "a5"),
            line("b.1", None, "b1"),
            line("b.1", None, "b2"),
        ];
        let new: Vec<&str> = seen
            .new_lines(&later)
            .iter()
            .map(|l| l.line.as_str())
            .collect();
        assert_eq!(new, ["a5", "b2"]);
        assert!(seen.new_lines(&later).is_empty());
    }
}
