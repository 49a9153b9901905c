//! How often a host task's log is checked against its bound (conmon bounds a container's).
//!
//! Every running task used to be woken every 2 s for a `stat` of its log: per-task work that
//! grows with the tasks on the node, idle or not (and lands in every other work's CPU time).
//! A log that grew is checked again after 2 s; one that did not waits twice as long as the
//! last time, up to [`LOG_CHECK_MAX`]: an idle task costs a wake-up every 16 s, a writing one
//! is held to its bound as before. The pace is pure; [`bound_log`] is the I/O.

use std::path::Path;
use std::time::Duration;

use tracing::warn;

/// The wait after a check that found the log grown (or at the start).
pub(crate) const LOG_CHECK: Duration = Duration::from_secs(2);
/// The longest wait, reached after three checks that found the log as it was. It is how long
/// a task that starts writing after a quiet spell may write before its first check.
pub(crate) const LOG_CHECK_MAX: Duration = Duration::from_secs(16);

/// When to check one log next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LogPace {
    wait: Duration,
    /// The length the last check found (None: no log yet).
    len: Option<u64>,
}

impl Default for LogPace {
    fn default() -> LogPace {
        LogPace {
            wait: LOG_CHECK,
            len: None,
        }
    }
}

impl LogPace {
    /// How long to wait before the next check.
    pub(crate) fn wait(&self) -> Duration {
        self.wait
    }

    /// A check found the log `len` bytes long (after rotating it, if it did).
    pub(crate) fn checked(&mut self, len: Option<u64>) {
        self.wait = if len == self.len {
            (self.wait * 2).min(LOG_CHECK_MAX)
        } else {
            LOG_CHECK
        };
        self.len = len;
    }
}

/// Rotates a host task's log once it is over [`crate::container::LOG_MAX_BYTES`], and tells
/// `pace` what it found.
pub(crate) fn bound_log(run_dir: &Path, pace: &mut LogPace) {
    let max = crate::container::LOG_MAX_BYTES;
    let path = shoal_exec::log_path(run_dir);
    let mut len = std::fs::metadata(&path).ok().map(|m| m.len());
    if len.is_some_and(|l| l > max) {
        match shoal_exec::rotate_log(run_dir, max) {
            Ok(_) => len = std::fs::metadata(&path).ok().map(|m| m.len()),
            Err(e) => warn!(dir = %run_dir.display(), "failed to rotate a task's log: {e}"),
        }
    }
    pace.checked(len);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_log_is_checked_less_often_and_a_growing_one_every_2_s() {
        let mut pace = LogPace::default();
        assert_eq!(pace.wait(), LOG_CHECK);
        // No log yet, then still none: the wait doubles up to the longest.
        let waits: Vec<u64> = (0..5)
            .map(|_| {
                pace.checked(None);
                pace.wait().as_secs()
            })
            .collect();
        assert_eq!(waits, [4, 8, 16, 16, 16]);
        // It grew: back to 2 s; the same length again: 4 s.
        pace.checked(Some(10));
        assert_eq!(pace.wait(), LOG_CHECK);
        pace.checked(Some(10));
        assert_eq!(pace.wait().as_secs(), 4);
        // Rotated (shorter) is a change too.
        pace.checked(Some(3));
        assert_eq!(pace.wait(), LOG_CHECK);
    }
}
