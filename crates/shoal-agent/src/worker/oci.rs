//! The worker's part for `--runtime oci` tasks: a container from its pull to its removal,
//! and the containers an earlier daemon left (adopted, or removed).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use shoal_types::{Task, TaskState};
use tracing::{info, warn};

use shoal_types::health::HealthConfig;

use super::health::{Enter, load_check, save_check, unhealthy_error};
use super::{Worker, status};
use crate::container::OciRuntime;

/// How often a pulling task's status says how far the pull is (each report is a write to
/// the managers, so not more often).
const PULL_REPORT: Duration = Duration::from_secs(1);

impl Worker {
    /// The node's OCI runtime, opened at its first use.
    pub(super) fn oci(&self) -> Result<Arc<OciRuntime>, String> {
        self.oci
            .get_or_init(|| {
                OciRuntime::open(&self.cfg.data_dir, self.cfg.insecure_registries.clone())
                    .map(Arc::new)
            })
            .clone()
    }

    /// Pulls `image` for task `id`, saying how far the pull is in the task's `preparing`
    /// status once a second while it changes (what `service create` shows meanwhile).
    async fn pull_reporting(
        &self,
        rt: &OciRuntime,
        id: &str,
        image: &str,
        login: Option<&shoal_image::Credentials>,
    ) -> Result<shoal_image::ImageRecord, String> {
        let pull = rt.pull(image, login);
        tokio::pin!(pull);
        let mut tick = tokio::time::interval(PULL_REPORT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut said = String::new();
        loop {
            tokio::select! {
                pulled = &mut pull => return pulled,
                _ = tick.tick() => {
                    if let Some(now) = rt.pull_progress(image).filter(|m| *m != said) {
                        self.report(id, status(TaskState::Preparing, &now));
                        said = now;
                    }
                }
            }
        }
    }

    /// Owns one `oci` task from its pull to its removal: Preparing while the image is
    /// pulled, then the sandbox exactly as for a host command, then the container.
    pub(super) async fn run_container(self: Arc<Self>, task: Task) {
        let id = task.id.clone();
        let spec = self.sandbox_spec(&task);
        self.report(&id, status(TaskState::Preparing, "preparing"));
        let image_name = task.spec.image.clone().unwrap_or_default();
        let prepared = async {
            let rt = self.oci()?;
            let login = self.login_for(&task.service_id);
            let began = std::time::Instant::now();
            let image = self
                .pull_reporting(&rt, &id, &image_name, login.as_ref())
                .await;
            self.cfg
                .metrics
                .image_pulled(image.is_ok(), began.elapsed());
            let image = image?;
            Ok::<_, String>((rt, image))
        }
        .await;
        let (rt, image) = match prepared {
            Ok(p) => p,
            Err(e) => {
                return self
                    .failed_to_start(&task, &spec, "preparing the task failed", e)
                    .await;
            }
        };
        if self.locked().get(&id).is_some_and(|l| l.stopping) {
            // Stopped while its image was pulled: nothing was made yet.
            self.report(&id, status(TaskState::Shutdown, "shutdown"));
            self.finished(&id);
            return;
        }
        self.report(&id, status(TaskState::Starting, "starting"));
        let netns = match shoal_exec::prepare_netns(&spec).await {
            Ok(n) => n,
            Err(e) => {
                let e = e.to_string();
                return self
                    .failed_to_start(&task, &spec, "starting the task failed", e)
                    .await;
            }
        };
        if let Err(e) = self.network.prepare_task(&task, &netns).await {
            return self
                .failed_to_start(&task, &spec, "starting the task failed", e)
                .await;
        }
        // The container's stdout and stderr, kept by its monitor (`service logs` reads it).
        let log = crate::container::log_path(&spec.run_dir);
        // The image's HEALTHCHECK (a small read of its config blob).
        let image_check = rt.image_healthcheck(&image);
        let started = {
            let (rt, task, log) = (Arc::clone(&rt), task.clone(), log.clone());
            let netns_path = PathBuf::from("/run/netns").join(&netns);
            tokio::task::spawn_blocking(move || {
                fs_create(&log)?;
                rt.start(&task, &image, netns_path, &log)
            })
            .await
            .unwrap_or_else(|e| Err(format!("starting the container panicked: {e}")))
        };
        let container = match started {
            Ok(c) => c,
            Err(e) => {
                remove_container(&rt, &id).await;
                return self
                    .failed_to_start(&task, &spec, "starting the task failed", e)
                    .await;
            }
        };
        let pid = container.pid as u32;
        // The service's check over the image's HEALTHCHECK, kept for a daemon that adopts it.
        let check = task.spec.healthcheck.clone();
        let resolved = HealthConfig::effective(check.as_ref(), image_check.as_ref());
        save_check(
            &spec.run_dir,
            HealthConfig::merged(check.as_ref(), image_check.as_ref()).as_ref(),
        );
        let enter = Enter::Container {
            runc_root: rt.runc_root().to_path_buf(),
            id: container.id.clone(),
        };
        self.register_container(&id, &container);
        self.now_running(&task, pid, resolved, enter).await;
        info!(task = %task.name(), pid, "container running");
        self.watch_container(task, spec, rt, container).await;
    }

    /// Takes over a container an earlier daemon left: plugs its sandbox into the node's
    /// networks, DNS and VIPs again and watches it as if this daemon had started it. One that
    /// ended meanwhile is reported with its exit code and removed.
    pub(super) async fn adopt_container(
        self: Arc<Self>,
        task: Task,
        survivor: shoal_oci::Survivor,
    ) {
        let id = task.id.clone();
        let spec = self.sandbox_spec(&task);
        let rt = match self.oci() {
            Ok(rt) => rt,
            Err(e) => {
                return self
                    .failed_to_start(&task, &spec, "adopting the container failed", e)
                    .await;
            }
        };
        let Some(container) = survivor.container.filter(|_| survivor.exit.is_none()) else {
            return self
                .container_ended(&task, &spec, &rt, survivor.exit, false)
                .await;
        };
        let plugged = match shoal_exec::task_netns_name(&id) {
            Ok(netns) => {
                drop_stale_gateway(&netns).await;
                self.network.prepare_task(&task, &netns).await
            }
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = plugged {
            warn!(task = %task.name(), "cannot plug the adopted container in again, stopping it: {e}");
            self.locked().entry(id.clone()).or_default().stopping = true;
            let c = container.clone();
            let grace = Duration::from_millis(task.spec.stop_grace_period_ms);
            let _ = tokio::task::spawn_blocking(move || c.stop(grace)).await;
            return self.container_ended(&task, &spec, &rt, None, true).await;
        }
        info!(task = %task.name(), pid = container.pid, "adopted a running container");
        let enter = Enter::Container {
            runc_root: rt.runc_root().to_path_buf(),
            id: container.id.clone(),
        };
        let check = HealthConfig::effective(load_check(&spec.run_dir).as_ref(), None);
        self.register_container(&id, &container);
        self.now_running(&task, container.pid as u32, check, enter)
            .await;
        self.watch_container(task, spec, rt, container).await;
    }

    /// Waits for a running container to end (its monitor's exit file), then reports and
    /// removes it. A daemon shutting down leaves it running (`shutdown`).
    async fn watch_container(
        self: &Arc<Self>,
        task: Task,
        spec: shoal_exec::SandboxSpec,
        rt: Arc<OciRuntime>,
        container: shoal_oci::Container,
    ) {
        let id = task.id.clone();
        let stop_requested = {
            let mut local = self.locked();
            let l = local.entry(id.clone()).or_default();
            l.pid = Some(container.pid as u32);
            l.container = Some(container);
            l.stopping
        };
        if stop_requested {
            // A stop arrived while the container was being created or adopted.
            self.locked().entry(id.clone()).or_default().stopping = false;
            self.stop(&id);
        }
        // Its monitor is not our child: the exit file says when it ended (a poll; the few
        // small reads cost little next to what a running container is).
        let code = loop {
            if self
                .keep_containers
                .load(std::sync::atomic::Ordering::SeqCst)
            {
                return;
            }
            match rt.watch(&id) {
                shoal_oci::Watch::Running => tokio::time::sleep(Duration::from_millis(100)).await,
                shoal_oci::Watch::Exited(code) => break Some(code),
                shoal_oci::Watch::Lost => break None,
            }
        };
        let stopping = self.locked().get(&id).is_some_and(|l| l.stopping);
        self.container_ended(&task, &spec, &rt, code, stopping)
            .await;
    }

    /// Reports how a container ended (exit code, OOMKilled read from its kept cgroup, or
    /// Shutdown when stopped) and removes it with its sandbox.
    async fn container_ended(
        &self,
        task: &Task,
        spec: &shoal_exec::SandboxSpec,
        rt: &Arc<OciRuntime>,
        code: Option<i32>,
        stopping: bool,
    ) {
        let id = &task.id;
        let container = self.locked().get(id).and_then(|l| l.container.clone());
        let exit = shoal_oci::Exit {
            code,
            signal: None,
            oom_killed: container.as_ref().is_some_and(|c| rt.oom_killed(c)),
        };
        let unhealthy = self.was_unhealthy(id);
        let mut st = match (stopping, exit.error()) {
            _ if unhealthy => {
                let mut st = status(TaskState::Failed, "task exited");
                st.err = unhealthy_error(code);
                st
            }
            (true, _) => status(TaskState::Shutdown, "shutdown"),
            (false, None) => status(TaskState::Complete, "finished"),
            (false, Some(err)) => {
                let mut st = status(TaskState::Failed, "task exited");
                st.err = err;
                st
            }
        };
        st.exit_code = code;
        info!(task = %task.name(), state = %st.state, "container ended");
        // The report first, as for a host command: the task leaves every node's paths now.
        self.report(id, st);
        self.network.release_task(id).await;
        remove_container(rt, id).await;
        shoal_exec::cleanup(spec).await;
        self.finished(id);
    }

    /// Records a container in the task's entry before its health check starts: a check
    /// that fails at once must find it to stop it.
    fn register_container(&self, id: &str, container: &shoal_oci::Container) {
        let mut local = self.locked();
        let l = local.entry(id.to_string()).or_default();
        l.pid = Some(container.pid as u32);
        l.container = Some(container.clone());
    }

    /// An earlier daemon's container for this task, if one is left to adopt.
    pub(super) fn take_survivor(&self, id: &str) -> Option<shoal_oci::Survivor> {
        self.survivors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()?
            .remove(id)
    }

    /// After the first full task list: an earlier daemon's containers that no assigned task
    /// claimed are stopped and removed with their namespaces and writable layers.
    pub(super) fn remove_unclaimed_survivors(&self) {
        let rest = self
            .survivors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(rest) = rest.filter(|r| !r.is_empty()) else {
            return;
        };
        let Ok(rt) = self.oci() else { return };
        for id in rest.into_keys() {
            warn!(task = %id, "removing a container this node no longer runs");
            let rt = Arc::clone(&rt);
            tokio::spawn(async move {
                remove_container(&rt, &id).await;
                if let Ok(netns) = shoal_exec::task_netns_name(&id)
                    && let Err(e) = shoal_net::delete_netns(&netns)
                {
                    warn!(task = %id, "failed to delete the namespace of a removed container: {e}");
                }
            });
        }
    }
}

/// The task's run dir (where its log goes).
fn fs_create(log: &std::path::Path) -> Result<(), String> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    Ok(())
}

/// Removes the gateway veth an earlier daemon made in an adopted sandbox (both ends go):
/// the new daemon's gateway addresses start afresh, so the sandbox gets a new one.
pub(super) async fn drop_stale_gateway(netns: &str) {
    let Ok(nl) = shoal_net::Netlink::in_netns(netns).await else {
        return;
    };
    if let Ok(Some(_)) = nl.link(crate::mesh::TASK_GW_IF).await
        && let Err(e) = nl.delete_link(crate::mesh::TASK_GW_IF).await
    {
        warn!(netns, "failed to remove the stale gateway veth: {e}");
    }
}

async fn remove_container(rt: &Arc<OciRuntime>, id: &str) {
    let (rt, id) = (Arc::clone(rt), id.to_string());
    let _ = tokio::task::spawn_blocking(move || rt.remove(&id)).await;
}
