//! shoal's replicated manager state: openraft with its log and state machine on disk in redb.
//!
//! # Layout
//! - `log_store`: the Raft log, vote and committed pointer in redb (`raft.redb`).
//! - `state_machine`: [`ClusterState`] in memory, fed by committed commands; snapshots in redb.
//! - `network`: the Raft RPCs over the `shoal.v1.Raft` gRPC service, client and server.
//! - here: [`Store`], the handle the daemon holds.
//!
//! Architecture invariant: this crate knows Raft, redb and gRPC but nothing of what a command
//! means; `shoal_types::ClusterState::apply` decides that, the same way on every manager.
#![forbid(unsafe_code)]

mod log_store;
mod network;
mod state_machine;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use openraft::error::{ClientWriteError, Fatal, InitializeError, RaftError};
use openraft::{BasicNode, ChangeMembers, Config, RaftMetrics, ServerState, SnapshotPolicy};
use redb::Database;
use shoal_types::{ClusterState, Command, CommandResult};
use thiserror::Error;
use tokio::sync::watch;

use crate::log_store::LogStore;
use crate::network::{MAX_MESSAGE, NetworkFactory, Peers, RaftService};
use crate::state_machine::StateMachine;

/// A manager's Raft node id.
pub type RaftId = u64;

openraft::declare_raft_types!(
    /// openraft's types for shoal: the log carries [`Command`]s, applying one gives a
    /// [`CommandResult`], snapshots are JSON in memory.
    pub(crate) TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = RaftId,
        Node = BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

/// How long `add_manager` waits for a new manager to catch up before giving up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `initialize` waits for the new one-member cluster to elect this node.
const INIT_LEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `shutdown` waits for openraft's tasks to let go of the database file.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// How this manager reaches the others' Raft services (TLS with its certificate in a
    /// cluster; plain only in this crate's tests).
    pub dialer: shoal_rpc::Dialer,
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// Build a snapshot (and later purge the log before it) every this many applied entries.
    pub snapshot_every: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            dialer: shoal_rpc::Dialer::Plain,
            heartbeat_ms: 250,
            election_min_ms: 1000,
            election_max_ms: 2000,
            snapshot_every: 5000,
        }
    }
}

#[derive(Error, Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    #[error("{}", not_leader_message(.leader))]
    NotLeader { leader: Option<(RaftId, String)> },
    #[error("raft storage failed: {0}; check the data directory and its disk")]
    Storage(String),
    #[error("raft failed: {0}")]
    Raft(String),
    /// Raft stopped for good on this manager (its storage failed, or it panicked): nothing
    /// is committed through it any more.
    #[error(
        "this manager's raft has stopped: {0}; fix the cause (the data directory's disk) and restart shoald"
    )]
    Stopped(String),
    #[error("invalid raft settings: {0}")]
    Config(String),
    /// A membership change was refused (one already in progress, unknown node, ...).
    #[error("membership change refused: {0}")]
    Membership(String),
    #[error("timed out: {0}")]
    Timeout(String),
    /// The leader does not hear from a majority of the voters: a write could not commit.
    #[error(
        "quorum lost: {reachable} of {voters} managers are reachable and a change needs {}; changes are refused until enough managers are back (reads still answer)",
        .voters / 2 + 1
    )]
    NoQuorum { reachable: usize, voters: usize },
}

fn not_leader_message(leader: &Option<(RaftId, String)>) -> String {
    match leader {
        Some((id, addr)) => format!("this manager is not the leader; send the request to manager {id} at {addr}"),
        None => "no manager is the leader right now (election in progress or quorum lost); retry in a few seconds"
            .to_string(),
    }
}

impl StoreError {
    /// Whether trying again later (or at the leader) can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::NotLeader { .. } | StoreError::Timeout(_) | StoreError::Membership(_)
        )
    }
}

/// Whether a manager is a voter and, as seen from the leader, answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagerStatus {
    pub id: RaftId,
    pub addr: String,
    pub leader: bool,
    /// `None` unless this node is the leader (only the leader talks to every voter).
    pub reachable: Option<bool>,
}

/// The handle to this manager's Raft node. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    id: RaftId,
    /// This node's cluster address; written into the membership by `initialize`.
    addr: String,
    raft: openraft::Raft<TypeConfig>,
    state: watch::Receiver<Arc<ClusterState>>,
    /// Raft state was on disk when opened.
    had_state: bool,
    peers: Arc<Peers>,
    /// How recently a peer must have answered the leader to count as reachable.
    reachable_window: Duration,
    /// Only openraft's tasks hold the database; `shutdown` waits for this to die so that the
    /// file can be opened again at once.
    db: Weak<Database>,
    /// The threads openraft's tasks run on; dropped after `raft` (fields drop in order).
    _runtime: RaftRuntime,
}

/// The runtime of openraft's tasks: two threads, so that a state machine apply or a log
/// write in one does not hold up heartbeats in the other.
struct RaftRuntime(Option<tokio::runtime::Runtime>);

impl RaftRuntime {
    fn new() -> Result<RaftRuntime, StoreError> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("raft")
            .enable_all()
            .build()
            .map(|rt| RaftRuntime(Some(rt)))
            .map_err(|e| StoreError::Raft(format!("failed to start raft's threads: {e}")))
    }

    fn spawn<F>(&self, f: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.0 {
            Some(rt) => rt.spawn(f),
            None => unreachable!("the runtime is taken only on drop"),
        }
    }
}

impl Drop for RaftRuntime {
    fn drop(&mut self) {
        // Dropped from async code (a store shut down by the daemon): a runtime may not
        // block there, so its threads are told to stop and left to do so.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl Store {
    /// Opens (or creates) `<data_dir>/raft.redb` and starts openraft as node `id`, reachable
    /// by the other managers at `addr` (`ip:port` of this node's gRPC server).
    pub async fn open(
        data_dir: &Path,
        id: RaftId,
        addr: String,
        config: StoreConfig,
    ) -> Result<Store, StoreError> {
        let raft_config = raft_config(&config)?;
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::Storage(format!("failed to create {}: {e}", data_dir.display()))
        })?;
        let path = data_dir.join("raft.redb");
        let shown = path.display().to_string();
        let db = tokio::task::spawn_blocking(move || open_db(&path, true))
            .await
            .map_err(|e| StoreError::Storage(e.to_string()))?
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Storage(format!(
                    "{shown} is already open; is another shoald using this data directory?"
                )),
                e => StoreError::Storage(format!("failed to open {shown}: {e}")),
            })?;
        let db = Arc::new(db);
        let weak = Arc::downgrade(&db);

        let log = LogStore::new(db.clone()).map_err(storage)?;
        let (sm, state) = StateMachine::open(db.clone()).map_err(storage)?;
        let had_state = log.has_state().map_err(storage)?
            || StateMachine::has_snapshot(&db).map_err(storage)?;
        drop(db);
        let peers = Arc::new(Peers::default());
        let network = NetworkFactory {
            id,
            peers: peers.clone(),
            dialer: config.dialer.clone(),
        };
        // openraft's tasks (core, replication, state machine, the peers' connections) run
        // on threads of their own: on a busy leader (a thousand agents' sessions) they
        // waited in the daemon's run queue behind every session, AppendEntries and
        // heartbeats missed openraft's deadline (one heartbeat interval), and the followers
        // held elections (bench/control-plane). The kernel schedules these threads as soon
        // as they wake instead.
        let runtime = RaftRuntime::new()?;
        let raft =
            runtime
                .spawn(async move {
                    openraft::Raft::new(id, Arc::new(raft_config), network, log, sm).await
                })
                .await
                .map_err(|e| StoreError::Raft(format!("failed to start raft: {e}")))?
                .map_err(|e| StoreError::Raft(format!("failed to start raft: {e}")))?;
        tracing::info!(raft_id = id, %addr, had_state, "raft store open");
        let reachable_window =
            Duration::from_millis((3 * config.heartbeat_ms).max(config.election_max_ms));
        let inner = Inner {
            id,
            addr,
            raft,
            _runtime: runtime,
            state,
            had_state,
            peers,
            reachable_window,
            db: weak,
        };
        Ok(Store {
            inner: Arc::new(inner),
        })
    }

    /// First manager only: makes a one-member cluster of this node and waits until it leads.
    /// Does nothing if this node already has a membership (on disk or from a leader).
    pub async fn initialize(&self) -> Result<(), StoreError> {
        let (id, raft) = (self.inner.id, &self.inner.raft);
        let members = BTreeMap::from([(
            id,
            BasicNode {
                addr: self.inner.addr.clone(),
            },
        )]);
        match raft.initialize(members).await {
            Ok(()) => {}
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => return Ok(()),
            Err(e) => {
                return Err(StoreError::Raft(format!(
                    "failed to initialise the raft group: {e}"
                )));
            }
        }
        raft.wait(Some(INIT_LEADER_TIMEOUT))
            .current_leader(id, "this node leads the new cluster")
            .await
            .map_err(|e| {
                StoreError::Timeout(format!(
                    "the new one-manager cluster elected no leader: {e}"
                ))
            })?;
        Ok(())
    }

    /// `init --force-new-cluster` (Swarm's recovery after the majority of managers is lost),
    /// on the Raft files in `data_dir` while no store has them open: this manager (`id`,
    /// reachable at `addr`) keeps every entry it has and becomes the only voter, and
    /// `commands` are appended after the new membership (so they apply once the log is
    /// committed, with nothing in between). Open the store again afterwards: it leads at once.
    pub async fn force_new_cluster(
        data_dir: &Path,
        id: RaftId,
        addr: String,
        commands: Vec<Command>,
    ) -> Result<(), StoreError> {
        let path = data_dir.join("raft.redb");
        if !path.exists() {
            return Err(StoreError::Storage(format!(
                "{} does not exist: this node has no raft state to start a new cluster from",
                path.display()
            )));
        }
        let shown = path.display().to_string();
        let forced = tokio::task::spawn_blocking(move || {
            let db = open_db(&path, false).map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Storage(format!(
                    "{shown} is still open; stop this manager's raft first"
                )),
                e => StoreError::Storage(format!("failed to open {shown}: {e}")),
            })?;
            LogStore::new(Arc::new(db))
                .map_err(storage)?
                .force_single_voter(id, addr, commands)
                .map_err(storage)
        })
        .await
        .map_err(|e| StoreError::Storage(e.to_string()))??;
        match forced {
            Some(log_id) => {
                tracing::warn!(raft_id = id, %log_id, "forced a new cluster: this manager is the only voter");
                Ok(())
            }
            None => Err(StoreError::Storage(
                "the raft log is empty: this node has no state to start a new cluster from".into(),
            )),
        }
    }

    /// Whether this store already had Raft state on disk when opened, or has some now.
    pub fn has_state(&self) -> bool {
        self.inner.had_state || self.inner.raft.metrics().borrow().last_log_index.is_some()
    }

    /// Appends `cmd` through Raft; returns its result once it is committed and applied here.
    pub async fn propose(&self, cmd: Command) -> Result<CommandResult, StoreError> {
        self.propose_indexed(cmd).await.map(|(result, _)| result)
    }

    /// Like [`Store::propose`], with the index of the log entry the command was committed
    /// at (a follower that forwarded a write waits for it: [`Store::wait_applied`]).
    pub async fn propose_indexed(&self, cmd: Command) -> Result<(CommandResult, u64), StoreError> {
        // A leader cut off from the majority would wait forever for the commit (openraft
        // 0.9's leader does not step down on its own): refuse at once, saying why.
        if let Some(why) = self.failure() {
            return Err(StoreError::Stopped(why));
        }
        if self.is_leader() {
            let (reachable, voters) = self.quorum();
            if reachable * 2 <= voters {
                return Err(StoreError::NoQuorum { reachable, voters });
            }
        }
        match self.inner.raft.client_write(cmd).await {
            Ok(resp) => Ok((resp.data, resp.log_id.index)),
            Err(e) => Err(self.write_error(e)),
        }
    }

    /// Waits until this manager has applied log entry `index`, at most `timeout`; false if
    /// it has not by then. A follower that forwarded a write to the leader waits for it
    /// before answering, so that the client's next read on this manager sees its write.
    pub async fn wait_applied(&self, index: u64, timeout: std::time::Duration) -> bool {
        self.inner
            .raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "a forwarded write")
            .await
            .is_ok()
    }

    /// The applied state. A new value is published after each applied batch of entries that
    /// changed it, and after a snapshot is installed.
    pub fn state(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.inner.state.clone()
    }

    /// openraft's metrics watch (term, log indexes, leader), for shoald's `/metrics`.
    pub fn raft_metrics(&self) -> watch::Receiver<RaftMetrics<RaftId, BasicNode>> {
        self.inner.raft.metrics()
    }

    pub fn is_leader(&self) -> bool {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        m.running_state.is_ok()
            && m.state == ServerState::Leader
            && m.current_leader == Some(self.inner.id)
    }

    /// Why Raft stopped on this manager for good (a storage error, a panic), if it did; a
    /// stop asked for (`shutdown`) is not a failure.
    pub fn failure(&self) -> Option<String> {
        failure_of(&self.inner.raft.metrics().borrow())
    }

    /// Returns once Raft has failed on this manager (see [`Store::failure`]), with why;
    /// never if it stops because it was asked to.
    pub async fn failed(&self) -> String {
        let mut m = self.inner.raft.metrics();
        loop {
            if let Some(why) = failure_of(&m.borrow_and_update()) {
                return why;
            }
            if matches!(m.borrow().running_state, Err(Fatal::Stopped)) || m.changed().await.is_err()
            {
                return std::future::pending().await;
            }
        }
    }

    /// The current leader's id and address, if one is known.
    pub fn leader(&self) -> Option<(RaftId, String)> {
        leader_of(&self.inner.raft.metrics().borrow())
    }

    /// Leader only: adds manager `id` at `addr` as a learner, waits until it has caught up,
    /// then makes it a voter.
    #[tracing::instrument(skip(self), fields(raft_id = self.inner.id))]
    pub async fn add_manager(&self, id: RaftId, addr: String) -> Result<(), StoreError> {
        let raft = &self.inner.raft;
        let resp = raft
            .add_learner(id, BasicNode { addr: addr.clone() }, false)
            .await
            .map_err(|e| self.write_error(e))?;
        let want = Some(resp.log_id);
        let caught_up = raft
            .wait(Some(CATCH_UP_TIMEOUT))
            .metrics(
                |m| {
                    m.state != ServerState::Leader
                        || m.replication
                            .as_ref()
                            .and_then(|r| r.get(&id).copied())
                            .flatten()
                            >= want
                },
                "new manager caught up",
            )
            .await;
        match caught_up {
            Ok(m) if m.state != ServerState::Leader => {
                return Err(StoreError::NotLeader {
                    leader: leader_of(&m),
                });
            }
            Ok(_) => {}
            Err(e) => {
                // Leave no learner behind that the leader would keep trying to reach.
                let gone = ChangeMembers::RemoveNodes(BTreeSet::from([id]));
                if let Err(e) = raft.change_membership(gone, false).await {
                    tracing::warn!(error = %e, "failed to drop the learner that did not catch up");
                }
                return Err(StoreError::Timeout(format!(
                    "manager {id} at {addr} did not catch up ({e}); check that it is running and reachable from this manager"
                )));
            }
        }
        raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(|e| self.write_error(e))?;
        tracing::info!(new_manager = id, %addr, "manager added to raft voters");
        Ok(())
    }

    /// Leader only: removes manager `id` from the voters (it keeps no role in the group).
    #[tracing::instrument(skip(self), fields(raft_id = self.inner.id))]
    pub async fn remove_manager(&self, id: RaftId) -> Result<(), StoreError> {
        self.inner
            .raft
            .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
            .await
            .map_err(|e| self.write_error(e))?;
        tracing::info!(removed_manager = id, "manager removed from raft voters");
        Ok(())
    }

    /// This manager's id in the Raft group.
    pub fn id(&self) -> RaftId {
        self.inner.id
    }

    /// How many voters this manager heard from lately (itself included), and how many there
    /// are. Only the leader talks to every voter; a follower hears from the others only as a
    /// candidate, so its count is a lower bound.
    pub fn quorum(&self) -> (usize, usize) {
        let members = self.members();
        let reachable = members.iter().filter(|(id, _)| self.answers(*id)).count();
        (reachable, members.len())
    }

    /// Whether voter `id` answered this manager lately (itself always does).
    fn answers(&self, id: RaftId) -> bool {
        id == self.inner.id
            || self
                .inner
                .peers
                .answered_within(id, self.inner.reachable_window)
    }

    /// Each voter and whether it answered this manager lately (only the leader's answer is
    /// complete: see [`Store::quorum`]).
    pub fn voters_reachable(&self) -> Vec<(RaftId, bool)> {
        self.members()
            .into_iter()
            .map(|(id, _)| (id, self.answers(id)))
            .collect()
    }

    /// Whether this manager votes in the membership the group is at or moving to (during a
    /// change that removes it, the joint configuration's newer half does not name it).
    pub fn is_voter(&self) -> bool {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        m.membership_config
            .membership()
            .get_joint_config()
            .last()
            .is_some_and(|c| c.contains(&self.inner.id))
    }

    /// The voters and their addresses, by id.
    pub fn members(&self) -> Vec<(RaftId, String)> {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        let membership = m.membership_config.membership();
        membership
            .voter_ids()
            .map(|id| {
                (
                    id,
                    membership
                        .get_node(&id)
                        .map(|n| n.addr.clone())
                        .unwrap_or_default(),
                )
            })
            .collect()
    }

    /// The voters with leader and reachability flags (for `node ls` MANAGER STATUS).
    pub fn manager_status(&self) -> Vec<ManagerStatus> {
        let leader = self.inner.raft.metrics().borrow().current_leader;
        let is_leader = self.is_leader();
        self.members()
            .into_iter()
            .map(|(id, addr)| ManagerStatus {
                id,
                addr,
                leader: leader == Some(id),
                reachable: is_leader.then(|| self.answers(id)),
            })
            .collect()
    }

    /// The gRPC service to mount on this node's server; it feeds the Raft RPCs into this node.
    pub fn grpc_service(
        &self,
    ) -> shoal_rpc::raft_server::RaftServer<impl shoal_rpc::raft_server::Raft> {
        shoal_rpc::raft_server::RaftServer::new(RaftService {
            raft: self.inner.raft.clone(),
            chunks: Default::default(),
        })
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
    }

    /// Stops Raft and waits until the database file is closed.
    pub async fn shutdown(&self) -> Result<(), StoreError> {
        self.inner
            .raft
            .shutdown()
            .await
            .map_err(|e| StoreError::Raft(format!("raft did not stop cleanly: {e}")))?;
        let deadline = tokio::time::Instant::now() + CLOSE_TIMEOUT;
        while self.inner.db.strong_count() > 0 {
            if tokio::time::Instant::now() >= deadline {
                return Err(StoreError::Timeout(
                    "raft stopped but still holds its database open".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    fn write_error(&self, e: RaftError<RaftId, ClientWriteError<RaftId, BasicNode>>) -> StoreError {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                let leader = match (f.leader_id, f.leader_node) {
                    (Some(id), Some(node)) => Some((id, node.addr)),
                    (Some(_), None) | (None, _) => self.leader(),
                };
                StoreError::NotLeader { leader }
            }
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                StoreError::Membership(e.to_string())
            }
            RaftError::Fatal(Fatal::Stopped) => StoreError::Raft("raft stopped".into()),
            RaftError::Fatal(e) => StoreError::Stopped(e.to_string()),
        }
    }
}

fn failure_of(m: &RaftMetrics<RaftId, BasicNode>) -> Option<String> {
    match &m.running_state {
        Ok(()) | Err(Fatal::Stopped) => None,
        Err(e) => Some(e.to_string()),
    }
}

/// Opens (or creates) the database file. The file stays locked for a moment after the last
/// handle of a store that was shut down is dropped (redb closes it on the thread that drops
/// it): a lock held by this process is waited out for `CLOSE_TIMEOUT`, so the manager role
/// can start again at once on the same files (`init --force-new-cluster`).
fn open_db(path: &Path, create: bool) -> Result<Database, redb::DatabaseError> {
    let deadline = std::time::Instant::now() + CLOSE_TIMEOUT;
    loop {
        let res = if create {
            Database::create(path)
        } else {
            Database::open(path)
        };
        match res {
            Err(redb::DatabaseError::DatabaseAlreadyOpen)
                if std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            res => return res,
        }
    }
}

fn leader_of(m: &RaftMetrics<RaftId, BasicNode>) -> Option<(RaftId, String)> {
    let id = m.current_leader?;
    let node = m.membership_config.membership().get_node(&id)?;
    Some((id, node.addr.clone()))
}

fn storage(e: openraft::StorageError<RaftId>) -> StoreError {
    StoreError::Storage(e.to_string())
}

fn raft_config(c: &StoreConfig) -> Result<Config, StoreError> {
    if c.snapshot_every == 0 {
        return Err(StoreError::Config(
            "snapshot_every must be at least 1".into(),
        ));
    }
    Config {
        cluster_name: "shoal".into(),
        heartbeat_interval: c.heartbeat_ms,
        election_timeout_min: c.election_min_ms,
        election_timeout_max: c.election_max_ms,
        install_snapshot_timeout: c.election_max_ms.max(1000),
        snapshot_policy: SnapshotPolicy::LogsSinceLast(c.snapshot_every),
        // Followers that lag by less than one snapshot interval catch up from the log.
        max_in_snapshot_log_to_keep: c.snapshot_every,
        // Snapshot bytes travel as a JSON array (up to 4 characters a byte).
        snapshot_max_chunk_size: 256 * 1024,
        ..Default::default()
    }
    .validate()
    .map_err(|e| {
        StoreError::Config(format!(
            "{e}; election_min_ms must exceed heartbeat_ms and be below election_max_ms"
        ))
    })
}
