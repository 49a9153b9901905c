//! `ExecError`: why a task could not be started, waited for or stopped.

use std::io;
use std::path::PathBuf;

/// An error from the task executor. Messages say what to fix where they can.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The spec has an empty command.
    #[error("no command given: a task needs a command to run")]
    EmptyCommand,

    /// The program is neither a path to an executable nor found in `$PATH`.
    #[error("executable file not found: {0}")]
    NotFound(String),

    /// The program exists but cannot be executed.
    #[error("permission denied: {} is not an executable file", .0.display())]
    NotExecutable(PathBuf),

    /// An environment entry without `=`.
    #[error("invalid environment entry {0:?}: use KEY=VALUE")]
    InvalidEnv(String),

    /// A hostname the kernel would refuse.
    #[error("invalid hostname {0:?}: use 1-64 characters without NUL or '/'")]
    InvalidHostname(String),

    /// A task id that cannot name a namespace.
    #[error("invalid task id {0:?}: use letters, digits, '-', '_' or '.'")]
    InvalidTaskId(String),

    /// The working directory does not exist on this host.
    #[error("working directory {0} does not exist on this host: create it or change --workdir")]
    NoWorkdir(String),

    /// A file the sandbox bind-mounts over is missing on the host.
    #[error("cannot set up the sandbox: {} does not exist on this host", .0.display())]
    MissingMountTarget(PathBuf),

    /// No process with this pid (it may have exited).
    #[error("no process with pid {0} (has it exited?)")]
    NoSuchProcess(u32),

    /// A pid that must never be signalled (0, 1, or not a valid pid).
    #[error("refusing to signal pid {0}")]
    BadPid(u32),

    /// The process survived SIGKILL (stuck in the kernel, e.g. in uninterruptible I/O).
    #[error("process {0} did not exit after SIGKILL; it is probably stuck in uninterruptible I/O")]
    Unkillable(u32),

    /// Namespace plumbing failed.
    #[error(transparent)]
    Net(#[from] shoal_net::NetError),

    /// Starting the process failed (entering the sandbox, or exec itself).
    #[error("failed to start {program} in its sandbox: {source}")]
    Spawn {
        /// The program as given in the command.
        program: String,
        #[source]
        source: io::Error,
    },

    /// A file or system-call operation failed.
    #[error("failed to {action}: {source}")]
    Io {
        /// What we were doing, as a verb phrase.
        action: String,
        #[source]
        source: io::Error,
    },
}

impl ExecError {
    pub(crate) fn io(action: impl Into<String>, source: impl Into<io::Error>) -> Self {
        ExecError::Io {
            action: action.into(),
            source: source.into(),
        }
    }
}
