//! shoal's embedded DNS server: cluster names answered at 127.0.0.11 in every task sandbox.
//!
//! Every sandbox gets its own UDP and TCP sockets on 127.0.0.11:53, created inside the
//! sandbox's network namespace and served by the node's few DNS threads ([`DnsRuntime`]):
//! one UDP socket per thread (SO_REUSEPORT), read and answered in batches. The names themselves are
//! held once per node: one [`NetworkZone`] per network in one shared [`NodeZones`], which all
//! servers follow through one watch channel. Each server knows its sandbox's networks and
//! answers through that [`Scope`], so scoping per network needs no lookup of "who is asking"
//! and a change costs the same whatever the number of sandboxes.
//!
//! # Layout
//! - [`zone`]: [`NetworkZone`] and the views the agent builds it from; every name, reverse
//!   address and SRV owner indexed once, so a query is one hash lookup per network.
//! - [`node`]: [`NodeZones`] (network id → zone) and [`Scope`] (one sandbox's ordered
//!   networks, where precedence across networks is decided).
//! - [`answer`](mod@answer): [`answer()`], the pure decision "reply with this message, or forward". No
//!   I/O, no clock; randomness comes in as an argument.
//! - [`message`]: bytes ↔ [`Message`](hickory_proto::op::Message) at the edges: parsing with
//!   a FORMERR fallback, encoding within the client's UDP size (TC when it does not fit).
//! - `wire`: the common queries (A/AAAA of a cluster name, NODATA, NXDOMAIN) answered
//!   straight from the packet's bytes into the reply's, without a `Message`; byte for byte
//!   what the general path sends, which answers everything else.
//! - [`upstream`]: [`Upstream`] (the host's resolvers) and forwarding of names that are not
//!   the cluster's, over the client's transport.
//! - [`metrics`]: [`DnsMetrics`], queries by type and rcode, forwards, upstream failures and
//!   answer latency, counted by the serving loops and read by shoald's `/metrics`.
//! - [`server`]: [`DnsServer`], binding inside a namespace, the TCP loop; `udp`: the batched
//!   UDP loop (`recvmmsg`/`sendmmsg`, buffers per thread); `runtime`: [`DnsRuntime`].
//!
//! Architecture invariant: only `server`, `udp` and `upstream` touch sockets; `zone`, `node`,
//! `answer`, `message` and `wire` are pure, which is what the unit tests and the fuzz target drive.

#![forbid(unsafe_code)]

pub mod answer;
mod error;
pub mod message;
pub mod metrics;
pub mod node;
mod runtime;
pub mod server;
mod udp;
pub mod upstream;
mod wire;
pub mod zone;

pub use answer::{Outcome, answer, servfail};
pub use error::DnsError;
pub use message::{Parsed, encode_reply, encode_reply_into, parse_request, udp_limit};
pub use metrics::DnsMetrics;
pub use node::{NodeZones, Scope};
pub use runtime::DnsRuntime;
pub use server::DnsServer;
pub use upstream::Upstream;
pub use zone::{NetworkView, NetworkZone, Protocol, ServiceView, ServiceZone, SrvPort, TaskView};
