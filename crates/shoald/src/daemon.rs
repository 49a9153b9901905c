//! The daemon's roles and their lifecycle: inactive, worker, or manager; `init`, `join`,
//! `leave`, and resuming a role after a restart.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use shoal_agent::AgentConfig;
use shoal_agent::logs::AgentService;
use shoal_agent::session::{Managers, Session};
use shoal_agent::worker::{self, Worker};
use shoal_api::ApiError;
use shoal_rpc::cluster_client::ClusterClient;
use shoal_store::{Store, StoreConfig};
use shoal_types::node::{ManagerStatus, NodeDescription, NodeSpec, NodeStatus};
use shoal_types::token::JoinToken;
use shoal_types::{
    Availability, ClusterInfo, ClusterState, Command, Node, NodeRole, NodeState, ids,
};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::cluster_service::ClusterService;
use crate::errors::{internal, not_in_swarm};
use crate::identity::Identity;
use crate::manager::Manager;
use crate::networks;

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
}

pub struct Daemon {
    pub cfg: Config,
    /// Serialises init, join and leave.
    lifecycle: tokio::sync::Mutex<()>,
    pub role: RwLock<Option<Active>>,
}

/// A node that is part of a cluster.
#[derive(Clone)]
pub struct Active {
    pub identity: Identity,
    pub manager: Option<Arc<Manager>>,
    pub worker: Arc<Worker>,
    pub managers: Managers,
    tasks: Arc<Vec<JoinHandle<()>>>,
}

impl Daemon {
    pub fn new(cfg: Config) -> Arc<Daemon> {
        Arc::new(Daemon {
            cfg,
            lifecycle: tokio::sync::Mutex::new(()),
            role: RwLock::new(None),
        })
    }

    pub fn active(&self) -> Option<Active> {
        self.role.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn active_or_err(&self) -> Result<Active, ApiError> {
        self.active().ok_or_else(not_in_swarm)
    }

    fn raft_dir(&self) -> PathBuf {
        self.cfg.data_dir.join("raft")
    }

    /// The node's address as others see it: `--advertise-addr`, or the listen address.
    fn advertise(&self, requested: Option<String>) -> Result<(String, String), ApiError> {
        let ip = requested
            .or_else(|| self.cfg.advertise_addr.clone())
            .or_else(|| {
                (!self.cfg.listen_addr.ip().is_unspecified())
                    .then(|| self.cfg.listen_addr.ip().to_string())
            })
            .ok_or_else(|| {
                ApiError::bad_request(
                    "could not choose an address to advertise; pass --advertise-addr IP",
                )
            })?;
        let ip = ip.split(':').next().unwrap_or(&ip).to_string();
        ip.parse::<std::net::IpAddr>().map_err(|_| {
            ApiError::bad_request(format!(
                "invalid advertise address {ip:?}: expected an IP address"
            ))
        })?;
        let cluster_addr = format!("{ip}:{}", self.cfg.listen_addr.port());
        Ok((ip, cluster_addr))
    }

    /// Resumes the role recorded in the data dir, if any (daemon start).
    pub async fn resume(self: &Arc<Self>) -> anyhow::Result<()> {
        let Some(identity) = Identity::load(&self.cfg.data_dir)? else {
            return Ok(());
        };
        info!(node = %identity.node_id, role = %identity.role, "resuming cluster membership");
        let manager = match identity.role {
            NodeRole::Manager => Some(
                self.open_manager(&identity)
                    .await
                    .map_err(|e| anyhow::anyhow!(e.message))?,
            ),
            NodeRole::Worker => None,
        };
        self.activate(identity, manager)
            .await
            .map_err(|e| anyhow::anyhow!(e.message))?;
        Ok(())
    }

    async fn open_manager(&self, identity: &Identity) -> Result<Arc<Manager>, ApiError> {
        let store = Store::open(
            &self.raft_dir(),
            ids::raft_id_of(&identity.node_id),
            identity.cluster_addr.clone(),
            StoreConfig::default(),
        )
        .await
        .map_err(|e| internal("failed to open the raft store", e))?;
        Ok(Manager::new(
            store,
            identity.node_id.clone(),
            &self.cfg.data_dir,
        ))
    }

    /// Starts the gRPC server, the agent and (for managers) the leader loop.
    async fn activate(
        self: &Arc<Self>,
        identity: Identity,
        manager: Option<Arc<Manager>>,
    ) -> Result<(), ApiError> {
        let vtep: std::net::Ipv4Addr = identity.addr.parse().map_err(|_| {
            ApiError::bad_request(format!(
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
            },
            reports_tx,
        );
        let managers: Managers = Arc::new(RwLock::new(identity.managers.clone()));
        let mut handles = Vec::new();

        let listener = tokio::net::TcpListener::bind(self.cfg.listen_addr)
            .await
            .map_err(|e| internal(&format!("failed to listen on {}", self.cfg.listen_addr), e))?;
        let agent_svc = shoal_rpc::agent_server::AgentServer::new(AgentService {
            worker: Arc::clone(&worker),
        });
        let mut router = tonic::transport::Server::builder().add_service(agent_svc);
        if let Some(m) = &manager {
            router = router.add_service(m.store.grpc_service()).add_service(
                shoal_rpc::cluster_server::ClusterServer::new(ClusterService {
                    manager: Arc::clone(m),
                }),
            );
        }
        let incoming = nodelay(listener);
        handles.push(tokio::spawn(async move {
            if let Err(e) = router.serve_with_incoming(incoming).await {
                warn!("cluster listener stopped: {e}");
            }
        }));
        if let Some(m) = &manager {
            handles.push(tokio::spawn(Arc::clone(m).run_leader_loop()));
        }
        let session = Session {
            node_id: identity.node_id.clone(),
            managers: Arc::clone(&managers),
            worker: Arc::clone(&worker),
            data_plane: Some(worker.data_plane()),
        };
        handles.push(tokio::spawn(session.run(reports_rx)));
        handles.push(tokio::spawn(persist_managers(
            Arc::clone(self),
            Arc::clone(&managers),
        )));

        *self.role.write().unwrap_or_else(|p| p.into_inner()) = Some(Active {
            identity,
            manager,
            worker,
            managers,
            tasks: Arc::new(handles),
        });
        Ok(())
    }

    /// Makes this node the first manager of a new cluster, with its ingress network.
    /// Returns the notes the user should read (e.g. an ingress subnet chosen for them).
    pub async fn init(
        self: &Arc<Self>,
        advertise: Option<String>,
        heartbeat_ms: Option<u64>,
        heartbeat_grace: Option<u32>,
        ingress_subnet: Option<String>,
    ) -> Result<(Active, Vec<String>), ApiError> {
        let _guard = self.lifecycle.lock().await;
        if self.active().is_some() {
            return Err(ApiError::conflict(
                "this node is already part of a swarm; run `shoal leave` first",
            ));
        }
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
            worker::now(),
        )?;
        let node_id = ids::new_id();
        let identity = Identity {
            node_id: node_id.clone(),
            role: NodeRole::Manager,
            cluster_id: ids::new_id(),
            addr: addr.clone(),
            cluster_addr: cluster_addr.clone(),
            managers: vec![cluster_addr.clone()],
        };
        let manager = self.open_manager(&identity).await?;
        manager
            .store
            .initialize()
            .await
            .map_err(|e| internal("failed to initialise raft", e))?;
        let now = worker::now();
        let info = ClusterInfo {
            id: identity.cluster_id.clone(),
            created_at: now,
            worker_secret: ids::new_secret(),
            manager_secret: ids::new_secret(),
            heartbeat_period_ms: heartbeat_ms.unwrap_or(self.cfg.heartbeat_period_ms),
            heartbeat_grace: heartbeat_grace.unwrap_or(self.cfg.heartbeat_grace),
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
        self.activate(identity, Some(manager)).await?;
        Ok((self.active_or_err()?, note.into_iter().collect()))
    }

    pub async fn join(
        self: &Arc<Self>,
        token: &str,
        remote: &str,
        advertise: Option<String>,
    ) -> Result<Active, ApiError> {
        let _guard = self.lifecycle.lock().await;
        if self.active().is_some() {
            return Err(ApiError::conflict(
                "this node is already part of a swarm; run `shoal leave` first",
            ));
        }
        JoinToken::parse(token).map_err(ApiError::bad_request)?;
        let (addr, cluster_addr) = self.advertise(advertise)?;
        let node_id = ids::new_id();
        // A manager must serve Raft before the leader adds it, so the store opens first.
        // Whether this is a manager token is only known to the leader: open the store
        // lazily and discard it if the leader says worker.
        let store_dir = self.raft_dir();
        let manager = self
            .open_manager(&Identity {
                node_id: node_id.clone(),
                role: NodeRole::Manager,
                cluster_id: String::new(),
                addr: addr.clone(),
                cluster_addr: cluster_addr.clone(),
                managers: vec![],
            })
            .await?;
        let server = spawn_raft_only(self.cfg.listen_addr, &manager).await?;
        let channel = shoal_rpc::channel(remote).map_err(|e| {
            ApiError::bad_request(format!("invalid manager address {remote:?}: {e}"))
        })?;
        let req = shoal_rpc::JoinRequest {
            token: token.to_string(),
            hostname: self.cfg.hostname.clone(),
            addr: addr.clone(),
            cluster_addr: cluster_addr.clone(),
            node_id: node_id.clone(),
            host_networks: serde_json::to_vec(&networks::host_networks()).unwrap_or_default(),
        };
        let reply = tokio::time::timeout(
            Duration::from_secs(30),
            ClusterClient::new(channel).join(req),
        )
        .await;
        server.abort();
        let _ = server.await;
        let reply = match reply {
            Err(_) => Err(ApiError::new(
                503,
                format!("timed out joining through {remote}; is the manager reachable?"),
            )),
            Ok(Err(s)) => Err(match s.code() {
                tonic::Code::PermissionDenied | tonic::Code::InvalidArgument => {
                    ApiError::bad_request(s.message().to_string())
                }
                tonic::Code::Unavailable
                    if s.message().contains("connect") || s.message().contains("transport") =>
                {
                    ApiError::new(
                        503,
                        format!("cannot reach a manager at {remote}: {}", s.message()),
                    )
                }
                _ => ApiError::new(503, format!("join failed: {}", s.message())),
            }),
            Ok(Ok(r)) => Ok(r.into_inner()),
        };
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                let _ = manager.store.shutdown().await;
                let _ = std::fs::remove_dir_all(&store_dir);
                return Err(e);
            }
        };
        let role: NodeRole = reply
            .role
            .parse()
            .map_err(|e: String| internal("bad role from manager", e))?;
        if role == NodeRole::Manager && !reply.registry_auth_key.is_empty() {
            // The managers' key for registry logins, so this manager can open them as leader.
            shoal_image::SealKey::from_bytes(&reply.registry_auth_key)
                .and_then(|k| k.save(&crate::registry::key_path(&self.cfg.data_dir)))
                .map_err(|e| internal("failed to keep the registry login key", e))?;
        }
        let manager = if role == NodeRole::Manager {
            Some(manager)
        } else {
            let _ = manager.store.shutdown().await;
            let _ = std::fs::remove_dir_all(&store_dir);
            None
        };
        let identity = Identity {
            node_id,
            role,
            cluster_id: reply.cluster_id,
            addr,
            cluster_addr,
            managers: reply.managers,
        };
        identity
            .save(&self.cfg.data_dir)
            .map_err(|e| internal("failed to save the node identity", e))?;
        self.activate(identity, manager).await?;
        self.active_or_err()
    }

    /// Leaves the cluster: stops every task and forgets the membership.
    pub async fn leave(self: &Arc<Self>, force: bool) -> Result<(), ApiError> {
        let _guard = self.lifecycle.lock().await;
        let active = self.active_or_err()?;
        if active.manager.is_some() && !force {
            return Err(ApiError::conflict(
                "this node is a manager; leaving would weaken the raft group. Use `shoal leave --force` to leave anyway",
            ));
        }
        active.worker.stop_all(Duration::from_secs(15)).await;
        for h in active.tasks.iter() {
            h.abort();
        }
        if let Some(m) = &active.manager {
            let _ = m.store.shutdown().await;
        }
        *self.role.write().unwrap_or_else(|p| p.into_inner()) = None;
        Identity::remove(&self.cfg.data_dir)
            .map_err(|e| internal("failed to remove the node identity", e))?;
        let _ = std::fs::remove_dir_all(self.raft_dir());
        Ok(())
    }

    /// Daemon shutdown: stop host-command tasks; containers keep running under their
    /// monitors for the next daemon to adopt (dockerd's live-restore).
    pub async fn shutdown(&self) {
        if let Some(active) = self.active() {
            active.worker.shutdown(Duration::from_secs(15)).await;
            if let Some(m) = &active.manager {
                let _ = m.store.shutdown().await;
            }
        }
    }
}

/// While a manager joins, the leader must reach its Raft service before it is a member.
async fn spawn_raft_only(
    listen: SocketAddr,
    manager: &Arc<Manager>,
) -> Result<JoinHandle<()>, ApiError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| internal(&format!("failed to listen on {listen}"), e))?;
    let router = tonic::transport::Server::builder().add_service(manager.store.grpc_service());
    let incoming = nodelay(listener);
    Ok(tokio::spawn(async move {
        let _ = router.serve_with_incoming(incoming).await;
    }))
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

/// Accepted cluster connections with Nagle off: session messages and acks are small and
/// latency-bound; with Nagle and delayed ACKs each would wait ~40 ms.
fn nodelay(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        conn.set_nodelay(true)?;
        Ok(conn)
    })
}
