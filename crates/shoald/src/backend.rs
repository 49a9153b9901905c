//! The HTTP API's `Backend`: reads come from this manager's replica of the state, writes go
//! through Raft. Cluster calls on a worker are refused with a message saying where to go.

use std::sync::Arc;

use shoal_api::{
    ApiError, ApiResult, Backend, CaRotateRequest, ClusterCa, CreateResponse, EndpointStats,
    ImageSummary, ImagesPruned, Info, InitRequest, InitResponse, JoinRequest, JoinResponse,
    JoinToken, LogLine, NetworkCreate, NodeUpdate, Pid, ServiceCreated, ServiceOptions,
    ServiceStatus, ServiceUpdated, ServiceView, TaskFilter, TaskView,
};
use shoal_rpc::agent_client::AgentClient;
use shoal_types::state::Service;
use shoal_types::{
    ClusterState, Command, Network, Node, NodeRole, NodeState, ServiceSpec, Task, TaskState, ids,
};

use crate::daemon::Daemon;
use crate::errors::{DaemonError, internal, not_manager};
use crate::manager::Manager;
use crate::{images, networks, registry};

#[derive(Clone)]
pub struct Api(pub Arc<Daemon>);

impl Api {
    fn manager(&self) -> Result<Arc<Manager>, DaemonError> {
        self.0.active_or_err()?.manager.ok_or_else(not_manager)
    }

    fn state(&self) -> ApiResult<Arc<ClusterState>> {
        Ok(self.manager()?.state())
    }

    /// This node's image service (its agent's store).
    fn images(&self) -> Result<shoal_image::Images, DaemonError> {
        self.0
            .active_or_err()?
            .worker
            .images()
            .map_err(|e| crate::errors::internal("failed to open this node's image store", e))
    }

    fn find_service(state: &ClusterState, key: &str) -> ApiResult<Service> {
        state
            .find_service(key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("no such service: {key}")))
    }

    fn find_node(state: &ClusterState, key: &str) -> ApiResult<Node> {
        state
            .find_node(key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("no such node: {key}")))
    }

    /// A service with its task counts and how far its last endpoint change has got. Only
    /// the leader tracks propagation; elsewhere the endpoint counts are 0 (unknown).
    /// A service as `service ls|inspect` show it; `(synced, nodes)`: how far its last
    /// endpoint change has reached (`Manager::services_progress`).
    fn view(state: &ClusterState, s: Service, (synced, nodes): (usize, usize)) -> ServiceView {
        let running = state
            .tasks_of(&s.id)
            .filter(|t| {
                t.desired_state == TaskState::Running && t.status.state == TaskState::Running
            })
            .filter(|t| node_ready(state, t))
            .count() as u64;
        let desired = match s.spec.replicas() {
            Some(n) => n,
            None => state
                .tasks_of(&s.id)
                .filter(|t| t.desired_state == TaskState::Running)
                .count() as u64,
        };
        ServiceView {
            // The sealed login is for managers only: `service inspect` never shows it.
            service: Service {
                registry_auth: None,
                ..s
            },
            status: ServiceStatus {
                running_tasks: running,
                desired_tasks: desired,
                endpoint_nodes_synced: synced,
                endpoint_nodes: nodes,
            },
        }
    }

    fn task_view(state: &ClusterState, t: Task) -> TaskView {
        let node_hostname = t
            .node_id
            .as_ref()
            .and_then(|n| state.nodes.get(n))
            .map(|n| n.hostname().to_string())
            .unwrap_or_default();
        TaskView {
            task: t,
            node_hostname,
        }
    }

    fn token(state: &ClusterState, role: NodeRole) -> ApiResult<String> {
        let c = state
            .cluster
            .as_ref()
            .ok_or_else(crate::errors::not_in_swarm)?;
        Ok(match role {
            NodeRole::Worker => c.worker_token.clone(),
            NodeRole::Manager => c.manager_token.clone(),
        })
    }
}

fn node_ready(state: &ClusterState, t: &Task) -> bool {
    t.node_id
        .as_ref()
        .and_then(|n| state.nodes.get(n))
        .is_some_and(|n| n.status.state == NodeState::Ready)
}

impl Backend for Api {
    async fn events(&self) -> ApiResult<shoal_api::EventFeed> {
        Ok(self.manager()?.events.subscribe())
    }

    async fn info(&self) -> ApiResult<Info> {
        let cfg = &self.0.cfg;
        Ok(match self.0.active() {
            None => Info {
                node_id: String::new(),
                hostname: cfg.hostname.clone(),
                role: String::new(),
                cluster_id: String::new(),
                node_addr: String::new(),
                managers: vec![],
            },
            Some(a) => Info {
                node_id: a.identity.node_id.clone(),
                hostname: cfg.hostname.clone(),
                role: a.identity.role.to_string(),
                cluster_id: a.identity.cluster_id.clone(),
                node_addr: a.identity.addr.clone(),
                managers: a.managers.read().map(|m| m.clone()).unwrap_or_default(),
            },
        })
    }

    async fn init(&self, req: InitRequest) -> ApiResult<InitResponse> {
        let (active, notes) = if req.force_new_cluster {
            (self.0.force_new_cluster().await?, Vec::new())
        } else {
            self.0.init(req).await?
        };
        let state = self.state()?;
        Ok(InitResponse {
            node_id: active.identity.node_id.clone(),
            worker_token: Self::token(&state, NodeRole::Worker)?,
            manager_token: Self::token(&state, NodeRole::Manager)?,
            manager_addr: active.identity.cluster_addr.clone(),
            ingress_subnet: state
                .ingress()
                .map(|n| n.ipam.subnet.to_string())
                .unwrap_or_default(),
            notes,
        })
    }

    async fn join(&self, req: JoinRequest) -> ApiResult<JoinResponse> {
        let active = self
            .0
            .join(&req.token, &req.remote_addr, req.advertise_addr)
            .await?;
        Ok(JoinResponse {
            node_id: active.identity.node_id.clone(),
            role: active.identity.role,
        })
    }

    async fn leave(&self, force: bool) -> ApiResult<()> {
        Ok(self.0.leave(force).await?)
    }

    async fn join_token(&self, role: NodeRole) -> ApiResult<JoinToken> {
        let m = self.manager()?;
        let state = m.state();
        let manager_addr = self.0.active_or_err()?.identity.cluster_addr;
        Ok(JoinToken {
            token: Self::token(&state, role)?,
            manager_addr,
        })
    }

    async fn rotate_join_token(&self, role: NodeRole) -> ApiResult<JoinToken> {
        let m = self.manager()?;
        let active = self.0.active_or_err()?;
        let token = shoal_pki::JoinToken::random(active.certs.ca().digest()).to_string();
        m.propose(Command::RotateJoinToken {
            role,
            token: token.clone(),
        })
        .await?;
        tracing::info!(%role, "join token rotated");
        Ok(JoinToken {
            token,
            manager_addr: active.identity.cluster_addr,
        })
    }

    async fn ca(&self) -> ApiResult<ClusterCa> {
        Ok(crate::rotation::ca_view(&self.0.active_or_err()?)?)
    }

    async fn rotate_ca(&self, req: CaRotateRequest) -> ApiResult<ClusterCa> {
        let active = self.0.active_or_err()?;
        crate::rotation::start(&active, req).await?;
        Ok(crate::rotation::ca_view(&active)?)
    }

    async fn nodes(&self) -> ApiResult<Vec<Node>> {
        let m = self.manager()?;
        let state = m.state();
        let leader = m.leader().map(|(id, _)| id);
        // Only the leader knows which managers answer Raft; elsewhere, use the node state.
        let raft: std::collections::HashMap<u64, Option<bool>> = m
            .raft_members()
            .into_iter()
            .map(|s| (s.id, s.reachable))
            .collect();
        Ok(state
            .nodes
            .values()
            .cloned()
            .map(|mut n| {
                let ready = n.status.state == NodeState::Ready;
                if let Some(ms) = n.manager_status.as_mut() {
                    ms.leader = Some(ms.raft_id) == leader;
                    // A manager that is no voter (promoted, not yet added) does not count
                    // towards the quorum: it reads as unreachable until it is added.
                    let reachable = match raft.get(&ms.raft_id) {
                        Some(r) => r.unwrap_or(ready),
                        None => false,
                    };
                    ms.reachability = if reachable {
                        "reachable"
                    } else {
                        "unreachable"
                    }
                    .into();
                }
                n
            })
            .collect())
    }

    async fn node(&self, key: String) -> ApiResult<Node> {
        let nodes = self.nodes().await?;
        let state = self.state()?;
        let id = Self::find_node(&state, &key)?.id;
        nodes
            .into_iter()
            .find(|n| n.id == id)
            .ok_or_else(|| ApiError::not_found(format!("no such node: {key}")))
    }

    async fn update_node(&self, key: String, update: NodeUpdate) -> ApiResult<()> {
        let m = self.manager()?;
        let node = Self::find_node(&m.state(), &key)?;
        let mut labels = node.spec.labels.clone();
        for l in &update.label_add {
            let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
            if k.is_empty() {
                return Err(ApiError::bad_request(format!(
                    "invalid label {l:?}: expected KEY=VALUE"
                )));
            }
            labels.insert(k.to_string(), v.to_string());
        }
        for k in &update.label_rm {
            if labels.remove(k).is_none() {
                return Err(ApiError::not_found(format!(
                    "node {} has no label {k:?}",
                    node.hostname()
                )));
            }
        }
        let labels = (labels != node.spec.labels).then_some(labels);
        let at = self.0.clock.now().wall;
        let mut cmds = Vec::new();
        if update.role.is_none() || update.availability.is_some() || labels.is_some() {
            cmds.push(Command::UpdateNodeSpec {
                id: node.id.clone(),
                availability: update.availability,
                labels,
                at,
            });
        }
        // `node promote|demote`: the node follows through its session
        // (`crate::promotion`); a demotion that would lose the quorum is refused by the
        // leader (`Manager::refusal`).
        if let Some(role) = update.role.filter(|r| *r != node.spec.role) {
            cmds.push(Command::SetNodeRole {
                id: node.id,
                role,
                at,
            });
        }
        match cmds.len() {
            0 => Ok(()),
            1 => m.propose(cmds.remove(0)).await.map_err(ApiError::from),
            _ => m
                .propose(Command::Batch(cmds))
                .await
                .map_err(ApiError::from),
        }
    }

    async fn remove_node(&self, key: String, force: bool) -> ApiResult<()> {
        let m = self.manager()?;
        let node = Self::find_node(&m.state(), &key)?;
        m.propose(Command::RemoveNode { id: node.id, force })
            .await
            .map_err(ApiError::from)
    }

    async fn services(&self) -> ApiResult<Vec<ServiceView>> {
        let m = self.manager()?;
        let state = m.state();
        let progress = m.services_progress(&state, state.services.keys().map(String::as_str));
        let mut v: Vec<ServiceView> = state
            .services
            .values()
            .cloned()
            .zip(progress)
            .map(|(s, p)| Self::view(&state, s, p))
            .collect();
        v.sort_by(|a, b| a.service.spec.name.cmp(&b.service.spec.name));
        Ok(v)
    }

    async fn service(&self, key: String) -> ApiResult<ServiceView> {
        let m = self.manager()?;
        let state = m.state();
        let s = Self::find_service(&state, &key)?;
        let progress = m.services_progress(&state, [s.id.as_str()])[0];
        Ok(Self::view(&state, s, progress))
    }

    async fn create_service(&self, spec: ServiceSpec) -> ApiResult<CreateResponse> {
        let created = self
            .create_service_with(spec, ServiceOptions::default())
            .await?;
        Ok(CreateResponse { id: created.id })
    }

    async fn create_service_with(
        &self,
        spec: ServiceSpec,
        opts: ServiceOptions,
    ) -> ApiResult<ServiceCreated> {
        let m = self.manager()?;
        let mut spec = spec;
        spec.validate().map_err(ApiError::bad_request)?;
        shoal_types::dns_name::check_service(&spec).map_err(ApiError::bad_request)?;
        networks::resolve_networks(&m.state(), &mut spec)?;
        let (warnings, login) = registry::prepare_image(self.images(), &mut spec, &opts).await?;
        let registry_auth = login.map(|l| m.logins.seal(&l)).transpose()?;
        let now = self.0.clock.now().wall;
        let id = ids::new_id();
        let service = Service {
            id: id.clone(),
            version: 1,
            created_at: now,
            updated_at: now,
            spec,
            endpoint: Default::default(),
            registry_auth,
            previous_spec: None,
            update_status: None,
            force_version: 0,
        };
        m.propose(Command::CreateService { service }).await?;
        Ok(ServiceCreated { id, warnings })
    }

    async fn update_service(&self, key: String, spec: ServiceSpec) -> ApiResult<()> {
        self.update_service_with(key, spec, ServiceOptions::default())
            .await
            .map(|_| ())
    }

    async fn update_service_with(
        &self,
        key: String,
        spec: ServiceSpec,
        opts: ServiceOptions,
    ) -> ApiResult<ServiceUpdated> {
        let m = self.manager()?;
        let mut spec = spec;
        spec.validate().map_err(ApiError::bad_request)?;
        shoal_types::dns_name::check_service(&spec).map_err(ApiError::bad_request)?;
        networks::resolve_networks(&m.state(), &mut spec)?;
        let s = Self::find_service(&m.state(), &key)?;
        // As Swarm: the tag is resolved again when the image is changed (`--image`), not
        // at every update (a scale keeps the digest).
        let opts = ServiceOptions {
            query_registry: opts.query_registry
                && spec.task_template.container_spec.image
                    != s.spec.task_template.container_spec.image,
            ..opts
        };
        let (warnings, login) = registry::prepare_image(self.images(), &mut spec, &opts).await?;
        let login_only = login.is_some() && spec == s.spec;
        if let Some(login) = login {
            // Before the update, so the tasks it starts find the login.
            let sealed = m.logins.seal(&login)?;
            m.propose(Command::SetRegistryAuth {
                id: s.id.clone(),
                sealed: Some(sealed),
            })
            .await?;
        }
        if login_only {
            // A new login alone replaces no task (an update would roll them all).
            return Ok(ServiceUpdated { warnings });
        }
        m.propose(Command::UpdateService {
            id: s.id,
            spec,
            at: self.0.clock.now().wall,
            expected_version: opts.version,
        })
        .await?;
        Ok(ServiceUpdated { warnings })
    }

    async fn rollback_service(&self, key: String) -> ApiResult<()> {
        let m = self.manager()?;
        let s = Self::find_service(&m.state(), &key)?;
        m.propose(Command::RollbackService {
            id: s.id,
            rollout: None,
            message: String::new(),
            at: self.0.clock.now().wall,
        })
        .await
        .map_err(ApiError::from)
    }

    async fn images(&self) -> ApiResult<Vec<ImageSummary>> {
        let w = self.0.active_or_err()?.worker;
        Ok(images::list(self.images()?, &w.image_users()).await?)
    }

    async fn remove_image(&self, name: String) -> ApiResult<Vec<String>> {
        let w = self.0.active_or_err()?.worker;
        Ok(images::remove(self.images()?, &name, &w.image_users()).await?)
    }

    async fn prune_images(&self) -> ApiResult<ImagesPruned> {
        let w = self.0.active_or_err()?.worker;
        Ok(images::prune(self.images()?, &w.image_users()).await?)
    }

    async fn remove_service(&self, key: String) -> ApiResult<()> {
        let m = self.manager()?;
        let s = Self::find_service(&m.state(), &key)?;
        m.propose(Command::RemoveService { id: s.id })
            .await
            .map_err(ApiError::from)
    }

    async fn tasks(&self, filter: TaskFilter) -> ApiResult<Vec<TaskView>> {
        let state = self.state()?;
        let service = filter
            .service
            .as_deref()
            .map(|k| Self::find_service(&state, k))
            .transpose()?;
        let node = filter
            .node
            .as_deref()
            .map(|k| Self::find_node(&state, k))
            .transpose()?;
        // A service's tasks from the state's index: `service ps` and the CLI's progress
        // polls read a few tasks, not every task of the cluster.
        let tasks: Box<dyn Iterator<Item = &Task>> = match &service {
            Some(s) => Box::new(state.tasks_of(&s.id)),
            None => Box::new(state.tasks.values().map(Arc::as_ref)),
        };
        Ok(tasks
            .filter(|t| {
                node.as_ref()
                    .is_none_or(|n| t.node_id.as_deref() == Some(n.id.as_str()))
            })
            .cloned()
            .map(|t| Self::task_view(&state, t))
            .collect())
    }

    async fn task(&self, key: String) -> ApiResult<TaskView> {
        let state = self.state()?;
        let t = state
            .find_task(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("no such task: {key}")))?;
        Ok(Self::task_view(&state, t))
    }

    async fn service_logs(&self, key: String) -> ApiResult<Vec<LogLine>> {
        let state = self.state()?;
        let active = self.0.active_or_err()?;
        let s = Self::find_service(&state, &key)?;
        let mut tasks: Vec<&Task> = state
            .tasks_of(&s.id)
            .filter(|t| t.node_id.is_some())
            .collect();
        tasks.sort_by_key(|t| (t.slot, t.created_at));
        let mut lines = Vec::new();
        for t in tasks {
            let Some(node) = t.node_id.as_ref().and_then(|n| state.nodes.get(n)) else {
                continue;
            };
            let channel = active
                .certs
                .dialer()
                .node(&node.status.cluster_addr, &node.id)
                .map_err(|e| internal("bad node address", e))?;
            let req = shoal_rpc::LogsRequest {
                task_id: t.id.clone(),
            };
            let (data, timestamped) = match tokio::time::timeout(
                std::time::Duration::from_secs(5),
                AgentClient::new(channel).task_logs(req),
            )
            .await
            {
                Ok(Ok(r)) => {
                    let r = r.into_inner();
                    (r.data, r.timestamped)
                }
                // A node that is down cannot serve its logs; say so in the output.
                _ => (
                    format!(
                        "(logs unavailable: node {} did not answer)\n",
                        node.hostname()
                    )
                    .into_bytes(),
                    false,
                ),
            };
            for line in String::from_utf8_lossy(&data).lines() {
                let (timestamp, line) = match line.split_once(' ') {
                    Some((time, rest)) if timestamped => (Some(time.to_string()), rest),
                    _ => (None, line),
                };
                lines.push(LogLine {
                    task: t.name(),
                    node: node.hostname().to_string(),
                    line: line.to_string(),
                    timestamp,
                });
            }
        }
        Ok(lines)
    }

    async fn local_tasks(&self) -> ApiResult<Vec<Task>> {
        Ok(self.0.active_or_err()?.worker.local_tasks())
    }

    async fn local_task_pid(&self, key: String) -> ApiResult<Pid> {
        let active = self.0.active_or_err()?;
        // On a manager the task can be found by name; a worker only knows ids it runs.
        let (id, on_node) = match &active.manager {
            Some(m) => {
                let state = m.state();
                let t = state
                    .find_task(&key)
                    .ok_or_else(|| ApiError::not_found(format!("no such task: {key}")))?;
                let host = t
                    .node_id
                    .as_ref()
                    .and_then(|n| state.nodes.get(n))
                    .map(|n| n.hostname().to_string());
                (t.id.clone(), host)
            }
            None => (key.clone(), None),
        };
        // A container: `runc exec` into it, in all its namespaces, as its user.
        let container = active
            .worker
            .container_of(&id)
            .or_else(|| active.worker.container_of(&key));
        if let Some((container, root)) = container {
            let pid = active
                .worker
                .pid(&container)
                .ok_or_else(|| ApiError::not_found(format!("task {key} is not running")))?;
            return Ok(Pid {
                pid,
                container: Some(container),
                runc_root: Some(root.display().to_string()),
            });
        }
        match active
            .worker
            .pid(&id)
            .or_else(|| active.worker.pid_by_key(&key))
        {
            Some(pid) => Ok(Pid {
                pid,
                ..Pid::default()
            }),
            None => Err(ApiError::not_found(match on_node {
                Some(host) if host != self.0.cfg.hostname => {
                    format!("task {key} runs on node {host}, not here; run `shoal exec` on {host}")
                }
                _ => format!("task {key} is not running on this node"),
            })),
        }
    }

    async fn networks(&self) -> ApiResult<Vec<Network>> {
        let state = self.state()?;
        Ok(state
            .networks
            .values()
            .map(|n| state.network_with_usage(n))
            .collect())
    }

    async fn network(&self, key: String) -> ApiResult<Network> {
        let state = self.state()?;
        state
            .find_network(&key)
            .map(|n| state.network_with_usage(n))
            .ok_or_else(|| ApiError::not_found(format!("no such network: {key}")))
    }

    async fn create_network(&self, req: NetworkCreate) -> ApiResult<CreateResponse> {
        let m = self.manager()?;
        if req.driver != "overlay" {
            return Err(ApiError::bad_request(format!(
                "invalid driver {:?}: only the overlay driver is supported",
                req.driver
            )));
        }
        shoal_types::dns_name::check_network(&req.name).map_err(ApiError::bad_request)?;
        let state = m.state();
        let id = ids::new_id();
        let want = networks::NetworkRequest {
            name: &req.name,
            subnet: req.subnet.as_deref(),
            gateway: req.gateway.as_deref(),
            attachable: req.attachable,
            ingress: false,
        };
        let mut network = networks::plan_network(
            &state,
            id.clone(),
            &want,
            &networks::cluster_reserved(&state, networks::host_reserved()),
            self.0.clock.now().wall,
        )?;
        network.labels = req.labels;
        m.propose(Command::CreateNetwork { network }).await?;
        Ok(CreateResponse { id })
    }

    async fn remove_network(&self, key: String) -> ApiResult<()> {
        let m = self.manager()?;
        let state = m.state();
        let n = state
            .find_network(&key)
            .ok_or_else(|| ApiError::not_found(format!("no such network: {key}")))?;
        m.propose(Command::RemoveNetwork { id: n.id.clone() })
            .await
            .map_err(ApiError::from)
    }

    async fn endpoint_stats(&self) -> ApiResult<EndpointStats> {
        let m = self.manager()?;
        if !m.is_leader() {
            return Err(ApiError::unavailable(
                "only the leader measures endpoint propagation; ask the leader",
            ));
        }
        let s = m.endpoint_stats();
        Ok(EndpointStats {
            count: s.count,
            p50_ms: s.p50_ms,
            p99_ms: s.p99_ms,
            max_ms: s.max_ms,
        })
    }

    async fn reset_endpoint_stats(&self) -> ApiResult<()> {
        let m = self.manager()?;
        m.reset_endpoint_stats();
        Ok(())
    }
}
