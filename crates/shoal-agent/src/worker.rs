//! Makes this node's task processes match the assignments, and reports each change.
//!
//! Every task has one tokio task that owns its process from start to exit; the worker's
//! map says which tasks it runs and whether it asked them to stop, so that an exit can be
//! reported as Shutdown (we stopped it) or Complete/Failed (it ended on its own).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_types::endpoint::EndpointView;
use shoal_types::service::Runtime;
use shoal_types::{Millis, Task, TaskState, TaskStatus};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::AgentConfig;
use crate::container::OciRuntime;

mod adopt;
mod health;
mod log_pace;
mod oci;
use crate::network::NetworkAgent;
use log_pace::{LogPace, bound_log};

/// A task status change for the manager: (task id, new status).
pub type Report = (String, TaskStatus);

pub struct Worker {
    cfg: AgentConfig,
    network: NetworkAgent,
    // Guarded by a std mutex: held only for map updates, never across an await.
    tasks: Mutex<HashMap<String, Local>>,
    /// Set when the daemon stops: no task starts after it.
    closing: std::sync::atomic::AtomicBool,
    reports: mpsc::UnboundedSender<Report>,
    /// Opened at the first `--runtime oci` task (a node that runs none needs no store).
    oci: std::sync::OnceLock<Result<Arc<OciRuntime>, String>>,
    /// Registry logins by service id (`--with-registry-auth`), as the manager handed them.
    logins: Mutex<HashMap<String, shoal_image::Credentials>>,
    /// Containers an earlier daemon left, until the first full task list says which to
    /// adopt; the others are then removed (`Worker::apply`).
    survivors: Mutex<Option<HashMap<String, shoal_oci::Survivor>>>,
    /// Host-command tasks' processes an earlier daemon left running (it was killed), until
    /// the first full task list says which to adopt; the others are then stopped.
    orphans: Mutex<Option<HashMap<String, shoal_exec::orphan::Orphan>>>,
    /// Set by `shutdown`: containers are left running for the next daemon to adopt.
    keep_containers: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Default)]
struct Local {
    /// `vote.1.<id>` and `vote.1`, so that `shoal exec` works by name on any node.
    name: String,
    slot_name: String,
    pid: Option<u32>,
    stopping: bool,
    /// Stopped for failing its health check: its exit is a failure, not a shutdown.
    unhealthy: bool,
    grace_ms: u64,
    /// An `oci` task's container, which `stop` stops through runc.
    container: Option<shoal_oci::Container>,
    /// An `oci` task's image (for `image rm`'s in-use check).
    image: Option<String>,
    /// The task left the node's list: its run directory goes when it has ended.
    forgotten: bool,
    /// The task as last assigned (for the node's own task list, `docker ps`).
    task: Option<Box<Task>>,
}

pub fn now() -> Millis {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Millis(d.as_millis() as u64)
}

fn status(state: TaskState, message: &str) -> TaskStatus {
    TaskStatus::new(state, now(), message)
}

impl Worker {
    /// The node's data plane, as `node inspect` shows it.
    pub fn data_plane(&self) -> shoal_types::node::DataPlane {
        let info = self.vip_balancer_kind();
        let mesh = self.network.mesh_path();
        shoal_types::node::DataPlane {
            vip_balancer: info.kind.to_string(),
            fallback_reason: info.fallback_reason,
            mesh_path: mesh.kind.to_string(),
            mesh_fallback_reason: mesh.fallback_reason,
        }
    }

    pub fn new(cfg: AgentConfig, reports: mpsc::UnboundedSender<Report>) -> Arc<Worker> {
        let network = NetworkAgent::new(
            cfg.node_id.clone(),
            cfg.vtep,
            cfg.upstream.clone(),
            Arc::clone(&cfg.vip_balancer),
            cfg.mesh_path,
            Arc::clone(&cfg.dns_metrics),
            cfg.dns_steer_by_cpu,
        );
        let oci = std::sync::OnceLock::new();
        let mut survivors = None;
        if cfg.data_dir.join("runc").exists() {
            // This node ran containers before: keep what an earlier daemon left running
            // for adoption, and remove what it left half made.
            let rt = OciRuntime::open(&cfg.data_dir, cfg.insecure_registries.clone());
            if let Ok(rt) = &rt {
                let found = rt.survivors();
                let ids: Vec<String> = found.iter().map(|s| s.id.clone()).collect();
                for id in rt.half_made(&ids) {
                    warn!(task = %id, "removing a container an earlier daemon left half made");
                    rt.remove(&id);
                }
                if !found.is_empty() {
                    info!(containers = ?ids, "found containers an earlier daemon left");
                }
                survivors = Some(found.into_iter().map(|s| (s.id.clone(), s)).collect());
            }
            let _ = oci.set(rt.map(Arc::new));
        }
        adopt::sweep_stale_netns(&cfg.node_id, &cfg.run_dir);
        let orphans = adopt::find_orphans(&cfg.run_dir);
        if !orphans.is_empty() {
            let ids: Vec<&String> = orphans.keys().collect();
            info!(tasks = ?ids, "found task processes an earlier daemon left running");
        }
        Arc::new(Worker {
            cfg,
            network,
            tasks: Mutex::new(HashMap::new()),
            closing: std::sync::atomic::AtomicBool::new(false),
            reports,
            oci,
            logins: Mutex::default(),
            survivors: Mutex::new(survivors),
            orphans: Mutex::new(Some(orphans)),
            keep_containers: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn report(&self, id: &str, st: TaskStatus) {
        // The receiver lives as long as the session; if it is gone the daemon is stopping.
        let _ = self.reports.send((id.to_string(), st));
    }

    fn locked(&self) -> std::sync::MutexGuard<'_, HashMap<String, Local>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies a new endpoint table; returns once this node acts on it.
    /// Applies an endpoint table; what failed (empty when all of it applied).
    pub async fn apply_endpoints(&self, view: Arc<EndpointView>) -> Vec<String> {
        self.network.apply_view(view).await
    }

    /// The data plane's per-backend connection counters, named (`/metrics`, the dashboard).
    pub async fn dataplane_counts(&self) -> crate::counts::DataplaneCounts {
        self.network.dataplane_counts().await
    }

    /// The VIP balancer this node uses (`shoal node inspect`).
    pub fn vip_balancer_kind(&self) -> crate::vip::VipBalancerInfo {
        self.network.vip_balancer_kind()
    }

    /// The pid of a task this node runs, for `shoal exec`.
    pub fn pid(&self, task_id: &str) -> Option<u32> {
        self.locked().get(task_id).and_then(|l| l.pid)
    }

    /// The container of the local task given by id, id prefix, full name or
    /// `service.slot`, and the runc root it is under (for `shoal exec`).
    pub fn container_of(&self, key: &str) -> Option<(String, PathBuf)> {
        let id = {
            let local = self.locked();
            let mut hits = local.iter().filter(|(id, l)| {
                (id.starts_with(key) || l.name == key || l.slot_name == key)
                    && l.container.is_some()
            });
            match (hits.next(), hits.next()) {
                (Some((_, l)), None) => l.container.as_ref().map(|c| c.id.clone())?,
                _ => return None,
            }
        };
        let rt = self.oci.get()?.as_ref().ok()?;
        Some((id, rt.runc_root().to_path_buf()))
    }

    /// The pid of a local task given by id prefix, full name or `service.slot`.
    pub fn pid_by_key(&self, key: &str) -> Option<u32> {
        let local = self.locked();
        let mut hits = local
            .iter()
            .filter(|(id, l)| id.starts_with(key) || l.name == key || l.slot_name == key)
            .filter_map(|(_, l)| l.pid);
        match (hits.next(), hits.next()) {
            (Some(pid), None) => Some(pid),
            _ => None,
        }
    }

    /// The tasks this node runs or is starting, as last assigned, with what the node
    /// knows better than the assignment: whether the process runs, and its pid.
    pub fn local_tasks(&self) -> Vec<Task> {
        self.locked()
            .values()
            .filter_map(|l| {
                let mut t = (**l.task.as_ref()?).clone();
                t.status.pid = l.pid;
                if l.pid.is_some() && !l.stopping && t.status.state < TaskState::Running {
                    t.status.state = TaskState::Running;
                }
                Some(t)
            })
            .collect()
    }

    pub fn run_dir(&self, task_id: &str) -> PathBuf {
        self.cfg.run_dir.join(task_id)
    }

    /// Reconciles with the full set of tasks assigned to this node.
    pub fn apply(self: &Arc<Self>, assigned: Vec<Task>) {
        let mut to_start = Vec::new();
        let mut to_stop = Vec::new();
        {
            let mut local = self.locked();
            let assigned_ids: std::collections::HashSet<&str> =
                assigned.iter().map(|t| t.id.as_str()).collect();
            for t in &assigned {
                self.reconcile_one(&mut local, t, &mut to_start, &mut to_stop);
            }
            for (id, l) in local.iter_mut() {
                if !assigned_ids.contains(id.as_str()) {
                    l.forgotten = true;
                    to_stop.push(id.clone());
                }
            }
        }
        self.start_and_stop(to_start, to_stop);
        self.remove_unclaimed_survivors();
        let stopping = self.stop_unclaimed_orphans();
        let listed = assigned.iter().map(|t| t.id.as_str()).collect();
        self.remove_unlisted_run_dirs(&listed, &stopping);
    }

    /// Reconciles the tasks that changed since the last list or change: each as it is now,
    /// `None` when it is no longer this node's. The same outcome as [`Worker::apply`] with
    /// the whole list, at the cost of the change.
    pub fn apply_changes<'a>(
        self: &Arc<Self>,
        changed: impl IntoIterator<Item = (&'a str, Option<&'a Task>)>,
    ) {
        let mut to_start = Vec::new();
        let mut to_stop = Vec::new();
        let mut gone = Vec::new();
        {
            let mut local = self.locked();
            for (id, task) in changed {
                match task {
                    Some(t) => self.reconcile_one(&mut local, t, &mut to_start, &mut to_stop),
                    None => {
                        if local.contains_key(id) {
                            to_stop.push(id.to_string());
                        }
                        gone.push(id.to_string());
                    }
                }
            }
        }
        self.start_and_stop(to_start, to_stop);
        for id in gone {
            self.forget(&id);
        }
    }

    /// What one assigned task asks of this node: start it, stop it, or say it is lost.
    fn reconcile_one(
        self: &Arc<Self>,
        local: &mut HashMap<String, Local>,
        t: &Task,
        to_start: &mut Vec<Task>,
        to_stop: &mut Vec<String>,
    ) {
        let known = match local.get_mut(&t.id) {
            Some(l) => {
                l.task = Some(Box::new(t.clone()));
                true
            }
            None => false,
        };
        if !known
            && !t.status.state.is_terminal()
            && !self.closing.load(std::sync::atomic::Ordering::SeqCst)
            && self.adopt_orphan(local, t)
        {
            // A host-command task an earlier daemon left running: this node's again.
            if t.desired_state > TaskState::Running {
                to_stop.push(t.id.clone());
            }
            return;
        }
        if t.desired_state <= TaskState::Running {
            if self.closing.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            if !known
                && !t.status.state.is_terminal()
                && let Some(survivor) = self.take_survivor(&t.id)
            {
                // An earlier daemon's container of a task the node still runs: adopt it.
                local.insert(
                    t.id.clone(),
                    Local {
                        name: t.name(),
                        slot_name: t.slot_name(),
                        grace_ms: t.spec.stop_grace_period_ms,
                        image: t.spec.image.clone(),
                        pid: survivor.container.as_ref().map(|c| c.pid as u32),
                        container: survivor.container.clone(),
                        task: Some(Box::new(t.clone())),
                        ..Default::default()
                    },
                );
                let (w, t) = (Arc::clone(self), t.clone());
                tokio::spawn(async move { w.adopt_container(t, survivor).await });
                return;
            }
            if !known && (TaskState::Assigned..TaskState::Running).contains(&t.status.state) {
                local.insert(
                    t.id.clone(),
                    Local {
                        name: t.name(),
                        slot_name: t.slot_name(),
                        grace_ms: t.spec.stop_grace_period_ms,
                        image: t.spec.image.clone(),
                        task: Some(Box::new(t.clone())),
                        ..Default::default()
                    },
                );
                to_start.push(t.clone());
            } else if !known && !t.status.state.is_terminal() {
                // The manager believes it runs here, but this agent has no such
                // process (the daemon restarted): say so, and let it be replaced.
                let mut st = status(TaskState::Failed, "task process lost");
                st.err = "the task's process is gone: the node's daemon restarted".into();
                self.report(&t.id, st);
                // Its namespace stayed: nobody saw the process end.
                adopt::delete_task_netns(&t.id);
            }
        } else if known {
            to_stop.push(t.id.clone());
        } else if !t.status.state.is_terminal() {
            self.report(&t.id, status(TaskState::Shutdown, "shutdown"));
            // No process here: if one ended while the daemon was dead, its namespace stayed.
            adopt::delete_task_netns(&t.id);
        }
    }

    fn start_and_stop(self: &Arc<Self>, to_start: Vec<Task>, to_stop: Vec<String>) {
        for t in to_start {
            let w = Arc::clone(self);
            tokio::spawn(async move { w.run(t).await });
        }
        for id in to_stop {
            self.stop(&id);
        }
    }

    /// Asks a task's process to stop (SIGTERM, then SIGKILL after its grace period).
    fn stop(&self, id: &str) {
        let (pid, grace) = {
            let mut local = self.locked();
            let Some(l) = local.get_mut(id) else { return };
            if l.stopping {
                return;
            }
            l.stopping = true;
            if let Some(c) = l.container.clone() {
                let grace = Duration::from_millis(l.grace_ms);
                info!(task = id, pid = c.pid, "stopping container");
                tokio::task::spawn_blocking(move || {
                    if let Err(e) = c.stop(grace) {
                        warn!(container = %c.id, "failed to stop the container: {e}");
                    }
                });
                return;
            }
            (l.pid, l.grace_ms)
        };
        if let Some(pid) = pid {
            info!(task = id, pid, "stopping task");
            tokio::spawn(async move {
                if let Err(e) = shoal_exec::stop(pid, Duration::from_millis(grace)).await {
                    warn!(pid, "failed to stop task process: {e}");
                }
            });
        }
    }

    /// Daemon shutdown: stops the host-command tasks and leaves the containers running
    /// under their monitors, for the next daemon to adopt (live restore).
    pub async fn shutdown(&self, timeout: Duration) {
        self.keep_containers
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.locked().retain(|_, l| l.container.is_none());
        self.stop_all(timeout).await;
    }

    /// Stops every task and waits for them to exit (leaving the cluster).
    pub async fn stop_all(&self, timeout: Duration) {
        self.closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let ids: Vec<String> = self.locked().keys().cloned().collect();
        for id in &ids {
            self.stop(id);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.locked().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Leaving, not a daemon restart (whose adopted containers keep the data plane).
        if !self
            .keep_containers
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            self.network.leave().await;
        }
    }

    /// The task's sandbox (for an `oci` task: its network namespace and run dir only).
    fn sandbox_spec(&self, task: &Task) -> shoal_exec::SandboxSpec {
        shoal_exec::SandboxSpec {
            task_id: task.id.clone(),
            hostname: task.hostname().to_string(),
            command: task.spec.command.clone(),
            env: task.spec.env.clone(),
            workdir: task.spec.dir.clone(),
            run_dir: self.run_dir(&task.id),
            netns: None,
            extra_hosts: self.cfg.extra_hosts.clone(),
        }
    }

    /// Reports a task that could not start, after its sandbox is released.
    pub(crate) async fn failed_to_start(
        &self,
        task: &Task,
        spec: &shoal_exec::SandboxSpec,
        what: &str,
        err: String,
    ) {
        warn!(task = %task.name(), "{what}: {err}");
        let mut st = status(TaskState::Failed, what);
        st.err = err;
        self.report(&task.id, st);
        self.finished(&task.id);
        self.network.release_task(&task.id).await;
        shoal_exec::cleanup(spec).await;
    }

    /// Sandbox, networks and DNS, then the process.
    async fn start(
        &self,
        task: &Task,
        spec: &shoal_exec::SandboxSpec,
    ) -> Result<shoal_exec::Running, String> {
        let netns = shoal_exec::prepare_netns(spec)
            .await
            .map_err(|e| e.to_string())?;
        self.network.prepare_task(task, &netns).await?;
        shoal_exec::start(spec).await.map_err(|e| e.to_string())
    }

    /// Replaces the registry logins (by service id) the manager handed this node.
    pub fn set_logins(&self, logins: std::collections::BTreeMap<String, shoal_image::AuthConfig>) {
        *self.logins.lock().unwrap_or_else(|p| p.into_inner()) = logins
            .into_iter()
            .map(|(s, a)| (s, a.credentials()))
            .collect();
    }

    fn login_for(&self, service_id: &str) -> Option<shoal_image::Credentials> {
        self.logins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(service_id)
            .cloned()
    }

    /// The node's image service (`image ls|rm|prune`, the manager's pinning).
    pub fn images(&self) -> Result<shoal_image::Images, String> {
        self.oci().map(|rt| rt.images().clone())
    }

    /// (task name, image) of every local `oci` task: what `image rm|prune` must keep.
    pub fn image_users(&self) -> Vec<(String, String)> {
        self.locked()
            .values()
            .filter_map(|l| l.image.clone().map(|i| (l.name.clone(), i)))
            .collect()
    }

    /// Owns one task's process from start to exit.
    async fn run(self: Arc<Self>, task: Task) {
        if task.spec.runtime == Runtime::Oci {
            return self.run_container(task).await;
        }
        let id = task.id.clone();
        let spec = self.sandbox_spec(&task);
        self.report(&id, status(TaskState::Starting, "starting"));
        let mut running = match self.start(&task, &spec).await {
            Ok(r) => r,
            Err(e) => {
                warn!(task = %task.name(), "failed to start task: {e}");
                let mut st = status(TaskState::Failed, "starting the task failed");
                st.err = e;
                self.report(&id, st);
                self.finished(&id);
                self.network.release_task(&id).await;
                shoal_exec::cleanup(&spec).await;
                return;
            }
        };
        let pid = running.pid();
        let stop_requested = {
            let mut local = self.locked();
            let l = local.entry(id.clone()).or_default();
            l.pid = Some(pid);
            l.stopping
        };
        let check =
            shoal_types::health::HealthConfig::effective(task.spec.healthcheck.as_ref(), None);
        self.now_running(&task, pid, check, health::Enter::Host { pid })
            .await;
        info!(task = %task.name(), pid, "task running");
        if stop_requested {
            // A stop arrived while the process was being created.
            self.locked().entry(id.clone()).or_default().stopping = false;
            self.stop(&id);
        }

        let mut pace = LogPace::default();
        let exit = loop {
            tokio::select! {
                exit = running.wait_exit() => break exit.ok(),
                _ = tokio::time::sleep(pace.wait()) => bound_log(&spec.run_dir, &mut pace),
            }
        };
        let stopping = self.locked().get(&id).is_some_and(|l| l.stopping);
        let unhealthy = self.was_unhealthy(&id);
        use shoal_exec::TaskExit;
        let failed = |err: String| {
            let mut st = status(TaskState::Failed, "task exited");
            st.err = err;
            st
        };
        let mut st = match exit {
            _ if unhealthy => {
                // As a shell reports a signal: 128 + its number (docker's 137, 143).
                let code = match exit {
                    Some(TaskExit::Code(c)) => Some(c),
                    Some(TaskExit::Signal(s)) => Some(128 + s),
                    None => None,
                };
                failed(health::unhealthy_error(code))
            }
            _ if stopping => status(TaskState::Shutdown, "shutdown"),
            Some(TaskExit::Code(0)) => status(TaskState::Complete, "finished"),
            Some(TaskExit::Code(c)) => failed(format!("task: non-zero exit ({c})")),
            _ => failed("task: killed by a signal".into()),
        };
        st.exit_code = exit.and_then(|e| e.code());
        info!(task = %task.name(), state = %st.state, "task ended");
        // The report first: the manager takes an ended task out of every node's DNS, VIPs and
        // mesh, so a task that died (SIGKILL, a crash) leaves them without waiting for this
        // node's own cleanup of its sandbox (which can take a few hundred ms).
        self.report(&id, st);
        self.network.release_task(&id).await;
        shoal_exec::cleanup(&spec).await;
        // Only now: `stop_all` waits for this, so a stopping daemon leaves no sandbox behind.
        self.finished(&id);
    }
}
