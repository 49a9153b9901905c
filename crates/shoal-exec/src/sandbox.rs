//! Starting a task in its sandbox, waiting for it, and removing what it leaves.

use std::ffi::{CString, OsString};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::entry::SandboxEntry;
use crate::error::ExecError;
use crate::files::{self, hosts_path, log_path, resolv_conf_path};
use crate::pidfd::PidfdChild;
use crate::resolve::{check_hostname, resolve_program, short_id, task_env};
use crate::sys::{Program, spawn_in_sandbox};

/// What to run and how to isolate it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSpec {
    /// The task's id; its first 12 characters name the fresh namespace.
    pub task_id: String,
    /// The hostname inside the task's UTS namespace.
    pub hostname: String,
    /// Program and arguments. The program is looked up in the task's `PATH` on this host.
    pub command: Vec<String>,
    /// `KEY=VALUE` entries added to (and overriding) `PATH` and `HOSTNAME`.
    pub env: Vec<String>,
    /// Working directory (default `/`).
    pub workdir: Option<String>,
    /// Per-task directory for `resolv.conf`, `hosts` and `task.log`; created if missing.
    pub run_dir: PathBuf,
    /// A named network namespace to join; `None` creates `shoal-task-<short id>` with `lo` up.
    pub netns: Option<String>,
    /// A hosts-style file whose lines are appended to the task's `/etc/hosts`.
    pub extra_hosts: Option<PathBuf>,
}

/// How a task's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskExit {
    /// It exited with this status code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

impl TaskExit {
    /// The exit code, if it exited (rather than being killed).
    pub fn code(self) -> Option<i32> {
        match self {
            TaskExit::Code(c) => Some(c),
            TaskExit::Signal(_) => None,
        }
    }

    /// Whether it exited with code 0.
    pub fn success(self) -> bool {
        self == TaskExit::Code(0)
    }
}

impl fmt::Display for TaskExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskExit::Code(c) => write!(f, "exit code {c}"),
            TaskExit::Signal(s) => match nix::sys::signal::Signal::try_from(*s) {
                Ok(sig) => write!(f, "killed by {sig}"),
                Err(_) => write!(f, "killed by signal {s}"),
            },
        }
    }
}

/// A started task.
#[derive(Debug)]
pub struct Running {
    /// The task's process id (also its process group and session id).
    pub pid: u32,
    /// The network namespace it runs in.
    pub netns: String,
    /// Reaped only through `wait`, so the pid stays ours until then.
    child: PidfdChild,
}

impl Running {
    /// The task's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for the process to end and says how. Cancel-safe; later calls return the same.
    pub async fn wait_exit(&mut self) -> Result<TaskExit, ExecError> {
        self.child
            .wait()
            .await
            .map_err(|e| ExecError::io(format!("wait for task process {}", self.pid), e))
    }

    /// Waits for the process to end: `Some(code)` if it exited, `None` if a signal killed it
    /// (or waiting failed, which is logged).
    pub async fn wait(&mut self) -> Option<i32> {
        match self.wait_exit().await {
            Ok(exit) => exit.code(),
            Err(e) => {
                tracing::warn!(pid = self.pid, "{e}");
                None
            }
        }
    }

    /// The exit, if the process has ended, without blocking.
    pub fn try_exit(&mut self) -> Result<Option<TaskExit>, ExecError> {
        self.child
            .try_wait()
            .map_err(|e| ExecError::io(format!("check task process {}", self.pid), e))
    }
}

/// The mount namespace every task's own is copied from: made once, at the first start, by
/// `shoal_net::netns::mount_ns_without_netns` (the caller's mounts without `/run/netns`), so
/// that starting a task costs the same whatever the number of namespaces on the node. If it
/// cannot be made, tasks copy the caller's namespace, as they did before (and say so once).
fn task_mounts() -> Option<BorrowedFd<'static>> {
    static MOUNTS: OnceLock<Option<OwnedFd>> = OnceLock::new();
    MOUNTS
        .get_or_init(|| match shoal_net::netns::mount_ns_without_netns() {
            Ok(fd) => Some(fd),
            Err(e) => {
                tracing::warn!(
                    "tasks' mount namespaces are copied from the daemon's, with every \
                     namespace's bind mount: {e}"
                );
                None
            }
        })
        .as_ref()
        .map(|fd| fd.as_fd())
}

/// The name of the fresh namespace of a task with `spec.netns == None`.
pub fn task_netns_name(task_id: &str) -> Result<String, ExecError> {
    Ok(format!("shoal-task-{}", short_id(task_id)?))
}

/// Makes sure the task's network namespace exists, and returns its name: `spec.netns` if
/// given (it must exist), else `shoal-task-<short id>`, created with `lo` up if missing.
///
/// `start` calls this itself; call it first to plug networks into the namespace before the
/// task's process exists.
pub async fn prepare_netns(spec: &SandboxSpec) -> Result<String, ExecError> {
    if let Some(name) = &spec.netns {
        shoal_net::open_netns(name)?;
        return Ok(name.clone());
    }
    let name = task_netns_name(&spec.task_id)?;
    if !shoal_net::netns_exists(&name) {
        match shoal_net::create_netns(&name) {
            Ok(()) | Err(shoal_net::NetError::NetnsExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let nl = shoal_net::Netlink::in_netns(&name).await?;
    nl.set_lo_up().await?;
    Ok(name)
}

fn cstring(path: &Path) -> Result<CString, ExecError> {
    CString::new(path.as_os_str().to_owned().into_vec()).map_err(|_| {
        ExecError::io(
            format!("use path {}", path.display()),
            std::io::Error::other("contains NUL"),
        )
    })
}

/// Starts the task described by `spec` in its own network, UTS and mount namespaces.
///
/// Everything that can be checked is checked before anything is created. After a failure
/// (here or later) call [`cleanup`].
pub async fn start(spec: &SandboxSpec) -> Result<Running, ExecError> {
    let program = spec.command.first().ok_or(ExecError::EmptyCommand)?;
    check_hostname(&spec.hostname)?;
    let env = task_env(&spec.hostname, &spec.env)?;
    let workdir = spec.workdir.as_deref().unwrap_or("/");
    if !Path::new(workdir).is_absolute() || !Path::new(workdir).is_dir() {
        return Err(ExecError::NoWorkdir(workdir.to_string()));
    }
    let path_var = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map_or("", |(_, v)| v.as_str());
    let resolved = resolve_program(program, path_var, Path::new(workdir))?;
    for target in ["/etc/resolv.conf", "/etc/hosts"] {
        if !Path::new(target).exists() {
            return Err(ExecError::MissingMountTarget(target.into()));
        }
    }
    let extra = match &spec.extra_hosts {
        Some(path) => fs::read_to_string(path)
            .map_err(|e| ExecError::io(format!("read extra hosts file {}", path.display()), e))?,
        None => String::new(),
    };

    let run_dir = &spec.run_dir;
    fs::create_dir_all(run_dir)
        .map_err(|e| ExecError::io(format!("create run directory {}", run_dir.display()), e))?;
    files::write_in_place(&resolv_conf_path(run_dir), &files::render_resolv_conf())?;
    files::update_hosts(run_dir, &spec.hostname, &[], &extra)?;
    let log = log_path(run_dir);
    let out = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(&log)
        .map_err(|e| ExecError::io(format!("open task log {}", log.display()), e))?;
    let err = out
        .try_clone()
        .map_err(|e| ExecError::io(format!("duplicate the fd of {}", log.display()), e))?;

    let netns = prepare_netns(spec).await?;
    let entry = SandboxEntry {
        netns: shoal_net::open_netns(&netns)?,
        mounts: task_mounts(),
        hostname: OsString::from(&spec.hostname),
        resolv_conf: cstring(&resolv_conf_path(run_dir))?,
        hosts: cstring(&hosts_path(run_dir))?,
        workdir: cstring(Path::new(workdir))?,
    };

    let spawn_error = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::NotFound => ExecError::NotFound(program.clone()),
        _ => ExecError::Spawn {
            program: program.clone(),
            source,
        },
    };
    let nul = |_| spawn_error(std::io::Error::other("an argument contains NUL"));
    let to_execute = Program {
        path: cstring(&resolved)?,
        argv: spec
            .command
            .iter()
            .map(|a| CString::new(a.as_str()))
            .collect::<Result<_, _>>()
            .map_err(nul)?,
        // task_env has refused NUL already.
        envp: env
            .iter()
            .map(|(k, v)| CString::new(format!("{k}={v}")))
            .collect::<Result<_, _>>()
            .map_err(nul)?,
    };
    let stdin = File::open("/dev/null").map_err(|e| ExecError::io("open /dev/null", e))?;
    let (pid, pidfd) =
        spawn_in_sandbox(&to_execute, [stdin.into(), out.into(), err.into()], &entry)
            .map_err(spawn_error)?;
    let child = PidfdChild::new(pid, pidfd)
        .map_err(|e| ExecError::io(format!("watch task process {pid}"), e))?;
    // So that a daemon started after this one died finds the process again (`orphan`).
    if let Err(e) = crate::orphan::record(run_dir, pid) {
        tracing::warn!(task = %spec.task_id, pid, "a restarted daemon will not find this task: {e}");
    }
    tracing::debug!(task = %spec.task_id, pid, netns = %netns, "task started");
    Ok(Running { pid, netns, child })
}

/// Removes what `start` created outside the run directory: the task's fresh network
/// namespace (a joined `spec.netns` is left alone). Safe to call more than once and after a
/// failed start; failures are logged, not returned, as there is nothing left to do about them.
pub async fn cleanup(spec: &SandboxSpec) {
    if spec.netns.is_some() {
        return;
    }
    let name = match task_netns_name(&spec.task_id) {
        Ok(name) => name,
        Err(_) => return,
    };
    if let Err(e) = shoal_net::delete_netns(&name) {
        tracing::warn!(task = %spec.task_id, netns = %name, "failed to delete the task's namespace: {e}");
    }
}
