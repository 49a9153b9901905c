//! shoal's VIP load balancing: one nftables table per task sandbox, updated by atomic
//! transactions.
//!
//! Each sandbox (a network namespace whose tasks connect to service VIPs) gets one table,
//! `ip shoal`, and nothing else in it is touched. Its nat OUTPUT chain looks the destination
//! up in verdict maps (`VIP . proto . port`, or `VIP` for services without declared ports) and
//! jumps to the service's chain, which DNATs round robin (`numgen inc mod N`, one counter per
//! service as Swarm's IPVS has one per VIP) to the service's running tasks, address only (VIP
//! port = task port, as in Swarm). The client's source address is kept. A filter OUTPUT chain
//! refuses at once (TCP reset, ICMP port unreachable) whatever is still addressed to a VIP
//! after that: a service without tasks, or a port it does not balance. The layout, and why
//! backends live in shared maps: [`mod@plan`].
//!
//! Updates go to the kernel as our own nfnetlink batch on a socket kept in the sandbox
//! ([`netlink`] says why not `nft -f`); the table is created once by `nft -f -`. Figures on
//! this machine (bench/vip): one endpoint change with 10,000 services programmed takes
//! ~0.3-0.5 ms when a task is replaced and ~3-5 ms when the number of tasks changes (the
//! kernel then re-validates every chain of the table); a new connection through a VIP costs
//! ~3-5 µs more than straight to a task, flat from 1 to 10,000 services.
//!
//! # Layout
//! - [`model`]: [`LbConfig`], [`VipService`], [`Proto`]: the input, and its validation.
//! - [`mod@plan`]: [`plan()`](plan::plan) and [`removed_backends`], the pure diff from one config
//!   to the next as [`Op`]s. No I/O.
//! - [`text`]: [`render_create`] and [`render_update`], the ops as nft text (what `nft -f`
//!   takes and what errors quote). Pure.
//! - [`netlink`]: the same ops as an nfnetlink batch, and the kernel's answers parsed. Pure.
//! - `apply`: the I/O: a thread that enters the namespace, `nft -f -`, the netlink socket.
//! - [`balancer`]: [`Balancer`], one sandbox's table kept in step.
//! - [`ctnetlink`]: conntrack dump and delete messages, and the filter of a removed
//!   backend's flows. Pure.
//! - [`conntrack`]: [`flush_conntrack`] and [`delete_flows`] for flows to removed backends
//!   (over ctnetlink, no process), and the sandbox's idle timeout of established TCP.
//!
//! Architecture invariant: only `apply` and `conntrack` enter namespaces or start processes;
//! `model`, `plan`, `text`, `netlink` and `ctnetlink` are pure and unit-tested without root.

#![forbid(unsafe_code)]

mod apply;
pub mod balancer;
pub mod conntrack;
pub mod ctnetlink;
mod error;
pub mod model;
pub mod netlink;
pub mod plan;
pub mod text;

pub use apply::nft_transaction;
pub use balancer::{Balancer, Transport};
pub use conntrack::{
    delete_flows, ensure_tcp_timeout, flush_conntrack, tcp_established_timeout, vip_filter,
};
pub use ctnetlink::FlowFilter;
pub use error::LbError;
pub use model::{LbConfig, Ports, Proto, VipService};
pub use plan::{
    ORPHAN_TIMEOUT_MS, Op, SHARDS, Shard, StaleFlows, orphan_ops, plan, removed_backends,
};
pub use text::{render_create, render_orphans, render_update};

#[cfg(test)]
mod tests;
