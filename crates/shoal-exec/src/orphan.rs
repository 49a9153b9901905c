//! A task process that outlived the daemon that started it (killed with SIGKILL, or
//! crashed): found again from the record `start` leaves in the task's run directory.
//!
//! A pid alone can be reused once its process has gone; the record also holds the
//! process's start time (`/proc/<pid>/stat`, field 22, clock ticks since boot), and a
//! process is the task's only if both match.

use std::path::{Path, PathBuf};

use crate::error::ExecError;

/// The record of a task's process in its run directory.
pub fn record_path(run_dir: &Path) -> PathBuf {
    run_dir.join("pid")
}

/// A task process found alive from its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Orphan {
    /// Also its process group and session id: `stop` signals the group.
    pub pid: u32,
    /// When it started, in clock ticks since boot.
    start: u64,
}

impl Orphan {
    /// Whether the process is still the task's and running (not a zombie).
    pub fn is_running(&self) -> bool {
        match stat_of(self.pid) {
            Some(s) => s.start == self.start && s.running,
            None => false,
        }
    }
}

/// What this module reads of `/proc/<pid>/stat`.
#[derive(Debug, PartialEq, Eq)]
struct Stat {
    running: bool,
    start: u64,
}

/// Parses `/proc/<pid>/stat`: "pid (comm) state ppid ..."; comm may hold spaces and
/// parentheses, so fields are counted after the last ')'. The start time is field 22.
fn parse_stat(stat: &str) -> Option<Stat> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    // Fields 4..=21 are 18 fields after the state; the start time is the 19th.
    let start = fields.nth(18)?.parse().ok()?;
    Some(Stat {
        running: !matches!(state, "Z" | "X" | "x"),
        start,
    })
}

fn stat_of(pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Writes the record of task process `pid` into `run_dir` (right after it started).
pub(crate) fn record(run_dir: &Path, pid: u32) -> Result<(), ExecError> {
    let stat = stat_of(pid).ok_or_else(|| {
        ExecError::io(
            format!("read the start time of task process {pid}"),
            std::io::Error::other("the process is gone"),
        )
    })?;
    crate::files::write_in_place(&record_path(run_dir), &format!("{pid} {}\n", stat.start))
}

fn parse_record(text: &str) -> Option<(u32, u64)> {
    let mut it = text.split_whitespace();
    let pid = it.next()?.parse().ok()?;
    let start = it.next()?.parse().ok()?;
    Some((pid, start))
}

/// The task process recorded in `run_dir`, if it still runs: `None` when there is no
/// record (a container's run directory, or a task that never started) or its process has
/// gone (a pid now used by another process included).
pub fn find(run_dir: &Path) -> Option<Orphan> {
    let (pid, start) = parse_record(&std::fs::read_to_string(record_path(run_dir)).ok()?)?;
    // 0 and 1 are never a task's; a bad record must not make us signal them.
    if pid <= 1 {
        return None;
    }
    let orphan = Orphan { pid, start };
    orphan.is_running().then_some(orphan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_is_read_after_the_last_parenthesis() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    987654 5000000 200 18446744073709551615";
        assert_eq!(
            parse_stat(stat),
            Some(Stat {
                running: true,
                start: 987654
            })
        );
        let zombie = stat.replace(") S ", ") Z ");
        assert!(!parse_stat(&zombie).unwrap().running);
        assert_eq!(parse_stat("4242 (x) S 1"), None);
    }

    #[test]
    fn our_own_process_is_found_by_its_record_and_a_wrong_start_is_not() {
        let dir = std::env::temp_dir().join(format!("shoal-orphan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        record(&dir, std::process::id()).unwrap();
        let found = find(&dir).expect("our own process");
        assert_eq!(found.pid, std::process::id());
        assert!(found.is_running());
        // The same pid with another start time is another process.
        let (pid, start) =
            parse_record(&std::fs::read_to_string(record_path(&dir)).unwrap()).unwrap();
        std::fs::write(record_path(&dir), format!("{pid} {}\n", start + 1)).unwrap();
        assert_eq!(find(&dir), None);
        std::fs::write(record_path(&dir), "1 0\n").unwrap();
        assert_eq!(find(&dir), None);
        std::fs::write(record_path(&dir), "garbage").unwrap();
        assert_eq!(find(&dir), None);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(find(&dir), None);
    }
}
