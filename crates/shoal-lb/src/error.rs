//! The crate's error type.

use std::io;

/// What can go wrong while programming a sandbox's load balancer. Every failed transaction
/// leaves the rules as they were: nftables applies a batch entirely or not at all.
#[derive(Debug, thiserror::Error)]
pub enum LbError {
    /// The config cannot be programmed; nothing was sent to the kernel.
    #[error("invalid load-balancer config for service {service}: it {reason}")]
    InvalidConfig {
        /// The service id.
        service: String,
        /// What is wrong, as a verb phrase.
        reason: String,
    },
    /// The sandbox's namespace could not be found or entered.
    #[error(transparent)]
    Netns(#[from] shoal_net::NetError),
    /// The helper thread that works inside the namespace died before answering.
    #[error("the helper thread working in network namespace {0} died")]
    NetnsThread(String),
    /// A program (nft) could not be started.
    #[error(
        "failed to run {program} in network namespace {netns} (is it installed? apt-get install {package}): {source}"
    )]
    Spawn {
        /// The program.
        program: &'static str,
        /// The Debian package that has it.
        package: &'static str,
        /// The namespace name.
        netns: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `nft -f` refused a transaction; the table is as it was before.
    #[error(
        "nft refused the transaction in network namespace {netns}, nothing was changed: {stderr}"
    )]
    Nft {
        /// The namespace name.
        netns: String,
        /// What nft said.
        stderr: String,
    },
    /// The netlink socket failed. If it failed after the batch was sent, whether the
    /// transaction was applied is unknown: recreate the balancer.
    #[error("netlink {action} failed in network namespace {netns}: {source}")]
    Netlink {
        /// What we were doing ("open socket", "send batch", "read answer").
        action: &'static str,
        /// The namespace name.
        netns: String,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// The kernel rejected a command of a transaction; the table is as it was before.
    #[error(
        "the kernel rejected `{command}` in network namespace {netns}, nothing was changed: {source}{hint}"
    )]
    Rejected {
        /// The failing command, as nft text (shortened).
        command: String,
        /// The namespace name.
        netns: String,
        /// The errno.
        #[source]
        source: io::Error,
        /// What to do about it.
        hint: &'static str,
    },
    /// The kernel gave no answer to a transaction in time.
    #[error(
        "the kernel did not answer a transaction in network namespace {0} within 5 s; recreate the balancer to be sure of its rules"
    )]
    NoAnswer(String),
    /// The kernel refused a conntrack dump or delete (ctnetlink); flows of removed
    /// backends may remain until they expire.
    #[error(
        "the kernel refused to {action} conntrack entries in network namespace {netns}: {source}{hint}"
    )]
    Conntrack {
        /// "list" or "delete".
        action: &'static str,
        /// The namespace name.
        netns: String,
        /// The errno.
        #[source]
        source: io::Error,
        /// What to do about it.
        hint: &'static str,
    },
    /// A conntrack sysctl could not be read or written.
    #[error("failed to {action} {path} in network namespace {netns}: {source}")]
    Sysctl {
        /// "read" or "write".
        action: &'static str,
        /// The file.
        path: &'static str,
        /// The namespace name.
        netns: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// What to do after the kernel refused a command with `errno`.
pub(crate) fn hint(errno: i32) -> &'static str {
    use nix::errno::Errno;
    match Errno::from_raw(errno) {
        Errno::ENOENT | Errno::EEXIST | Errno::EBUSY => {
            " (the table no longer matches what this balancer programmed: recreate it with Balancer::create)"
        }
        Errno::EPERM => " (are we root, with CAP_NET_ADMIN in the namespace?)",
        _ => "",
    }
}
