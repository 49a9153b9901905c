//! The `Cluster` gRPC service that managers serve to other nodes.
//! Everything that writes needs the leader: a follower forwards `Propose` and `Join`, and
//! tells agents where the leader is (metadata `shoal-leader`) so their sessions move there.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Arc;

use shoal_manager::dispatcher::{NodeSession, Update};
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
use shoal_types::{Availability, Command, Node, NodeRole, NodeState, TaskState, TaskStatus};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::certs::NodeCerts;
use crate::gate::{Gate, acting_for};
use crate::manager::Manager;

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
    if let Some((_, addr)) = manager.leader()
        && let Ok(v) = addr.parse()
    {
        status.metadata_mut().insert(shoal_rpc::LEADER_METADATA, v);
    }
    status
}

pub use shoal_manager::dispatcher::manager_addrs;

/// Streams a node's assignments and endpoint deltas until the agent goes away or this
/// manager stops leading. What to send is `NodeSession`'s decision; this loop waits for a
/// reason to look again, adds what needs the daemon (registry logins, the manager list)
/// and sends it.
async fn session_loop(
    manager: &Arc<Manager>,
    node_id: &str,
    tx: tokio::sync::mpsc::Sender<Result<Assignments, Status>>,
    mut replaced: tokio::sync::oneshot::Receiver<()>,
) {
    let mut state_rx = manager.watch_state();
    let mut leading = manager.watch_leading();
    let mut session = NodeSession::new(node_id);
    // The registry logins the agent has (`--with-registry-auth`), and those opened so far.
    let mut sent_logins: Option<BTreeMap<String, shoal_image::AuthConfig>> = None;
    let mut opened = HashMap::new();
    loop {
        if !manager.is_leader() {
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
        // The table first: it records the change a stop waits for, so the drain below
        // sees that change as not yet synced.
        let table = manager.endpoint_table(&state);
        let draining = session.follow_with(&state, |old, new| manager.changed_by_node(old, new));
        let held = manager.held_for_drain(&state, draining);
        // Only a session that holds a task for draining has a use for acks: every node's ack
        // woke every session before, a thousand sessions a thousand times per change.
        let holding = !held.is_empty();
        let (update, progress) = session.next(&state, &table, held);
        if let Some(update) = update {
            // Logins go with the task changes that may need them, before the agent starts
            // them. Only services with a login matter (usually none): their tasks on this
            // node, not every task of the node at each change.
            let logins = if update.tasks_changed() {
                let mine = session.tasks();
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
            let msg = assignments(update, logins.as_ref(), manager.heartbeat_period_ms());
            if tx.send(Ok(msg)).await.is_err() {
                return;
            }
            if logins.is_some() {
                sent_logins = logins;
            }
        }
        manager.view_progress(node_id, &state, progress);
        // Wake on a state change or a leadership change, or (while a task is held) on an
        // ack or after a second: either may release a task held for draining. A thousand
        // sessions each woken every second cost the leader 15% of a core at rest.
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
            _ = leading.changed() => {}
            _ = manager.acked(), if holding => {}
            // A held task is let go at the drain's time limit, ack or not.
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)), if holding => {}
        }
    }
}

/// The message that carries `update` (an empty field means "unchanged" to the agent; an
/// empty task list is `[]`).
fn assignments(
    update: Update,
    logins: Option<&BTreeMap<String, shoal_image::AuthConfig>>,
    heartbeat_period_ms: u64,
) -> Assignments {
    fn json<T: serde::Serialize>(v: Option<&T>) -> Vec<u8> {
        v.map(|v| serde_json::to_vec(v).unwrap_or_default())
            .unwrap_or_default()
    }
    Assignments {
        version: update.version,
        tasks: json(update.tasks.as_ref()),
        tasks_delta: json(update.task_delta.as_ref()),
        managers: update.managers,
        heartbeat_period_ms,
        endpoints: json(update.endpoints.as_ref()),
        registry_auth: json(logins),
        ca: json(update.ca.as_ref()),
        role: update.role.map(|r| r.to_string()).unwrap_or_default(),
    }
}

/// The most task statuses one report may carry (an agent sends what changed since its last).
const MAX_REPORTED_TASKS: usize = 10_000;

/// A node's description with what its agent reported at the start of its session (an
/// empty field: not reported, kept as it was).
fn reported_description(
    was: &NodeDescription,
    req: &SessionRequest,
) -> Result<NodeDescription, Status> {
    let mut description = was.clone();
    if !req.data_plane.is_empty() {
        let data_plane: DataPlane = serde_json::from_slice(&req.data_plane).map_err(|e| {
            Status::invalid_argument(format!("data plane report does not parse: {e}"))
        })?;
        description.data_plane = Some(data_plane);
    }
    if !req.host_networks.is_empty() {
        description.host_networks = serde_json::from_slice(&req.host_networks)
            .map_err(|e| Status::invalid_argument(format!("host networks do not parse: {e}")))?;
    }
    if !req.resources.is_empty() {
        description.resources = serde_json::from_slice(&req.resources)
            .map_err(|e| Status::invalid_argument(format!("node resources do not parse: {e}")))?;
    }
    Ok(description)
}

/// The commands that record a status report of `node_id` (bounded: a report carries what
/// changed since the agent's last).
fn status_updates(node_id: &str, data: &[u8]) -> Result<Vec<Command>, Status> {
    let updates: Vec<(String, TaskStatus)> = serde_json::from_slice(data)
        .map_err(|e| Status::invalid_argument(format!("status report does not parse: {e}")))?;
    if updates.len() > MAX_REPORTED_TASKS {
        return Err(Status::invalid_argument(format!(
            "a status report of {} tasks is more than the {MAX_REPORTED_TASKS} a report may carry; send it in parts",
            updates.len()
        )));
    }
    Ok(updates
        .into_iter()
        .map(|(task, status)| Command::UpdateTaskStatus {
            id: task,
            node_id: node_id.to_string(),
            status,
        })
        .collect())
}

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
        let reply = match self.manager.propose_here(cmd).await {
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
        if !self.manager.is_leader() {
            let Some((_, addr)) = self.manager.leader() else {
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
        let now = self.manager.now().wall;
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
        if !self.manager.is_leader() {
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
            .add_raft_voter(status.raft_id, status.addr)
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
        if !self.manager.is_leader() {
            return Err(not_leader(&self.manager));
        }
        let Some(node) = self.manager.state().nodes.get(&node_id).cloned() else {
            return Err(Status::not_found(format!(
                "node {node_id} is not part of the cluster; it was removed"
            )));
        };
        self.manager.seen(&node_id);
        let description = reported_description(&node.description, &req)?;
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
                manager.disconnected(&node_id);
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
        if !self.manager.is_leader() {
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
        let cmds = status_updates(&id.node_id, &req.updates)?;
        // A report about a task that no longer exists is not the agent's problem: the
        // commit's result (the first such error of the entry) is not read.
        match self.manager.report_status(cmds).await {
            Ok(()) => Ok(Response::new(StatusAck {})),
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
        // A table the node could not apply whole is not an ack: the node stays unsynced
        // (convergence waits) and its status says why until an apply succeeds.
        self.manager
            .endpoints_acked(&id.node_id, req.version, &req.error);
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

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_types::fixtures::*;
    use shoal_types::{Millis, Task, TaskDelta};

    #[test]
    fn an_update_becomes_a_message_whose_empty_fields_mean_unchanged() {
        let quiet = Update {
            managers: vec!["10.0.0.1:2377".into()],
            ..Update::default()
        };
        let msg = assignments(quiet, None, 1000);
        assert!(msg.tasks.is_empty() && msg.tasks_delta.is_empty() && msg.endpoints.is_empty());
        assert!(msg.ca.is_empty() && msg.role.is_empty() && msg.registry_auth.is_empty());
        assert_eq!(msg.managers, ["10.0.0.1:2377"]);
        // A whole list with no task in it is not "unchanged": the agent stops everything.
        let update = Update {
            version: 7,
            tasks: Some(Vec::new()),
            task_delta: Some(TaskDelta {
                upsert: Vec::<Task>::new(),
                remove: vec!["ta".into()],
            }),
            role: Some(NodeRole::Manager),
            ..Update::default()
        };
        let msg = assignments(update, Some(&BTreeMap::new()), 1000);
        assert_eq!(msg.version, 7);
        assert_eq!(msg.tasks, b"[]");
        let delta: TaskDelta = serde_json::from_slice(&msg.tasks_delta).unwrap();
        assert_eq!(delta.remove, ["ta"]);
        assert_eq!(msg.role, "manager");
        assert_eq!(msg.registry_auth, b"{}");
    }

    #[test]
    fn a_session_keeps_what_its_agent_did_not_report() {
        let was = node("n1", "node1").description;
        let none = SessionRequest::default();
        assert_eq!(reported_description(&was, &none).unwrap(), was);
        let resources = shoal_types::node::Resources {
            nano_cpus: 2_000_000_000,
            memory_bytes: 1 << 30,
        };
        let req = SessionRequest {
            resources: serde_json::to_vec(&resources).unwrap(),
            ..Default::default()
        };
        let now = reported_description(&was, &req).unwrap();
        assert_eq!(now.resources, resources);
        assert_eq!(now.host_networks, was.host_networks);
        let bad = SessionRequest {
            host_networks: b"{".to_vec(),
            ..Default::default()
        };
        let err = reported_description(&was, &bad).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().starts_with("host networks do not parse"));
    }

    #[test]
    fn a_status_report_is_recorded_for_its_node_and_bounded() {
        let st = TaskStatus::new(TaskState::Running, Millis(1), "");
        let data = serde_json::to_vec(&[("ta", &st)]).unwrap();
        let cmds = status_updates("n2", &data).unwrap();
        assert_eq!(
            cmds,
            [Command::UpdateTaskStatus {
                id: "ta".into(),
                node_id: "n2".into(),
                status: st.clone(),
            }]
        );
        let many: Vec<(String, TaskStatus)> = (0..=MAX_REPORTED_TASKS)
            .map(|i| (format!("t{i}"), st.clone()))
            .collect();
        let err = status_updates("n2", &serde_json::to_vec(&many).unwrap()).unwrap_err();
        assert_eq!(
            err.message(),
            "a status report of 10001 tasks is more than the 10000 a report may carry; send it in parts"
        );
        let err = status_updates("n2", b"not json").unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn the_managers_are_the_nodes_with_a_manager_status() {
        // (Used by `Join`'s reply and by every session message.)
        let mut st = cluster(&[("n1", "node1"), ("n2", "node2")]);
        assert!(manager_addrs(&st).is_empty());
        st.apply(Command::AddNode {
            node: Node {
                manager_status: Some(ManagerStatus {
                    raft_id: 3,
                    addr: "10.0.0.3:2377".into(),
                    leader: false,
                    reachability: String::new(),
                }),
                ..node("n3", "node3")
            },
            at: Millis(0),
        })
        .unwrap();
        assert_eq!(manager_addrs(&st), ["10.0.0.3:2377"]);
    }
}
