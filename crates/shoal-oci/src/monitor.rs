//! The container monitor: conmon (podman's and CRI-O's, Debian's `conmon` package), one per
//! container, detached from whoever started it. It runs `runc create`, stays the container's
//! parent (a child subreaper) until it ends, writes the exit code (128 + the signal for a
//! killed one) to `<exits>/<id>` and copies the container's stdout and stderr into a
//! size-bounded log file (CRI's `k8s-file` format: one timestamped line per write). So a
//! container outlives a restart (or a crash) of the daemon that started it, and its exit
//! code is not lost while nobody watches.
//!
//! Why conmon rather than a monitor of our own: it is the monitor two engines ship and
//! maintain, with exit files, log size limits and runc's error reporting already right; our
//! own would be the same double fork, subreaper, exit file and log copying written again.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::bundle::Bundle;
use crate::error::OciError;
use crate::runc::{Container, ContainerState, Runc, last_error};

/// How long `runc create` may take before the start is given up.
const CREATE_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(10);

/// conmon with runc, its exit files and attach-socket links under `dir`.
#[derive(Debug, Clone)]
pub struct Monitor {
    binary: PathBuf,
    runc: Runc,
    dir: PathBuf,
}

/// A container found at start: left running (or ended) by an earlier daemon.
#[derive(Debug, Clone)]
pub struct Survivor {
    pub id: String,
    pub container: Option<Container>,
    /// Its exit code, if it has ended.
    pub exit: Option<i32>,
}

/// How a monitored container stands now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watch {
    /// Its init process runs (or is being created).
    Running,
    /// It ended and its monitor wrote the exit code.
    Exited(i32),
    /// Its monitor is gone without an exit code (killed): the container's end is known
    /// only from runc, and its exit code is lost.
    Lost,
}

impl Monitor {
    /// conmon from PATH driving `runc`, its files in `dir` (created on first start).
    pub fn new(runc: Runc, dir: impl Into<PathBuf>) -> Monitor {
        Monitor {
            binary: PathBuf::from("conmon"),
            runc,
            dir: dir.into(),
        }
    }

    pub fn runc(&self) -> &Runc {
        &self.runc
    }

    fn exits(&self) -> PathBuf {
        self.dir.join("exits")
    }

    fn exit_file(&self, id: &str) -> PathBuf {
        self.exits().join(id)
    }

    /// Creates and starts the container of `bundle` under a new conmon, its output going to
    /// `log` (k8s-file lines; conmon starts the file over once it would pass `log_max`
    /// bytes). Returns once the container's process runs. runc's own error reads as docker
    /// words it ("OCI runtime create failed: …").
    pub fn start(
        &self,
        id: &str,
        bundle: &Bundle,
        log: &Path,
        log_max: u64,
    ) -> Result<Container, OciError> {
        let dir = bundle.dir();
        let (exits, sockets) = (self.exits(), self.dir.join("sockets"));
        for d in [&exits, &sockets, &self.runc.root().to_path_buf()] {
            fs::create_dir_all(d).map_err(|e| OciError::io("create", d, e))?;
        }
        let (init_pid, monitor_pid) = (dir.join("init.pid"), dir.join("conmon.pid"));
        let (runc_log, conmon_err) = (dir.join("runc.log"), dir.join("conmon.err"));
        for f in [&init_pid, &monitor_pid, &runc_log, &self.exit_file(id)] {
            let _ = fs::remove_file(f);
        }
        let err =
            fs::File::create(&conmon_err).map_err(|e| OciError::io("create", &conmon_err, e))?;
        let mut c = Command::new(&self.binary);
        c.args(["--api-version", "1", "-c", id, "-u", id, "-n", id])
            .arg("-b")
            .arg(dir)
            .arg("-r")
            .arg(on_path(self.runc.binary()))
            .arg("--runtime-arg=--root")
            .arg(format!("--runtime-arg={}", self.runc.root().display()))
            .arg("--runtime-arg=--log")
            .arg(format!("--runtime-arg={}", runc_log.display()))
            .arg("--runtime-arg=--log-format")
            .arg("--runtime-arg=json")
            .arg("--exit-dir")
            .arg(&exits)
            .arg("--socket-dir-path")
            .arg(&sockets)
            .arg("-l")
            .arg(format!("k8s-file:{}", log.display()))
            .arg(format!("--log-size-max={log_max}"))
            .arg("-p")
            .arg(&init_pid)
            .arg("-P")
            .arg(&monitor_pid)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err);
        // conmon forks at once and its first process exits: the monitor is nobody's child.
        let status = c.status().map_err(|source| OciError::MonitorMissing {
            binary: self.binary.clone(),
            source,
        })?;
        let failed = |fallback: String| {
            let message = last_error(&fs::read_to_string(&runc_log).unwrap_or_default())
                .or_else(|| {
                    let said = fs::read_to_string(&conmon_err).unwrap_or_default();
                    let said = said.trim();
                    (!said.is_empty()).then(|| said.to_string())
                })
                .unwrap_or(fallback);
            OciError::Runtime {
                op: "create",
                message,
            }
        };
        if !status.success() {
            return Err(failed(format!("conmon exited with {status}")));
        }
        let deadline = Instant::now() + CREATE_TIMEOUT;
        let pid = loop {
            if let Some(pid) = read_pid(&init_pid) {
                break pid;
            }
            // The monitor ends when `runc create` fails.
            if read_pid(&monitor_pid).is_some_and(|p| !alive(p)) {
                return Err(failed("runc create failed and logged nothing".into()));
            }
            if Instant::now() >= deadline {
                let _ = self.runc.delete(id, true);
                return Err(failed(format!(
                    "the container was not created within {}s",
                    CREATE_TIMEOUT.as_secs()
                )));
            }
            sleep(POLL);
        };
        self.runc.start(id)?;
        self.runc.adopt(&ContainerState {
            id: id.to_string(),
            pid,
            status: "running".into(),
            bundle: dir.to_path_buf(),
        })
    }

    /// How the container of `bundle` stands: the exit file first (written before the
    /// monitor exits), then whether its monitor still runs.
    pub fn watch(&self, id: &str, bundle: &Bundle) -> Watch {
        if let Some(code) = self.exit_code(id) {
            return Watch::Exited(code);
        }
        match read_pid(&bundle.dir().join("conmon.pid")) {
            Some(pid) if alive(pid) => Watch::Running,
            // Written just before it exited?
            _ => match self.exit_code(id) {
                Some(code) => Watch::Exited(code),
                None => Watch::Lost,
            },
        }
    }

    /// The exit code the monitor wrote, if the container has ended.
    pub fn exit_code(&self, id: &str) -> Option<i32> {
        fs::read_to_string(self.exit_file(id))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// The containers this node's runc still knows (to adopt after a restart of the daemon),
    /// each with its exit code if it ended while nobody watched.
    pub fn survivors(&self) -> Result<Vec<Survivor>, OciError> {
        Ok(self
            .runc
            .list()?
            .into_iter()
            .map(|state| Survivor {
                exit: self.exit_code(&state.id),
                // A container whose bundle is gone cannot be adopted, only removed.
                container: self.runc.adopt(&state).ok(),
                id: state.id,
            })
            .collect())
    }

    /// Forgets a removed container's exit file and its monitor's attach link.
    pub fn forget(&self, id: &str) {
        let _ = fs::remove_file(self.exit_file(id));
        let _ = fs::remove_file(self.dir.join("sockets").join(id));
    }
}

/// conmon wants the runtime's full path: a bare name is looked up on PATH as a shell would.
fn on_path(binary: &Path) -> PathBuf {
    if binary.components().count() > 1 {
        return binary.to_path_buf();
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(binary))
        .find(|p| p.is_file())
        .unwrap_or_else(|| binary.to_path_buf())
}

fn read_pid(path: &Path) -> Option<i32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether a process runs (a zombie counts as gone: it has ended, only its parent's wait is
/// missing).
pub(crate) fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command's closing parenthesis.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}
