//! The crate's error type.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// What can go wrong while setting up a DNS server. Once serving, per-query failures are
/// answered (SERVFAIL, FORMERR) or logged, never returned.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The namespace name cannot be a file under /run/netns.
    #[error("invalid network namespace name {0:?}: use letters, digits, '.', '_' and '-'")]
    InvalidNetns(String),
    /// /run/netns/NAME could not be opened.
    #[error("failed to open network namespace {netns} (does /run/netns/{netns} exist?): {source}")]
    OpenNetns {
        /// The namespace name.
        netns: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// setns(2) failed (not root, or not a network namespace file).
    #[error("failed to enter network namespace {netns} (are we root?): {source}")]
    EnterNetns {
        /// The namespace name.
        netns: String,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// A socket could not be bound or prepared.
    #[error("failed to bind {proto} {addr} in network namespace {netns}: {source}")]
    Bind {
        /// "udp" or "tcp".
        proto: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The namespace name, or "(current)".
        netns: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The helper thread that enters the namespace died before answering.
    #[error("the thread that binds inside network namespace {0} died")]
    NetnsThread(String),
    /// The node's DNS threads could not be started.
    #[error("failed to start the DNS server threads: {0}")]
    Runtime(#[source] io::Error),
    /// A resolv.conf could not be read.
    #[error("failed to read {path}: {source}")]
    ResolvConf {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl DnsError {
    /// Whether trying again later can help: a busy address may be freed, a namespace that is
    /// being created may appear; a bad name or missing privileges will not change.
    pub fn is_retryable(&self) -> bool {
        match self {
            DnsError::Bind { source, .. } => source.kind() == io::ErrorKind::AddrInUse,
            DnsError::OpenNetns { source, .. } => source.kind() == io::ErrorKind::NotFound,
            DnsError::NetnsThread(_) | DnsError::Runtime(_) => true,
            DnsError::InvalidNetns(_)
            | DnsError::EnterNetns { .. }
            | DnsError::ResolvConf { .. } => false,
        }
    }
}
