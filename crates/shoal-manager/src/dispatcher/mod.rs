//! The dispatcher: what the leader decides about the nodes it talks to. Which node missed
//! its heartbeats ([`heartbeats`]), how far each endpoint change has reached
//! ([`convergence`]), which stopping tasks are held running until it has (drain before
//! stop), and what each session tells its agent ([`session`]).
//!
//! [`Dispatcher`] is the leader's shared part, fed by the leader loop (`on_state`), the
//! sessions (`table`, `on_sent`, `on_unchanged`, `on_disconnect`) and the agents' calls
//! (`on_heartbeat`, `on_ack`); every method takes the time as a [`Now`] and returns the
//! commands to propose. A session's own part is a [`NodeSession`], owned by its task.

pub mod by_node;
pub mod convergence;
pub mod heartbeats;
pub mod node_tasks;
pub mod session;

use std::collections::HashMap;
use std::sync::Arc;

use shoal_types::{ClusterState, Command, NodeState, Task};

use crate::clock::Now;
use crate::endpoints::{self, EndpointTable};

pub use by_node::{ChangeCache, ChangedByNode};
pub use convergence::{Convergence, ConvergenceStats, Settled};
pub use heartbeats::{Heartbeats, TAKEOVER_GRACE};
pub use node_tasks::NodeTasks;
pub use session::{NodeSession, Told, Update, ViewProgress, manager_addrs, may_drain};

/// The longest a stopping task is kept running while its endpoint removal propagates.
pub const DRAIN_LIMIT_MS: u64 = 10_000;

/// How a node's status message starts while its last endpoint table did not apply whole.
pub const APPLY_FAILED: &str = "endpoint table not applied: ";

/// How long a node's status keeps saying its endpoint table did not apply after the last
/// failure, even once a later table applied. A failure that recurs (a task that restarts
/// into a network its node cannot set up fails within milliseconds, and the node's next
/// table, without that network, applies) then reads as one ongoing failure in `node
/// inspect` instead of a blink no operator would see.
pub const APPLY_FAILED_HOLD_MS: u64 = 10_000;

/// The grace when the cluster has no heartbeat settings yet.
const DEFAULT_GRACE_MS: u64 = 3_000;

/// How long a proposal marking a node Ready may stay without an outcome before the node's
/// next heartbeat asks again. Longer than shoald lets a proposal take (a leader wait plus
/// the commit timeout), so normally the proposal's end, reported through
/// [`Dispatcher::on_mark_ready_ended`], comes first; this only covers an end never reported.
pub const MARK_READY_RETRY_MS: u64 = 30_000;

/// The leader's dispatcher state. Not `Sync` on purpose: the daemon holds it under one
/// lock, taken briefly per call.
#[derive(Debug)]
pub struct Dispatcher {
    /// This manager's node: the leader never marks its own node Down.
    own: String,
    /// Whether the last `on_state` was a leader's: the first one after becoming leader
    /// starts every node's grace afresh.
    leading: bool,
    heartbeats: Heartbeats,
    convergence: Convergence,
    /// The endpoint table of the newest state seen, and that state (the next table is
    /// made from it and the difference between the two states).
    state: Arc<ClusterState>,
    table: Arc<EndpointTable>,
    /// Latencies (ms) of the changes that reached every Ready node since the last
    /// `take_settled`, for the daemon's metrics.
    settled: Vec<u64>,
    ready: ReadyList,
    /// Nodes whose "mark Ready" proposal is in flight, with when it was handed out
    /// (monotonic ms). A node that is not Ready beats every period until that proposal
    /// commits; without this, each beat would propose another Raft write (one per beat per
    /// node while a cluster of Down nodes comes back, or while commits are slow).
    marking_ready: HashMap<String, u64>,
    /// Nodes whose status says an endpoint table did not apply: when it last failed
    /// (monotonic ms) and whether a table applied since (the status clears once
    /// [`APPLY_FAILED_HOLD_MS`] has passed).
    apply_failed: HashMap<String, ApplyFailure>,
}

#[derive(Debug)]
struct ApplyFailure {
    last_ms: u64,
    applied_since: bool,
}

impl ApplyFailure {
    /// Whether the status still says so at `now` whatever applied since.
    fn held(&self, now: Now) -> bool {
        now.mono_ms.saturating_sub(self.last_ms) < APPLY_FAILED_HOLD_MS
    }
}

/// The Ready nodes, listed again only when the nodes change; convergence compares the
/// generation to know the list is the same one.
#[derive(Debug, Default)]
struct ReadyList {
    /// The nodes the list was made from.
    from: imbl::OrdMap<String, shoal_types::Node>,
    ids: Vec<String>,
    generation: u64,
}

/// Ready nodes: the ones an endpoint change must reach.
pub fn ready_nodes(state: &ClusterState) -> Vec<String> {
    state
        .nodes
        .values()
        .filter(|n| n.status.state == NodeState::Ready)
        .map(|n| n.id.clone())
        .collect()
}

impl Dispatcher {
    pub fn new(own_node: &str) -> Dispatcher {
        Dispatcher {
            own: own_node.to_string(),
            leading: false,
            heartbeats: Heartbeats::default(),
            convergence: Convergence::default(),
            state: Arc::default(),
            table: Arc::default(),
            settled: Vec::new(),
            ready: Default::default(),
            marking_ready: HashMap::new(),
            apply_failed: HashMap::new(),
        }
    }

    /// A pass of the leader loop at `state`: the node to mark Down, if one has been silent
    /// past the grace (see [`Heartbeats::expired`]). The first pass after becoming leader
    /// gives every node a fresh grace instead of judging it on another leader's silence.
    pub fn on_state(&mut self, state: &ClusterState, now: Now) -> Option<Command> {
        if !self.leading {
            self.heartbeats.reset(state, now.mono_ms);
            self.marking_ready.clear();
            self.leading = true;
        }
        // Done once the state shows the node Ready (or it is gone).
        self.marking_ready.retain(|id, _| {
            state
                .nodes
                .get(id)
                .is_some_and(|n| n.status.state != NodeState::Ready)
        });
        let id = self
            .heartbeats
            .expired(state, now.mono_ms, Self::grace_ms(state), &self.own)?;
        Some(Command::SetNodeState {
            id,
            state: NodeState::Down,
            message: "heartbeat failure".into(),
            at: now.wall,
        })
    }

    /// This manager no longer leads: the next `on_state` starts afresh.
    pub fn on_follower(&mut self) {
        self.leading = false;
        self.marking_ready.clear();
        self.apply_failed.clear();
    }

    /// The grace a node has at `state`, in milliseconds.
    pub fn grace_ms(state: &ClusterState) -> u64 {
        state
            .cluster
            .as_ref()
            .map_or(DEFAULT_GRACE_MS, |c| c.heartbeat_grace_ms())
    }

    /// A heartbeat (or a session start) of `node`; the command that marks it Ready again
    /// if it is not, unless one is already in flight for it: at most one per node until
    /// the state shows it Ready, the caller reports that proposal ended
    /// ([`Dispatcher::on_mark_ready_ended`]), or [`MARK_READY_RETRY_MS`] passed.
    pub fn on_heartbeat(&mut self, node: &str, state: &ClusterState, now: Now) -> Option<Command> {
        self.heartbeats.seen(node, now.mono_ms);
        let n = state.nodes.get(node)?;
        if n.status.state == NodeState::Ready {
            self.marking_ready.remove(node);
            return None;
        }
        if self
            .marking_ready
            .get(node)
            .is_some_and(|&at| now.mono_ms.saturating_sub(at) < MARK_READY_RETRY_MS)
        {
            return None;
        }
        self.marking_ready.insert(node.to_string(), now.mono_ms);
        Some(Command::SetNodeState {
            id: node.to_string(),
            state: NodeState::Ready,
            message: String::new(),
            at: now.wall,
        })
    }

    /// The proposal `on_heartbeat` returned for `node` at `issued` (its `now`) has ended,
    /// committed or not: the node's next heartbeat may ask again if it is still not Ready.
    /// The end of an older proposal, one asked again since, changes nothing.
    pub fn on_mark_ready_ended(&mut self, node: &str, issued: Now) {
        if self.marking_ready.get(node) == Some(&issued.mono_ms) {
            self.marking_ready.remove(node);
        }
    }

    /// The endpoint table at `state`'s version, computed once per version from the previous
    /// one. A change of the table is recorded so its propagation can be measured.
    pub fn table(&mut self, state: &Arc<ClusterState>, now: Now) -> Arc<EndpointTable> {
        if self.state.version == state.version {
            return Arc::clone(&self.table);
        }
        // A caller holding an older state (sessions read the state at their own pace) gets
        // its table but must not rewind the cache: that would record the newer change a
        // second time under the older version, and a service could read as synced before
        // its last change has reached anyone.
        if state.version < self.state.version {
            return Arc::new(endpoints::table(state));
        }
        let table = endpoints::update_table(&self.table, &self.state, state);
        self.state = Arc::clone(state);
        if table == *self.table {
            // The same Arc, so that sessions can tell with a pointer comparison that no
            // node's view needs computing again (most state changes leave the table alone).
            return Arc::clone(&self.table);
        }
        let changed = endpoints::changed_services(&self.table, &table);
        self.convergence
            .table_changed(state.version, now.mono_ms, changed);
        self.table = Arc::new(table);
        Arc::clone(&self.table)
    }

    /// What a session did with its node's view at `state`.
    pub fn on_view(&mut self, node: &str, progress: ViewProgress, state: &ClusterState, now: Now) {
        match progress {
            ViewProgress::Sent(v) => self.convergence.sent(node, v),
            ViewProgress::Unchanged(v) => self.convergence.unchanged(node, v),
        }
        self.settle(state, now);
    }

    /// The agent of `node` applied its view up to `version` (`error` empty), or tried and
    /// failed (`error` says what). A failed apply is not an ack: the node stays unsynced
    /// (convergence and drains wait for it) until the agent's retry succeeds. Returns the
    /// command that makes the node's status say so, or clears it, when that changes.
    pub fn on_ack(
        &mut self,
        node: &str,
        version: u64,
        error: &str,
        state: &ClusterState,
        now: Now,
    ) -> Option<Command> {
        if error.is_empty() {
            self.convergence.acked(node, version);
            self.settle(state, now);
        } else {
            self.convergence.failed(node);
        }
        let n = state.nodes.get(node)?;
        let said = &n.status.message;
        let message = if error.is_empty() {
            // Only a message of ours is cleared, and not while it is held.
            if let Some(f) = self.apply_failed.get_mut(node)
                && f.held(now)
            {
                f.applied_since = true;
                return None;
            }
            self.apply_failed.remove(node);
            said.starts_with(APPLY_FAILED).then(String::new)
        } else {
            let f = ApplyFailure {
                last_ms: now.mono_ms,
                applied_since: false,
            };
            self.apply_failed.insert(node.to_string(), f);
            let text = format!("{APPLY_FAILED}{error}");
            (said != &text).then_some(text)
        }?;
        Some(Command::SetNodeState {
            id: node.to_string(),
            state: n.status.state,
            message,
            at: now.wall,
        })
    }

    /// The commands that clear the status of nodes whose endpoint table applied since
    /// their last failure, once [`APPLY_FAILED_HOLD_MS`] has passed since it. Called at
    /// every pass of the leader loop.
    pub fn apply_failures_cleared(&mut self, state: &ClusterState, now: Now) -> Vec<Command> {
        let mut cmds = Vec::new();
        self.apply_failed.retain(|id, f| {
            let Some(n) = state.nodes.get(id) else {
                return false;
            };
            if !f.applied_since || f.held(now) {
                return true;
            }
            if n.status.message.starts_with(APPLY_FAILED) {
                cmds.push(Command::SetNodeState {
                    id: id.clone(),
                    state: n.status.state,
                    message: String::new(),
                    at: now.wall,
                });
            }
            false
        });
        cmds
    }

    /// The live session of `node` ended: it starts from a full table next time.
    pub fn on_disconnect(&mut self, node: &str, state: &ClusterState, now: Now) {
        self.convergence.disconnected(node);
        self.settle(state, now);
    }

    /// Drain before stop: of `tasks` (those that [`may_drain`]), the ids of the ones to
    /// keep running now. A task that is to stop keeps running (its agent is told it is
    /// still desired) until the endpoint change that took it out of DNS and the VIPs has
    /// reached every Ready node, so that no new connection is sent to a task that is going
    /// away. Bounded by [`DRAIN_LIMIT_MS`] from the task's last update, so a slow node
    /// cannot hold a stop forever.
    pub fn drain<'a>(
        &self,
        state: &ClusterState,
        tasks: impl IntoIterator<Item = &'a Task>,
        now: Now,
    ) -> Vec<String> {
        let mut tasks = tasks
            .into_iter()
            .filter(|t| may_drain(t) && now.wall.since(t.updated_at) < DRAIN_LIMIT_MS)
            .peekable();
        if tasks.peek().is_none() {
            return Vec::new();
        }
        let ready = ready_nodes(state);
        tasks
            .filter(|t| {
                let (synced, of) = self.convergence.service_progress(&t.service_id, &ready);
                synced < of
            })
            .map(|t| t.id.clone())
            .collect()
    }

    /// For each of `services`: (Ready nodes that have its last endpoint change, Ready
    /// nodes). Reads only: a change at `state` not yet recorded (no session has reached
    /// that version) counts as reached by no node that has not synced that version.
    pub fn services_progress<'a>(
        &self,
        state: &ClusterState,
        services: impl IntoIterator<Item = &'a str>,
    ) -> Vec<(usize, usize)> {
        let ready = ready_nodes(state);
        let unrecorded = if state.version > self.state.version {
            let table = endpoints::update_table(&self.table, &self.state, state);
            endpoints::changed_services(&self.table, &table)
        } else {
            Default::default()
        };
        services
            .into_iter()
            .map(|s| {
                if unrecorded.contains(s) {
                    self.convergence.nodes_at(state.version, &ready)
                } else {
                    self.convergence.service_progress(s, &ready)
                }
            })
            .collect()
    }

    fn settle(&mut self, state: &ClusterState, now: Now) {
        if !self.convergence.has_pending() {
            return;
        }
        // The Ready nodes are listed again only when the nodes changed.
        if !self.ready.from.ptr_eq(&state.nodes) {
            self.ready = ReadyList {
                from: state.nodes.clone(),
                ids: ready_nodes(state),
                generation: self.ready.generation + 1,
            };
        }
        let settled = self
            .convergence
            .settle(now.mono_ms, &self.ready.ids, self.ready.generation);
        self.settled.extend(settled);
    }

    /// The latencies (ms) of the changes that reached every Ready node since the last call.
    pub fn take_settled(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.settled)
    }

    /// The last changes that reached every Ready node, newest last.
    pub fn recent(&self) -> Vec<Settled> {
        self.convergence.recent()
    }

    /// Latency figures of endpoint propagation.
    pub fn stats(&self) -> ConvergenceStats {
        self.convergence.stats()
    }

    pub fn reset_stats(&mut self) {
        self.convergence.reset_samples();
    }
}

#[cfg(test)]
mod tests;
