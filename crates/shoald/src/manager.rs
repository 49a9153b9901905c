//! The manager role at run time: proposes through Raft (forwarding to the leader), runs the
//! orchestrator and scheduler while this node leads, and serves the `Cluster` gRPC service
//! (joins, agent sessions, heartbeats, status reports).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_manager::dispatcher::{Convergence, Heartbeats};
use shoal_manager::{allocator, changes, endpoints, orchestrator, scheduler};
use shoal_rpc::cluster_client::ClusterClient;
use shoal_store::{Store, StoreError};
use shoal_types::{ClusterState, Command, CommandResult, NodeState, TaskState};
use tracing::{debug, info, warn};

use crate::errors::DaemonError;

pub struct Manager {
    pub store: Store,
    /// This node's id: the leader never marks its own node Down.
    node_id: String,
    /// Leader-only bookkeeping; reset whenever this node becomes leader.
    heartbeats: Mutex<Heartbeats>,
    /// The endpoint table of the newest state version, shared by every agent session.
    endpoints: Mutex<TableCache>,
    /// How far endpoint changes have reached (leader only).
    pub convergence: Mutex<Convergence>,
    /// Woken on every endpoint ack: sessions re-check the tasks they hold for draining.
    pub acked: tokio::sync::Notify,
    started: Instant,
    /// The sealing key of registry logins (`--with-registry-auth`).
    pub logins: crate::registry::Logins,
    /// How this manager reaches the leader (TLS with its certificate).
    dialer: shoal_rpc::Dialer,
    /// The node's `/metrics` (proposal and convergence latency, heartbeats missed).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The cluster's events as this manager applies them (`shoal events`).
    pub events: crate::events::Feed,
}

pub use endpoints::EndpointTable;

/// The endpoint table of the newest state version, with the state it was made from (the
/// next one is made from it and the difference between the two states).
#[derive(Default)]
struct TableCache {
    state: Arc<ClusterState>,
    table: Arc<EndpointTable>,
}

/// The longest a stopping task is kept running while its endpoint removal propagates.
const DRAIN_LIMIT_MS: u64 = 10_000;

/// How long a write waits for a leader to be elected before giving up.
const LEADER_WAIT: Duration = Duration::from_secs(10);
/// How long an API write waits for its commit before saying so (a write that times out may
/// still commit later).
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(15);
/// How many times a change proposed in the background is tried again (a second apart)
/// while no leader takes it.
const BACKGROUND_TRIES: u32 = 30;

impl Manager {
    pub fn new(
        store: Store,
        node_id: String,
        data_dir: &std::path::Path,
        dialer: shoal_rpc::Dialer,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Arc<Manager> {
        Arc::new(Manager {
            dialer,
            metrics,
            logins: crate::registry::Logins::new(data_dir),
            store,
            node_id,
            heartbeats: Mutex::new(Heartbeats::default()),
            endpoints: Mutex::new(TableCache::default()),
            convergence: Mutex::new(Convergence::default()),
            acked: tokio::sync::Notify::new(),
            started: Instant::now(),
            events: Default::default(),
        })
    }

    pub fn state(&self) -> Arc<ClusterState> {
        self.store.state().borrow().clone()
    }

    /// The endpoint table at `state`'s version, computed once per version from the previous
    /// one. A change of the table is recorded so its propagation can be measured.
    pub fn endpoint_table(&self, state: &Arc<ClusterState>) -> Arc<EndpointTable> {
        let mut cache = lock(&self.endpoints);
        if cache.state.version == state.version {
            return Arc::clone(&cache.table);
        }
        // A caller holding an older state (sessions and API calls read the state at their
        // own pace) gets its table but must not rewind the cache: that would record the
        // newer change a second time under the older version, and a service could read as
        // synced before its last change has reached anyone.
        if state.version < cache.state.version {
            return Arc::new(endpoints::table(state));
        }
        let table = endpoints::update_table(&cache.table, &cache.state, state);
        if table == *cache.table {
            // The same Arc, so that sessions can tell with a pointer comparison that no
            // node's view needs computing again (most state changes leave the table alone).
            cache.state = Arc::clone(state);
            return Arc::clone(&cache.table);
        }
        let changed = endpoints::changed_services(&cache.table, &table);
        lock(&self.convergence).table_changed(state.version, self.mono_ms(), changed);
        let table = Arc::new(table);
        *cache = TableCache {
            state: Arc::clone(state),
            table: Arc::clone(&table),
        };
        table
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

    /// Records what a session did with a version of the table, and settles changes.
    pub fn endpoints_progress(&self, node: &str, state: &ClusterState, event: Progress) {
        let mut c = lock(&self.convergence);
        match event {
            Progress::Sent(v) => c.sent(node, v),
            Progress::Unchanged(v) => c.unchanged(node, v),
            Progress::Acked(v) => {
                c.acked(node, v);
                self.acked.notify_waiters();
            }
            Progress::Disconnected => c.disconnected(node),
        }
        for took_ms in c.settle(self.mono_ms(), &Self::ready_nodes(state)) {
            self.metrics.endpoints_converged(took_ms);
        }
    }

    /// Drain before stop: a task that is to stop keeps running (its agent is told it is
    /// still desired) until the endpoint change that took it out of DNS and the VIPs has
    /// reached every Ready node, so that no new connection is sent to a task that is
    /// going away. Bounded by `DRAIN_LIMIT_MS`, so a slow node cannot hold a stop forever.
    /// Whether a task is one that may be held: to stop, still running, with an address.
    pub fn may_drain(t: &shoal_types::Task) -> bool {
        t.desired_state == TaskState::Shutdown
            && t.status.state == TaskState::Running
            && !t.networks.is_empty()
    }

    /// Of `tasks` (those that `may_drain`), the ids of the ones held running now.
    pub fn held_for_drain<'a>(
        &self,
        state: &ClusterState,
        tasks: impl IntoIterator<Item = &'a shoal_types::Task>,
    ) -> Vec<String> {
        let now = shoal_agent::worker::now();
        let mut tasks = tasks
            .into_iter()
            .filter(|t| Self::may_drain(t) && now.since(t.updated_at) < DRAIN_LIMIT_MS)
            .peekable();
        if tasks.peek().is_none() {
            return Vec::new();
        }
        let ready = Self::ready_nodes(state);
        let c = lock(&self.convergence);
        tasks
            .filter(|t| {
                let (synced, of) = c.service_progress(&t.service_id, &ready);
                synced < of
            })
            .map(|t| t.id.clone())
            .collect()
    }

    pub fn mono_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn heartbeat_period_ms(&self) -> u64 {
        self.state()
            .cluster
            .as_ref()
            .map_or(1000, |c| c.heartbeat_period_ms)
    }

    /// On the leader, why `cmd` must not be proposed now: a demotion that would take a
    /// voter out of the Raft group when the rest could not commit without it (only the
    /// leader knows who answers; a follower forwards the command and the leader checks).
    pub fn refusal(&self, cmd: &Command) -> Option<String> {
        if !self.store.is_leader() {
            return None;
        }
        let demoted = |c: &Command| match c {
            Command::SetNodeRole {
                id,
                role: shoal_types::NodeRole::Worker,
                ..
            } => Some(id.clone()),
            _ => None,
        };
        let ids: Vec<String> = match cmd {
            Command::Batch(cmds) => cmds.iter().filter_map(demoted).collect(),
            c => demoted(c).into_iter().collect(),
        };
        let state = self.state();
        let voters = self.store.voters_reachable();
        ids.iter()
            .filter_map(|id| state.nodes.get(id)?.manager_status.as_ref())
            .find_map(|ms| shoal_manager::membership::removal_refused(&voters, ms.raft_id))
    }

    /// Commits a command through the leader; Ok once it is applied here or on the leader.
    pub async fn propose(&self, cmd: Command) -> Result<(), DaemonError> {
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            if let Some(why) = self.refusal(&cmd) {
                return Err(DaemonError::Conflict(why));
            }
            let began = Instant::now();
            let proposed = tokio::time::timeout(PROPOSE_TIMEOUT, self.store.propose(cmd.clone()));
            let proposed = proposed.await;
            // Only a commit made here counts (a follower's store refuses with NotLeader).
            if let Ok(Ok(_)) = &proposed {
                self.metrics.proposal_committed(began.elapsed());
            }
            let Ok(proposed) = proposed else {
                return Err(DaemonError::Unknown(format!(
                    "the change was not committed within {}s (the managers may be overloaded or cut off from each other)",
                    PROPOSE_TIMEOUT.as_secs()
                )));
            };
            let leader = match proposed {
                Ok(CommandResult::Ok) => return Ok(()),
                Ok(CommandResult::Err(e)) => return Err(DaemonError::Refused(e)),
                Err(StoreError::NotLeader { leader }) => leader,
                Err(e @ StoreError::NoQuorum { .. }) => {
                    return Err(DaemonError::NoQuorum(e.to_string()));
                }
                Err(e) => {
                    return Err(DaemonError::Internal {
                        what: "failed to commit the change",
                        why: e.to_string(),
                    });
                }
            };
            // The leader this manager knows of may be gone (killed, cut off) while no new
            // one is elected yet: a forward that was not delivered is tried again, against
            // whichever leader this manager knows of then, until the deadline.
            let mut last = None;
            if let Some((_, addr)) = leader {
                match forward(&self.dialer, &addr, &cmd).await {
                    Ok(index) => {
                        // Read-your-writes on this manager: the CLI's next call (waiting for
                        // the service it just created, say) reads this manager's state.
                        if !self.store.wait_applied(index, FORWARDED_APPLY_WAIT).await {
                            tracing::warn!(
                                index,
                                "a write forwarded to the leader is committed but not yet applied here after {FORWARDED_APPLY_WAIT:?}; reads on this manager may not show it yet"
                            );
                        }
                        return Ok(());
                    }
                    Err(e) if e.is_retryable() => {
                        debug!(leader = %addr, "a forwarded write did not reach a leader, trying again: {e}");
                        last = Some(e.to_string());
                    }
                    Err(e) => return Err(e),
                }
            }
            if Instant::now() > deadline {
                let (reachable, voters) = self.store.quorum();
                return Err(DaemonError::NoLeader {
                    reachable,
                    voters,
                    last,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Proposes `cmd` from a task of its own (what an agent's call only records: its node
    /// Ready again, what it reported). A failure that did not reach a leader is tried again
    /// a few times, a while apart, rather than lost: the call that caused it has returned.
    pub fn propose_in_background(self: &Arc<Self>, cmd: Command, what: &'static str) {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut tries = 0u32;
            loop {
                match me.propose(cmd.clone()).await {
                    Ok(()) => return,
                    Err(e) if e.is_retryable() && tries < BACKGROUND_TRIES => {
                        debug!("failed to {what}, trying again: {e}");
                        tries += 1;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Err(e) => {
                        warn!("failed to {what}: {e}");
                        return;
                    }
                }
            }
        });
    }

    /// Called on every heartbeat or session start of a node.
    pub fn seen(self: &Arc<Self>, node_id: &str) {
        let now = self.mono_ms();
        self.heartbeats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .seen(node_id, now);
        let state = self.state();
        if let Some(node) = state.nodes.get(node_id)
            && node.status.state != NodeState::Ready
        {
            // Not retried here: the node's next heartbeat asks again.
            let me = Arc::clone(self);
            let id = node_id.to_string();
            tokio::spawn(async move {
                let cmd = Command::SetNodeState {
                    id: id.clone(),
                    state: NodeState::Ready,
                    message: String::new(),
                    at: shoal_agent::worker::now(),
                };
                if let Err(e) = me.propose(cmd).await {
                    warn!(node = %id, "failed to mark node ready: {e}");
                }
            });
        }
    }

    /// Orchestrates, schedules and watches heartbeats while this node is the leader.
    ///
    /// Each pass looks only at what changed since the previous one (`changes::between`):
    /// the services whose spec or tasks changed, the allocator only when something waits
    /// for an address or one was freed, the scheduler only when something waits for a
    /// node. A full pass runs when nodes or networks change and after a failed proposal.
    /// What time alone decides (a restart delay that runs out) wakes the loop when it is
    /// due, for the services it concerns (`changes::Wakeups`).
    /// Leader only: takes out of the Raft group the voters the state no longer names as
    /// managers (`shoal_manager::membership`), so `node rm --force` of a dead manager and
    /// `leave --force` of a live one shrink the group whichever manager leads then.
    pub async fn run_membership_loop(self: Arc<Self>) {
        let mut state_rx = self.store.state();
        loop {
            tokio::select! {
                r = state_rx.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
            if !self.store.is_leader() {
                continue;
            }
            let state = state_rx.borrow_and_update().clone();
            let voters: Vec<u64> = self.store.members().into_iter().map(|(id, _)| id).collect();
            for id in shoal_manager::membership::stale_voters(&state, &voters, self.store.id()) {
                match self.store.remove_manager(id).await {
                    Ok(()) => info!(raft_id = id, "a removed manager is out of the raft group"),
                    Err(e) => warn!(
                        raft_id = id,
                        "failed to take a removed manager out of the raft group (retrying): {e}"
                    ),
                }
            }
        }
    }

    pub async fn run_leader_loop(self: Arc<Self>) {
        let mut state_rx = self.store.state();
        // Heartbeats are judged at every tick.
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut was_leader = false;
        let mut prev: Option<Arc<ClusterState>> = None;
        let mut wakeups = changes::Wakeups::default();
        let mut vip_waiters = changes::VipWaiters::default();
        loop {
            // At least 1 ms, so that a wall clock behind the due time does not spin.
            let wake = wakeups
                .next()
                .map(|at| Duration::from_millis(at.since(shoal_agent::worker::now()).max(1)));
            tokio::select! {
                _ = tick.tick() => {}
                r = state_rx.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(wake.unwrap_or_default()), if wake.is_some() => {}
            }
            if !self.store.is_leader() {
                was_leader = false;
                prev = None;
                wakeups.clear();
                continue;
            }
            let state = state_rx.borrow_and_update().clone();
            let now = self.mono_ms();
            let mut cmds = Vec::new();
            {
                let mut hb = self.heartbeats.lock().unwrap_or_else(|p| p.into_inner());
                if !was_leader {
                    info!("this manager is the leader");
                    hb.reset(&state, now);
                    was_leader = true;
                }
                let grace = state
                    .cluster
                    .as_ref()
                    .map_or(3000, |c| c.heartbeat_grace_ms());
                if let Some(id) = hb.expired(&state, now, grace, &self.node_id) {
                    info!(node = %id, grace_ms = grace, "node missed its heartbeats; marking it down");
                    self.metrics.heartbeats_missed(&id);
                    cmds.push(Command::SetNodeState {
                        id,
                        state: NodeState::Down,
                        message: "heartbeat failure".into(),
                        at: shoal_agent::worker::now(),
                    });
                }
            }
            let mut changed = match &prev {
                Some(p) if p.version <= state.version => changes::between(p, &state),
                _ => changes::Changes::everything(),
            };
            prev = Some(Arc::clone(&state));
            let wall = shoal_agent::worker::now();
            if !changed.all {
                changed.services.extend(wakeups.due(wall).cloned());
            }
            let pass = orchestrator::reconcile_pass(
                &state,
                wall,
                &mut shoal_types::new_id,
                changed.scope(),
            );
            wakeups.record(changed.scope(), pass.due);
            cmds.extend(pass.commands);
            // Allocation and scheduling read the state as it was; tasks created above are
            // allocated and placed on the next pass, a moment later.
            vip_waiters.update(&state, &changed);
            if changed.allocate() {
                // A freed address may be the one a service waits for as its VIP.
                let mut specs = changed.specs.clone();
                if changed.freed {
                    specs.extend(vip_waiters.ids().iter().cloned());
                }
                let scope = (!changed.all).then_some(&specs);
                cmds.extend(allocator::allocate_for(&state, wall, scope));
            }
            if changed.schedule() {
                let plan = scheduler::schedule(&state);
                if !plan.assignments.is_empty() {
                    cmds.push(Command::AssignTasks {
                        assignments: plan.assignments,
                        at: wall,
                    });
                }
                cmds.extend(allocator::task_errors(&state, plan.unplaced));
            }
            if cmds.is_empty() {
                continue;
            }
            debug!(count = cmds.len(), "proposing orchestration");
            if let Err(e) = self.propose(Command::Batch(cmds)).await {
                warn!("orchestration step failed: {e}");
                // Look at everything again next time: what this pass found is not done.
                prev = None;
                // Do not spin on a command the state keeps refusing; while no majority
                // answers, nothing will commit for a while.
                let pause = if e.is_retryable() { 1000 } else { 200 };
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        }
    }
}

pub enum Progress {
    Sent(u64),
    Unchanged(u64),
    Acked(u64),
    Disconnected,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The leader's answer to `Cluster.Propose`: how the command applied, and the index of its
/// log entry.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct ProposeReply {
    pub result: CommandResult,
    pub index: u64,
}

/// How long a follower waits to apply a write it forwarded before it answers anyway.
const FORWARDED_APPLY_WAIT: Duration = Duration::from_secs(5);

/// Sends a command to the leader's `Cluster.Propose`; the index it was committed at.
async fn forward(
    dialer: &shoal_rpc::Dialer,
    addr: &str,
    cmd: &Command,
) -> Result<u64, DaemonError> {
    let data = serde_json::to_vec(cmd).map_err(|e| DaemonError::Internal {
        what: "failed to encode the change",
        why: e.to_string(),
    })?;
    // Connected first: a failure to connect means nothing was sent.
    let channel = dialer
        .manager_connected(addr)
        .await
        .map_err(|e| DaemonError::Unreachable {
            addr: addr.to_string(),
            why: crate::errors::error_chain(&e),
        })?;
    let request = shoal_rpc::deadline::request(shoal_rpc::json(data), shoal_rpc::deadline::WRITE);
    let reply = ClusterClient::new(channel)
        .propose(request)
        .await
        .map_err(|s| match s.code() {
            // The leader answered: it cannot commit, and says why.
            tonic::Code::Unavailable if s.message().starts_with("quorum lost") => {
                DaemonError::NoQuorum(s.message().to_string())
            }
            // The leader refused the change itself (`Manager::refusal`).
            tonic::Code::FailedPrecondition => DaemonError::Conflict(s.message().to_string()),
            // It no longer leads (the handler refuses before proposing).
            tonic::Code::Unavailable if s.message() == NOT_LEADER => DaemonError::Unreachable {
                addr: addr.to_string(),
                why: "it no longer leads".into(),
            },
            _ if shoal_rpc::deadline::timed_out(&s) => DaemonError::Unknown(format!(
                "the change was sent to the leader at {addr} and no answer came within {}s",
                shoal_rpc::deadline::WRITE.as_secs()
            )),
            tonic::Code::Unavailable | tonic::Code::Unknown => DaemonError::Unknown(format!(
                "the connection to the leader at {addr} was lost before it answered ({})",
                crate::errors::source_chain(&s)
            )),
            _ => DaemonError::Unknown(format!(
                "the leader at {addr} failed the change: {}",
                s.message()
            )),
        })?;
    match serde_json::from_slice::<ProposeReply>(&reply.into_inner().data) {
        Ok(ProposeReply {
            result: CommandResult::Ok,
            index,
        }) => Ok(index),
        Ok(ProposeReply {
            result: CommandResult::Err(e),
            ..
        }) => Err(DaemonError::Refused(e)),
        Err(e) => Err(DaemonError::Internal {
            what: "the leader's reply does not parse",
            why: e.to_string(),
        }),
    }
}

/// What a manager that does not lead answers a call that needs the leader.
pub(crate) const NOT_LEADER: &str = "this manager is not the leader";
