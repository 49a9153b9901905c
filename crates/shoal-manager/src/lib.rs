//! The manager's decisions, as pure functions of the cluster state and the time.
//!
//! # Layout
//! - `orchestrator`: which tasks should exist (replicas, global, restarts, drain, node
//!   failure, updates, removal, history).
//! - `allocator`: addresses for new tasks on each of their networks, VIPs for services,
//!   subnets and VXLAN ids for new networks.
//! - `scheduler`: which node each pending task goes to (spread, constraints).
//! - `dispatcher`: what the leader decides about its nodes: which missed heartbeats, how far
//!   endpoint changes have reached, which stopping tasks are held for draining, and what
//!   each session tells its agent.
//! - `clock`: the time as the logic is given it (`Now`), and a `FakeClock` for tests.
//! - `changes`: what changed between two states, so that a pass looks only at that.
//! - `events`: `docker events`-style events from the difference between two states, and
//!   the ring a manager keeps them in.
//! - `membership`: which Raft voters the state no longer names as managers.
//!
//! Architecture invariant: nothing here does I/O or reads a clock. Inputs are a
//! `ClusterState` and `now` (read by the daemon through a `clock::Clock`); outputs are `Command`s that the daemon proposes through Raft.
//! The three parts talk only through the state, as swarmkit's components do.
#![forbid(unsafe_code)]

pub mod allocator;
pub mod changes;
pub mod clock;
pub mod dispatcher;
pub mod endpoints;
pub mod events;
pub mod membership;
pub mod orchestrator;
pub mod scheduler;

/// How many finished tasks to keep per slot, for `service ps` history (docker's default).
pub const TASK_HISTORY_LIMIT: usize = 5;
