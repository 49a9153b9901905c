//! A stand-in daemon for the CLI's tests: a small in-memory swarm behind shoal-api's router.
//! Tasks start running at once, except those whose command is `false`, which fail. A
//! service's endpoint change reaches its two nodes one `GET /v1/services/{key}` at a time,
//! so convergence waits for it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use shoal_api::*;
use shoal_types::node::ManagerStatus;
use shoal_types::{
    Millis, Network, Node, NodeRole, ServiceMode, ServiceSpec, Task, TaskState, TaskStatus,
    fixtures,
};

pub const NODE1: &str = "0a1b2c3d4e5f6a7b8c9d0e1f";
pub const NODE2: &str = "1b2c3d4e5f6a7b8c9d0e1f2a";
pub const INGRESS: &str = "7f8e9d0c1b2a3f4e5d6c7b8a";

#[derive(Default)]
pub struct Fake {
    pub state: Mutex<State>,
}

#[derive(Default)]
pub struct State {
    pub services: BTreeMap<String, shoal_types::Service>,
    pub tasks: Vec<Task>,
    pub networks: BTreeMap<String, Network>,
    /// Per service id: how many nodes have its latest endpoint change (of 2).
    pub synced: BTreeMap<String, usize>,
    pub calls: Vec<String>,
    /// What `local_task_pid("vote.1")` answers; other tasks run "on node2".
    pub exec_pid: Option<u32>,
    next: u64,
}

fn now() -> Millis {
    Millis(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    )
}

impl State {
    fn id(&mut self) -> String {
        self.next += 1;
        format!("{:06x}{:06x}abcdef012345", self.next * 0x1f3, self.next)
    }

    fn find(&self, key: &str) -> ApiResult<shoal_types::Service> {
        self.services
            .values()
            .find(|s| s.spec.name == key || s.id.starts_with(key))
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("no such service: {key}")))
    }

    /// Replaces the tasks of `svc` by fresh ones, as a fast orchestrator would.
    fn converge(&mut self, svc: &shoal_types::Service) {
        for t in self.tasks.iter_mut().filter(|t| t.service_id == svc.id) {
            t.desired_state = TaskState::Shutdown;
            t.status.state = TaskState::Shutdown;
        }
        let n = match svc.spec.mode {
            ServiceMode::Replicated { replicas } => replicas,
            ServiceMode::Global {} => 2,
        };
        let cs = svc.spec.task_template.container_spec.clone();
        for i in 0..n {
            let fails = cs.command.first().map(String::as_str) == Some("false");
            let mut status = TaskStatus::new(
                if fails {
                    TaskState::Failed
                } else {
                    TaskState::Running
                },
                now(),
                "",
            );
            if fails {
                status.err = "task: non-zero exit (1)".into();
            }
            let (slot, node) = match svc.spec.mode {
                ServiceMode::Replicated { .. } => (i + 1, if i % 2 == 0 { NODE1 } else { NODE2 }),
                ServiceMode::Global {} => (0, if i == 0 { NODE1 } else { NODE2 }),
            };
            let id = self.id();
            self.tasks.push(Task {
                id,
                service_id: svc.id.clone(),
                service_name: svc.spec.name.clone(),
                slot,
                node_id: Some(node.into()),
                desired_state: TaskState::Running,
                status,
                spec_version: svc.version,
                networks: Vec::new(),
                ports: Vec::new(),
                restarts: 0,
                started_at: None,
                ready_at: None,
                spec: cs.clone(),
                created_at: now(),
                updated_at: now(),
            });
        }
    }

    fn find_network(&self, key: &str) -> ApiResult<Network> {
        self.networks
            .values()
            .find(|n| n.name == key || n.id.starts_with(key))
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("no such network: {key}")))
    }

    fn view(&self, svc: shoal_types::Service) -> ServiceView {
        let live = self
            .tasks
            .iter()
            .filter(|t| t.service_id == svc.id && t.desired_state == TaskState::Running);
        let running = live
            .clone()
            .filter(|t| t.status.state == TaskState::Running)
            .count() as u64;
        let desired = svc.spec.replicas().unwrap_or(2);
        let synced = self.synced.get(&svc.id).copied().unwrap_or(0);
        ServiceView {
            service: svc,
            status: ServiceStatus {
                running_tasks: running,
                desired_tasks: desired,
                endpoint_nodes_synced: synced,
                endpoint_nodes: 2,
            },
        }
    }
}

fn node(id: &str, host: &str, leader: bool) -> Node {
    let mut n = fixtures::node(id, host);
    if leader {
        n.spec.role = NodeRole::Manager;
        n.manager_status = Some(ManagerStatus {
            raft_id: 1,
            addr: "10.0.0.1:2377".into(),
            leader: true,
            reachability: "reachable".into(),
        });
    }
    n
}

fn hostname(id: &str) -> String {
    if id == NODE1 {
        "node1".into()
    } else {
        "node2".into()
    }
}

impl Fake {
    fn record(&self, call: String) {
        self.state.lock().unwrap().calls.push(call);
    }
}

impl Backend for Fake {
    async fn info(&self) -> ApiResult<Info> {
        Ok(Info {
            node_id: NODE1.into(),
            hostname: "node1".into(),
            role: "manager".into(),
            cluster_id: "c".into(),
            node_addr: "10.0.0.1".into(),
            managers: vec!["10.0.0.1:2377".into()],
        })
    }
    async fn init(&self, req: InitRequest) -> ApiResult<InitResponse> {
        self.record(format!(
            "init {:?} {:?}",
            req.advertise_addr, req.ingress_subnet
        ));
        let notes = match &req.ingress_subnet {
            Some(_) => vec![],
            None => vec!["Ingress network: 10.0.0.0/24 (pass --ingress-subnet to choose).".into()],
        };
        Ok(InitResponse {
            node_id: NODE1.into(),
            worker_token: "SWMTKN-1-00000000000000000000000000000000000000000000000001-abcdefghijklmnopqrstuvwx9".into(),
            manager_token: "SWMTKN-1-00000000000000000000000000000000000000000000000001-zbcdefghijklmnopqrstuvwx9".into(),
            manager_addr: "10.0.0.1:2377".into(),
            ingress_subnet: req.ingress_subnet.unwrap_or("10.0.0.0/24".into()),
            notes,
        })
    }
    async fn join(&self, req: JoinRequest) -> ApiResult<JoinResponse> {
        self.record(format!("join {}", req.remote_addr));
        Ok(JoinResponse {
            node_id: NODE2.into(),
            role: NodeRole::Worker,
        })
    }
    async fn leave(&self, force: bool) -> ApiResult<()> {
        self.record(format!("leave {force}"));
        Ok(())
    }
    async fn join_token(&self, role: NodeRole) -> ApiResult<JoinToken> {
        Ok(JoinToken {
            token: format!("SWMTKN-{role}"),
            manager_addr: "10.0.0.1:2377".into(),
        })
    }
    async fn nodes(&self) -> ApiResult<Vec<Node>> {
        Ok(vec![
            node(NODE2, "node2", false),
            node(NODE1, "node1", true),
        ])
    }
    async fn node(&self, key: String) -> ApiResult<Node> {
        let nodes = self.nodes().await?;
        nodes
            .into_iter()
            .find(|n| n.hostname() == key || n.id.starts_with(&key))
            .ok_or_else(|| ApiError::not_found(format!("no such node: {key}")))
    }
    async fn update_node(&self, key: String, u: NodeUpdate) -> ApiResult<()> {
        self.record(format!(
            "update_node {key} {:?} {:?} {:?}",
            u.availability, u.label_add, u.label_rm
        ));
        Ok(())
    }
    async fn remove_node(&self, key: String, force: bool) -> ApiResult<()> {
        self.record(format!("remove_node {key} {force}"));
        Ok(())
    }
    async fn services(&self) -> ApiResult<Vec<ServiceView>> {
        let st = self.state.lock().unwrap();
        Ok(st.services.values().cloned().map(|s| st.view(s)).collect())
    }
    async fn service(&self, key: String) -> ApiResult<ServiceView> {
        let mut st = self.state.lock().unwrap();
        let s = st.find(&key)?;
        let view = st.view(s);
        // The next poll finds the change on one more node.
        let synced = st.synced.entry(view.service.id.clone()).or_default();
        *synced = (*synced + 1).min(2);
        Ok(view)
    }
    async fn create_service(&self, spec: ServiceSpec) -> ApiResult<CreateResponse> {
        let mut st = self.state.lock().unwrap();
        if st.find(&spec.name).is_ok() {
            return Err(ApiError::conflict(format!(
                "service name {:?} is already in use",
                spec.name
            )));
        }
        let id = st.id();
        let mut svc = fixtures::service(&id, spec);
        svc.version = 1;
        st.calls.push(format!(
            "create {}",
            serde_json::to_string(&svc.spec).unwrap()
        ));
        st.converge(&svc);
        st.synced.insert(id.clone(), 0);
        st.services.insert(id.clone(), svc);
        Ok(CreateResponse { id })
    }
    async fn update_service(&self, key: String, spec: ServiceSpec) -> ApiResult<()> {
        let mut st = self.state.lock().unwrap();
        let mut svc = st.find(&key)?;
        st.calls.push(format!(
            "update {} {}",
            svc.spec.name,
            serde_json::to_string(&spec).unwrap()
        ));
        svc.spec = spec;
        svc.version += 1;
        st.converge(&svc);
        st.synced.insert(svc.id.clone(), 0);
        st.services.insert(svc.id.clone(), svc);
        Ok(())
    }
    async fn remove_service(&self, key: String) -> ApiResult<()> {
        let mut st = self.state.lock().unwrap();
        let svc = st.find(&key)?;
        st.services.remove(&svc.id);
        st.tasks.retain(|t| t.service_id != svc.id);
        Ok(())
    }
    async fn tasks(&self, f: TaskFilter) -> ApiResult<Vec<TaskView>> {
        let st = self.state.lock().unwrap();
        let service = match &f.service {
            Some(k) => Some(st.find(k)?.id),
            None => None,
        };
        Ok(st
            .tasks
            .iter()
            .filter(|t| service.as_ref().is_none_or(|s| t.service_id == *s))
            .map(|t| TaskView {
                task: t.clone(),
                node_hostname: hostname(t.node_id.as_deref().unwrap_or("")),
            })
            .collect())
    }
    async fn task(&self, key: String) -> ApiResult<TaskView> {
        let all = self.tasks(TaskFilter::default()).await?;
        all.into_iter()
            .find(|t| t.task.id.starts_with(&key))
            .ok_or_else(|| ApiError::not_found(format!("no such task: {key}")))
    }
    async fn service_logs(&self, key: String) -> ApiResult<Vec<LogLine>> {
        let tasks = self
            .tasks(TaskFilter {
                service: Some(key),
                node: None,
            })
            .await?;
        Ok(tasks
            .iter()
            .map(|t| LogLine {
                task: t.task.name(),
                node: t.node_hostname.clone(),
                line: format!("hello from {}", t.task.slot_name()),
                timestamp: None,
            })
            .collect())
    }
    async fn local_task_pid(&self, key: String) -> ApiResult<Pid> {
        if let (Some(pid), "vote.1") = (self.state.lock().unwrap().exec_pid, key.as_str()) {
            return Ok(Pid {
                pid,
                ..Pid::default()
            });
        }
        Err(ApiError::conflict(format!(
            "task {key} runs on node2; run shoal exec on node2"
        )))
    }
    async fn networks(&self) -> ApiResult<Vec<Network>> {
        Ok(self
            .state
            .lock()
            .unwrap()
            .networks
            .values()
            .cloned()
            .collect())
    }
    async fn network(&self, key: String) -> ApiResult<Network> {
        self.state.lock().unwrap().find_network(&key)
    }
    async fn create_network(&self, req: NetworkCreate) -> ApiResult<CreateResponse> {
        let mut st = self.state.lock().unwrap();
        st.calls.push(format!(
            "create_network {}",
            serde_json::to_string(&req).unwrap()
        ));
        if req.driver != "overlay" {
            return Err(ApiError::bad_request(
                "only the overlay driver is supported",
            ));
        }
        if st.networks.values().any(|n| n.name == req.name) {
            return Err(ApiError::conflict(format!(
                "network name {:?} is already in use",
                req.name
            )));
        }
        let id = st.id();
        let vni = 4096 + st.networks.len() as u32;
        let subnet = req
            .subnet
            .clone()
            .unwrap_or(format!("10.0.{}.0/24", st.networks.len()));
        let mut n = fixtures::network(&id, &req.name, &subnet, vni);
        n.attachable = req.attachable;
        n.labels = req.labels;
        st.networks.insert(id.clone(), n);
        Ok(CreateResponse { id })
    }
    async fn remove_network(&self, key: String) -> ApiResult<()> {
        let mut st = self.state.lock().unwrap();
        let n = st.find_network(&key)?;
        if n.ingress {
            return Err(ApiError::conflict(
                "the ingress network can't be removed: the routing mesh needs it",
            ));
        }
        st.calls.push(format!("remove_network {}", n.name));
        st.networks.remove(&n.id);
        Ok(())
    }
    async fn endpoint_stats(&self) -> ApiResult<EndpointStats> {
        Ok(EndpointStats::default())
    }
    async fn reset_endpoint_stats(&self) -> ApiResult<()> {
        self.record("reset_endpoint_stats".into());
        Ok(())
    }
}

pub struct Daemon {
    pub _dir: tempfile::TempDir,
    pub host: String,
    pub fake: Arc<Fake>,
}

/// Serves a fresh [`Fake`] on a socket in a temporary directory.
pub fn start() -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("shoal.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let fake = Arc::new(Fake::default());
    {
        let mut ingress = fixtures::network(INGRESS, "ingress", "10.0.0.0/24", 4096);
        ingress.ingress = true;
        let mut st = fake.state.lock().unwrap();
        st.networks.insert(INGRESS.into(), ingress);
    }
    tokio::spawn(serve(listener, router(fake.clone())));
    Daemon {
        host: format!("unix://{}", socket.display()),
        _dir: dir,
        fake,
    }
}
