//! shoal's embedded DNS server: cluster names answered at 127.0.0.11 in every task sandbox.
//!
//! Every sandbox gets its own UDP and TCP sockets on 127.0.0.11:53, created inside the
//! sandbox's network namespace and served from the daemon's runtime. Each socket answers from
//! one [`Zone`], the view of the endpoint table that the sandbox's networks allow, so scoping
//! per network needs no lookup of "who is asking".
//!
//! # Layout
//! - [`zone`]: [`Zone`] and the views the agent builds it from; every name, reverse address
//!   and SRV owner indexed once, so a query is one hash lookup.
//! - [`answer`](mod@answer): [`answer()`], the pure decision "reply with this message, or forward". No
//!   I/O, no clock; randomness comes in as an argument.
//! - [`message`]: bytes ↔ [`Message`](hickory_proto::op::Message) at the edges: parsing with
//!   a FORMERR fallback, encoding within the client's UDP size (TC when it does not fit).
//! - [`upstream`]: [`Upstream`] (the host's resolvers) and forwarding of names that are not
//!   the cluster's, over the client's transport.
//! - [`server`]: [`DnsServer`], the thin socket loops, and entering a namespace to bind.
//!
//! Architecture invariant: only `server` and `upstream` touch sockets; `zone`, `answer` and
//! `message` are pure, which is what the unit tests and the fuzz target drive.

#![forbid(unsafe_code)]

pub mod answer;
mod error;
pub mod message;
pub mod server;
pub mod upstream;
pub mod zone;

pub use answer::{Outcome, answer, servfail};
pub use error::DnsError;
pub use message::{Parsed, encode_reply, parse_request, udp_limit};
pub use server::DnsServer;
pub use upstream::Upstream;
pub use zone::{NetworkView, Protocol, ServiceView, SrvPort, TaskView, Zone};
