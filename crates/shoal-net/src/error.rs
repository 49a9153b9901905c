//! `NetError`: everything that can go wrong in shoal-net, with the object it concerned.

use std::io;
use std::path::PathBuf;

/// An error from a namespace or link operation.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A namespace name that iproute2 would refuse, or that would escape `/run/netns`.
    #[error("invalid network namespace name {0:?}: use 1-64 characters from [A-Za-z0-9._-]")]
    InvalidNetnsName(String),

    /// `create_netns` found the name taken.
    #[error("network namespace {0} already exists; delete it first (`ip netns delete {0}`)")]
    NetnsExists(String),

    /// The named namespace is not under `/run/netns`.
    #[error("network namespace {0} does not exist (see `ip netns list`)")]
    NoSuchNetns(String),

    /// A system call or file operation failed.
    #[error("failed to {action}: {source}")]
    Io {
        /// What we were doing, as a verb phrase ("mount /run/netns/x").
        action: String,
        #[source]
        source: io::Error,
    },

    /// A netlink request was refused by the kernel or failed on the socket.
    #[error("failed to {action}: {source}")]
    Netlink {
        /// What we were doing ("create bridge br0 in netns x").
        action: String,
        #[source]
        source: rtnetlink::Error,
    },

    /// A link looked up by name is not in the namespace.
    #[error("no link named {link} in {netns}")]
    NoSuchLink {
        /// The link's name.
        link: String,
        /// Where we looked (a netns name, or "the current network namespace").
        netns: String,
    },

    /// A thread that entered a namespace panicked.
    #[error("the thread working in network namespace {0} panicked")]
    ThreadPanicked(String),

    /// An interface name the kernel would refuse.
    #[error(
        "invalid interface name {0:?}: use 1-15 characters, none of them '/', ':' or whitespace"
    )]
    InvalidLinkName(String),

    /// A link of that name is already in the namespace.
    #[error("a link named {link} already exists in {netns}; remove it or choose another name")]
    LinkExists {
        /// The link's name.
        link: String,
        /// Where it is.
        netns: String,
    },

    /// An [`crate::OverlaySpec`] that cannot be set up as given.
    #[error("invalid overlay spec for netns {netns}: {reason}")]
    InvalidOverlay {
        /// The overlay's namespace.
        netns: String,
        /// What is wrong, and what would be right.
        reason: String,
    },

    /// An overlay operation found no overlay namespace (or no `br0`/`vxlan0` in it).
    #[error("overlay network namespace {0} is not set up; call ensure_overlay first")]
    OverlayMissing(String),

    /// `ensure_overlay` found an overlay namespace built for another spec.
    #[error(
        "overlay network namespace {netns} does not match its spec: {what}; remove it (remove_overlay) and ensure it again"
    )]
    OverlayMismatch {
        /// The overlay's namespace.
        netns: String,
        /// What differs.
        what: String,
    },

    /// An endpoint address outside the overlay network's subnet.
    #[error(
        "address {addr} is not in subnet {subnet} of overlay netns {netns}; allocate endpoint addresses from the network's subnet"
    )]
    AddressOutsideSubnet {
        /// The address (with its prefix length, for attachments).
        addr: String,
        /// The network's subnet.
        subnet: String,
        /// The overlay's namespace.
        netns: String,
    },

    /// The kernel refused a second VXLAN device with the same VNI and port in one underlay
    /// namespace.
    #[error(
        "VNI {vni} is already used by a VXLAN device created from {underlay}: another overlay network on this node has it (or a removed one is still being torn down); give each network its own VNI"
    )]
    VniInUse {
        /// The VNI.
        vni: u32,
        /// The underlay namespace.
        underlay: String,
    },

    /// A path under `/run/netns` could not be used as a namespace file.
    #[error("{} is not a network namespace file", .0.display())]
    NotANetns(PathBuf),
}

impl NetError {
    pub(crate) fn io(action: impl Into<String>, source: impl Into<io::Error>) -> Self {
        NetError::Io {
            action: action.into(),
            source: source.into(),
        }
    }

    pub(crate) fn netlink(action: impl Into<String>, source: rtnetlink::Error) -> Self {
        NetError::Netlink {
            action: action.into(),
            source,
        }
    }

    /// The errno the kernel answered with, if this is a netlink or system-call refusal.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetError::Io { source, .. } => source.raw_os_error(),
            NetError::Netlink {
                source: rtnetlink::Error::NetlinkError(msg),
                ..
            } => msg.code.map(|c| -c.get()),
            _ => None,
        }
    }
}

/// shoal-net's result type.
pub type Result<T, E = NetError> = std::result::Result<T, E>;
