//! The `Cluster` gRPC service that managers serve to other nodes.
//! Everything that writes needs the leader: a follower forwards `Propose` and `Join`, and
//! tells agents where the leader is (metadata `shoal-leader`) so their sessions move there.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Arc;

use shoal_manager::dispatcher::{NodeTasks, Told};
use shoal_pki::Access;
use shoal_rpc::cluster_client::ClusterClient;
use shoal_rpc::cluster_server::Cluster;
use shoal_rpc::{
    Assignments, EndpointAck, HeartbeatRequest, HeartbeatResponse, JoinRaftRequest, JoinRequest,
    JoinResponse, RenewRequest, RenewResponse, SessionRequest, StatusAck, StatusReport,
};
use shoal_types::node::{
    DataPlane, HostNetwork, ManagerStatus, NodeDescription, NodeSpec, NodeStatus,
};
use shoal_types::{
    Availability, Command, CommandResult, Node, NodeRole, NodeState, TaskState, TaskStatus,
};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::certs::NodeCerts;
use crate::gate::{Gate, acting_for};
use crate::manager::{Manager, Progress};
use shoal_types::endpoint::EndpointView;

pub struct ClusterService {
    pub manager: Arc<Manager>,
    pub gate: Gate,
    /// This manager's certificates and the root CA that issues nodes' certificates.
    pub certs: Arc<NodeCerts>,
    pub failed_joins: crate::joins::FailedJoins,
    /// One live session per node, and a few unary calls in flight.
    pub sessions: Arc<crate::sessions::Sessions>,
    pub in_flight: crate::sessions::InFlight,
}

fn not_leader(manager: &Manager) -> Status {
    let mut status = Status::unavailable(crate::manager::NOT_LEADER);
    if let Some((_, addr)) = manager.store.leader()
        && let Ok(v) = addr.parse()
    {
        status.metadata_mut().insert(shoal_rpc::LEADER_METADATA, v);
    }
    status
}

/// Cluster addresses of the managers, from the state.
pub fn manager_addrs(state: &shoal_types::ClusterState) -> Vec<String> {
    state
        .nodes
        .values()
        .filter_map(|n| n.manager_status.as_ref().map(|m| m.addr.clone()))
        .collect()
}

/// Streams a node's assignments and endpoint deltas until the agent goes away or this
/// manager stops leading.
///
/// Each state change costs the session the size of the change, not of the cluster: its
/// node's tasks follow the difference between successive states (`NodeTasks`), the view is
/// cut from the shared table by reference, and the delta walks only what differs.
async fn session_loop(
    manager: &Arc<Manager>,
    node_id: &str,
    tx: tokio::sync::mpsc::Sender<Result<Assignments, Status>>,
    mut replaced: tokio::sync::oneshot::Receiver<()>,
) {
    let mut state_rx = manager.store.state();
    // What the agent has been told of its tasks; `None` until the whole list is sent.
    let mut told: Option<Told> = None;
    // The state the node's tasks and networks were last followed to.
    let mut prev: Option<Arc<shoal_types::ClusterState>> = None;
    let mut mine = NodeTasks::default();
    let mut networks: Vec<String> = Vec::new();
    // Tasks that may be held running while their removal propagates (drain before stop).
    let mut draining: Vec<String> = Vec::new();
    let mut last_held: Vec<String> = Vec::new();
    // The view as the agent has it (the base of the next delta), and the table it came from.
    let mut sent = EndpointView::default();
    let mut sent_table: Option<Arc<crate::manager::EndpointTable>> = None;
    // The registry logins the agent has (`--with-registry-auth`), and those opened so far.
    let mut sent_logins: Option<BTreeMap<String, shoal_image::AuthConfig>> = None;
    let mut opened = HashMap::new();
    // The root CAs the agent was told to trust (`None`: nothing yet this session).
    let mut sent_ca: Option<shoal_types::state::CaTrust> = None;
    // The role the agent was told (`node promote|demote`).
    let mut sent_role: Option<NodeRole> = None;
    // The managers the agent was told of: it needs them to find the next leader when this
    // one goes (a promotion or demotion elsewhere changes them without touching this node).
    let mut sent_managers: Vec<String> = Vec::new();
    loop {
        if !manager.store.is_leader() {
            let _ = tx.send(Err(not_leader(manager))).await;
            return;
        }
        let state = state_rx.borrow_and_update().clone();
        if !state.nodes.contains_key(node_id) {
            let _ = tx
                .send(Err(Status::not_found(
                    "this node was removed from the cluster",
                )))
                .await;
            return;
        }
        let nodes_changed = prev.as_ref().is_none_or(|p| !p.nodes.ptr_eq(&state.nodes));
        let managers = if nodes_changed {
            manager_addrs(&state)
        } else {
            sent_managers.clone()
        };
        let managers_changed = managers != sent_managers;
        let (mine_changed, mut changed_ids) = match &prev {
            Some(p) if p.version <= state.version => {
                let ids = mine.follow(p, &state);
                (!ids.is_empty() || !p.networks.ptr_eq(&state.networks), ids)
            }
            _ => {
                mine = NodeTasks::new(node_id, &state);
                told = None;
                (true, Vec::new())
            }
        };
        prev = Some(Arc::clone(&state));
        if mine_changed {
            networks = shoal_manager::endpoints::node_networks(&state, mine.all());
            draining = mine
                .assigned()
                .filter(|t| Manager::may_drain(t))
                .map(|t| t.id.clone())
                .collect();
        }
        let table = manager.endpoint_table(&state);
        let held = manager.held_for_drain(&state, draining.iter().filter_map(|id| mine.get(id)));
        // A task held or let go since last time is told again.
        changed_ids.extend(
            held.iter()
                .filter(|id| !last_held.contains(id))
                .chain(last_held.iter().filter(|id| !held.contains(id)))
                .cloned(),
        );
        let told_as = |t: &shoal_types::Task| {
            if held.contains(&t.id) {
                TaskState::Running
            } else {
                t.desired_state
            }
        };
        // The whole list once per session, then only what changed.
        let (full_list, task_delta) = match told.as_mut() {
            None => {
                let (t, list) = Told::full(mine.assigned().map(|t| (t, told_as(t))));
                told = Some(t);
                (Some(list), None)
            }
            Some(t) if !changed_ids.is_empty() => {
                let now = changed_ids.iter().map(|id| {
                    let task = mine
                        .get(id)
                        .filter(|t| t.status.state >= TaskState::Assigned);
                    (id.as_str(), task.map(|t| (t, told_as(t))))
                });
                let d = t.delta(now);
                (None, (!d.is_empty()).then_some(d))
            }
            Some(_) => (None, None),
        };
        let tasks_changed = full_list.is_some() || task_delta.is_some();
        // The node's view depends on the table and on the networks of its tasks: with
        // neither changed there is nothing to compute (most state changes are elsewhere).
        let unchanged_table = sent_table.as_ref().is_some_and(|t| Arc::ptr_eq(t, &table));
        let (view, delta) = if unchanged_table && !mine_changed && sent.version != 0 {
            (None, None)
        } else {
            let view = shoal_manager::endpoints::node_view(state.version, &table, &networks);
            let delta = sent.diff(&view);
            (Some(view), Some(delta))
        };
        let endpoints_changed = delta.as_ref().is_some_and(|d| !d.is_empty()) || sent.version == 0;
        // Logins go with the task changes that may need them, before the agent starts them.
        let logins = if tasks_changed {
            // Only services with a login matter (usually none): their tasks on this node,
            // not every task of the node at each change.
            let with_login = state
                .services_with_login()
                .flat_map(|s| state.tasks_of(&s.id))
                .filter_map(|t| mine.get(&t.id))
                .filter(|t| t.status.state >= TaskState::Assigned);
            let now = manager.logins.for_tasks(&state, with_login, &mut opened);
            (sent_logins.as_ref() != Some(&now)).then_some(now)
        } else {
            None
        };
        let ca = state.ca_trust();
        let ca_changed = sent_ca.as_ref() != Some(&ca);
        let role = state.nodes.get(node_id).map(|n| n.spec.role);
        let role_changed = role != sent_role;
        if tasks_changed || endpoints_changed || ca_changed || role_changed || managers_changed {
            // An empty task list means "unchanged" to the agent (an empty one is `[]`).
            let tasks = full_list
                .map(|l| serde_json::to_vec(&l).unwrap_or_default())
                .unwrap_or_default();
            let tasks_delta = task_delta
                .map(|d| serde_json::to_vec(&d).unwrap_or_default())
                .unwrap_or_default();
            let msg = Assignments {
                version: state.version,
                tasks,
                tasks_delta,
                managers: managers.clone(),
                heartbeat_period_ms: manager.heartbeat_period_ms(),
                endpoints: match (&delta, endpoints_changed) {
                    (Some(d), true) => serde_json::to_vec(d).unwrap_or_default(),
                    _ => Vec::new(),
                },
                registry_auth: logins
                    .as_ref()
                    .map(|l| serde_json::to_vec(l).unwrap_or_default())
                    .unwrap_or_default(),
                ca: if ca_changed {
                    serde_json::to_vec(&ca).unwrap_or_default()
                } else {
                    Vec::new()
                },
                role: match role {
                    Some(r) if role_changed => r.to_string(),
                    _ => String::new(),
                },
            };
            if tx.send(Ok(msg)).await.is_err() {
                return;
            }
            sent_role = role;
            sent_managers = managers;
            if logins.is_some() {
                sent_logins = logins;
            }
            sent_ca = Some(ca);
            last_held = held;
            sent_table = Some(Arc::clone(&table));
            if let (true, Some(view)) = (endpoints_changed, view) {
                manager.endpoints_progress(node_id, &state, Progress::Sent(view.version));
                sent = view;
            } else {
                manager.endpoints_progress(node_id, &state, Progress::Unchanged(state.version));
            }
        } else {
            last_held = held;
            sent_table = Some(Arc::clone(&table));
            manager.endpoints_progress(node_id, &state, Progress::Unchanged(state.version));
        }
        // Wake on a state change, or after a while to notice a leadership loss.
        // ...or an ack, which may release a task held for draining.
        tokio::select! {
            _ = &mut replaced => {
                let _ = tx
                    .send(Err(Status::aborted(
                        "this node opened a newer session; this one is closed",
                    )))
                    .await;
                return;
            }
            _ = state_rx.changed() => {}
            _ = manager.acked.notified() => {}
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
    }
}

/// How a node's status message starts while its last endpoint table did not apply whole.
const APPLY_FAILED: &str = "endpoint table not applied: ";

/// The most task statuses one report may carry (an agent sends what changed since its last).
const MAX_REPORTED_TASKS: usize = 10_000;

type SessionStream = Pin<Box<dyn Stream<Item = Result<Assignments, Status>> + Send>>;

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn propose(
        &self,
        req: Request<shoal_rpc::Json>,
    ) -> Result<Response<shoal_rpc::Json>, Status> {
        self.gate.member(&req, "Propose", Access::Manager)?;
        let cmd: Command = serde_json::from_slice(&req.into_inner().data)
            .map_err(|e| Status::invalid_argument(format!("command does not parse: {e}")))?;
        if let Some(why) = self.manager.refusal(&cmd) {
            return Err(Status::failed_precondition(why));
        }
        let reply = match self.manager.store.propose_indexed(cmd).await {
            Ok((result, index)) => crate::manager::ProposeReply { result, index },
            Err(shoal_store::StoreError::NotLeader { .. }) => {
                return Err(not_leader(&self.manager));
            }
            Err(e @ shoal_store::StoreError::NoQuorum { .. }) => {
                return Err(Status::unavailable(e.to_string()));
            }
            Err(e) => return Err(Status::internal(e.to_string())),
        };
        let data = serde_json::to_vec(&reply).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(shoal_rpc::json(data)))
    }

    async fn join(&self, req: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        self.gate.admit(&req, "Join", Access::Joining)?;
        let source = req.remote_addr().map(|a| a.ip());
        let req = req.into_inner();
        if !self.manager.store.is_leader() {
            let Some((_, addr)) = self.manager.store.leader() else {
                return Err(Status::unavailable(
                    "the managers have no leader right now; retry shortly",
                ));
            };
            let channel = self
                .certs
                .dialer()
                .manager(&addr)
                .map_err(|e| Status::unavailable(e.to_string()))?;
            return ClusterClient::new(channel)
                .join(shoal_rpc::deadline::request(
                    req,
                    shoal_rpc::deadline::WRITE,
                ))
                .await;
        }
        self.failed_joins.check(source)?;
        let state = self.manager.state();
        let cluster = state
            .cluster
            .as_ref()
            .ok_or_else(|| Status::unavailable("the cluster is not initialised"))?;
        let role = match crate::joins::join_role(cluster, &req.token) {
            Ok(role) => role,
            Err(e) => {
                warn!(source = ?source, node = %req.hostname, "refused a join: {}", e.message());
                self.failed_joins.failed(source);
                return Err(e);
            }
        };
        if req.node_id.len() != shoal_types::ids::ID_LEN || !shoal_types::ids::is_hex(&req.node_id)
        {
            return Err(Status::invalid_argument("invalid node id"));
        }
        if state.nodes.contains_key(&req.node_id) || cluster.removed_nodes.contains(&req.node_id) {
            return Err(Status::already_exists(
                "a node with this id is or was in the cluster; join again for a new id",
            ));
        }
        let host_networks: Vec<HostNetwork> = if req.host_networks.is_empty() {
            Vec::new()
        } else {
            serde_json::from_slice(&req.host_networks)
                .map_err(|e| Status::invalid_argument(format!("host networks do not parse: {e}")))?
        };
        // A node whose own address or route an overlay covers would lose its way to it
        // (or its tasks would): refuse now, naming both, rather than when traffic breaks.
        if let Some((h, n)) = crate::networks::overlapping_network(&state, &host_networks) {
            warn!(node = %req.hostname, network = %n.name, "refused a join: {} overlaps the network", h.what);
            return Err(Status::failed_precondition(format!(
                "{} overlaps network {} ({}): remove or renumber that address or route on {}, or remove the network, then join again",
                h.what, n.name, n.ipam.subnet, req.hostname
            )));
        }
        let (certificate, renewed) =
            crate::certs::issue(&self.certs, &req.csr, &req.node_id, role, cluster)?;
        let raft_id = shoal_types::ids::raft_id_of(&req.node_id);
        let now = shoal_agent::worker::now();
        let node = Node {
            id: req.node_id.clone(),
            created_at: now,
            updated_at: now,
            spec: NodeSpec {
                role,
                availability: Availability::Active,
                labels: Default::default(),
            },
            description: NodeDescription {
                hostname: req.hostname.clone(),
                data_plane: None,
                host_networks,
                resources: Default::default(),
            },
            status: NodeStatus {
                state: NodeState::Ready,
                message: String::new(),
                addr: req.addr.clone(),
                cluster_addr: req.cluster_addr.clone(),
            },
            manager_status: (role == NodeRole::Manager).then(|| ManagerStatus {
                raft_id,
                addr: req.cluster_addr.clone(),
                leader: false,
                reachability: String::new(),
            }),
            ingress_addr: None,
        };
        // A manager joins Raft with a second call (`JoinRaft`) once it serves Raft with
        // the certificate this reply gives it.
        let add = Command::AddNode { node, at: now };
        self.manager
            .propose(match renewed {
                Some(r) => Command::Batch(vec![add, r]),
                None => add,
            })
            .await
            .map_err(Status::from)?;
        info!(node = %req.hostname, %role, "node joined");
        let state = self.manager.state();
        let manager = role == NodeRole::Manager;
        Ok(Response::new(JoinResponse {
            node_id: req.node_id,
            role: role.to_string(),
            raft_id: if manager { raft_id } else { 0 },
            managers: manager_addrs(&state),
            cluster_id: cluster.id.clone(),
            registry_auth_key: if manager {
                self.manager
                    .logins
                    .key()
                    .map_err(|e| Status::internal(e.to_string()))?
                    .to_bytes()
            } else {
                Vec::new()
            },
            certificate,
            ca_certificate: self.certs.ca().der().to_vec(),
            ca_key: if manager {
                self.root()?.key_pem().into_bytes()
            } else {
                Vec::new()
            },
        }))
    }

    async fn join_raft(
        &self,
        req: Request<JoinRaftRequest>,
    ) -> Result<Response<StatusAck>, Status> {
        let id = self.gate.member(&req, "JoinRaft", Access::Manager)?;
        if !self.manager.store.is_leader() {
            return Err(not_leader(&self.manager));
        }
        let state = self.manager.state();
        let Some(status) = state
            .nodes
            .get(&id.node_id)
            .and_then(|n| n.manager_status.clone())
        else {
            return Err(Status::not_found(format!(
                "node {} is not a manager of this cluster; join with a manager token first",
                id.node_id
            )));
        };
        info!(node = %id.node_id, raft_id = status.raft_id, "adding a manager to the raft group");
        self.manager
            .store
            .add_manager(status.raft_id, status.addr)
            .await
            .map_err(|e| {
                Status::unavailable(format!("failed to add the manager to the raft group: {e}"))
            })?;
        Ok(Response::new(StatusAck {}))
    }

    async fn renew_certificate(
        &self,
        req: Request<RenewRequest>,
    ) -> Result<Response<RenewResponse>, Status> {
        let id = self.gate.member(&req, "RenewCertificate", Access::Member)?;
        let state = self.manager.state();
        let cluster = state
            .cluster
            .as_ref()
            .ok_or_else(|| Status::unavailable("the cluster is not initialised"))?;
        let Some(node) = state.nodes.get(&id.node_id) else {
            return Err(Status::not_found(format!(
                "node {} is not part of the cluster; it was removed",
                id.node_id
            )));
        };
        // The role is the cluster's decision now, not what the old certificate said.
        let (certificate, renewed) = crate::certs::issue(
            &self.certs,
            &req.into_inner().csr,
            &id.node_id,
            node.spec.role,
            cluster,
        )?;
        if let Some(cmd) = renewed {
            self.manager.propose(cmd).await.map_err(Status::from)?;
            info!(node = %node.hostname(), "issued a certificate from the new root CA");
        }
        info!(node = %node.hostname(), role = %node.spec.role, "renewed a node certificate");
        // A manager (a worker promoted since its last certificate) gets what a joining
        // manager gets: the root's key to issue with and the registry-login key.
        let manager = node.spec.role == NodeRole::Manager;
        Ok(Response::new(RenewResponse {
            certificate,
            ca_certificate: self.certs.ca().der().to_vec(),
            ca_key: if manager {
                self.root()?.key_pem().into_bytes()
            } else {
                Vec::new()
            },
            registry_auth_key: if manager {
                self.manager
                    .logins
                    .key()
                    .map_err(|e| Status::internal(e.to_string()))?
                    .to_bytes()
            } else {
                Vec::new()
            },
        }))
    }

    type SessionStream = SessionStream;

    async fn session(
        &self,
        req: Request<SessionRequest>,
    ) -> Result<Response<SessionStream>, Status> {
        let id = self.gate.member(&req, "Session", Access::Member)?;
        let req = req.into_inner();
        acting_for(&id, &req.node_id)?;
        let node_id = id.node_id;
        if !self.manager.store.is_leader() {
            return Err(not_leader(&self.manager));
        }
        let Some(node) = self.manager.state().nodes.get(&node_id).cloned() else {
            return Err(Status::not_found(format!(
                "node {node_id} is not part of the cluster; it was removed"
            )));
        };
        self.manager.seen(&node_id);
        let mut description = node.description.clone();
        if !req.data_plane.is_empty() {
            let data_plane: DataPlane = serde_json::from_slice(&req.data_plane).map_err(|e| {
                Status::invalid_argument(format!("data plane report does not parse: {e}"))
            })?;
            description.data_plane = Some(data_plane);
        }
        if !req.host_networks.is_empty() {
            description.host_networks =
                serde_json::from_slice(&req.host_networks).map_err(|e| {
                    Status::invalid_argument(format!("host networks do not parse: {e}"))
                })?;
        }
        if !req.resources.is_empty() {
            description.resources = serde_json::from_slice(&req.resources).map_err(|e| {
                Status::invalid_argument(format!("node resources do not parse: {e}"))
            })?;
        }
        if description != node.description {
            // Reported once per session: tried again while no leader takes it.
            self.manager.propose_in_background(
                Command::SetNodeDescription {
                    id: node_id.clone(),
                    description,
                },
                "record what a node reported at its session",
            );
        }
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let manager = Arc::clone(&self.manager);
        let sessions = Arc::clone(&self.sessions);
        let ticket = sessions.open(&node_id);
        tokio::spawn(async move {
            session_loop(&manager, &node_id, tx, ticket.replaced).await;
            if sessions.close(&node_id, ticket.id) {
                let state = manager.state();
                manager.endpoints_progress(&node_id, &state, Progress::Disconnected);
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn heartbeat(
        &self,
        req: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let id = self.gate.member(&req, "Heartbeat", Access::Member)?;
        acting_for(&id, &req.get_ref().node_id)?;
        let _call = self.in_flight.enter(&id.node_id, "Heartbeat")?;
        if !self.manager.store.is_leader() {
            return Err(not_leader(&self.manager));
        }
        let node_id = id.node_id;
        if !self.manager.state().nodes.contains_key(&node_id) {
            return Err(Status::not_found("this node was removed from the cluster"));
        }
        self.manager.seen(&node_id);
        Ok(Response::new(HeartbeatResponse {
            period_ms: self.manager.heartbeat_period_ms(),
        }))
    }

    async fn report_status(
        &self,
        req: Request<StatusReport>,
    ) -> Result<Response<StatusAck>, Status> {
        let id = self.gate.member(&req, "ReportStatus", Access::Member)?;
        let req = req.into_inner();
        acting_for(&id, &req.node_id)?;
        let _call = self.in_flight.enter(&id.node_id, "ReportStatus")?;
        let updates: Vec<(String, TaskStatus)> = serde_json::from_slice(&req.updates)
            .map_err(|e| Status::invalid_argument(format!("status report does not parse: {e}")))?;
        if updates.len() > MAX_REPORTED_TASKS {
            return Err(Status::invalid_argument(format!(
                "a status report of {} tasks is more than the {MAX_REPORTED_TASKS} a report may carry; send it in parts",
                updates.len()
            )));
        }
        let node_id = id.node_id;
        let cmds = updates
            .into_iter()
            .map(|(task, status)| Command::UpdateTaskStatus {
                id: task,
                node_id: node_id.clone(),
                status,
            })
            .collect();
        match self.manager.store.propose(Command::Batch(cmds)).await {
            // A report about a task that no longer exists is not the agent's problem.
            Ok(CommandResult::Ok) | Ok(CommandResult::Err(_)) => Ok(Response::new(StatusAck {})),
            Err(shoal_store::StoreError::NotLeader { .. }) => Err(not_leader(&self.manager)),
            Err(e) => {
                warn!("failed to record task status: {e}");
                Err(Status::unavailable(e.to_string()))
            }
        }
    }

    async fn ack_endpoints(
        &self,
        req: Request<EndpointAck>,
    ) -> Result<Response<StatusAck>, Status> {
        let id = self.gate.member(&req, "AckEndpoints", Access::Member)?;
        let req = req.into_inner();
        acting_for(&id, &req.node_id)?;
        let _call = self.in_flight.enter(&id.node_id, "AckEndpoints")?;
        let state = self.manager.state();
        // A table the node could not apply whole is not an ack: the node stays unsynced
        // (convergence waits) and its status says why until an apply succeeds.
        if req.error.is_empty() {
            self.manager
                .endpoints_progress(&id.node_id, &state, Progress::Acked(req.version));
        }
        if let Some(node) = state.nodes.get(&id.node_id) {
            let said = &node.status.message;
            let now = if req.error.is_empty() {
                // Only a message of ours is cleared.
                (said.starts_with(APPLY_FAILED)).then(String::new)
            } else {
                let text = format!("{APPLY_FAILED}{}", req.error);
                (said != &text).then_some(text)
            };
            if let Some(message) = now {
                if !req.error.is_empty() {
                    warn!(node = %id.node_id, version = req.version, "{message}");
                }
                let cmd = Command::SetNodeState {
                    id: id.node_id.clone(),
                    state: node.status.state,
                    message,
                    at: shoal_agent::worker::now(),
                };
                // Tried once: by a retry, the node state it carries may be stale (a node
                // marked Down meanwhile would read Ready again).
                let manager = Arc::clone(&self.manager);
                tokio::spawn(async move {
                    if let Err(e) = manager.propose(cmd).await {
                        warn!("failed to record a node's endpoint apply: {e}");
                    }
                });
            }
        }
        Ok(Response::new(StatusAck {}))
    }
}

impl ClusterService {
    fn root(&self) -> Result<Arc<shoal_pki::RootCa>, Status> {
        self.certs
            .root()
            .ok_or_else(|| Status::internal("this manager has no root CA key"))
    }
}
