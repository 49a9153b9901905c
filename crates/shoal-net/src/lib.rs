//! shoal's kernel plumbing: named network namespaces and links, over rtnetlink.
//!
//! # Layout
//! - `netns`: named namespaces under `/run/netns` (iproute2-compatible), and running code
//!   inside one on a short-lived dedicated thread.
//! - `link`: [`Netlink`], an rtnetlink connection bound to one namespace: links, bridges,
//!   veths, addresses, routes.
//! - `error`: [`NetError`].
//!
//! Architecture invariant: this is the only crate that talks netlink or creates network
//! namespaces; it decides nothing (names, addresses and topology come from callers) and
//! never switches the namespace of a caller's thread.
#![forbid(unsafe_code)]

mod error;
pub mod link;
pub mod netns;

pub use error::{NetError, Result};
pub use link::{LinkInfo, Netlink};
pub use netns::{
    NETNS_DIR, REGISTRY_ENV, create_netns, delete_netns, list_netns, netns_exists, netns_path,
    open_netns, run_in_netns, run_in_netns_async, validate_netns_name,
};
