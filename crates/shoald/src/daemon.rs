//! The daemon's roles and their lifecycle: inactive, worker, or manager; `init`, `join`,
//! `leave`, and resuming a role after a restart.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use shoal_agent::AgentConfig;
use shoal_agent::logs::AgentService;
use shoal_agent::session::{Managers, Session};
use shoal_agent::worker::Worker;
use shoal_pki::{JoinToken, NodeKey};
use shoal_rpc::cluster_client::ClusterClient;
use shoal_store::{Store, StoreConfig};
use shoal_types::node::{ManagerStatus, NodeDescription, NodeSpec, NodeStatus};
use shoal_types::{
    Availability, ClusterInfo, ClusterState, Command, Node, NodeRole, NodeState, ids,
};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::certs::NodeCerts;
use crate::errors::{DaemonError, internal, not_in_swarm};
use crate::gate::Gate;
use crate::identity::Identity;
use crate::manager::Manager;
use crate::networks;
use crate::role::{ManagerSlot, Switches};

/// Largest request a node accepts on 2377 outside Raft (which has its own, larger cap).
pub(crate) const MAX_RPC_MESSAGE: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Config {
    pub hostname: String,
    pub data_dir: PathBuf,
    pub listen_addr: SocketAddr,
    pub advertise_addr: Option<String>,
    pub heartbeat_period_ms: u64,
    pub heartbeat_grace: u32,
    pub extra_hosts: Option<PathBuf>,
    /// `--insecure-registry`: registries pulled from over plain HTTP.
    pub insecure_registries: Vec<String>,
    pub upstream: shoal_dns::Upstream,
    /// The node's VIP balancer, shared by every activation of the agent.
    pub vip_balancer: Arc<shoal_agent::vip::VipBalancer>,
    /// `--mesh-path`.
    pub mesh_path: shoal_agent::mesh::MeshPathChoice,
    /// `--dns-steering cpu`.
    pub dns_steer_by_cpu: bool,
    /// What `/metrics` serves (`--metrics-addr`), shared by every activation of the roles.
    pub metrics: Arc<crate::metrics::Metrics>,
}

pub struct Daemon {
    pub cfg: Config,
    /// Serialises init, join, leave and role changes.
    pub(crate) lifecycle: tokio::sync::Mutex<()>,
    pub role: RwLock<Option<Active>>,
    /// Where the daemon and its manager role read the time.
    pub clock: Arc<dyn shoal_manager::clock::Clock>,
}

/// A node that is part of a cluster.
#[derive(Clone)]
pub struct Active {
    pub identity: Identity,
    /// The node's certificate (and, on a manager, the root CA) and its TLS configurations.
    pub certs: Arc<NodeCerts>,
    pub manager: Option<Arc<Manager>>,
    pub worker: Arc<Worker>,
    pub managers: Managers,
    pub(crate) tasks: Arc<Vec<JoinHandle<()>>>,
    /// The manager role's own tasks (leader and membership loops, root CA rotation);
    /// stopped when the node is demoted.
    pub(crate) manager_tasks: Arc<Vec<JoinHandle<()>>>,
    /// Where the manager role plugs into port 2377 (`crate::role`).
    pub(crate) slot: ManagerSlot,
    pub(crate) switches: Switches,
    pub(crate) gate: Gate,
}

impl Daemon {
    pub fn new(cfg: Config) -> Arc<Daemon> {
        Arc::new(Daemon {
            cfg,
            lifecycle: tokio::sync::Mutex::new(()),
            role: RwLock::new(None),
            clock: crate::clock::SystemClock::shared(),
        })
    }

    pub fn active(&self) -> Option<Active> {
        self.role.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn active_or_err(&self) -> Result<Active, DaemonError> {
        self.active().ok_or_else(not_in_swarm)
    }

    pub(crate) fn raft_dir(&self) -> PathBuf {
        self.cfg.data_dir.join("raft")
    }

    /// The node's address as others see it: the request's, `--advertise-addr`, or the
    /// listen address; and its cluster address.
    fn advertise(&self, requested: Option<String>) -> Result<(String, String), DaemonError> {
        advertise(
            requested,
            self.cfg.advertise_addr.clone(),
            self.cfg.listen_addr,
        )
    }

    /// Resumes the role recorded in the data dir, if any (daemon start).
    pub async fn resume(self: &Arc<Self>) -> anyhow::Result<()> {
        let Some(identity) = Identity::load(&self.cfg.data_dir)? else {
            return Ok(());
        };
        info!(node = %identity.node_id, role = %identity.role, "resuming cluster membership");
        let certs = NodeCerts::load(&self.cfg.data_dir, identity.role).map_err(|e| {
            anyhow::anyhow!(
                "cannot load this node's certificates: {e}; if they are lost, run `shoal leave --force` here and join again"
            )
        })?;
        let manager = match identity.role {
            NodeRole::Manager => Some(
                self.open_manager(&identity, certs.dialer())
                    .await
                    .map_err(anyhow::Error::from)?,
            ),
            NodeRole::Worker => None,
        };
        self.activate(identity, manager, certs)
            .await
            .map_err(anyhow::Error::from)?;
        Ok(())
    }

    pub(crate) async fn open_manager(
        &self,
        identity: &Identity,
        dialer: shoal_rpc::Dialer,
    ) -> Result<Arc<Manager>, DaemonError> {
        let store = Store::open(
            &self.raft_dir(),
            ids::raft_id_of(&identity.node_id),
            identity.cluster_addr.clone(),
            StoreConfig {
                dialer: dialer.clone(),
                ..StoreConfig::default()
            },
        )
        .await
        .map_err(|e| internal("failed to open the raft store", e))?;
        Ok(Manager::new(
            store,
            identity.node_id.clone(),
            &self.cfg.data_dir,
            dialer,
            Arc::clone(&self.cfg.metrics),
            Arc::clone(&self.clock),
        ))
    }

    /// Starts the gRPC server, the agent and (for managers) the leader loop.
    async fn activate(
        self: &Arc<Self>,
        identity: Identity,
        manager: Option<Arc<Manager>>,
        certs: Arc<NodeCerts>,
    ) -> Result<(), DaemonError> {
        let vtep: std::net::Ipv4Addr = identity.addr.parse().map_err(|_| {
            DaemonError::Invalid(format!(
                "the node address {} is not an IPv4 address; VXLAN needs one",
                identity.addr
            ))
        })?;
        let (reports_tx, reports_rx) = tokio::sync::mpsc::unbounded_channel();
        let worker = Worker::new(
            AgentConfig {
                node_id: identity.node_id.clone(),
                run_dir: self.cfg.data_dir.join("tasks"),
                data_dir: self.cfg.data_dir.clone(),
                insecure_registries: self.cfg.insecure_registries.clone(),
                managers: identity.managers.clone(),
                extra_hosts: self.cfg.extra_hosts.clone(),
                vtep,
                upstream: self.cfg.upstream.clone(),
                vip_balancer: Arc::clone(&self.cfg.vip_balancer),
                mesh_path: self.cfg.mesh_path,
                dns_metrics: Arc::clone(&self.cfg.metrics.dns),
                dns_steer_by_cpu: self.cfg.dns_steer_by_cpu,
                metrics: Arc::clone(&self.cfg.metrics.agent),
            },
            reports_tx,
        );
        let managers: Managers = Arc::new(RwLock::new(identity.managers.clone()));
        let mut handles = Vec::new();

        let listener = tokio::net::TcpListener::bind(self.cfg.listen_addr)
            .await
            .map_err(|e| internal(format!("failed to listen on {}", self.cfg.listen_addr), e))?;
        let slot = ManagerSlot::default();
        let switches = Switches::default();
        let gate = Gate::new(identity.cluster_id.clone(), slot.clone());
        // Task logs go to managers only (the API that asks for them runs on a manager).
        let agent_svc = tonic::service::interceptor::InterceptedService::new(
            shoal_rpc::agent_server::AgentServer::new(AgentService {
                worker: Arc::clone(&worker),
            })
            .max_decoding_message_size(MAX_RPC_MESSAGE),
            gate.clone()
                .interceptor("TaskLogs", shoal_pki::Access::Manager),
        );
        // Every node mounts the manager role's services: they answer while it has the
        // role, which `node promote|demote` switches without a new listener.
        let router = shoal_rpc::transport::server_builder()
            .add_service(agent_svc)
            .add_service(switches.raft.clone())
            .add_service(switches.cluster.clone());
        let incoming = shoal_rpc::transport::incoming(listener, certs.tls());
        handles.push(tokio::spawn(async move {
            if let Err(e) = router.serve_with_incoming(incoming).await {
                warn!("cluster listener stopped: {e}");
            }
        }));
        let manager_tasks = match &manager {
            Some(m) => crate::promotion::start_manager_role(m, &certs, &gate, &slot, &switches),
            None => Vec::new(),
        };
        // A manager follows the root CAs in its Raft state, a worker what its session says.
        let on_ca: Option<Arc<dyn Fn(shoal_types::state::CaTrust) + Send + Sync>> = {
            let (certs, slot) = (Arc::clone(&certs), slot.clone());
            Some(Arc::new(move |t| {
                if slot.get().is_none()
                    && let Err(e) = certs.follow_session(&t)
                {
                    warn!("cannot follow the cluster's root CAs: {e}");
                }
            }))
        };
        // The role the cluster gives this node (`node promote|demote`): followed by a task
        // of its own, since switching takes a while and must not hold the session up.
        let (role_tx, role_rx) = tokio::sync::watch::channel(None);
        let on_role: Option<Arc<dyn Fn(NodeRole) + Send + Sync>> = Some(Arc::new(move |r| {
            role_tx.send_replace(Some(r));
        }));
        handles.push(tokio::spawn(crate::promotion::follow_role(
            Arc::clone(self),
            role_rx,
        )));
        let session = Session {
            node_id: identity.node_id.clone(),
            managers: Arc::clone(&managers),
            worker: Arc::clone(&worker),
            data_plane: Some(worker.data_plane()),
            dialer: certs.dialer(),
            on_ca,
            on_role,
        };
        handles.push(tokio::spawn(session.run(reports_rx)));
        handles.push(tokio::spawn(persist_managers(
            Arc::clone(self),
            Arc::clone(&managers),
        )));

        handles.push(tokio::spawn(crate::renewal::run(
            Arc::clone(&certs),
            Arc::clone(&managers),
        )));
        *self.role.write().unwrap_or_else(|p| p.into_inner()) = Some(Active {
            identity,
            certs,
            manager,
            worker,
            managers,
            tasks: Arc::new(handles),
            manager_tasks: Arc::new(manager_tasks),
            slot,
            switches,
            gate,
        });
        Ok(())
    }

    /// Makes this node the first manager of a new cluster, with its ingress network.
    /// Returns the notes the user should read (e.g. an ingress subnet chosen for them).
    pub async fn init(
        self: &Arc<Self>,
        req: shoal_api::InitRequest,
    ) -> Result<(Active, Vec<String>), DaemonError> {
        let shoal_api::InitRequest {
            advertise_addr: advertise,
            heartbeat_period_ms: heartbeat_ms,
            heartbeat_grace,
            ingress_subnet,
            cert_expiry_ms,
            ca_cert,
            ca_key,
            ..
        } = req;
        let _guard = self.lifecycle.lock().await;
        if self.active().is_some() {
            return Err(DaemonError::Conflict(
                "this node is already part of a swarm; run `shoal leave` first".into(),
            ));
        }
        // A given root CA (`--ca-cert`/`--ca-key`) is checked before anything is made.
        let given_ca = match (ca_cert, ca_key) {
            (Some(cert), Some(key)) => Some(
                shoal_pki::RootCa::import(
                    cert.as_bytes(),
                    "--ca-cert",
                    key.as_bytes(),
                    "--ca-key",
                    std::time::SystemTime::now(),
                )
                .map_err(|e| DaemonError::Invalid(e.to_string()))?,
            ),
            (None, None) => None,
            _ => {
                return Err(DaemonError::Invalid(
                    "--ca-cert and --ca-key go together: give both (the root CA's certificate and its key) or neither".into(),
                ));
            }
        };
        let (addr, cluster_addr) = self.advertise(advertise)?;
        let reserved = networks::host_reserved();
        let (ingress, note) = networks::ingress_subnet(ingress_subnet.as_deref(), &reserved)?;
        // Check the ingress network before anything is created: a bad --ingress-subnet
        // must leave this node as it was.
        let ingress_req = networks::NetworkRequest {
            name: "ingress",
            subnet: Some(&ingress),
            ingress: true,
            ..Default::default()
        };
        let ingress = networks::plan_network(
            &ClusterState::default(),
            ids::new_id(),
            &ingress_req,
            &reserved,
            self.clock.now().wall,
        )?;
        let cert_expiry_ms = cert_expiry_ms.unwrap_or(shoal_types::state::DEFAULT_CERT_EXPIRY_MS);
        check_cert_expiry(cert_expiry_ms)?;
        let node_id = ids::new_id();
        let identity = Identity {
            node_id: node_id.clone(),
            role: NodeRole::Manager,
            cluster_id: ids::new_id(),
            addr: addr.clone(),
            cluster_addr: cluster_addr.clone(),
            managers: vec![cluster_addr.clone()],
        };
        let certs = NodeCerts::init(
            &self.cfg.data_dir,
            &identity.cluster_id,
            &node_id,
            Duration::from_millis(cert_expiry_ms),
            given_ca,
        )
        .map_err(|e| internal("failed to create the cluster's root CA", e))?;
        let digest = certs.ca().digest();
        let manager = self.open_manager(&identity, certs.dialer()).await?;
        manager
            .initialize_raft()
            .await
            .map_err(|e| internal("failed to initialise raft", e))?;
        let now = self.clock.now().wall;
        let info = ClusterInfo {
            id: identity.cluster_id.clone(),
            created_at: now,
            worker_token: JoinToken::random(digest).to_string(),
            manager_token: JoinToken::random(digest).to_string(),
            cert_expiry_ms,
            removed_nodes: Default::default(),
            heartbeat_period_ms: heartbeat_ms.unwrap_or(self.cfg.heartbeat_period_ms),
            heartbeat_grace: heartbeat_grace.unwrap_or(self.cfg.heartbeat_grace),
            root_ca: None,
            ca_rotation: None,
        };
        let node = Node {
            id: node_id.clone(),
            created_at: now,
            updated_at: now,
            spec: NodeSpec {
                role: NodeRole::Manager,
                availability: Availability::Active,
                labels: Default::default(),
            },
            description: NodeDescription {
                hostname: self.cfg.hostname.clone(),
                data_plane: None,
                host_networks: networks::host_networks(),
                resources: Default::default(),
            },
            status: NodeStatus {
                state: NodeState::Ready,
                message: String::new(),
                addr,
                cluster_addr: cluster_addr.clone(),
            },
            manager_status: Some(ManagerStatus {
                raft_id: ids::raft_id_of(&node_id),
                addr: cluster_addr,
                leader: false,
                reachability: String::new(),
            }),
            ingress_addr: None,
        };
        manager
            .propose(Command::Batch(vec![
                Command::InitCluster { info, node },
                Command::CreateNetwork { network: ingress },
            ]))
            .await?;
        identity
            .save(&self.cfg.data_dir)
            .map_err(|e| internal("failed to save the node identity", e))?;
        self.activate(identity, Some(manager), certs).await?;
        Ok((self.active_or_err()?, note.into_iter().collect()))
    }

    pub async fn join(
        self: &Arc<Self>,
        token: &str,
        remote: &str,
        advertise: Option<String>,
    ) -> Result<Active, DaemonError> {
        let _guard = self.lifecycle.lock().await;
        if self.active().is_some() {
            return Err(DaemonError::Conflict(
                "this node is already part of a swarm; run `shoal leave` first".into(),
            ));
        }
        let token = JoinToken::parse(token).map_err(|e| DaemonError::Invalid(e.to_string()))?;
        let (addr, cluster_addr) = self.advertise(advertise)?;
        let node_id = ids::new_id();
        // The key never leaves this node: the manager signs its CSR.
        let key = NodeKey::generate().map_err(|e| internal("failed to make the node's key", e))?;
        let csr = key
            .csr()
            .map_err(|e| internal("failed to make the node's certificate request", e))?;
        // Only a manager whose certificate chains to the CA the token pins gets the token.
        let dialer = shoal_rpc::Dialer::Join(Arc::new(
            shoal_pki::join_client_config(&token)
                .map_err(|e| internal("failed to make the join TLS configuration", e))?,
        ));
        let channel = dialer.manager(remote).map_err(|e| {
            DaemonError::Invalid(format!("invalid manager address {remote:?}: {e}"))
        })?;
        let req = shoal_rpc::JoinRequest {
            token: token.to_string(),
            hostname: self.cfg.hostname.clone(),
            addr: addr.clone(),
            cluster_addr: cluster_addr.clone(),
            node_id: node_id.clone(),
            host_networks: serde_json::to_vec(&networks::host_networks()).unwrap_or_default(),
            csr,
        };
        let reply = tokio::time::timeout(
            Duration::from_secs(30),
            ClusterClient::new(channel).join(req),
        )
        .await;
        let reply = match reply {
            Err(_) => Err(DaemonError::Unavailable(format!(
                "timed out joining through {remote}; is the manager reachable?"
            ))),
            Ok(Err(s)) => Err(crate::errors::join_error(remote, &s)),
            Ok(Ok(r)) => Ok(r.into_inner()),
        }?;
        let role: NodeRole = reply
            .role
            .parse()
            .map_err(|e: String| internal("bad role from manager", e))?;
        let manager_role = role == NodeRole::Manager;
        let certs = NodeCerts::joined(
            &self.cfg.data_dir,
            &key,
            reply.certificate,
            reply.ca_certificate,
            manager_role.then_some(reply.ca_key.as_slice()),
        )
        .map_err(|e| internal("the certificate the manager issued is not usable", e))?;
        if manager_role && !reply.registry_auth_key.is_empty() {
            // The managers' key for registry logins, so this manager can open them as leader.
            shoal_image::SealKey::from_bytes(&reply.registry_auth_key)
                .and_then(|k| k.save(&crate::registry::key_path(&self.cfg.data_dir)))
                .map_err(|e| internal("failed to keep the registry login key", e))?;
        }
        let identity = Identity {
            node_id,
            role,
            cluster_id: reply.cluster_id,
            addr,
            cluster_addr,
            managers: reply.managers,
        };
        let manager = if manager_role {
            Some(self.open_manager(&identity, certs.dialer()).await?)
        } else {
            None
        };
        identity
            .save(&self.cfg.data_dir)
            .map_err(|e| internal("failed to save the node identity", e))?;
        let managers = identity.managers.clone();
        let dialer = certs.dialer();
        self.activate(identity, manager, certs).await?;
        if manager_role {
            // Serving Raft with its certificate now, it asks the leader to add it.
            join_raft(&dialer, remote, &managers).await?;
        }
        self.active_or_err()
    }

    /// Leaves the cluster: stops every task and forgets the membership.
    pub async fn leave(self: &Arc<Self>, force: bool) -> Result<(), DaemonError> {
        let _guard = self.lifecycle.lock().await;
        let active = self.active_or_err()?;
        if active.manager.is_some() && !force {
            return Err(DaemonError::Conflict(
                "this node is a manager; leaving would weaken the raft group. Use `shoal leave --force` to leave anyway".into(),
            ));
        }
        if let Some(m) = &active.manager {
            // Out of the managers first, while this node still speaks for itself: marked
            // down and removed, the leader (this one or the next) takes it out of the Raft
            // group, so the managers that stay keep their quorum.
            let id = active.identity.node_id.clone();
            let cmd = Command::Batch(vec![
                Command::SetNodeState {
                    id: id.clone(),
                    state: shoal_types::NodeState::Down,
                    message: "left the cluster".into(),
                    at: self.clock.now().wall,
                },
                Command::RemoveNode { id, force: true },
            ]);
            match m.propose(cmd).await {
                Ok(()) => info!("this manager left the managers"),
                Err(e) => warn!(
                    "leaving without taking this node out of the managers ({}); remove it with `shoal node rm --force` on a manager once they have a quorum",
                    e
                ),
            }
        }
        active.worker.stop_all(Duration::from_secs(15)).await;
        active.switches.off();
        for h in active.tasks.iter().chain(active.manager_tasks.iter()) {
            h.abort();
        }
        if let Some(m) = &active.manager {
            let _ = m.shutdown_raft().await;
        }
        *self.role.write().unwrap_or_else(|p| p.into_inner()) = None;
        Identity::remove(&self.cfg.data_dir)
            .map_err(|e| internal("failed to remove the node identity", e))?;
        let _ = std::fs::remove_dir_all(self.raft_dir());
        let _ = std::fs::remove_dir_all(crate::certs::dir(&self.cfg.data_dir));
        Ok(())
    }

    /// Daemon shutdown: stop host-command tasks; containers keep running under their
    /// monitors for the next daemon to adopt (dockerd's live-restore).
    pub async fn shutdown(&self) {
        if let Some(active) = self.active() {
            active.worker.shutdown(Duration::from_secs(15)).await;
            if let Some(m) = &active.manager {
                let _ = m.shutdown_raft().await;
            }
        }
    }
}

/// Keeps node.json's manager list current, so a restarted agent finds the managers.
async fn persist_managers(daemon: Arc<Daemon>, managers: Managers) {
    let mut last = Vec::new();
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = managers.read().map(|m| m.clone()).unwrap_or_default();
        if now.is_empty() || now == last {
            continue;
        }
        if let Some(mut active) = daemon.active() {
            active.identity.managers = now.clone();
            if let Err(e) = active.identity.save(&daemon.cfg.data_dir) {
                warn!("failed to save the manager list: {e}");
            }
        }
        last = now;
    }
}

/// A manager that joined asks the leader to add it to Raft, following "not the leader"
/// hints from the manager it joined through.
pub(crate) async fn join_raft(
    dialer: &shoal_rpc::Dialer,
    remote: &str,
    managers: &[String],
) -> Result<(), DaemonError> {
    let mut targets: Vec<String> = std::iter::once(remote.to_string())
        .chain(managers.iter().cloned())
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        let Some(addr) = targets.first().cloned() else {
            break;
        };
        let channel = dialer
            .manager(&addr)
            .map_err(|e| DaemonError::Invalid(format!("invalid manager address {addr:?}: {e}")))?;
        let mut client = ClusterClient::new(channel);
        let call = client.join_raft(shoal_rpc::JoinRaftRequest {});
        match tokio::time::timeout(Duration::from_secs(40), call).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(s)) => {
                last = crate::errors::source_chain(&s);
                if let Some(leader) = shoal_rpc::leader_hint(&s) {
                    targets.insert(0, leader);
                    targets.dedup();
                    continue;
                }
                targets.rotate_left(1);
            }
            Err(_) => last = format!("no answer from {addr}"),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Err(DaemonError::Unavailable(format!(
        "joined as a manager, but the leader did not add this node to Raft: {last}"
    )))
}

/// The address to advertise (the first of `requested`, `configured`, `listen`'s IP if it
/// names one; a port given with it is dropped) and the cluster address (that IP, the
/// listen port).
fn advertise(
    requested: Option<String>,
    configured: Option<String>,
    listen: std::net::SocketAddr,
) -> Result<(String, String), DaemonError> {
    let ip = requested
        .or(configured)
        .or_else(|| (!listen.ip().is_unspecified()).then(|| listen.ip().to_string()))
        .ok_or_else(|| {
            DaemonError::Invalid(
                "could not choose an address to advertise; pass --advertise-addr IP".into(),
            )
        })?;
    let ip = ip.split(':').next().unwrap_or(&ip).to_string();
    ip.parse::<std::net::IpAddr>().map_err(|_| {
        DaemonError::Invalid(format!(
            "invalid advertise address {ip:?}: expected an IP address"
        ))
    })?;
    let cluster_addr = format!("{ip}:{}", listen.port());
    Ok((ip, cluster_addr))
}

/// `--cert-expiry`: at least a minute (renewal needs some of the lifetime), at most the
/// root's 20 years.
fn check_cert_expiry(ms: u64) -> Result<(), DaemonError> {
    let max = shoal_pki::ROOT_CA_VALIDITY.as_millis() as u64;
    if !(60_000..=max).contains(&ms) {
        return Err(DaemonError::Invalid(format!(
            "invalid --cert-expiry {}: node certificates must be valid for at least 1m and at most 20 years",
            humantime::format_duration(Duration::from_millis(ms))
        )));
    }
    Ok(())
}

/// A manager whose Raft has failed (its log could not be written, say on a full disk) takes
/// no part in the cluster any more, yet left up it would keep its agents' sessions and
/// answer from a state that no longer moves. So the daemon exits, loudly, for its supervisor
/// to start it again once the cause is fixed; its tasks keep running and are adopted then.
pub(crate) async fn exit_on_raft_failure(manager: Arc<Manager>) {
    let why = manager.raft_failed().await;
    tracing::error!(
        "raft failed on this manager: {why}; shoald exits (fix the data directory's disk, then start it again)"
    );
    std::process::exit(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_advertised_address_is_the_first_given_with_the_listen_port() {
        let any: std::net::SocketAddr = "0.0.0.0:2377".parse().unwrap();
        let one: std::net::SocketAddr = "10.0.0.5:4000".parse().unwrap();
        let ok = |r: Result<(String, String), DaemonError>| r.unwrap();
        assert_eq!(
            ok(advertise(
                Some("10.0.0.9:1234".into()),
                Some("10.0.0.8".into()),
                one
            )),
            ("10.0.0.9".to_string(), "10.0.0.9:4000".to_string())
        );
        assert_eq!(
            ok(advertise(None, Some("10.0.0.8".into()), any)).1,
            "10.0.0.8:2377"
        );
        assert_eq!(ok(advertise(None, None, one)).0, "10.0.0.5");
        assert_eq!(
            advertise(None, None, any).unwrap_err().to_string(),
            "could not choose an address to advertise; pass --advertise-addr IP"
        );
        let err = advertise(Some("eth0".into()), None, any).unwrap_err();
        assert!(matches!(err, DaemonError::Invalid(_)));
        assert_eq!(
            err.to_string(),
            "invalid advertise address \"eth0\": expected an IP address"
        );
    }

    #[test]
    fn certificate_lifetimes_are_bounded() {
        assert!(check_cert_expiry(60_000).is_ok());
        assert!(check_cert_expiry(90 * 24 * 3600 * 1000).is_ok());
        assert_eq!(
            check_cert_expiry(59_000).unwrap_err().to_string(),
            "invalid --cert-expiry 59s: node certificates must be valid for at least 1m and at most 20 years"
        );
        let too_long = shoal_pki::ROOT_CA_VALIDITY.as_millis() as u64 + 1;
        assert!(matches!(
            check_cert_expiry(too_long),
            Err(DaemonError::Invalid(_))
        ));
    }
}
