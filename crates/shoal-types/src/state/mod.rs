//! The replicated cluster state and the commands that change it.
//!
//! Every manager applies the same committed commands in the same order, so `apply` must be
//! deterministic: it reads nothing but its arguments. Validation that depends on the state
//! (a name already in use, a node that is not down) happens here, at apply time, so that two
//! racing proposals cannot both succeed.

use std::collections::BTreeMap;
use std::sync::Arc;

pub use imbl::{OrdMap, OrdSet};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::network::{Attachment, Network};
use crate::{
    Availability, Millis, Node, NodeRole, NodeState, ServiceSpec, Task, TaskState, TaskStatus,
    UpdateStatus,
};

/// The maps are persistent (`imbl`): a copy shares everything with the original and a
/// change copies only the path to it. The Raft state machine copies the state for each
/// applied batch while readers (sessions, the API, the leader's loop) hold older versions,
/// and a deep copy of a thousand tasks per batch was the leader's largest cost per change.
/// The serialised form is the same as a `BTreeMap`'s (a JSON object in key order).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StateRepr")]
pub struct ClusterState {
    pub cluster: Option<ClusterInfo>,
    pub nodes: OrdMap<String, Node>,
    pub services: OrdMap<String, Service>,
    /// Changed only by `apply`, which keeps `index` in step. Behind an `Arc`: a copy of
    /// the map (every state change copies the B-tree leaves it touches, with their 64
    /// tasks) then copies pointers, not tasks, and comparing two states (imbl's diff, by
    /// `==`) takes a task that did not change as equal by its pointer alone.
    pub tasks: OrdMap<String, Arc<Task>>,
    #[serde(default)]
    pub networks: OrdMap<String, Network>,
    /// Bumped by every command that changed something; agents and watchers compare it.
    pub version: u64,
    /// Task ids by service, waiting tasks, live tasks per node, addresses held: read by
    /// `tasks_of`, `waiting`, `node_load`, `address_taken` without a pass over every task
    /// of the cluster. Derived from `tasks` and `services`, so not serialised.
    #[serde(skip)]
    index: Index,
}

/// The serialised form: the state without its derived index.
#[derive(Deserialize)]
struct StateRepr {
    cluster: Option<ClusterInfo>,
    nodes: OrdMap<String, Node>,
    services: OrdMap<String, Service>,
    tasks: OrdMap<String, Arc<Task>>,
    #[serde(default)]
    networks: OrdMap<String, Network>,
    version: u64,
}

impl From<StateRepr> for ClusterState {
    fn from(r: StateRepr) -> ClusterState {
        let index = Index::build(r.tasks.values().map(Arc::as_ref), r.services.values());
        ClusterState {
            cluster: r.cluster,
            nodes: r.nodes,
            services: r.services,
            tasks: r.tasks,
            networks: r.networks,
            version: r.version,
            index,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ClusterInfo {
    #[serde(rename = "ID")]
    pub id: String,
    pub created_at: Millis,
    /// The join tokens (`SWMTKN-1-<root CA digest>-<secret>`): the one presented at `Join`
    /// decides the role. Replaced by `RotateJoinToken`.
    pub worker_token: String,
    pub manager_token: String,
    /// How long a node certificate issued now is valid (`--cert-expiry`).
    #[serde(default = "default_cert_expiry_ms")]
    pub cert_expiry_ms: u64,
    /// Nodes removed from the cluster: their certificates are refused from then on, while
    /// they are still valid.
    #[serde(default)]
    pub removed_nodes: std::collections::BTreeSet<String>,
    /// How often agents send heartbeats.
    pub heartbeat_period_ms: u64,
    /// Periods without a heartbeat after which a node is Down (Swarm's grace multiple).
    #[serde(default = "default_heartbeat_grace")]
    pub heartbeat_grace: u32,
    /// The root CA a rotation installed (`None`: the one made at `init`, which each
    /// manager keeps in its own files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_ca: Option<RootCaRecord>,
    /// `ca --rotate` in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_rotation: Option<CaRotation>,
}

/// Swarm's grace multiple: a node is Down after three silent periods.
pub const DEFAULT_HEARTBEAT_GRACE: u32 = 3;

/// Swarm's default node certificate lifetime: 90 days.
pub const DEFAULT_CERT_EXPIRY_MS: u64 = 90 * 24 * 3600 * 1000;

fn default_cert_expiry_ms() -> u64 {
    DEFAULT_CERT_EXPIRY_MS
}

fn default_heartbeat_grace() -> u32 {
    DEFAULT_HEARTBEAT_GRACE
}

impl ClusterInfo {
    /// How long a node may stay silent before it is marked Down.
    pub fn heartbeat_grace_ms(&self) -> u64 {
        self.heartbeat_period_ms
            .saturating_mul(u64::from(self.heartbeat_grace.max(1)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Service {
    #[serde(rename = "ID")]
    pub id: String,
    pub version: u64,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub spec: ServiceSpec,
    #[serde(default)]
    pub endpoint: Endpoint,
    /// `--with-registry-auth`: the login for the image's registry, sealed with the managers'
    /// key (shoal-image's `seal`); never plain text here. The API leaves it out of what it
    /// shows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_auth: Option<String>,
    /// The spec before the last update (`service rollback` goes back to it); none after an
    /// automatic rollback, as Swarm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_spec: Option<Box<ServiceSpec>>,
    /// Where the last rollout stands; none until an update changes what tasks run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_status: Option<UpdateStatus>,
    /// Tasks made before this version are replaced whatever their spec: the version that
    /// changed `TaskTemplate.ForceUpdate` last (`service update --force`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub force_version: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Filled by the allocator (networks, VIPs, published ports) in later work.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Endpoint {
    #[serde(default, rename = "VirtualIPs")]
    pub virtual_ips: Vec<VirtualIp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VirtualIp {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    pub addr: ipnet::Ipv4Net,
}

/// One Raft log entry's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    InitCluster {
        info: ClusterInfo,
        node: Node,
    },
    AddNode {
        node: Node,
        at: Millis,
    },
    UpdateNodeSpec {
        id: String,
        availability: Option<Availability>,
        labels: Option<BTreeMap<String, String>>,
        at: Millis,
    },
    /// What a node reported about itself (its data plane) when its session started.
    SetNodeDescription {
        id: String,
        description: crate::node::NodeDescription,
    },
    SetNodeState {
        id: String,
        state: NodeState,
        message: String,
        at: Millis,
    },
    RemoveNode {
        id: String,
        force: bool,
    },
    /// `node promote|demote`: the node's role as the cluster decides it. A manager gets its
    /// `ManagerStatus` (its Raft id and address) here; it is added to the Raft voters once
    /// it serves Raft (`JoinRaft`), and a demoted one is taken out by the leader's
    /// membership loop.
    SetNodeRole {
        id: String,
        role: NodeRole,
        at: Millis,
    },
    /// `init --force-new-cluster` on the manager `node_id`: the Raft group is that manager
    /// alone now, so every other manager is removed and refused from then on (an old voter
    /// coming back cannot split the cluster).
    ForceNewCluster {
        node_id: String,
        at: Millis,
    },
    /// `join-token --rotate`: the role's old token stops working at once.
    RotateJoinToken {
        role: NodeRole,
        token: String,
    },
    CreateService {
        service: Service,
    },
    UpdateService {
        id: String,
        spec: ServiceSpec,
        at: Millis,
        /// The service's version the update was made from (docker's `?version=`): checked
        /// here, in the log's order, so that of two updates made from the same version the
        /// second is refused ("update out of sequence") instead of undoing the first.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected_version: Option<u64>,
    },
    RemoveService {
        id: String,
    },
    /// Back to the previous spec. `rollout: None` is `service rollback` (the current spec
    /// becomes the previous one); `Some(version)` is the orchestrator's, after failures of
    /// the rollout that began at `version` (dropped if another has begun since).
    RollbackService {
        id: String,
        rollout: Option<u64>,
        message: String,
        at: Millis,
    },
    /// The orchestrator's word on a rollout (paused, completed); dropped unless the
    /// service's rollout is still the one `status.version` names.
    SetUpdateStatus {
        id: String,
        status: UpdateStatus,
    },
    /// Replaces a service's sealed registry login (`service update --with-registry-auth`),
    /// proposed before the update that uses it.
    SetRegistryAuth {
        id: String,
        sealed: Option<String>,
    },
    CreateTasks {
        tasks: Vec<Task>,
    },
    AssignTasks {
        assignments: Vec<(String, String)>,
        at: Millis,
    },
    SetDesiredState {
        tasks: Vec<String>,
        state: TaskState,
        at: Millis,
    },
    UpdateTaskStatus {
        id: String,
        node_id: String,
        status: TaskStatus,
    },
    DeleteTasks {
        tasks: Vec<String>,
    },
    CreateNetwork {
        network: Network,
    },
    RemoveNetwork {
        id: String,
    },
    /// Why tasks that wait (New or Pending) cannot go on: no address left, no node that
    /// fits. Shown in the ERROR column of `service ps`; the state does not change.
    SetTaskErrors {
        errors: Vec<(String, String)>,
    },
    /// The allocator's addresses for New tasks; moves each to Pending.
    AllocateTasks {
        allocations: Vec<(String, Vec<Attachment>)>,
        at: Millis,
    },
    /// A service's VIPs, one per network it is on (vip mode).
    SetVips {
        service_id: String,
        vips: Vec<VirtualIp>,
    },
    /// A node's address on the ingress network.
    SetNodeIngress {
        node_id: String,
        addr: ipnet::Ipv4Net,
    },
    /// `ca --rotate`: nodes trust the new root beside the current one and renew from it.
    StartCaRotation {
        rotation: CaRotation,
    },
    /// A manager issued `node_id` a certificate from the new root of `rotation`.
    CaRotationRenewed {
        rotation: String,
        node_id: String,
    },
    /// Every node that is not Down has renewed: the new root replaces the old, and the join
    /// tokens pin it.
    FinishCaRotation {
        rotation: String,
        worker_token: String,
        manager_token: String,
    },
    /// Several commands in one entry. Each applies on its own; the first error is returned
    /// but does not undo the others (used by the orchestrator, whose commands are independent).
    Batch(Vec<Command>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    Ok,
    Err(ApplyError),
}

#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum ApplyError {
    #[error("this node is already part of a cluster")]
    AlreadyInitialized,
    #[error("the cluster is not initialised; run `shoal init` first")]
    NotInitialized,
    #[error("service name {0:?} is already in use; pick another name or `shoal service rm {0}`")]
    ServiceNameInUse(String),
    #[error("no such service: {0}")]
    NoSuchService(String),
    #[error("no such node: {0}")]
    NoSuchNode(String),
    #[error("no such task: {0}")]
    NoSuchTask(String),
    #[error("node {0} is not down and can't be removed; stop its daemon or use --force")]
    NodeNotDown(String),
    #[error(
        "node {0} is a manager: one that is up leaves with `shoal leave --force` run on it; one that is down is removed with `shoal node rm --force {0}`"
    )]
    NodeIsManager(String),
    #[error("attempting to demote the last manager of the swarm ({0}); promote another node first")]
    LastManager(String),
    #[error("network {0} not found; create it with `shoal network create --driver overlay {0}`")]
    NoSuchNetwork(String),
    #[error("network name {0:?} is already in use")]
    NetworkNameInUse(String),
    #[error("network {network} is in use by service(s) {services}; remove them first")]
    NetworkInUse { network: String, services: String },
    #[error("address {addr} on network {network} is already in use")]
    AddressInUse { network: String, addr: String },
    #[error(
        "port {port} is already published by service {service}; publish another port or remove {service}"
    )]
    PortInUse { port: String, service: String },
    #[error(
        "a root CA rotation is already in progress ({renewed} of {total} nodes have a certificate from the new root); wait for it to finish: `shoal ca` shows its progress"
    )]
    CaRotationInProgress { renewed: usize, total: usize },
    /// docker's words, so that its CLI's users recognise them.
    #[error(
        "update out of sequence: service {service} is at version {version} and this update was made from version {expected}; read it again and retry"
    )]
    OutOfSequence {
        service: String,
        version: u64,
        expected: u64,
    },
    #[error("{0}")]
    Invalid(String),
}

impl ClusterState {
    /// Applies one committed command. Returns an error (and changes nothing for that
    /// command) when the command is not valid against the current state.
    pub fn apply(&mut self, cmd: Command) -> Result<(), ApplyError> {
        let before = self.version;
        let res = self.apply_inner(cmd);
        if res.is_ok() && self.version == before {
            self.version += 1;
        }
        res
    }

    fn apply_inner(&mut self, cmd: Command) -> Result<(), ApplyError> {
        // A batch is checked command by command (it may start with InitCluster).
        if self.cluster.is_none() && !matches!(cmd, Command::InitCluster { .. } | Command::Batch(_))
        {
            return Err(ApplyError::NotInitialized);
        }
        match cmd {
            Command::InitCluster { info, node } => {
                if self.cluster.is_some() {
                    return Err(ApplyError::AlreadyInitialized);
                }
                self.cluster = Some(info);
                self.nodes.insert(node.id.clone(), node);
            }
            Command::AddNode { mut node, at } => {
                node.updated_at = at;
                self.nodes.insert(node.id.clone(), node);
            }
            Command::UpdateNodeSpec {
                id,
                availability,
                labels,
                at,
            } => {
                let node = self.nodes.get_mut(&id).ok_or(ApplyError::NoSuchNode(id))?;
                if let Some(a) = availability {
                    node.spec.availability = a;
                }
                if let Some(l) = labels {
                    node.spec.labels = l;
                }
                node.updated_at = at;
            }
            Command::SetNodeState {
                id,
                state,
                message,
                at,
            } => {
                let node = self.nodes.get_mut(&id).ok_or(ApplyError::NoSuchNode(id))?;
                node.status.state = state;
                node.status.message = message;
                node.updated_at = at;
            }
            Command::RemoveNode { id, force } => {
                let node = self
                    .nodes
                    .get(&id)
                    .ok_or_else(|| ApplyError::NoSuchNode(id.clone()))?;
                // A manager goes with --force once it is down (the leader then takes it
                // out of the Raft voters: `shoal_manager::membership`); a live one leaves
                // on its own (`leave --force`, which marks it down first).
                if node.spec.role == NodeRole::Manager
                    && (!force || node.status.state == NodeState::Ready)
                {
                    return Err(ApplyError::NodeIsManager(node.hostname().to_string()));
                }
                if !force && node.status.state == NodeState::Ready {
                    return Err(ApplyError::NodeNotDown(node.hostname().to_string()));
                }
                self.nodes.remove(&id);
                if let Some(c) = self.cluster.as_mut() {
                    c.removed_nodes.insert(id);
                }
            }
            Command::RotateJoinToken { role, token } => {
                let c = self.cluster.as_mut().ok_or(ApplyError::NotInitialized)?;
                match role {
                    NodeRole::Worker => c.worker_token = token,
                    NodeRole::Manager => c.manager_token = token,
                }
            }
            Command::StartCaRotation { rotation } => self.start_ca_rotation(rotation)?,
            Command::CaRotationRenewed { rotation, node_id } => {
                self.ca_rotation_renewed(&rotation, node_id)
            }
            Command::FinishCaRotation {
                rotation,
                worker_token,
                manager_token,
            } => self.finish_ca_rotation(&rotation, worker_token, manager_token)?,
            Command::CreateService { service } => {
                service.spec.validate().map_err(ApplyError::Invalid)?;
                self.check_networks(&service.spec)?;
                self.check_ports(&service.spec, None)?;
                if self.service_by_name(&service.spec.name).is_some() {
                    return Err(ApplyError::ServiceNameInUse(service.spec.name));
                }
                if let Some(old) = self.services.insert(service.id.clone(), service.clone()) {
                    self.index.remove_service(&old);
                }
                self.index.add_service(&service);
            }
            Command::UpdateService {
                id,
                spec,
                at,
                expected_version,
            } => self.update_service(&id, spec, at, expected_version)?,
            Command::RollbackService {
                id,
                rollout,
                message,
                at,
            } => self.rollback_service(&id, rollout, message, at)?,
            Command::SetUpdateStatus { id, status } => self.set_update_status(&id, status),
            Command::SetRegistryAuth { id, sealed } => {
                let svc = self
                    .services
                    .get_mut(&id)
                    .ok_or_else(|| ApplyError::NoSuchService(id.clone()))?;
                svc.registry_auth = sealed;
                if svc.registry_auth.is_some() {
                    self.index.with_login.insert(id);
                } else {
                    self.index.with_login.remove(&id);
                }
            }
            Command::RemoveService { id } => {
                let removed = self
                    .services
                    .remove(&id)
                    .ok_or_else(|| ApplyError::NoSuchService(id.clone()))?;
                self.index.remove_service(&removed);
                // Its tasks stay until the agents have stopped them; the orchestrator
                // sets them to shut down and deletes them once they are terminal.
                let ids: Vec<String> = self.tasks_of(&id).map(|t| t.id.clone()).collect();
                for tid in ids {
                    self.with_task(&tid, |t| {
                        t.desired_state = t.desired_state.max(TaskState::Shutdown);
                    });
                }
            }
            Command::CreateTasks { tasks } => {
                for t in tasks {
                    if self.services.contains_key(&t.service_id) {
                        let after = Footprint::of(&t);
                        let before = self.tasks.insert(t.id.clone(), Arc::new(t));
                        let before = before.as_deref().map(Footprint::of);
                        self.index.replace(before.as_ref(), Some(&after));
                    }
                }
            }
            Command::AssignTasks { assignments, at } => {
                for (task_id, node_id) in assignments {
                    let Some(t) = self.tasks.get(&task_id) else {
                        continue;
                    };
                    // Global tasks come with their node; others get one here. Only
                    // allocated (Pending) tasks are placed.
                    if t.node_id.as_ref().is_some_and(|n| n != &node_id)
                        || t.status.state != TaskState::Pending
                    {
                        continue;
                    }
                    self.with_task(&task_id, |t| {
                        t.node_id = Some(node_id);
                        t.status = TaskStatus::new(TaskState::Assigned, at, "scheduled");
                        t.updated_at = at;
                    });
                }
            }
            Command::SetDesiredState { tasks, state, at } => {
                for id in tasks {
                    // Desired state, too, only moves forward.
                    if self.tasks.get(&id).is_some_and(|t| state > t.desired_state) {
                        self.with_task(&id, |t| {
                            t.desired_state = state;
                            t.updated_at = at;
                        });
                    }
                }
            }
            Command::UpdateTaskStatus {
                id,
                node_id,
                status,
            } => {
                let t = self
                    .tasks
                    .get(&id)
                    .ok_or_else(|| ApplyError::NoSuchTask(id.clone()))?;
                if t.node_id.as_deref() != Some(node_id.as_str()) {
                    return Err(ApplyError::Invalid(format!(
                        "task {} is not assigned to node {node_id}",
                        t.id
                    )));
                }
                // A stale or repeated report (state not ahead) is ignored, not an error:
                // agents resend after reconnecting. A newer word while preparing (how far
                // the image's pull is) replaces the older one.
                let newer_progress = status.state == TaskState::Preparing
                    && t.status.state == TaskState::Preparing
                    && status.timestamp > t.status.timestamp;
                // A running task's health and readiness move on in the same state; the
                // status keeps the time it started running (`Running 5 seconds ago`).
                let running =
                    status.state == TaskState::Running && t.status.state == TaskState::Running;
                use crate::health::progress;
                if running {
                    if progress(status.health, status.ready)
                        > progress(t.status.health, t.status.ready)
                    {
                        self.with_task(&id, |t| {
                            if status.ready && t.ready_at.is_none() {
                                t.ready_at = Some(status.timestamp);
                            }
                            t.updated_at = status.timestamp.max(t.updated_at);
                            t.status.health = status.health;
                            t.status.ready = status.ready;
                            t.status.message = status.message;
                        });
                    }
                } else if status.state > t.status.state || newer_progress {
                    self.with_task(&id, |t| {
                        if status.state == TaskState::Running && t.started_at.is_none() {
                            t.started_at = Some(status.timestamp);
                        }
                        if status.state == TaskState::Running
                            && status.ready
                            && t.ready_at.is_none()
                        {
                            t.ready_at = Some(status.timestamp);
                        }
                        t.updated_at = status.timestamp;
                        t.status = status;
                    });
                }
            }
            Command::DeleteTasks { tasks } => {
                for id in tasks {
                    if let Some(t) = self.tasks.remove(&id) {
                        self.index.replace(Some(&Footprint::of(&t)), None);
                    }
                }
            }
            Command::SetNodeDescription { id, description } => {
                let node = self.nodes.get_mut(&id).ok_or(ApplyError::NoSuchNode(id))?;
                node.description = description;
            }
            Command::CreateNetwork { network } => self.create_network(network)?,
            Command::RemoveNetwork { id } => self.remove_network(&id)?,
            Command::SetTaskErrors { errors } => {
                // The error is in no index: the tasks are changed in place.
                for (id, err) in errors {
                    if let Some(t) = self.tasks.get_mut(&id)
                        && t.status.state <= TaskState::Pending
                    {
                        Arc::make_mut(t).status.err = err;
                    }
                }
            }
            Command::AllocateTasks { allocations, at } => self.allocate_tasks(allocations, at)?,
            Command::SetVips { service_id, vips } => self.set_vips(&service_id, vips)?,
            Command::SetNodeIngress { node_id, addr } => self.set_node_ingress(&node_id, addr)?,
            Command::SetNodeRole { id, role, at } => self.set_node_role(&id, role, at)?,
            Command::ForceNewCluster { node_id, at } => self.force_new_cluster(&node_id, at)?,
            Command::Batch(cmds) => {
                let mut first_err = None;
                for c in cmds {
                    if let Err(e) = self.apply_inner(c) {
                        first_err.get_or_insert(e);
                    }
                }
                if let Some(e) = first_err {
                    self.version += 1;
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Published ports are one space per node: an ingress port takes it on every node, so
    /// no other service may publish it (ingress or host mode). Two host-mode services on one
    /// port are refused too: shoal does not place tasks by free host port, so both would land
    /// on one node and the first rule would silently win.
    fn check_ports(&self, spec: &ServiceSpec, except: Option<&str>) -> Result<(), ApplyError> {
        for p in &spec.endpoint_spec.ports {
            let Some(port) = p.published_port else {
                continue;
            };
            for other in self
                .services
                .values()
                .filter(|s| Some(s.id.as_str()) != except)
            {
                let clash = other
                    .spec
                    .endpoint_spec
                    .ports
                    .iter()
                    .any(|q| q.published_port == Some(port) && q.protocol == p.protocol);
                if clash {
                    return Err(ApplyError::PortInUse {
                        port: format!("{port}/{}", p.protocol),
                        service: other.spec.name.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    pub fn service_by_name(&self, name: &str) -> Option<&Service> {
        self.index
            .names
            .get(name)
            .and_then(|id| self.services.get(id))
    }

    /// Finds a service by full id, name, or unique id prefix, as docker does.
    pub fn find_service(&self, key: &str) -> Option<&Service> {
        if let Some(s) = self.services.get(key).or_else(|| self.service_by_name(key)) {
            return Some(s);
        }
        let mut it = self.services.values().filter(|s| s.id.starts_with(key));
        match (it.next(), it.next()) {
            (Some(s), None) => Some(s),
            _ => None,
        }
    }

    /// Finds a node by id, hostname, or unique id prefix.
    pub fn find_node(&self, key: &str) -> Option<&Node> {
        if let Some(n) = self.nodes.get(key) {
            return Some(n);
        }
        let by_host: Vec<_> = self
            .nodes
            .values()
            .filter(|n| n.hostname() == key)
            .collect();
        if by_host.len() == 1 {
            return Some(by_host[0]);
        }
        let mut it = self.nodes.values().filter(|n| n.id.starts_with(key));
        match (it.next(), it.next()) {
            (Some(n), None) => Some(n),
            _ => None,
        }
    }

    /// Finds a task by id, unique id prefix, full name, or `service.slot` (the live one).
    pub fn find_task(&self, key: &str) -> Option<&Task> {
        if let Some(t) = self.tasks.get(key) {
            return Some(t);
        }
        let mut it = self
            .tasks
            .values()
            .filter(|t| t.id.starts_with(key) || t.name() == key);
        if let (Some(t), None) = (it.next(), it.next()) {
            return Some(t);
        }
        // `vote.1`: prefer the task that is meant to run, then the newest.
        self.tasks
            .values()
            .filter(|t| t.slot_name() == key)
            .max_by_key(|t| (t.desired_state <= TaskState::Running, t.created_at))
            .map(Arc::as_ref)
    }

    /// How many tasks `service_id` has (any state).
    pub fn task_count_of(&self, service_id: &str) -> usize {
        self.index
            .by_service
            .get(service_id)
            .map_or(0, |ids| ids.len())
    }

    pub fn tasks_of<'a>(&'a self, service_id: &'a str) -> impl Iterator<Item = &'a Task> + 'a {
        let ids = self.index.by_service.get(service_id);
        // A service with a good part of the cluster's tasks is read by one walk of the task
        // map (in the same id order): a lookup per task made reading a service of 100,000
        // tasks, which the orchestrator does at every pass, 100,000 descents of the map.
        let walk = ids.is_some_and(|ids| ids.len() * 8 > self.tasks.len());
        let looked_up: Box<dyn Iterator<Item = &'a Task> + 'a> = if walk {
            Box::new(
                self.tasks
                    .values()
                    .filter(move |t| t.service_id == service_id)
                    .map(Arc::as_ref),
            )
        } else {
            Box::new(
                ids.into_iter()
                    .flat_map(|ids| ids.iter())
                    .filter_map(|id| self.tasks.get(id).map(Arc::as_ref)),
            )
        };
        looked_up
    }

    /// The tasks desired Running that wait in `state`: New (for addresses) or Pending (for
    /// a node), in id order. Any other state: none.
    pub fn waiting(&self, state: TaskState) -> impl Iterator<Item = &Task> + '_ {
        let ids = match state {
            TaskState::New => Some(&self.index.new),
            TaskState::Pending => Some(&self.index.pending),
            _ => None,
        };
        ids.into_iter()
            .flat_map(|ids| ids.iter())
            .filter_map(|id| self.tasks.get(id).map(Arc::as_ref))
    }

    /// The services that carry a registry login (`Service::registry_auth`).
    pub fn services_with_login(&self) -> impl Iterator<Item = &Service> + '_ {
        self.index
            .with_login
            .iter()
            .filter_map(|id| self.services.get(id))
    }

    /// The live tasks placed on a node (`Task::is_live`) and what they reserve.
    pub fn node_load(&self, node_id: &str) -> NodeLoad {
        self.index.load.get(node_id).copied().unwrap_or_default()
    }

    /// How many live tasks of a service are placed on a node.
    pub fn live_tasks_on(&self, service_id: &str, node_id: &str) -> u64 {
        self.index
            .spread
            .get(service_id)
            .and_then(|nodes| nodes.get(node_id))
            .copied()
            .unwrap_or(0)
    }

    /// Changes one task and keeps the indexes in step; `None` if there is no such task.
    fn with_task<R>(&mut self, id: &str, f: impl FnOnce(&mut Task) -> R) -> Option<R> {
        let t = Arc::make_mut(self.tasks.get_mut(id)?);
        let before = Footprint::of(t);
        let r = f(t);
        let after = Footprint::of(t);
        self.index.replace(Some(&before), Some(&after));
        Some(r)
    }

    /// Whether the indexes are what a rebuild from the tasks and services gives (tests).
    #[cfg(any(test, feature = "test-util"))]
    pub fn index_is_consistent(&self) -> bool {
        self.index == Index::build(self.tasks.values().map(Arc::as_ref), self.services.values())
    }
}

mod ca;
mod index;
mod network;
mod roles;
mod rollout;

pub use ca::{CaRotation, CaTrust, NextRootPem, RootCaRecord, RotationProgress};

pub use index::NodeLoad;
use index::{Footprint, Index};

#[cfg(test)]
mod tests;

#[cfg(test)]
mod index_tests;
