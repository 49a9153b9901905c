//! shoal's kernel plumbing: named network namespaces and links, over rtnetlink.
//!
//! # Layout
//! - `netns`: named namespaces under `/run/netns` (iproute2-compatible), and running code
//!   inside one on a short-lived dedicated thread.
//! - `link`: [`Netlink`], an rtnetlink connection bound to one namespace: links, bridges,
//!   veths, addresses, routes.
//! - `neigh`: static neighbour (ARP) and VXLAN FDB entries on a [`Netlink`].
//! - `overlay`: one overlay network on one node (namespace, `br0`, `vxlan0`, task veths,
//!   remote endpoints), as Docker's overlay driver builds it; `overlay::plan` is the pure
//!   "current + desired -> operations" part.
//! - `error`: [`NetError`].
//!
//! Architecture invariant: this is the only crate that talks netlink or creates network
//! namespaces; it decides nothing (names, addresses and topology come from callers) and
//! never switches the namespace of a caller's thread.
#![forbid(unsafe_code)]

mod error;
pub mod gateway;
pub mod host;
pub mod link;
pub mod neigh;
pub mod netns;
pub mod overlay;

pub use error::{NetError, Result};
pub use link::{LinkInfo, Netlink};
pub use neigh::{FdbRemote, Mac, Neighbour};
pub use netns::{
    NETNS_DIR, REGISTRY_ENV, create_netns, delete_netns, list_netns, netns_exists, netns_path,
    open_netns, remove_if_stale, remove_stale_netns, run_in_netns, run_in_netns_async,
    validate_netns_name,
};
pub use overlay::{
    OverlaySpec, add_remote, attach, detach, ensure_overlay, mac_for, remove_overlay, remove_remote,
};
