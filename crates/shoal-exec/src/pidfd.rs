//! A task's process held by its pidfd: waited for without SIGCHLD, and reaped only here, so
//! its pid stays the task's until then (nothing in the daemon waits for any child but its
//! own by pid).

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::Interest;
use tokio::io::unix::{AsyncFd, AsyncFdRegisterError};

use crate::sandbox::TaskExit;
use crate::sys::{Ended, reap};

#[derive(Debug)]
pub(crate) struct PidfdChild {
    /// Readable once the process has ended.
    fd: AsyncFd<OwnedFd>,
    /// Set when reaped: the pidfd cannot say it again.
    exit: Option<TaskExit>,
}

impl PidfdChild {
    /// Watches process `pid` through its `pidfd` with the current tokio runtime. If it
    /// cannot, the process is killed and reaped: it must not run unwatched.
    pub(crate) fn new(pid: u32, pidfd: OwnedFd) -> io::Result<Self> {
        match watch(pidfd) {
            Ok(fd) => Ok(PidfdChild { fd, exit: None }),
            Err(e) => {
                let (pidfd, e) = e.into_parts();
                // Still ours (not reaped), so the pid cannot name another process.
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                let _ = reap(pidfd.as_fd(), true);
                Err(e)
            }
        }
    }

    /// The exit, if the process has ended (reaping it), without blocking.
    pub(crate) fn try_wait(&mut self) -> io::Result<Option<TaskExit>> {
        if self.exit.is_none() {
            self.exit = reap(self.fd.get_ref().as_fd(), false)?.map(exit_of);
        }
        Ok(self.exit)
    }

    /// Waits for the process to end and reaps it. Cancel-safe; later calls return the same.
    pub(crate) async fn wait(&mut self) -> io::Result<TaskExit> {
        loop {
            if let Some(exit) = self.try_wait()? {
                return Ok(exit);
            }
            self.fd.readable().await?.clear_ready();
        }
    }
}

impl Drop for PidfdChild {
    /// Dropped before its process was reaped: reaped in the background (as tokio does with
    /// its own children) when a runtime is at hand, so that no zombie is left.
    fn drop(&mut self) {
        if self.exit.is_some() {
            return;
        }
        let (Ok(rt), Ok(fd)) = (
            tokio::runtime::Handle::try_current(),
            self.fd.get_ref().try_clone(),
        ) else {
            return;
        };
        rt.spawn(async move {
            if let Ok(fd) = watch(fd) {
                let mut child = PidfdChild { fd, exit: None };
                let _ = child.wait().await;
            }
        });
    }
}

/// `pidfd` registered with the current tokio runtime, readable once its process has ended.
fn watch(pidfd: OwnedFd) -> Result<AsyncFd<OwnedFd>, AsyncFdRegisterError<OwnedFd>> {
    // The safe constructor: its replacement is `unsafe` because an arbitrary `AsRawFd` could
    // change its fd while registered; an `OwnedFd` cannot.
    #[expect(deprecated, reason = "sound for an OwnedFd; see above")]
    AsyncFd::try_with_interest(pidfd, Interest::READABLE)
}

/// What `WEXITED` reports: an exit (CLD_EXITED) or a signal (CLD_KILLED, CLD_DUMPED).
fn exit_of(ended: Ended) -> TaskExit {
    match ended.code {
        libc::CLD_EXITED => TaskExit::Code(ended.status),
        libc::CLD_KILLED | libc::CLD_DUMPED => TaskExit::Signal(ended.status),
        // Nothing else can be reported for a reaped process.
        _ => TaskExit::Code(-1),
    }
}
