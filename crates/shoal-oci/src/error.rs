//! The crate's errors. Runtime failures carry runc's own words, worded as docker words them
//! ("OCI runtime create failed: …").

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// A capability name that neither docker nor the kernel knows.
    #[error(
        "unknown capability: {0:?} (names as in capabilities(7), with or without CAP_, or ALL)"
    )]
    UnknownCapability(String),
    /// A user name the image's /etc/passwd does not have (runc's wording).
    #[error("unable to find user {0}: no matching entries in passwd file")]
    UnknownUser(String),
    /// A group name the image's /etc/group does not have (runc's wording).
    #[error("unable to find group {0}: no matching entries in group file")]
    UnknownGroup(String),
    /// A task setting that cannot make a container; says which and why.
    #[error("invalid container setting: {0}")]
    Invalid(String),
    /// The image's config blob is not an OCI/docker image config.
    #[error("the image config cannot be read: {0}")]
    ImageConfig(String),
    /// runc refused or failed an operation: `op` is docker's verb ("create", "start"), the
    /// message is runc's own.
    #[error("OCI runtime {op} failed: {message}")]
    Runtime { op: &'static str, message: String },
    /// runc does not know the container (never created, or deleted).
    #[error("no such container: {0}")]
    NoSuchContainer(String),
    /// The runc binary could not be run at all.
    #[error("cannot run {binary}: {source} (install the runc package)")]
    RuncMissing {
        binary: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The conmon binary could not be run at all.
    #[error("cannot run {binary}: {source} (install the conmon package)")]
    MonitorMissing {
        binary: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl OciError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: io::Error) -> OciError {
        OciError::Io {
            what,
            path: path.into(),
            source,
        }
    }
}
