//! What an earlier daemon left: host-command tasks still running after it was killed
//! (adopted, or stopped when no task claims them), and the run directories of tasks that
//! are no longer this node's (removed with their task).
//!
//! A host task is not a child of the daemon that adopts it, so its exit code cannot be
//! read: an adopted task that ends on its own is reported failed with that said. A stop
//! through the new daemon reads as any stop (Shutdown).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use shoal_exec::orphan::Orphan;
use shoal_types::health::HealthConfig;
use shoal_types::{Task, TaskState};
use tracing::{info, warn};

use super::health::{Enter, unhealthy_error};
use super::oci::drop_stale_gateway;
use super::{Local, Worker, status};

/// How often an adopted process is looked at (one small read of /proc).
const WATCH: Duration = Duration::from_millis(100);
/// The grace given to a process no task claims any more (its spec is gone): docker's.
const UNCLAIMED_GRACE: Duration = Duration::from_secs(10);

/// The task processes an earlier daemon left running, by task id, from the records in the
/// run directories under `run_dir`.
pub(super) fn find_orphans(run_dir: &Path) -> HashMap<String, Orphan> {
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return HashMap::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let id = e.file_name().to_str()?.to_string();
            Some((id, shoal_exec::orphan::find(&e.path())?))
        })
        .collect()
}

impl Worker {
    /// An earlier daemon's process for this task, if one is left to adopt.
    fn take_orphan(&self, id: &str) -> Option<Orphan> {
        self.orphans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()?
            .remove(id)
    }

    /// Adopts the process an earlier daemon left for `t`, if there is one: it is this
    /// node's task again (a stop reaches it), and is plugged into the networks, DNS and VIPs
    /// on a task of its own. Returns whether it did.
    pub(super) fn adopt_orphan(
        self: &Arc<Self>,
        local: &mut HashMap<String, Local>,
        t: &Task,
    ) -> bool {
        let Some(orphan) = self.take_orphan(&t.id) else {
            return false;
        };
        local.insert(
            t.id.clone(),
            Local {
                name: t.name(),
                slot_name: t.slot_name(),
                grace_ms: t.spec.stop_grace_period_ms,
                pid: Some(orphan.pid),
                task: Some(Box::new(t.clone())),
                ..Default::default()
            },
        );
        let (w, t) = (Arc::clone(self), t.clone());
        tokio::spawn(async move { w.adopt_host(t, orphan).await });
        true
    }

    /// Plugs an adopted process in again and watches it until it ends.
    async fn adopt_host(self: Arc<Self>, task: Task, orphan: Orphan) {
        let id = task.id.clone();
        let spec = self.sandbox_spec(&task);
        if self.wanted(&id) {
            let plugged = match shoal_exec::task_netns_name(&id) {
                Ok(netns) => {
                    drop_stale_gateway(&netns).await;
                    self.network.prepare_task(&task, &netns).await
                }
                Err(e) => Err(e.to_string()),
            };
            match plugged {
                Ok(()) => {
                    info!(task = %task.name(), pid = orphan.pid, "adopted a running task");
                    let check = HealthConfig::effective(task.spec.healthcheck.as_ref(), None);
                    let enter = Enter::Host { pid: orphan.pid };
                    self.now_running(&task, orphan.pid, check, enter).await;
                }
                Err(e) => {
                    warn!(task = %task.name(), "cannot plug the adopted task in again, stopping it: {e}");
                    self.stop(&id);
                }
            }
        }
        let mut pace = super::LogPace::default();
        let mut waited = std::time::Duration::ZERO;
        while orphan.is_running() {
            tokio::time::sleep(WATCH).await;
            waited += WATCH;
            if waited >= pace.wait() {
                waited = std::time::Duration::ZERO;
                super::bound_log(&spec.run_dir, &mut pace);
            }
        }
        let stopping = self.locked().get(&id).is_some_and(|l| l.stopping);
        let mut st = if self.was_unhealthy(&id) {
            let mut st = status(TaskState::Failed, "task exited");
            st.err = unhealthy_error(None);
            st
        } else if stopping {
            status(TaskState::Shutdown, "shutdown")
        } else {
            let mut st = status(TaskState::Failed, "task exited");
            st.err = "task: exit code unknown (its process was adopted after the node's \
                      daemon restarted, and ended on its own)"
                .into();
            st
        };
        st.exit_code = None;
        info!(task = %task.name(), state = %st.state, "adopted task ended");
        self.network.release_task(&id).await;
        self.report(&id, st);
        shoal_exec::cleanup(&spec).await;
        self.finished(&id);
    }

    /// After the first full task list: an earlier daemon's processes that no assigned task
    /// claimed are stopped, with their namespaces and run directories. Returns their ids.
    pub(super) fn stop_unclaimed_orphans(&self) -> HashSet<String> {
        let rest = self
            .orphans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_default();
        let ids = rest.keys().cloned().collect();
        for (id, orphan) in rest {
            warn!(task = %id, pid = orphan.pid, "stopping a task process this node no longer runs");
            let dir = self.run_dir(&id);
            tokio::spawn(async move {
                if orphan.is_running()
                    && let Err(e) = shoal_exec::stop(orphan.pid, UNCLAIMED_GRACE).await
                {
                    warn!(task = %id, pid = orphan.pid, "failed to stop the task process: {e}");
                }
                delete_task_netns(&id);
                remove_run_dir(&dir);
            });
        }
        ids
    }

    /// A task that ended on this node: no longer local; its run directory goes too if the
    /// task has left the node's list meanwhile.
    pub(super) fn finished(&self, id: &str) {
        let forgotten = self.locked().remove(id).is_some_and(|l| l.forgotten);
        if forgotten {
            remove_run_dir(&self.run_dir(id));
        }
    }

    /// A task left the node's list (the manager deleted it): its run directory (log,
    /// generated files) goes now, or when its process has ended.
    pub(super) fn forget(&self, id: &str) {
        // The id names a directory to delete: a plain name only.
        if id.is_empty() || id.contains('/') || id.starts_with('.') {
            return;
        }
        let now = match self.locked().get_mut(id) {
            Some(l) => {
                l.forgotten = true;
                false
            }
            None => true,
        };
        if now {
            remove_run_dir(&self.run_dir(id));
        }
    }

    /// After a full task list: run directories of tasks neither listed nor local (deleted
    /// while this daemon was not running, or by an older daemon that kept them) are removed,
    /// except `keep`'s (processes being stopped, which remove theirs), and so are their
    /// namespaces: such a task has no process here, and one whose process ended while the
    /// daemon was dead left its namespace mounted (the chaos test found one after a worker's
    /// daemon was killed again and again).
    pub(super) fn remove_unlisted_run_dirs(&self, listed: &HashSet<&str>, keep: &HashSet<String>) {
        let Ok(entries) = std::fs::read_dir(&self.cfg.run_dir) else {
            return;
        };
        let local = self.locked();
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(id) = name.to_str() else { continue };
            if !listed.contains(id) && !local.contains_key(id) && !keep.contains(id) {
                delete_task_netns(id);
                remove_run_dir(&e.path());
            }
        }
    }
}

/// Removes the stale namespace files an earlier daemon of this node left: its overlays'
/// (`shoal-ov-<node>-`) and its tasks' that are empty files with nothing mounted, as a
/// daemon run in a mount namespace of its own leaves them (`shoal_net::remove_if_stale`).
pub(super) fn sweep_stale_netns(node_id: &str, run_dir: &Path) {
    if node_id.len() >= 12 {
        let prefix = format!("shoal-ov-{}-", &node_id[..12]);
        if let Err(e) = shoal_net::remove_stale_netns(&prefix) {
            warn!("failed to remove stale overlay namespace files: {e}");
        }
    }
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return;
    };
    for e in entries.flatten() {
        if let Some(Ok(netns)) = e.file_name().to_str().map(shoal_exec::task_netns_name)
            && let Err(e) = shoal_net::remove_if_stale(&netns)
        {
            warn!(netns, "failed to remove a stale namespace file: {e}");
        }
    }
}

/// The namespace of a task whose process is gone without the daemon seeing it end.
pub(super) fn delete_task_netns(id: &str) {
    if let Ok(netns) = shoal_exec::task_netns_name(id)
        && shoal_net::netns_exists(&netns)
        && let Err(e) = shoal_net::delete_netns(&netns)
    {
        warn!(task = %id, "failed to delete the task's namespace: {e}");
    }
}

fn remove_run_dir(dir: &Path) {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => warn!(dir = %dir.display(), "failed to remove a task's run directory: {e}"),
    }
}
