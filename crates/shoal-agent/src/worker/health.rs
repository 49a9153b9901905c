//! The worker's part for a running task's health and readiness (`shoal_types::health`): the
//! health check run inside the task (a container: `runc exec`; a host command: its
//! namespaces, as `shoal exec` does) every interval, or a TCP connect to its target ports
//! from inside its network namespace, and the reports that follow. An unhealthy task is
//! stopped and reported Failed, as Swarm's executor does.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_types::health::{self, Health, HealthMonitor, Probe, Readiness};
use shoal_types::{Task, TaskState, TaskStatus};
use tokio::io::AsyncReadExt;
use tracing::{debug, info, warn};

use super::{Worker, status};

/// How a probe enters the task.
#[derive(Debug, Clone)]
pub(super) enum Enter {
    /// A host command's process: its network, UTS and mount namespaces.
    Host { pid: u32 },
    /// A container: `runc exec` (its namespaces, cgroup, user, environment).
    Container { runc_root: PathBuf, id: String },
}

/// What a probe's output is cut to in a status message (docker keeps 4 KiB per probe).
const OUTPUT_MAX: usize = 4096;
/// The error of a task stopped for being unhealthy, as Swarm's executor words it: the exit
/// and `ErrContainerUnhealthy` ("task: non-zero exit (143): unhealthy container").
pub(super) fn unhealthy_error(code: Option<i32>) -> String {
    match code {
        Some(c) if c != 0 => format!("task: non-zero exit ({c}): unhealthy container"),
        _ => "unhealthy container".into(),
    }
}

/// The file that keeps a container's resolved check for the next daemon (live restore).
fn saved_check(run_dir: &std::path::Path) -> PathBuf {
    run_dir.join("healthcheck.json")
}

/// Saves the check a container runs, so that a daemon that adopts it runs the same one.
pub(super) fn save_check(run_dir: &std::path::Path, check: Option<&health::HealthConfig>) {
    let path = saved_check(run_dir);
    let written = match check {
        Some(c) => serde_json::to_vec(c)
            .map_err(std::io::Error::other)
            .and_then(|json| std::fs::write(&path, json)),
        None => match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
    };
    if let Err(e) = written {
        warn!(path = %path.display(), "failed to save the task's health check: {e}");
    }
}

/// The check an earlier daemon saved for an adopted container.
pub(super) fn load_check(run_dir: &std::path::Path) -> Option<health::HealthConfig> {
    serde_json::from_slice(&std::fs::read(saved_check(run_dir)).ok()?).ok()
}

fn running(pid: u32, health: Option<Health>, ready: bool, message: &str) -> TaskStatus {
    let mut st = status(TaskState::Running, message);
    st.pid = Some(pid);
    st.health = health;
    st.ready = ready;
    st
}

impl Worker {
    /// Reports a task that now runs, with its health and readiness as they start, and
    /// watches them until the task ends. `check` is the task's resolved health check.
    pub(super) async fn now_running(
        self: &Arc<Self>,
        task: &Task,
        pid: u32,
        check: Option<Probe>,
        enter: Enter,
    ) {
        let readiness = Readiness::of(check.is_some(), &task.ports);
        let ready = readiness == Readiness::Running;
        let health = check.as_ref().map(|_| Health::Starting);
        if ready {
            self.network.set_ready(&task.id, true).await;
        }
        self.report(&task.id, running(pid, health, ready, "started"));
        let (w, task) = (Arc::clone(self), task.clone());
        match (readiness, check) {
            (Readiness::Healthy, Some(probe)) => {
                tokio::spawn(async move { w.watch_health(task, pid, probe, enter).await });
            }
            (Readiness::Listening(ports), _) => {
                tokio::spawn(async move { w.wait_listening(task, pid, ports).await });
            }
            _ => {}
        }
    }

    /// Whether the task is still this node's and not being stopped.
    pub(super) fn wanted(&self, id: &str) -> bool {
        self.locked().get(id).is_some_and(|l| !l.stopping)
    }

    /// Runs the health check every interval until the task ends; reports each change; stops
    /// the task once it is unhealthy.
    async fn watch_health(self: Arc<Self>, task: Task, pid: u32, probe: Probe, enter: Enter) {
        let id = task.id.clone();
        let started = Instant::now();
        let mut monitor = HealthMonitor::new(probe);
        loop {
            tokio::time::sleep(monitor.next_delay(started.elapsed())).await;
            if !self.wanted(&id) {
                return;
            }
            let at = started.elapsed();
            let (success, output) = run_probe(&enter, monitor.probe(), &self.run_dir(&id)).await;
            if !self.wanted(&id) {
                return;
            }
            if !success {
                debug!(task = %task.name(), output = %output.trim(), "health check failed");
            }
            let Some(now) = monitor.record(at, success) else {
                continue;
            };
            info!(task = %task.name(), health = %now, "health changed");
            match now {
                Health::Healthy => {
                    self.network.set_ready(&id, true).await;
                    self.report(&id, running(pid, Some(now), true, "started"));
                }
                Health::Unhealthy => {
                    let message = format!("unhealthy: {}", output.trim());
                    warn!(task = %task.name(), "{message}");
                    // Out of every path first (the report), then stopped.
                    self.network.set_ready(&id, false).await;
                    self.report(&id, running(pid, Some(now), false, &message));
                    self.stop_unhealthy(&id);
                    return;
                }
                Health::Starting => {}
            }
        }
    }

    /// Connects to the task's TCP target ports from inside its network namespace until one
    /// answers (bounded), then reports it ready.
    async fn wait_listening(self: Arc<Self>, task: Task, pid: u32, ports: Vec<u16>) {
        let id = task.id.clone();
        let Ok(netns) = shoal_exec::task_netns_name(&id) else {
            return;
        };
        // Its own address on its first network (a server bound to it or to 0.0.0.0 answers).
        let addr = task
            .networks
            .first()
            .map(|a| a.addr.addr())
            .unwrap_or(Ipv4Addr::LOCALHOST);
        let mut listening = false;
        for _ in 0..health::LISTEN_ATTEMPTS {
            if !self.wanted(&id) {
                return;
            }
            let ports = ports.clone();
            let connected = shoal_net::run_in_netns_async(&netns, move || {
                ports.iter().any(|p| {
                    let to = SocketAddr::from((addr, *p));
                    TcpStream::connect_timeout(&to, health::LISTEN_EVERY).is_ok()
                })
            })
            .await;
            match connected {
                Ok(true) => {
                    listening = true;
                    break;
                }
                Ok(false) => tokio::time::sleep(health::LISTEN_EVERY).await,
                // The namespace is gone: the task ended.
                Err(_) => return,
            }
        }
        if !self.wanted(&id) {
            return;
        }
        let message = if listening {
            "started"
        } else {
            warn!(task = %task.name(), ?ports, "no target port answered; taking the task as ready");
            "started (no target port answered; ready anyway)"
        };
        self.network.set_ready(&id, true).await;
        self.report(&id, running(pid, None, true, message));
    }

    /// Stops a task for being unhealthy: its exit is then reported Failed, not Shutdown.
    fn stop_unhealthy(&self, id: &str) {
        if let Some(l) = self.locked().get_mut(id) {
            l.unhealthy = true;
        }
        self.stop(id);
    }

    pub(super) fn was_unhealthy(&self, id: &str) -> bool {
        self.locked().get(id).is_some_and(|l| l.unhealthy)
    }
}

/// Runs one probe in the task: (exit 0 within the timeout, what it printed).
async fn run_probe(enter: &Enter, probe: &Probe, run_dir: &std::path::Path) -> (bool, String) {
    let pid_file = run_dir.join("healthcheck.pid");
    let cmd = match enter {
        Enter::Host { pid } => match shoal_exec::exec_in(*pid, &probe.command) {
            Ok(mut c) => {
                // Its own process group, so that a probe past its timeout goes whole.
                std::os::unix::process::CommandExt::process_group(&mut c, 0);
                c
            }
            Err(e) => return (false, e.to_string()),
        },
        Enter::Container { runc_root, id } => {
            let _ = std::fs::remove_file(&pid_file);
            shoal_oci::Runc::new(runc_root).exec_command_with_pid_file(
                id,
                &pid_file,
                &probe.command,
            )
        }
    };
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return (false, format!("failed to run the health check: {e}")),
    };
    let child_pid = child.id();
    let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
    let outcome = tokio::time::timeout(probe.timeout, async {
        let mut buf = Vec::new();
        let mut ebuf = Vec::new();
        let read_out = async {
            if let Some(o) = out.as_mut() {
                let _ = o.read_to_end(&mut buf).await;
            }
        };
        let read_err = async {
            if let Some(e) = err.as_mut() {
                let _ = e.read_to_end(&mut ebuf).await;
            }
        };
        let (_, _, st) = tokio::join!(read_out, read_err, child.wait());
        buf.extend_from_slice(&ebuf);
        (st, buf)
    })
    .await;
    match outcome {
        Ok((Ok(st), out)) => {
            let mut text = String::from_utf8_lossy(&out).into_owned();
            if text.len() > OUTPUT_MAX {
                let mut cut = OUTPUT_MAX;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
            }
            (st.success(), text)
        }
        Ok((Err(e), _)) => (false, format!("failed to wait for the health check: {e}")),
        Err(_) => {
            kill_probe(enter, child_pid, &pid_file);
            (
                false,
                format!(
                    "Health check exceeded timeout ({})",
                    humantime_secs(probe.timeout)
                ),
            )
        }
    }
}

/// Kills a probe past its timeout: its process group (host), or the command runc started
/// in the container, then runc.
fn kill_probe(enter: &Enter, child: Option<u32>, pid_file: &std::path::Path) {
    use nix::sys::signal::{Signal, kill, killpg};
    use nix::unistd::Pid;
    let Some(child) = child.and_then(|p| i32::try_from(p).ok()) else {
        return;
    };
    match enter {
        Enter::Host { .. } => {
            let _ = killpg(Pid::from_raw(child), Signal::SIGKILL);
        }
        Enter::Container { .. } => {
            if let Some(pid) = std::fs::read_to_string(pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
            {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = kill(Pid::from_raw(child), Signal::SIGKILL);
        }
    }
}

/// `30s`, `1.5s`: how docker prints the timeout in its message.
fn humantime_secs(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{}s", d.as_secs_f64())
    }
}
