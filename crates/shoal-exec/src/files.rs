//! The files of a task's run directory: `resolv.conf` and `hosts` (bind-mounted into the
//! sandbox) and `task.log` (its stdout and stderr).

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::ExecError;

/// The embedded DNS server every sandbox uses.
pub const NAMESERVER: &str = "127.0.0.11";

/// Where a task's stdout and stderr go.
pub fn log_path(run_dir: &Path) -> PathBuf {
    run_dir.join("task.log")
}

/// The generated resolv.conf of a task.
pub fn resolv_conf_path(run_dir: &Path) -> PathBuf {
    run_dir.join("resolv.conf")
}

/// The generated hosts file of a task.
pub fn hosts_path(run_dir: &Path) -> PathBuf {
    run_dir.join("hosts")
}

/// resolv.conf for a sandbox: only the embedded DNS server, and every name tried as given
/// first (`ndots:0`), so service names are never suffixed with a host search domain.
pub fn render_resolv_conf() -> String {
    format!("nameserver {NAMESERVER}\noptions ndots:0\n")
}

/// /etc/hosts for a sandbox: localhost, the task's hostname on each of its own addresses
/// (on 127.0.1.1 while it has none yet), then `extra` (e.g. a lab's node names) as is.
pub fn render_hosts(hostname: &str, own: &[IpAddr], extra: &str) -> String {
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         ff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    if own.is_empty() {
        out.push_str(&format!("127.0.1.1\t{hostname}\n"));
    }
    for addr in own {
        out.push_str(&format!("{addr}\t{hostname}\n"));
    }
    if !extra.is_empty() {
        out.push_str(extra);
        if !extra.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// Writes `content` into `path` in place (truncate and write, never rename): a bind mount
/// pins the file's inode, so a task sees later rewrites only if the inode stays the same.
pub(crate) fn write_in_place(path: &Path, content: &str) -> Result<(), ExecError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(path)
        .map_err(|e| ExecError::io(format!("open {}", path.display()), e))?;
    file.write_all(content.as_bytes())
        .map_err(|e| ExecError::io(format!("write {}", path.display()), e))
}

/// Rewrites a task's hosts file, for instance once its network addresses are known. The
/// running task sees the change at once.
pub fn update_hosts(
    run_dir: &Path,
    hostname: &str,
    own: &[IpAddr],
    extra: &str,
) -> Result<(), ExecError> {
    write_in_place(&hosts_path(run_dir), &render_hosts(hostname, own, extra))
}

/// A task's log: all of it, or its last `tail` lines. A task that never wrote has an empty log.
pub fn read_logs(run_dir: &Path, tail: Option<usize>) -> Result<Vec<u8>, ExecError> {
    let path = log_path(run_dir);
    let mut file = match fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ExecError::io(format!("open {}", path.display()), e)),
    };
    let mut data = Vec::new();
    match tail {
        None => {
            file.read_to_end(&mut data)
                .map_err(|e| ExecError::io(format!("read {}", path.display()), e))?;
            Ok(data)
        }
        Some(n) => {
            // Read backwards in chunks until n+1 newlines (or the start) are seen.
            let len = file
                .seek(SeekFrom::End(0))
                .map_err(|e| ExecError::io(format!("seek in {}", path.display()), e))?;
            let mut start = len;
            loop {
                let chunk = start.min(64 * 1024);
                start -= chunk;
                file.seek(SeekFrom::Start(start))
                    .map_err(|e| ExecError::io(format!("seek in {}", path.display()), e))?;
                let mut buf = vec![0; chunk as usize];
                file.read_exact(&mut buf)
                    .map_err(|e| ExecError::io(format!("read {}", path.display()), e))?;
                buf.extend_from_slice(&data);
                data = buf;
                let body = data.strip_suffix(b"\n").unwrap_or(&data);
                if start == 0 || body.iter().filter(|&&b| b == b'\n').count() >= n {
                    break;
                }
            }
            Ok(last_lines(&data, n).to_vec())
        }
    }
}

/// The last `n` lines of `data` (a final line without newline counts as a line).
fn last_lines(data: &[u8], n: usize) -> &[u8] {
    if n == 0 {
        return &[];
    }
    let body = data.strip_suffix(b"\n").unwrap_or(data);
    let mut seen = 0;
    for (i, &b) in body.iter().enumerate().rev() {
        if b == b'\n' {
            seen += 1;
            if seen == n {
                return &data[i + 1..];
            }
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_points_at_the_embedded_dns() {
        assert_eq!(
            render_resolv_conf(),
            "nameserver 127.0.0.11\noptions ndots:0\n"
        );
    }

    #[test]
    fn hosts_has_localhost_hostname_and_extra() {
        let h = render_hosts("web-1", &[], "172.29.1.1\tnode1");
        assert!(h.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(h.contains("127.0.1.1\tweb-1\n"));
        assert!(h.ends_with("172.29.1.1\tnode1\n"));
        let h = render_hosts("web-1", &["10.0.1.5".parse().unwrap()], "");
        assert!(h.contains("10.0.1.5\tweb-1\n"));
        assert!(!h.contains("127.0.1.1"));
    }

    #[test]
    fn last_lines_counts_from_the_end() {
        assert_eq!(last_lines(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(last_lines(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(last_lines(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(last_lines(b"a\n", 0), b"");
    }

    #[test]
    fn tail_reads_across_chunks() {
        let dir = std::env::temp_dir().join(format!("shoal-exec-tail-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let mut content = String::new();
        for i in 0..20_000 {
            content.push_str(&format!("line {i}\n"));
        }
        fs::write(log_path(&dir), &content).unwrap();
        let tail = read_logs(&dir, Some(3)).unwrap();
        let all = read_logs(&dir, None).unwrap();
        let missing = read_logs(&dir.join("nope"), Some(3)).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(tail, b"line 19997\nline 19998\nline 19999\n");
        assert_eq!(all.len(), content.len());
        assert!(missing.is_empty());
    }
}
