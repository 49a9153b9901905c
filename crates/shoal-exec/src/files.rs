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

/// A task's log: all of it (the older file first, if the log was rotated), or its last
/// `tail` lines. A task that never wrote has an empty log. Both files are bounded
/// ([`rotate_log`]), so they are read whole.
pub fn read_logs(run_dir: &Path, tail: Option<usize>) -> Result<Vec<u8>, ExecError> {
    let mut data = read_if_exists(&old_log_path(run_dir))?;
    data.extend(read_if_exists(&log_path(run_dir))?);
    Ok(match tail {
        None => data,
        Some(n) => last_lines(&data, n).to_vec(),
    })
}

fn read_if_exists(path: &Path) -> Result<Vec<u8>, ExecError> {
    match fs::read(path) {
        Ok(data) => Ok(data),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(ExecError::io(format!("read {}", path.display()), e)),
    }
}

/// Where a task's log goes when it is rotated: one older file, as docker's json-file with
/// max-file 2.
pub fn old_log_path(run_dir: &Path) -> PathBuf {
    run_dir.join("task.log.1")
}

/// Keeps a task's log bounded: once `task.log` is over `max` bytes, its last lines (at most
/// `max` bytes) replace `task.log.1` and `task.log` starts over. The task keeps its file
/// open for appending, so nothing has to reopen it and its next write lands at the start
/// (logrotate's copytruncate; what the task writes during the copy itself may be lost).
/// Returns whether it rotated.
pub fn rotate_log(run_dir: &Path, max: u64) -> Result<bool, ExecError> {
    let path = log_path(run_dir);
    let len = match fs::metadata(&path) {
        Ok(m) if m.len() > max => m.len(),
        Ok(_) => return Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => {
            return Err(ExecError::io(
                format!("read the size of {}", path.display()),
                e,
            ));
        }
    };
    let old = old_log_path(run_dir);
    let tmp = run_dir.join("task.log.1.tmp");
    let io = |what: &str, e| ExecError::io(format!("{what} {}", path.display()), e);
    let mut file = fs::File::open(&path).map_err(|e| io("open", e))?;
    // From the byte before the last `max`: a line starts after the first newline there.
    let from = len - max - 1;
    file.seek(SeekFrom::Start(from))
        .map_err(|e| io("seek in", e))?;
    let mut kept = Vec::new();
    file.read_to_end(&mut kept).map_err(|e| io("read", e))?;
    let start = kept
        .iter()
        .position(|&b| b == b'\n')
        .map_or(kept.len(), |i| i + 1);
    fs::write(&tmp, &kept[start..])
        .map_err(|e| ExecError::io(format!("write {}", tmp.display()), e))?;
    OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(0))
        .map_err(|e| ExecError::io(format!("truncate {}", path.display()), e))?;
    fs::rename(&tmp, &old)
        .map_err(|e| ExecError::io(format!("rename {} to {}", tmp.display(), old.display()), e))?;
    Ok(true)
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

    #[test]
    fn a_log_past_its_bound_is_rotated_and_read_whole() {
        let dir = std::env::temp_dir().join(format!("shoal-exec-rotate-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        // The task's own descriptor, as `start` opens it: appending.
        let mut task = OpenOptions::new()
            .append(true)
            .create(true)
            .open(log_path(&dir))
            .unwrap();
        task.write_all(b"one\ntwo\n").unwrap();
        assert!(!rotate_log(&dir, 8).unwrap(), "8 bytes is not over 8");
        task.write_all(b"three\n").unwrap();
        assert!(rotate_log(&dir, 8).unwrap());
        // The whole lines of the last 8 bytes.
        assert_eq!(fs::read(old_log_path(&dir)).unwrap(), b"three\n");
        assert_eq!(fs::metadata(log_path(&dir)).unwrap().len(), 0);
        // The task's next write lands at the start of the emptied file.
        task.write_all(b"four\n").unwrap();
        assert_eq!(fs::read(log_path(&dir)).unwrap(), b"four\n");
        assert_eq!(read_logs(&dir, None).unwrap(), b"three\nfour\n");
        assert_eq!(read_logs(&dir, Some(1)).unwrap(), b"four\n");
        // A second rotation replaces the older file; a line longer than the bound is not
        // kept in part.
        task.write_all(b"5\nsix six six\n").unwrap();
        assert!(rotate_log(&dir, 8).unwrap());
        assert_eq!(read_logs(&dir, None).unwrap(), b"");
        task.write_all(b"7\n8\n9\n10\n").unwrap();
        assert!(rotate_log(&dir, 8).unwrap());
        assert_eq!(read_logs(&dir, None).unwrap(), b"8\n9\n10\n");
        fs::remove_dir_all(&dir).unwrap();
        assert!(!rotate_log(&dir, 8).unwrap(), "no log, nothing to do");
    }
}
