//! The manager role at run time: proposes through Raft (forwarding to the leader), runs the
//! orchestrator and scheduler while this node leads, and serves the `Cluster` gRPC service
//! (joins, agent sessions, heartbeats, status reports).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_manager::clock::{Clock, Now};
use shoal_manager::dispatcher::{
    ChangeCache, ChangedByNode, ConvergenceStats, Dispatcher, ViewProgress,
};
use shoal_manager::{allocator, changes, orchestrator, scheduler};
use shoal_rpc::cluster_client::ClusterClient;
use shoal_store::{Store, StoreError};
use shoal_types::{ClusterState, Command, CommandResult, Task};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::errors::DaemonError;

pub struct Manager {
    /// The Raft store: private, so that what reads it and what writes through it is
    /// visible here (a read path must not write).
    store: Store,
    /// The leader's dispatcher (heartbeats, endpoint table and convergence, drains). One
    /// lock, taken briefly per call; the per-node work of sessions is done outside it.
    dispatcher: Mutex<Dispatcher>,
    /// Woken on every endpoint ack: sessions re-check the tasks they hold for draining.
    acked: tokio::sync::Notify,
    /// Where every time the manager's logic is given comes from.
    clock: Arc<dyn Clock>,
    /// The sealing key of registry logins (`--with-registry-auth`).
    pub logins: crate::registry::Logins,
    /// How this manager reaches the leader (TLS with its certificate).
    dialer: shoal_rpc::Dialer,
    /// The node's `/metrics` (proposal and convergence latency, heartbeats missed).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The cluster's events as this manager applies them (`shoal events`).
    pub events: crate::events::Feed,
    /// Agents' status reports, committed together (group commit).
    reports: crate::reports::Reports,
    /// The tasks changed between two states by node, walked once for every session.
    changes: Mutex<ChangeCache>,
    /// Whether this manager leads, as the leader loop last saw it (every 250 ms): sessions
    /// wait on it to end when leadership is lost, rather than each waking every second.
    leading: tokio::sync::watch::Sender<bool>,
}

pub use shoal_manager::endpoints::EndpointTable;

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
        clock: Arc<dyn Clock>,
    ) -> Arc<Manager> {
        Arc::new(Manager {
            reports: crate::reports::Reports::start(store.clone()),
            changes: Mutex::default(),
            leading: tokio::sync::watch::Sender::new(false),
            dialer,
            metrics,
            logins: crate::registry::Logins::new(data_dir),
            store,
            dispatcher: Mutex::new(Dispatcher::new(&node_id)),
            acked: tokio::sync::Notify::new(),
            events: Default::default(),
            clock,
        })
    }

    /// The time, as the manager's logic is given it.
    pub fn now(&self) -> Now {
        self.clock.now()
    }

    pub fn state(&self) -> Arc<ClusterState> {
        self.store.state().borrow().clone()
    }

    /// The state as it changes.
    pub fn watch_state(&self) -> tokio::sync::watch::Receiver<Arc<ClusterState>> {
        self.store.state()
    }

    pub fn is_leader(&self) -> bool {
        self.store.is_leader()
    }

    /// Changes when the leader loop sees this manager gain or lose the leadership.
    pub fn watch_leading(&self) -> tokio::sync::watch::Receiver<bool> {
        self.leading.subscribe()
    }

    /// The leader this manager knows of: its Raft id and cluster address.
    pub fn leader(&self) -> Option<(u64, String)> {
        self.store.leader()
    }

    pub fn is_voter(&self) -> bool {
        self.store.is_voter()
    }

    pub fn raft_id(&self) -> u64 {
        self.store.id()
    }

    /// Raft's figures now (term, indexes, leadership), for `/metrics`.
    pub fn raft_status(&self) -> crate::metrics::RaftStatus {
        crate::metrics::raft_status(&self.store)
    }

    /// Counts the leader changes this manager sees until the role stops.
    pub async fn count_leader_changes(self: Arc<Self>) {
        crate::metrics::count_leader_changes(self.store.clone(), Arc::clone(&self.metrics)).await
    }

    /// Each Raft voter, whether it leads and (on the leader) whether it answers.
    pub fn raft_members(&self) -> Vec<shoal_store::ManagerStatus> {
        self.store.manager_status()
    }

    /// Commits `cmd` on this manager, which must lead (the `Propose` handler, what agents
    /// report); the result and the index of its log entry.
    /// Commits one agent's task status updates here (leader only), in one entry with the
    /// other reports that arrive meanwhile.
    pub async fn report_status(&self, updates: Vec<Command>) -> Result<(), StoreError> {
        self.reports.commit(updates).await
    }

    pub async fn propose_here(&self, cmd: Command) -> Result<(CommandResult, u64), StoreError> {
        self.store.propose_indexed(cmd).await
    }

    /// Makes this manager's Raft a cluster of one (`init`).
    pub async fn initialize_raft(&self) -> Result<(), StoreError> {
        self.store.initialize().await
    }

    /// Adds a joined manager to the Raft group as a voter (leader only).
    pub async fn add_raft_voter(&self, raft_id: u64, addr: String) -> Result<(), StoreError> {
        self.store.add_manager(raft_id, addr).await
    }

    /// The Raft gRPC service, to mount on port 2377.
    pub fn raft_service(
        &self,
    ) -> shoal_rpc::raft_server::RaftServer<impl shoal_rpc::raft_server::Raft> {
        self.store.grpc_service()
    }

    /// Stops Raft (its files stay).
    pub async fn shutdown_raft(&self) -> Result<(), StoreError> {
        self.store.shutdown().await
    }

    /// Resolves with the reason once this manager's Raft has failed for good.
    pub async fn raft_failed(&self) -> String {
        self.store.failed().await
    }

    /// The endpoint table at `state`'s version (sessions; recorded as a change the first
    /// time a version changes it, for convergence).
    pub fn endpoint_table(&self, state: &Arc<ClusterState>) -> Arc<EndpointTable> {
        let now = self.now();
        self.dispatch(|d| d.table(state, now))
    }

    /// The tasks that changed from `old` to `new`, by node (sessions woken by one state
    /// change share the walk).
    pub fn changed_by_node(&self, old: &ClusterState, new: &ClusterState) -> Arc<ChangedByNode> {
        lock(&self.changes).between(old, new)
    }

    /// What a session did with its node's view.
    pub fn view_progress(&self, node: &str, state: &ClusterState, progress: ViewProgress) {
        let now = self.now();
        self.dispatch(|d| d.on_view(node, progress, state, now));
    }

    /// The live session of `node` ended.
    pub fn disconnected(&self, node: &str) {
        let (state, now) = (self.state(), self.now());
        self.dispatch(|d| d.on_disconnect(node, &state, now));
    }

    /// An agent applied its view up to `version`, or says what failed. What its node's
    /// status must say about it is proposed (tried once: by a retry, the node state it
    /// carries may be stale, and a node marked Down meanwhile would read Ready again).
    pub fn endpoints_acked(self: &Arc<Self>, node: &str, version: u64, error: &str) {
        let (state, now) = (self.state(), self.now());
        let report = self.dispatch(|d| d.on_ack(node, version, error, &state, now));
        if error.is_empty() {
            self.acked.notify_waiters();
        } else {
            warn!(%node, version, "endpoint table not applied: {error}");
        }
        if let Some(cmd) = report {
            let me = Arc::clone(self);
            tokio::spawn(async move {
                if let Err(e) = me.propose(cmd).await {
                    warn!("failed to record a node's endpoint apply: {e}");
                }
            });
        }
    }

    /// Resolves at the next successful endpoint ack.
    pub fn acked(&self) -> tokio::sync::futures::Notified<'_> {
        self.acked.notified()
    }

    /// Of `tasks` (a session's that may drain), the ids of those held running now.
    pub fn held_for_drain<'a>(
        &self,
        state: &ClusterState,
        tasks: impl IntoIterator<Item = &'a Task>,
    ) -> Vec<String> {
        let now = self.now();
        lock(&self.dispatcher).drain(state, tasks, now)
    }

    /// For each of `services`, (Ready nodes that have its last endpoint change, Ready
    /// nodes); (0, 0) on a manager that does not lead (only the leader follows sessions).
    /// Reads only.
    pub fn services_progress<'a>(
        &self,
        state: &ClusterState,
        services: impl IntoIterator<Item = &'a str>,
    ) -> Vec<(usize, usize)> {
        if !self.is_leader() {
            return services.into_iter().map(|_| (0, 0)).collect();
        }
        lock(&self.dispatcher).services_progress(state, services)
    }

    /// Runs `f` on the dispatcher, then records in the metrics the endpoint changes it saw
    /// reach every node.
    fn dispatch<R>(&self, f: impl FnOnce(&mut Dispatcher) -> R) -> R {
        let (r, settled) = {
            let mut d = lock(&self.dispatcher);
            let r = f(&mut d);
            (r, d.take_settled())
        };
        for took_ms in settled {
            self.metrics.endpoints_converged(took_ms);
        }
        r
    }

    /// The last endpoint changes that reached every Ready node, newest last (the leader's).
    pub fn recent_convergence(&self) -> Vec<shoal_manager::dispatcher::Settled> {
        lock(&self.dispatcher).recent()
    }

    /// Latency figures of endpoint propagation (the leader's).
    pub fn endpoint_stats(&self) -> ConvergenceStats {
        lock(&self.dispatcher).stats()
    }

    pub fn reset_endpoint_stats(&self) {
        lock(&self.dispatcher).reset_stats();
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
        let ids = demoted(cmd);
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
                Err(e) => commit_failure(e)?,
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
        let (state, now) = (self.state(), self.now());
        let ready = lock(&self.dispatcher).on_heartbeat(node_id, &state, now);
        if let Some(cmd) = ready {
            // Not retried here: the node's next heartbeat after this one ends asks again
            // (the dispatcher hands out one such proposal per node at a time).
            let me = Arc::clone(self);
            let id = node_id.to_string();
            tokio::spawn(async move {
                if let Err(e) = me.propose(cmd).await {
                    warn!(node = %id, "failed to mark node ready: {e}");
                }
                lock(&me.dispatcher).on_mark_ready_ended(&id, now);
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
                .map(|at| Duration::from_millis(at.since(self.now().wall).max(1)));
            tokio::select! {
                _ = tick.tick() => {}
                r = state_rx.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(wake.unwrap_or_default()), if wake.is_some() => {}
            }
            let leads = self.store.is_leader();
            self.leading
                .send_if_modified(|l| std::mem::replace(l, leads) != leads);
            if !leads {
                if was_leader {
                    lock(&self.dispatcher).on_follower();
                }
                was_leader = false;
                prev = None;
                wakeups.clear();
                continue;
            }
            let state = state_rx.borrow_and_update().clone();
            let now = self.now();
            let began = Instant::now();
            let mut cmds = Vec::new();
            if !was_leader {
                info!("this manager is the leader");
                was_leader = true;
            }
            if let Some(cmd) = self.dispatch(|d| d.on_state(&state, now)) {
                if let Command::SetNodeState { id, .. } = &cmd {
                    let grace_ms = Dispatcher::grace_ms(&state);
                    info!(node = %id, grace_ms, "node missed its heartbeats; marking it down");
                    self.metrics.heartbeats_missed(id);
                }
                cmds.push(cmd);
            }
            cmds.extend(self.dispatch(|d| d.apply_failures_cleared(&state, now)));
            let mut changed = match &prev {
                Some(p) if p.version <= state.version => changes::between(p, &state),
                _ => changes::Changes::everything(),
            };
            prev = Some(Arc::clone(&state));
            let wall = now.wall;
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
            // Allocation and scheduling read the state as the pass leaves it (30,000
            // replicas took a minute when each step was an entry of its own).
            let state = changed.with_pass(state, &pass.commands);
            cmds.extend(pass.commands);
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
            let decided = began.elapsed();
            let count = cmds.len();
            let result = self.propose(Command::Batch(cmds)).await;
            debug!(
                count,
                version = state.version,
                decide_ms = decided.as_millis() as u64,
                commit_ms = (began.elapsed() - decided).as_millis() as u64,
                "orchestration pass"
            );
            if let Err(e) = result {
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
        what: "failed to encode the change".into(),
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
        .map_err(|s| forward_error(addr, &s))?;
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
            what: "the leader's reply does not parse".into(),
            why: e.to_string(),
        }),
    }
}

/// The nodes a command demotes: their voters would leave the Raft group.
fn demoted(cmd: &Command) -> Vec<String> {
    let one = |c: &Command| match c {
        Command::SetNodeRole {
            id,
            role: shoal_types::NodeRole::Worker,
            ..
        } => Some(id.clone()),
        _ => None,
    };
    match cmd {
        Command::Batch(cmds) => cmds.iter().filter_map(one).collect(),
        c => one(c).into_iter().collect(),
    }
}

/// What a commit that failed on this manager means: the leader to forward it to (if one
/// is known), or why it failed.
fn commit_failure(e: StoreError) -> Result<Option<(u64, String)>, DaemonError> {
    match e {
        StoreError::NotLeader { leader } => Ok(leader),
        e @ StoreError::NoQuorum { .. } => Err(DaemonError::NoQuorum(e.to_string())),
        e => Err(crate::errors::internal("failed to commit the change", e)),
    }
}

/// What a forwarded write's failed call to the leader at `addr` means, and so whether it
/// may be sent again (`DaemonError::is_retryable`).
fn forward_error(addr: &str, s: &tonic::Status) -> DaemonError {
    match s.code() {
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
        _ if shoal_rpc::deadline::timed_out(s) => DaemonError::Unknown(format!(
            "the change was sent to the leader at {addr} and no answer came within {}s",
            shoal_rpc::deadline::WRITE.as_secs()
        )),
        tonic::Code::Unavailable | tonic::Code::Unknown => DaemonError::Unknown(format!(
            "the connection to the leader at {addr} was lost before it answered ({})",
            crate::errors::source_chain(s)
        )),
        _ => DaemonError::Unknown(format!(
            "the leader at {addr} failed the change: {}",
            s.message()
        )),
    }
}

/// What a manager that does not lead answers a call that needs the leader.
pub(crate) const NOT_LEADER: &str = "this manager is not the leader";

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_types::{Millis, NodeRole};

    const LEADER: &str = "10.0.0.1:2377";

    #[test]
    fn a_forwarded_write_is_sent_again_only_when_the_leader_did_not_take_it() {
        let lost = StoreError::NoQuorum {
            reachable: 1,
            voters: 3,
        };
        // As the leader's `Propose` handler answers it.
        let e = forward_error(LEADER, &tonic::Status::unavailable(lost.to_string()));
        assert!(matches!(e, DaemonError::NoQuorum(_)), "{e:?}");
        assert!(e.is_retryable());
        let e = forward_error(LEADER, &tonic::Status::unavailable(NOT_LEADER));
        assert_eq!(
            e.to_string(),
            "cannot reach the leader at 10.0.0.1:2377: it no longer leads"
        );
        assert!(e.is_retryable());
        // Refused by the leader: asking again gets the same answer.
        let e = forward_error(
            LEADER,
            &tonic::Status::failed_precondition("it would lose the quorum"),
        );
        assert!(matches!(e, DaemonError::Conflict(_)) && !e.is_retryable());
        // Sent and unanswered: it may have applied, so it is not sent again.
        let e = forward_error(LEADER, &tonic::Status::deadline_exceeded("Timeout expired"));
        assert_eq!(
            e.to_string(),
            "the change was sent to the leader at 10.0.0.1:2377 and no answer came within 20s; the change may still be applied, so check before trying again"
        );
        assert!(!e.is_retryable());
        let e = forward_error(LEADER, &tonic::Status::unavailable("connection reset"));
        assert!(matches!(e, DaemonError::Unknown(_)) && !e.is_retryable());
    }

    #[test]
    fn a_commit_that_failed_here_says_where_to_forward_or_why() {
        let leader = Some((7, LEADER.to_string()));
        assert_eq!(
            commit_failure(StoreError::NotLeader {
                leader: leader.clone()
            })
            .unwrap(),
            leader
        );
        assert_eq!(
            commit_failure(StoreError::NotLeader { leader: None }).unwrap(),
            None,
            "no leader known: wait for one"
        );
        let e = commit_failure(StoreError::NoQuorum {
            reachable: 1,
            voters: 3,
        })
        .unwrap_err();
        assert!(e.is_retryable());
        assert!(e.to_string().starts_with("quorum lost: 1 of 3 managers"));
        let e = commit_failure(StoreError::Stopped("disk full".into())).unwrap_err();
        assert!(!e.is_retryable());
        assert!(
            e.to_string().starts_with(
                "failed to commit the change: this manager's raft has stopped: disk full"
            ),
            "{e}"
        );
    }

    #[test]
    fn demotions_are_found_alone_or_in_a_batch() {
        let demote = |id: &str, role| Command::SetNodeRole {
            id: id.into(),
            role,
            at: Millis(0),
        };
        assert_eq!(demoted(&demote("n2", NodeRole::Worker)), ["n2"]);
        assert!(demoted(&demote("n2", NodeRole::Manager)).is_empty());
        let batch = Command::Batch(vec![
            demote("n2", NodeRole::Worker),
            demote("n3", NodeRole::Manager),
            demote("n4", NodeRole::Worker),
        ]);
        assert_eq!(demoted(&batch), ["n2", "n4"]);
    }
}
