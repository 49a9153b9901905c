//! The agent's session with the managers: follow the leader, take assignments, send
//! heartbeats and status reports. Reconnects (to the next manager, or the leader it was
//! pointed to) until the daemon stops.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use futures::FutureExt;
use shoal_rpc::cluster_client::ClusterClient;
use shoal_rpc::{EndpointAck, HeartbeatRequest, SessionRequest, StatusReport};
use shoal_types::endpoint::{EndpointDelta, EndpointView};
use shoal_types::{Task, TaskDelta, TaskStatus};
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tracing::{debug, info, warn};

use crate::worker::{Report, Worker};

/// Managers to try, shared with the daemon (which persists it for restarts).
pub type Managers = Arc<RwLock<Vec<String>>>;

pub struct Session {
    pub node_id: String,
    pub managers: Managers,
    pub worker: Arc<Worker>,
    /// Reported at every session start, for `node inspect`.
    pub data_plane: Option<shoal_types::node::DataPlane>,
    /// TLS with the node's certificate.
    pub dialer: shoal_rpc::Dialer,
    /// Told the root CAs the cluster trusts (`Assignments.ca`). A worker follows them; a
    /// manager has them from its own Raft state and passes `None`.
    pub on_ca: Option<Arc<dyn Fn(shoal_types::state::CaTrust) + Send + Sync>>,
    /// Told the node's role as the cluster decided it (`Assignments.role`: `node promote`,
    /// `node demote`); the daemon switches to it.
    pub on_role: Option<Arc<dyn Fn(shoal_types::NodeRole) + Send + Sync>>,
}

/// How often an agent that knows no manager looks at its list again.
const RETRY: Duration = Duration::from_millis(300);

/// How long the agent waits before applying a table that failed again.
const APPLY_RETRY: Duration = Duration::from_secs(2);

impl Session {
    /// Applies `view` and tells the manager: an ack when all of it applied, else what
    /// failed (not counted as synced); returns when to try again, if it failed.
    async fn apply_and_ack(
        &self,
        client: &mut ClusterClient<Channel>,
        view: &EndpointView,
    ) -> Result<Option<tokio::time::Instant>, tonic::Status> {
        let failed = self.worker.apply_endpoints(Arc::new(view.clone())).await;
        if !failed.is_empty() {
            warn!(
                version = view.version,
                "the endpoint table did not apply whole; trying again in {APPLY_RETRY:?}"
            );
        }
        client
            .ack_endpoints(shoal_rpc::deadline::request(
                EndpointAck {
                    node_id: self.node_id.clone(),
                    version: view.version,
                    error: failed.join("; "),
                },
                shoal_rpc::deadline::QUICK,
            ))
            .await?;
        Ok((!failed.is_empty()).then(|| tokio::time::Instant::now() + APPLY_RETRY))
    }

    /// Runs until the process ends. Reports queue up while no manager is reachable.
    pub async fn run(self, mut reports: mpsc::UnboundedReceiver<Report>) {
        let beat = match Heartbeat::start(self.node_id.clone(), self.dialer.clone()) {
            Ok(b) => b,
            Err(e) => {
                warn!("failed to start the heartbeat thread: {e}");
                return;
            }
        };
        let mut pending: BTreeMap<String, TaskStatus> = BTreeMap::new();
        let mut next = 0usize;
        let mut hint: Option<String> = None;
        // Tries in a row that opened no session: the wait before the next grows with them.
        let mut failures = 0u32;
        // The last certificate refusal warned about (not repeated at every retry).
        let mut warned: Option<String> = None;
        // The manager whose session or connection just failed without a word about the
        // leader: likely the dead leader, which the others may still name for a moment.
        let mut gone: Option<String> = None;
        loop {
            let addr = match hint.take().filter(|h| gone.as_ref() != Some(h)) {
                Some(a) => a,
                None => {
                    let list = self.managers.read().map(|m| m.clone()).unwrap_or_default();
                    if list.is_empty() {
                        tokio::time::sleep(RETRY).await;
                        continue;
                    }
                    next = (next + 1) % list.len();
                    if list.len() > 1 && gone.as_ref() == Some(&list[next]) {
                        next = (next + 1) % list.len();
                    }
                    list[next].clone()
                }
            };
            match self
                .connected(&addr, &mut reports, &mut pending, &beat, &mut failures)
                .await
            {
                Ok(()) => warned = None,
                Err(status) => {
                    hint = shoal_rpc::leader_hint(&status).filter(|h| h != &addr);
                    // Skipped once, not for good: it may be back by the next round.
                    gone = match (&hint, status.code()) {
                        (None, tonic::Code::Unavailable | tonic::Code::Unknown) => {
                            Some(addr.clone())
                        }
                        _ => None,
                    };
                    debug!(manager = %addr, "session ended: {}", status.message());
                    if let Some(why) = certificate_refusal(&status)
                        && warned.as_ref() != Some(&why)
                    {
                        warn!(manager = %addr, "cannot open a session: the TLS handshake failed ({why}); if the cluster's root CA was rotated while this node was down, its certificate is no longer accepted: run `shoal leave --force` here and join again with a current token");
                        warned = Some(why);
                    }
                }
            }
            // Jittered, hint or not: the agents that lost the same leader spread out. A
            // manager that answered and named the leader is followed after the first,
            // shortest window, however many tries failed before: the window grown while
            // no leader was elected (up to 5 s) kept workers from a new leader for 1-8 s
            // after it existed (bench/failover).
            let rounds = if hint.is_some() { 0 } else { failures };
            let wait = crate::backoff::delay(rounds, rand::random::<f64>());
            failures = failures.saturating_add(1);
            tokio::time::sleep(wait).await;
        }
    }

    async fn connected(
        &self,
        addr: &str,
        reports: &mut mpsc::UnboundedReceiver<Report>,
        pending: &mut BTreeMap<String, TaskStatus>,
        beat: &Arc<Heartbeat>,
        failures: &mut u32,
    ) -> Result<(), tonic::Status> {
        let channel = self
            .dialer
            .manager(addr)
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let mut client = ClusterClient::new(channel);
        let mut stream = client
            .session(SessionRequest {
                node_id: self.node_id.clone(),
                data_plane: self
                    .data_plane
                    .as_ref()
                    .and_then(|d| serde_json::to_vec(d).ok())
                    .unwrap_or_default(),
                // Read at each session: addresses and routes may have changed since the join.
                host_networks: serde_json::to_vec(&host_networks()).unwrap_or_default(),
                resources: serde_json::to_vec(&host_resources()).unwrap_or_default(),
            })
            .await?
            .into_inner();
        info!(manager = %addr, "session established");
        *failures = 0;
        beat.follow(Some(addr.to_string()));
        let _stop_beating = StopBeating(beat);
        // Each session starts from a full table (the manager's first delta is from 0) and
        // a full task list, then gets changes to both.
        let mut view = EndpointView::default();
        let mut assigned: BTreeMap<String, Task> = BTreeMap::new();
        let mut retry: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                msg = stream.message() => {
                    let Some(first) = msg? else { return Err(tonic::Status::unavailable("session closed by the manager")) };
                    // Coalesce: take every message that has already arrived. Deltas are
                    // folded into the in-memory view in order (cheap); the kernel and DNS
                    // then get only the newest view, once, and the newest task list.
                    let mut batch = vec![first];
                    while let Some(next) = stream.message().now_or_never() {
                        match next? {
                            Some(a) => batch.push(a),
                            None => break,
                        }
                    }
                    let coalesced = batch.len();
                    let mut endpoints_changed = false;
                    // A whole list in the batch: reconcile with it all; else the tasks changed.
                    let mut full = false;
                    let mut changed: BTreeSet<String> = BTreeSet::new();
                    for a in batch {
                        if !a.managers.is_empty() && let Ok(mut m) = self.managers.write() {
                            *m = a.managers.clone();
                        }
                        if a.heartbeat_period_ms > 0 {
                            beat.set_period(Duration::from_millis(a.heartbeat_period_ms));
                        }
                        if !a.endpoints.is_empty() {
                            let delta: EndpointDelta = serde_json::from_slice(&a.endpoints)
                                .map_err(|e| tonic::Status::data_loss(format!("endpoint delta does not parse: {e}")))?;
                            // A delta for another base version means we missed one: reconnect
                            // and start again from a full table.
                            view.apply(&delta).map_err(tonic::Status::data_loss)?;
                            endpoints_changed = true;
                        }
                        if !a.ca.is_empty() && let Some(on_ca) = &self.on_ca {
                            let trust = serde_json::from_slice(&a.ca)
                                .map_err(|e| tonic::Status::data_loss(format!("root CAs do not parse: {e}")))?;
                            on_ca(trust);
                        }
                        if !a.role.is_empty() && let Some(on_role) = &self.on_role {
                            let role = a.role.parse()
                                .map_err(|e: String| tonic::Status::data_loss(format!("role does not parse: {e}")))?;
                            on_role(role);
                        }
                        // Logins before the tasks that may pull with them; empty: unchanged.
                        if !a.registry_auth.is_empty() {
                            let logins = serde_json::from_slice(&a.registry_auth)
                                .map_err(|_| tonic::Status::data_loss("registry logins do not parse"))?;
                            self.worker.set_logins(logins);
                        }
                        // Empty: the task list is as in the last message that had one.
                        if !a.tasks.is_empty() {
                            let list: Vec<Task> = serde_json::from_slice(&a.tasks)
                                .map_err(|e| tonic::Status::data_loss(format!("task list does not parse: {e}")))?;
                            assigned = list.into_iter().map(|t| (t.id.clone(), t)).collect();
                            full = true;
                        }
                        if !a.tasks_delta.is_empty() {
                            let delta: TaskDelta = serde_json::from_slice(&a.tasks_delta)
                                .map_err(|e| tonic::Status::data_loss(format!("task delta does not parse: {e}")))?;
                            for t in delta.upsert {
                                changed.insert(t.id.clone());
                                assigned.insert(t.id.clone(), t);
                            }
                            for id in delta.remove {
                                assigned.remove(&id);
                                changed.insert(id);
                            }
                        }
                    }
                    if coalesced > 1 {
                        debug!(messages = coalesced, version = view.version, "applying coalesced assignments");
                    }
                    if endpoints_changed {
                        // Reports go on while the table applies (it may wait for the node's
                        // network lock, held by the cleanup of a task that ended): a task that
                        // died leaves the other nodes' paths without waiting for it.
                        let mut reporter = client.clone();
                        let apply = self.apply_and_ack(&mut client, &view);
                        tokio::pin!(apply);
                        retry = loop {
                            tokio::select! {
                                r = &mut apply => break r?,
                                Some((id, st)) = reports.recv() => {
                                    pending.insert(id, st);
                                    while let Ok((id, st)) = reports.try_recv() {
                                        pending.insert(id, st);
                                    }
                                    send_reports(&mut reporter, &self.node_id, pending).await?;
                                }
                            }
                        };
                    }
                    // Tasks after endpoints: a new task's networks are then known here.
                    if full {
                        self.worker.apply(assigned.values().cloned().collect());
                    } else if !changed.is_empty() {
                        self.worker.apply_changes(changed.iter().map(|id| (id.as_str(), assigned.get(id))));
                    }
                }
                // A table that did not apply whole is applied again until it does (the
                // manager counts the node as not synced meanwhile).
                _ = tokio::time::sleep_until(retry.unwrap_or_else(tokio::time::Instant::now)), if retry.is_some() => {
                    retry = self.apply_and_ack(&mut client, &view).await?;
                }
                Some((id, st)) = reports.recv() => {
                    pending.insert(id, st);
                    while let Ok((id, st)) = reports.try_recv() {
                        pending.insert(id, st);
                    }
                    send_reports(&mut client, &self.node_id, pending).await?;
                }
            }
            if !pending.is_empty() {
                send_reports(&mut client, &self.node_id, pending).await?;
            }
        }
    }
}

/// The TLS error of a session that failed on a certificate (this node's refused by the
/// manager, or the manager's not trusted here), from the status's sources.
fn certificate_refusal(status: &tonic::Status) -> Option<String> {
    let mut src = std::error::Error::source(status);
    while let Some(e) = src {
        let text = e.to_string();
        if text.contains("invalid peer certificate") || text.contains("received fatal alert") {
            return Some(text);
        }
        src = e.source();
    }
    None
}

/// What no overlay may cover on this node: its addresses, routes and resolvers.
/// This host's CPUs and memory, for the scheduler's reservations (zero where unknown).
pub fn host_resources() -> shoal_types::node::Resources {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get() as u64);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        .unwrap_or(0);
    shoal_types::node::Resources {
        nano_cpus: cpus * 1_000_000_000,
        memory_bytes: kib * 1024,
    }
}

pub fn host_networks() -> Vec<shoal_types::node::HostNetwork> {
    shoal_net::host::host_reserved()
        .into_iter()
        .map(|r| shoal_types::node::HostNetwork {
            net: r.net,
            what: r.what,
        })
        .collect()
}

/// Stops heartbeats to a manager when the session with it ends, however it ends.
struct StopBeating<'a>(&'a Heartbeat);

impl Drop for StopBeating<'_> {
    fn drop(&mut self) {
        self.0.follow(None);
    }
}

/// Heartbeats to the manager of the current session, sent from a thread of their own with
/// its own runtime and connection: however busy the agent's runtime is with data-plane work
/// (hundreds of sandboxes, a burst of changes), the node keeps saying it is alive, so the
/// leader does not mistake a busy node for a dead one and reschedule its tasks.
pub struct Heartbeat {
    node_id: String,
    target: Mutex<Option<String>>,
    period_ms: AtomicU64,
}

impl Heartbeat {
    /// Starts the heartbeat thread; it ends when the returned handle is dropped.
    pub fn start(node_id: String, dialer: shoal_rpc::Dialer) -> std::io::Result<Arc<Heartbeat>> {
        let beat = Arc::new(Heartbeat {
            node_id,
            target: Mutex::new(None),
            period_ms: AtomicU64::new(1000),
        });
        let weak = Arc::downgrade(&beat);
        std::thread::Builder::new()
            .name("shoal-heartbeat".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        warn!("failed to start the heartbeat runtime: {e}");
                        return;
                    }
                };
                rt.block_on(beat_loop(weak, dialer));
            })?;
        Ok(beat)
    }

    fn follow(&self, addr: Option<String>) {
        if let Ok(mut t) = self.target.lock() {
            *t = addr;
        }
    }

    fn set_period(&self, period: Duration) {
        self.period_ms
            .store(period.as_millis().max(1) as u64, Ordering::Relaxed);
    }
}

async fn beat_loop(beat: Weak<Heartbeat>, dialer: shoal_rpc::Dialer) {
    let mut client: Option<(String, ClusterClient<Channel>)> = None;
    loop {
        let (node_id, target, period) = {
            let Some(b) = beat.upgrade() else { return };
            let target = b.target.lock().ok().and_then(|t| t.clone());
            let period = Duration::from_millis(b.period_ms.load(Ordering::Relaxed));
            (b.node_id.clone(), target, period)
        };
        if let Some(addr) = target {
            if client.as_ref().is_none_or(|(a, _)| a != &addr) {
                client = dialer
                    .manager(&addr)
                    .ok()
                    .map(|c| (addr.clone(), ClusterClient::new(c)));
            }
            if let Some((_, c)) = client.as_mut() {
                // A reply later than a period is as good as none: the next beat is due.
                let call = c.heartbeat(shoal_rpc::deadline::request(
                    HeartbeatRequest { node_id },
                    period,
                ));
                match tokio::time::timeout(period, call).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(status)) => {
                        debug!(manager = %addr, "heartbeat refused: {}", status.message())
                    }
                    Err(_) => debug!(manager = %addr, "heartbeat timed out"),
                }
            }
        }
        tokio::time::sleep(period).await;
    }
}

/// Sends queued reports; keeps them queued if the manager cannot take them now.
async fn send_reports(
    client: &mut ClusterClient<Channel>,
    node_id: &str,
    pending: &mut BTreeMap<String, TaskStatus>,
) -> Result<(), tonic::Status> {
    let updates: Vec<(&String, &TaskStatus)> = pending.iter().collect();
    let data = serde_json::to_vec(&updates).map_err(|e| tonic::Status::internal(e.to_string()))?;
    client
        .report_status(shoal_rpc::deadline::request(
            StatusReport {
                node_id: node_id.to_string(),
                updates: data,
            },
            shoal_rpc::deadline::WRITE,
        ))
        .await?;
    pending.clear();
    Ok(())
}
