//! shoal's cluster model: what the Raft log stores and every component reads.
//!
//! # Layout
//! - `ids`: random hex ids and their short forms.
//! - `node`, `service`, `task`: the objects, with docker's field names when serialised.
//! - `constraint`: placement constraints (`node.hostname==x`), parsed and matched.
//! - `event`: cluster events as `docker events` shows them, and their `--filter`.
//! - `update`: update and rollback policies, and where a rollout stands.
//! - `health`: health checks (docker's `HealthConfig`, the probe state machine) and the
//!   readiness rules that gate DNS, VIPs and the mesh.
//! - `dns_name`: service names, aliases and network names as DNS labels, reserved names.
//! - `state`: [`ClusterState`] and the [`Command`]s that change it. `apply` is pure and
//!   deterministic: ids and timestamps are chosen by the proposer, never here, so every
//!   manager replaying the log reaches the same state.
//!
//! Architecture invariant: this crate does no I/O and knows nothing of Raft, gRPC or HTTP.
#![forbid(unsafe_code)]

pub mod constraint;
pub mod diff;
pub mod dns_name;
pub mod endpoint;
pub mod event;
pub mod health;
pub mod ids;
pub mod mount;
pub mod network;
pub mod node;
pub mod service;
pub mod state;
pub mod task;
pub mod time;
pub mod update;

pub use constraint::Constraint;
pub use event::{Action, Actor, Event, EventFilter, EventType};
pub use ids::{new_id, short_id};
pub use network::{Attachment, Ipam, Network};
pub use node::{Availability, Node, NodeRole, NodeState};
pub use service::{
    EndpointMode, EndpointSpec, NetworkAttachment, PortConfig, Protocol, PublishMode,
    RestartCondition, RestartPolicy, Runtime, ServiceMode, ServiceSpec, TrafficPolicy,
};
pub use state::{ApplyError, ClusterInfo, ClusterState, Command, CommandResult, Service};
pub use task::{Task, TaskDelta, TaskState, TaskStatus};
pub use time::Millis;
pub use update::{FailureAction, UpdateConfig, UpdateOrder, UpdateState, UpdateStatus};
#[cfg(any(test, feature = "test-util"))]
pub mod fixtures;
