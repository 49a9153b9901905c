//! `LabError`: what went wrong with a lab, and what to do about it.

use std::io;
use std::path::PathBuf;

/// An error from `shoal lab`. Messages end with what to do where there is something to do.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A lab name that cannot name namespaces, a cgroup and a directory.
    #[error(
        "invalid lab name {0:?}: use 1-32 characters from [a-z0-9-], starting with a letter or digit"
    )]
    InvalidName(String),

    /// Node or manager counts out of range.
    #[error("invalid lab spec: {0}")]
    InvalidSpec(String),

    /// A binary the lab runs is missing.
    #[error("{what} binary {} not found or not executable: build it (`cargo build -p {what}`) or pass its path", .path.display())]
    MissingBinary {
        /// "shoal" or "shoald".
        what: &'static str,
        /// Where we looked.
        path: PathBuf,
    },

    /// `up` for a name in use (also by the remains of a failed `up`).
    #[error("lab {0} already exists; `shoal lab down --name {0}` first")]
    AlreadyExists(String),

    /// `down`, `exec` or the like for a lab that is not there.
    #[error("no lab named {0} (see `shoal lab ls`)")]
    NoSuchLab(String),

    /// A node number out of range.
    #[error("lab {lab} has no node {node}: its nodes are node1..node{nodes}")]
    NoSuchNode {
        /// The lab.
        lab: String,
        /// What was asked for, as given.
        node: String,
        /// How many nodes the lab has.
        nodes: u32,
    },

    /// Every 172.29.k.0/24 is in use by some lab.
    #[error(
        "all lab subnets (172.29.1.0/24 to 172.29.254.0/24) are in use; remove a lab with `shoal lab down --name NAME`"
    )]
    NoFreeSubnet,

    /// Namespace or link plumbing failed.
    #[error("failed to {action}: {source}")]
    Net {
        /// What we were doing.
        action: String,
        #[source]
        source: shoal_net::NetError,
    },

    /// The cgroup v2 work failed.
    #[error("failed to {action}: {source} (shoal lab needs cgroup v2 and root)")]
    Cgroup {
        /// What we were doing.
        action: String,
        #[source]
        source: io::Error,
    },

    /// A daemon exited while the lab was coming up.
    #[error("shoald on {node} exited ({status}) before its API socket appeared; see {}:\n{tail}", .log.display())]
    DaemonExited {
        /// "node2".
        node: String,
        /// How it exited.
        status: String,
        /// Its log.
        log: PathBuf,
        /// The last lines of its log.
        tail: String,
    },

    /// A daemon did not open its API socket in time.
    #[error("shoald on {node} did not open {} within {secs}s; see {}:\n{tail}", .socket.display(), .log.display())]
    DaemonTimeout {
        /// "node2".
        node: String,
        /// The socket we waited for.
        socket: PathBuf,
        /// How long we waited.
        secs: u64,
        /// Its log.
        log: PathBuf,
        /// The last lines of its log.
        tail: String,
    },

    /// A `shoal` command that forms the cluster failed.
    #[error("`{command}` failed on {node} ({status}):\n{output}\nsee also the daemon log {}", .log.display())]
    Cli {
        /// "node1".
        node: String,
        /// The command line.
        command: String,
        /// Exit status or "timed out".
        status: String,
        /// Its stdout and stderr.
        output: String,
        /// That node's daemon log.
        log: PathBuf,
    },

    /// lab.json could not be read.
    #[error("lab state {} is unreadable: {source}; `shoal lab down --name {lab}` removes the lab", .path.display())]
    State {
        /// The lab.
        lab: String,
        /// The file.
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// `up` failed part-way; what it had built is gone again, its logs are kept.
    #[error("{source}\nlab {lab} did not come up; its processes and namespaces were removed and its logs kept in {}; `shoal lab down --name {lab}` deletes them", .dir.display())]
    UpFailed {
        /// The lab.
        lab: String,
        /// Its state directory.
        dir: PathBuf,
        /// What failed.
        #[source]
        source: Box<LabError>,
    },

    /// `down` could not remove everything.
    #[error("lab {lab} was not fully removed:\n  {}\nfix the cause and run `shoal lab down --name {lab}` again", .problems.join("\n  "))]
    DownIncomplete {
        /// The lab.
        lab: String,
        /// What was left, one entry per failure.
        problems: Vec<String>,
    },

    /// The lab's registry or its images (`lab up --registry`) could not be made.
    #[error("lab registry: {what}: {detail}")]
    Registry {
        /// The step that failed.
        what: String,
        /// The tool's error output, or what to install.
        detail: String,
    },

    /// A file or process operation failed.
    #[error("failed to {action}: {source}")]
    Io {
        /// What we were doing.
        action: String,
        #[source]
        source: io::Error,
    },
}

impl LabError {
    pub(crate) fn io(action: impl Into<String>, source: impl Into<io::Error>) -> Self {
        LabError::Io {
            action: action.into(),
            source: source.into(),
        }
    }

    pub(crate) fn net(action: impl Into<String>, source: shoal_net::NetError) -> Self {
        LabError::Net {
            action: action.into(),
            source,
        }
    }

    pub(crate) fn registry(what: impl Into<String>, detail: impl Into<String>) -> Self {
        LabError::Registry {
            what: what.into(),
            detail: detail.into(),
        }
    }

    pub(crate) fn cgroup(action: impl Into<String>, source: impl Into<io::Error>) -> Self {
        LabError::Cgroup {
            action: action.into(),
            source: source.into(),
        }
    }
}
