//! A simulated agent: a node that joins with the join token and its own key and
//! certificate, then speaks the agent's side of the `Cluster` protocol to the leader as
//! `shoal_agent::session` does (a session stream of assignments, heartbeats on a connection
//! of their own, endpoint deltas folded into a view and acked, task statuses reported), but
//! runs nothing: a task it is told to run is reported Running at once, one told to stop is
//! reported Shutdown. What it does not simulate is the data plane (no namespaces, DNS or
//! forwarding entries), so the managers see a real node and the machine runs a thousand.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use shoal_pki::rustls::pki_types::CertificateDer;
use shoal_pki::{ClientCerts, ClusterCa, JoinToken, NodeKey, Trust};
use shoal_rpc::cluster_client::ClusterClient;
use shoal_rpc::{EndpointAck, HeartbeatRequest, JoinRequest, SessionRequest, StatusReport};
use shoal_types::endpoint::{EndpointDelta, EndpointView};
use shoal_types::time::Millis;
use shoal_types::{Task, TaskDelta, TaskState, TaskStatus};
use tonic::transport::Channel;

/// What every simulated agent shares with the bench: counters and what it watches.
#[derive(Default)]
pub struct Shared {
    /// Heartbeat period forced on every agent (ms; 0: the one the leader sends).
    pub beat_override_ms: AtomicU64,
    /// Heartbeats the leader answered.
    pub beats_ok: AtomicU64,
    /// Tasks first seen told to run, by service name.
    pub delivered: Mutex<HashMap<String, u64>>,
    /// Tasks assigned and told to run now, over every agent.
    pub live: AtomicI64,
    /// The service whose ready tasks on ingress each agent counts (`web`).
    pub watched: Mutex<String>,
    /// Why sessions ended, counted (a real agent logs these at debug).
    pub session_errors: Mutex<BTreeMap<String, u64>>,
    /// Messages of a session that did not parse or apply (must stay 0).
    pub protocol_errors: AtomicU64,
    pub stop: AtomicBool,
}

impl Shared {
    fn error(&self, what: String) {
        let mut e = self
            .session_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *e.entry(what).or_default() += 1;
    }
}

/// One node's figures, read by the bench.
pub struct Slot {
    pub node_id: String,
    /// Ready tasks of the watched service in the node's acked ingress view, and when the
    /// ack of the view that made it so returned.
    pub watched: Mutex<(usize, Instant)>,
    /// Nodes on ingress in the last acked view.
    pub ingress_nodes: AtomicU64,
    pub sessions: AtomicU64,
}

pub struct Agent {
    pub slot: Arc<Slot>,
    dialer: shoal_rpc::Dialer,
    managers: Vec<String>,
    shared: Arc<Shared>,
}

/// The underlay address of simulated node `i`: 198.18.0.0/15 is for benchmarks (RFC 2544)
/// and no lab uses it; only the managers' tables hold it (nothing dials it).
pub fn sim_addr(i: usize) -> Ipv4Addr {
    let i = i as u32 + 1;
    Ipv4Addr::new(198, 18 + (i >> 16) as u8, (i >> 8) as u8, i as u8)
}

impl Agent {
    /// Joins as a worker through `manager` with `token`: a key made here, its CSR signed by
    /// the leader, the certificate kept for every later call.
    pub async fn join(
        i: usize,
        token: &str,
        manager: &str,
        managers: Vec<String>,
        shared: Arc<Shared>,
    ) -> anyhow::Result<Agent> {
        let token = JoinToken::parse(token)?;
        let key = NodeKey::generate()?;
        let csr = key.csr()?;
        let channel = shoal_rpc::Dialer::Join(Arc::new(shoal_pki::join_client_config(&token)?))
            .manager(manager)?;
        let node_id = shoal_types::ids::new_id();
        let hostname = format!("sim{i}");
        let addr = sim_addr(i).to_string();
        let reply = ClusterClient::new(channel)
            .join(shoal_rpc::deadline::request(
                JoinRequest {
                    token: token.to_string(),
                    hostname: hostname.clone(),
                    cluster_addr: format!("{addr}:2377"),
                    addr,
                    node_id: node_id.clone(),
                    host_networks: Vec::new(),
                    csr,
                },
                Duration::from_secs(60),
            ))
            .await
            .map_err(|s| anyhow::anyhow!("join of {hostname} refused: {}", s.message()))?
            .into_inner();
        let creds = key.certify(CertificateDer::from(reply.certificate))?;
        let ca = ClusterCa::from_der(
            CertificateDer::from(reply.ca_certificate),
            "the manager's CA",
            SystemTime::now(),
        )?;
        let trust = Trust::from(ca);
        let tls = shoal_rpc::Tls::new(
            shoal_pki::server_config(&trust, &creds, ClientCerts::Required)?,
            shoal_pki::client_config(&trust, &creds)?,
        );
        Ok(Agent {
            slot: Arc::new(Slot {
                node_id,
                watched: Mutex::new((0, Instant::now())),
                ingress_nodes: AtomicU64::new(0),
                sessions: AtomicU64::new(0),
            }),
            dialer: shoal_rpc::Dialer::Member(tls),
            managers: if reply.managers.is_empty() {
                managers
            } else {
                reply.managers
            },
            shared,
        })
    }

    /// Follows the leader until the bench stops: a session, and another when it ends.
    pub async fn run(self) {
        let mut hint: Option<String> = None;
        let mut next = 0usize;
        let mut tasks = Tasks::default();
        while !self.shared.stop.load(Ordering::Relaxed) {
            let addr = hint.take().unwrap_or_else(|| {
                next = (next + 1) % self.managers.len();
                self.managers[next].clone()
            });
            if let Err(status) = self.session(&addr, &mut tasks).await {
                hint = shoal_rpc::leader_hint(&status).filter(|h| h != &addr);
                if hint.is_none() {
                    self.shared
                        .error(format!("{:?}: {}", status.code(), status.message()));
                }
                // Jittered, as the real agent's reconnects.
                let ms = 100 + rand::random::<u64>() % 400;
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        }
    }

    async fn session(&self, addr: &str, tasks: &mut Tasks) -> Result<(), tonic::Status> {
        let channel = self
            .dialer
            .manager(addr)
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        // The real agent's client: tonic's default 4 MiB limit on a message it receives.
        let mut client = ClusterClient::new(channel);
        let resources = shoal_types::node::Resources {
            nano_cpus: 2_000_000_000,
            memory_bytes: 8 << 30,
        };
        let mut stream = client
            .session(SessionRequest {
                node_id: self.slot.node_id.clone(),
                data_plane: Vec::new(),
                host_networks: Vec::new(),
                resources: serde_json::to_vec(&resources).unwrap_or_default(),
            })
            .await?
            .into_inner();
        self.slot.sessions.fetch_add(1, Ordering::Relaxed);
        let period = Arc::new(AtomicU64::new(5000));
        let beat = tokio::spawn(beat_loop(
            self.dialer.clone(),
            addr.to_string(),
            self.slot.node_id.clone(),
            Arc::clone(&period),
            Arc::clone(&self.shared),
        ));
        let _stop_beating = AbortOnDrop(beat);
        // Each session starts from an empty view and a whole task list, as the agent's.
        let mut view = EndpointView::default();
        tasks.restart();
        loop {
            if self.shared.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let Some(a) = stream.message().await? else {
                return Err(tonic::Status::unavailable("session closed by the manager"));
            };
            if a.heartbeat_period_ms > 0 {
                period.store(a.heartbeat_period_ms, Ordering::Relaxed);
            }
            if !a.endpoints.is_empty() {
                let delta: EndpointDelta = serde_json::from_slice(&a.endpoints)
                    .map_err(|e| self.protocol(format!("endpoint delta does not parse: {e}")))?;
                view.apply(&delta).map_err(|e| self.protocol(e))?;
                ack(&mut client, &self.slot.node_id, view.version).await?;
                self.acked(&view);
            }
            if !a.tasks.is_empty() {
                let list: Vec<Task> = serde_json::from_slice(&a.tasks)
                    .map_err(|e| self.protocol(format!("task list does not parse: {e}")))?;
                tasks.replace(list, &self.shared);
            }
            if !a.tasks_delta.is_empty() {
                let d: TaskDelta = serde_json::from_slice(&a.tasks_delta)
                    .map_err(|e| self.protocol(format!("task delta does not parse: {e}")))?;
                tasks.change(d, &self.shared);
            }
            let reports = tasks.reports();
            // A report carries at most 10,000 statuses (the manager's cap).
            for chunk in reports.chunks(10_000) {
                report(&mut client, &self.slot.node_id, chunk).await?;
            }
            tasks.reported(reports);
        }
    }

    fn protocol(&self, what: String) -> tonic::Status {
        self.shared.protocol_errors.fetch_add(1, Ordering::Relaxed);
        tonic::Status::data_loss(what)
    }

    /// Records what the acked view says of the watched service and of ingress.
    fn acked(&self, view: &EndpointView) {
        let watched = self
            .shared
            .watched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(ingress) = view.networks.values().find(|n| n.info.ingress) else {
            return;
        };
        self.slot
            .ingress_nodes
            .store(ingress.nodes.len() as u64, Ordering::Relaxed);
        let service = ingress
            .services
            .values()
            .find(|s| s.name == watched)
            .map(|s| s.id.clone());
        let ready = service.map_or(0, |id| {
            ingress
                .tasks
                .values()
                .filter(|t| t.service_id == id && t.ready)
                .count()
        });
        let mut w = self.slot.watched.lock().unwrap_or_else(|p| p.into_inner());
        if w.0 != ready {
            *w = (ready, Instant::now());
        }
    }
}

/// Ends the heartbeat task with the session, however the session ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Heartbeats on a connection of their own, as the real agent's heartbeat thread.
async fn beat_loop(
    dialer: shoal_rpc::Dialer,
    addr: String,
    node_id: String,
    told: Arc<AtomicU64>,
    shared: Arc<Shared>,
) {
    let Ok(channel) = dialer.manager(&addr) else {
        return;
    };
    let mut client = ClusterClient::new(channel);
    // Spread over the period: a thousand agents do not beat in step.
    let first = rand::random::<u64>() % told.load(Ordering::Relaxed).max(1);
    tokio::time::sleep(Duration::from_millis(first)).await;
    loop {
        let forced = shared.beat_override_ms.load(Ordering::Relaxed);
        let period = Duration::from_millis(if forced > 0 {
            forced
        } else {
            told.load(Ordering::Relaxed)
        });
        let call = client.heartbeat(shoal_rpc::deadline::request(
            HeartbeatRequest {
                node_id: node_id.clone(),
            },
            period.max(Duration::from_secs(1)),
        ));
        if call.await.is_ok() {
            shared.beats_ok.fetch_add(1, Ordering::Relaxed);
        }
        tokio::time::sleep(period).await;
    }
}

async fn ack(
    client: &mut ClusterClient<Channel>,
    node_id: &str,
    version: u64,
) -> Result<(), tonic::Status> {
    // More than 4 calls of a kind in flight are refused; one at a time never is, but a
    // refusal is retried rather than lost.
    for _ in 0..5 {
        match client
            .ack_endpoints(shoal_rpc::deadline::request(
                EndpointAck {
                    node_id: node_id.to_string(),
                    version,
                    error: String::new(),
                },
                shoal_rpc::deadline::QUICK,
            ))
            .await
        {
            Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            r => return r.map(|_| ()),
        }
    }
    Err(tonic::Status::resource_exhausted("ack refused 5 times"))
}

async fn report(
    client: &mut ClusterClient<Channel>,
    node_id: &str,
    updates: &[(String, TaskStatus)],
) -> Result<(), tonic::Status> {
    let data = serde_json::to_vec(&updates).map_err(|e| tonic::Status::internal(e.to_string()))?;
    client
        .report_status(shoal_rpc::deadline::request(
            StatusReport {
                node_id: node_id.to_string(),
                updates: data,
            },
            shoal_rpc::deadline::WRITE,
        ))
        .await
        .map(|_| ())
}

fn now() -> Millis {
    let d = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    Millis(d.as_millis() as u64)
}

/// The node's tasks as told, and what it reported of each.
#[derive(Default)]
struct Tasks {
    told: HashMap<String, Task>,
    /// What this node last reported of each task (kept across sessions, as the worker's).
    reported: HashMap<String, TaskState>,
    /// Tasks counted in `Shared::delivered` and `live`.
    counted: HashSet<String>,
    live: HashSet<String>,
}

impl Tasks {
    fn restart(&mut self) {
        self.told.clear();
    }

    fn replace(&mut self, list: Vec<Task>, shared: &Shared) {
        let ids: HashSet<String> = list.iter().map(|t| t.id.clone()).collect();
        let gone: Vec<String> = self.live.difference(&ids).cloned().collect();
        for id in gone {
            self.forget(&id, shared);
        }
        self.told.clear();
        for t in list {
            self.upsert(t, shared);
        }
    }

    fn change(&mut self, d: TaskDelta, shared: &Shared) {
        for id in d.remove {
            self.told.remove(&id);
            self.forget(&id, shared);
        }
        for t in d.upsert {
            self.upsert(t, shared);
        }
    }

    fn upsert(&mut self, t: Task, shared: &Shared) {
        let runs = t.desired_state <= TaskState::Running;
        if runs && self.counted.insert(t.id.clone()) {
            let mut d = shared.delivered.lock().unwrap_or_else(|p| p.into_inner());
            *d.entry(t.service_name.clone()).or_default() += 1;
        }
        if runs && self.live.insert(t.id.clone()) {
            shared.live.fetch_add(1, Ordering::Relaxed);
        } else if !runs {
            self.forget(&t.id, shared);
        }
        self.told.insert(t.id.clone(), t);
    }

    fn forget(&mut self, id: &str, shared: &Shared) {
        if self.live.remove(id) {
            shared.live.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// What the worker would report now: Running for a task told to run that it has not
    /// reported running, Shutdown for one told to stop that it reported running.
    fn reports(&self) -> Vec<(String, TaskStatus)> {
        let at = now();
        self.told
            .values()
            .filter_map(|t| {
                let said = self.reported.get(&t.id).copied().unwrap_or(t.status.state);
                let to = if t.desired_state <= TaskState::Running && said < TaskState::Running {
                    TaskState::Running
                } else if t.desired_state > TaskState::Running && !said.is_terminal() {
                    TaskState::Shutdown
                } else {
                    return None;
                };
                Some((t.id.clone(), TaskStatus::new(to, at, "simulated")))
            })
            .collect()
    }

    fn reported(&mut self, done: Vec<(String, TaskStatus)>) {
        for (id, st) in done {
            self.reported.insert(id, st.state);
        }
        // Forget what the manager no longer tells (deleted tasks).
        let told = &self.told;
        self.reported.retain(|id, _| told.contains_key(id));
    }
}
