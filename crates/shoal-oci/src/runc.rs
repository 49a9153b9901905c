//! The runtime driver: runc through the OCI runtime contract (`create`, `start`, `state`,
//! `kill`, `delete`, `list`), with a state root of shoal's own (never runc's default
//! /run/runc, which other tools use).
//!
//! Exit statuses: after `runc create` returns, the container's init process is orphaned and
//! the kernel hands it to the nearest child subreaper. The process driving runc must be one
//! (`become_subreaper`, as containerd's shim is) to wait for it and learn its exit status.
//! A container that is not its child (one under conmon, `monitor`, or adopted after a
//! restart) is seen to end in /proc; its exit code is the monitor's to tell.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use serde::Deserialize;

use crate::bundle::Bundle;
use crate::cgroup;
use crate::error::OciError;

/// How often a wait looks again (the kernel gives no exit notification for a process that
/// is not our child; for our children a blocking wait would hold the thread past a grace).
const POLL: Duration = Duration::from_millis(10);

/// Makes this process a child subreaper, so that containers it creates become its children
/// when `runc create` exits and their exit statuses come to it.
pub fn become_subreaper() -> Result<(), OciError> {
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| OciError::io("become a child subreaper for", "/proc/self", e.into()))
}

/// A container as `runc state` and `runc list` describe it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ContainerState {
    pub id: String,
    /// The init process's pid in the host's PID namespace (0 once stopped).
    pub pid: i32,
    /// `creating`, `created`, `running`, `paused` or `stopped`.
    pub status: String,
    pub bundle: PathBuf,
}

/// How a container's init process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// The exit code, or 128 + the signal, as docker reports it; `None` for a container
    /// that was not our child (adopted), whose status nobody could collect.
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// The kernel's OOM killer killed a process of the container.
    pub oom_killed: bool,
}

impl Exit {
    /// What the task's ERROR column says, as Swarm words it; `None` for a clean exit.
    pub fn error(&self) -> Option<String> {
        if self.oom_killed {
            return Some("OOMKilled".into());
        }
        match self.code {
            Some(0) => None,
            Some(code) => Some(format!("task: non-zero exit ({code})")),
            None => Some("task: exit status unknown (adopted container)".into()),
        }
    }
}

/// runc with its state under `root`.
#[derive(Debug, Clone)]
pub struct Runc {
    binary: PathBuf,
    root: PathBuf,
}

/// Where a container's stdout and stderr go: files (`File::into`) or the write ends of
/// pipes whose reader rotates them (what `service logs` will read). runc passes them to the
/// container's process as they are.
#[derive(Debug)]
pub struct Logs {
    pub stdout: Stdio,
    pub stderr: Stdio,
}

impl Runc {
    /// runc from PATH, its state in `root` (created if missing).
    pub fn new(root: impl Into<PathBuf>) -> Runc {
        Runc::with_binary("runc", root)
    }

    pub fn with_binary(binary: impl Into<PathBuf>, root: impl Into<PathBuf>) -> Runc {
        Runc {
            binary: binary.into(),
            root: root.into(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// `runc exec ID COMMAND…` for the caller to run with its own stdio: the command runs in
    /// the container's namespaces and cgroup with its process's environment, user, working
    /// directory, capabilities and seccomp filter (runc starts from the config's process),
    /// and runc exits with its status.
    pub fn exec_command(&self, id: &str, command: &[String]) -> Command {
        let mut c = self.command();
        c.args(["exec", id]).args(command);
        c
    }

    /// [`Runc::exec_command`] that also writes the command's pid (as the host sees it) to
    /// `pid_file`, so that a caller that gives up on it (a health check past its timeout)
    /// can kill it: killing `runc exec` alone leaves the command running in the container.
    pub fn exec_command_with_pid_file(
        &self,
        id: &str,
        pid_file: &Path,
        command: &[String],
    ) -> Command {
        let mut c = self.command();
        c.args(["exec", "--pid-file"])
            .arg(pid_file)
            .arg(id)
            .args(command);
        c
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.binary);
        c.arg("--root").arg(&self.root);
        c
    }

    fn output(&self, op: &'static str, mut cmd: Command) -> Result<Output, OciError> {
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|source| OciError::RuncMissing {
                binary: self.binary.clone(),
                source,
            })?;
        if out.status.success() {
            return Ok(out);
        }
        let message = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(runtime_error(op, message))
    }

    /// `runc create`: the container exists, its process waits to be started. The process's
    /// stdout and stderr go to `logs`; runc's own error, if any, is in the returned error.
    pub fn create(&self, id: &str, bundle: &Bundle, logs: Logs) -> Result<Container, OciError> {
        let bundle = bundle.dir();
        fs::create_dir_all(&self.root).map_err(|e| OciError::io("create", &self.root, e))?;
        let log = bundle.join("runc-create.log");
        let pid_file = bundle.join("init.pid");
        let _ = fs::remove_file(&log);
        let status = self
            .command()
            .arg("--log")
            .arg(&log)
            .args(["--log-format", "json", "create", "--bundle"])
            .arg(bundle)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(logs.stdout)
            .stderr(logs.stderr)
            .status()
            .map_err(|source| OciError::RuncMissing {
                binary: self.binary.clone(),
                source,
            })?;
        let logged = fs::read_to_string(&log).unwrap_or_default();
        if !status.success() {
            let message = last_error(&logged)
                .unwrap_or_else(|| format!("runc create exited with {status} and logged nothing"));
            return Err(OciError::Runtime {
                op: "create",
                message,
            });
        }
        let pid = fs::read_to_string(&pid_file).map_err(|e| OciError::io("read", &pid_file, e))?;
        let pid = pid.trim().parse().map_err(|_| OciError::Runtime {
            op: "create",
            message: format!("runc wrote no pid to {}: {pid:?}", pid_file.display()),
        })?;
        self.adopt(&ContainerState {
            id: id.to_string(),
            pid,
            status: "created".into(),
            bundle: bundle.to_path_buf(),
        })
    }

    /// `runc start`: runs the created container's process.
    pub fn start(&self, id: &str) -> Result<(), OciError> {
        let mut c = self.command();
        c.args(["start", id]);
        self.output("start", c).map(drop)
    }

    /// `runc state`.
    pub fn state(&self, id: &str) -> Result<ContainerState, OciError> {
        let mut c = self.command();
        c.args(["state", id]);
        let out = self.output("state", c).map_err(|e| not_found(e, id))?;
        serde_json::from_slice(&out.stdout).map_err(|e| OciError::Runtime {
            op: "state",
            message: format!("runc state printed what is not a state: {e}"),
        })
    }

    /// The containers runc still knows under this root (to adopt after a restart).
    pub fn list(&self) -> Result<Vec<ContainerState>, OciError> {
        if !self.root.exists() {
            return Ok(vec![]);
        }
        let mut c = self.command();
        c.args(["list", "--format", "json"]);
        let out = self.output("list", c)?;
        let list: Option<Vec<ContainerState>> =
            serde_json::from_slice(&out.stdout).map_err(|e| OciError::Runtime {
                op: "list",
                message: format!("runc list printed what is not a list: {e}"),
            })?;
        Ok(list.unwrap_or_default())
    }

    /// `runc kill`: sends `signal` to the container's init process.
    pub fn kill(&self, id: &str, signal: Signal) -> Result<(), OciError> {
        let mut c = self.command();
        c.args(["kill", id, signal.as_str()]);
        self.output("kill", c)
            .map(drop)
            .map_err(|e| not_found(e, id))
    }

    /// `runc delete`: removes runc's state and the container's cgroups. `force` kills a
    /// container that still runs.
    pub fn delete(&self, id: &str, force: bool) -> Result<(), OciError> {
        let mut c = self.command();
        c.arg("delete");
        if force {
            c.arg("--force");
        }
        c.arg(id);
        self.output("delete", c)
            .map(drop)
            .map_err(|e| not_found(e, id))
    }

    /// Takes over a container found by `list` (after a restart of the driver): its cgroup
    /// is read from the config.json of its bundle.
    pub fn adopt(&self, state: &ContainerState) -> Result<Container, OciError> {
        let config = state.bundle.join("config.json");
        let text = fs::read(&config).map_err(|e| OciError::io("read", &config, e))?;
        let spec: oci_spec::runtime::Spec = serde_json::from_slice(&text)
            .map_err(|e| OciError::Invalid(format!("{}: {e}", config.display())))?;
        let cgroups_path = spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().clone())
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Container {
            id: state.id.clone(),
            pid: state.pid,
            cgroups_path,
            runc: self.clone(),
        })
    }
}

/// A container created by this driver or adopted from runc's list.
#[derive(Debug, Clone)]
pub struct Container {
    pub id: String,
    /// Its init process, in the host's PID namespace.
    pub pid: i32,
    /// Its cgroup (`linux.cgroupsPath`), where the OOM killer's count is read.
    pub cgroups_path: String,
    runc: Runc,
}

impl Container {
    pub fn start(&self) -> Result<(), OciError> {
        self.runc.start(&self.id)
    }

    pub fn state(&self) -> Result<ContainerState, OciError> {
        self.runc.state(&self.id)
    }

    pub fn kill(&self, signal: Signal) -> Result<(), OciError> {
        self.runc.kill(&self.id, signal)
    }

    /// Waits until the init process has ended, at most `timeout` (`None`: no limit);
    /// `Ok(None)` while it still runs. Call before `delete`: the OOM count goes with the
    /// cgroup.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<Option<Exit>, OciError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let ended = match waitpid(Pid::from_raw(self.pid), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => Some((Some(code), None)),
                Ok(WaitStatus::Signaled(_, sig, _)) => {
                    Some((Some(128 + sig as i32), Some(sig as i32)))
                }
                Ok(_) => None,
                // Not our child (a monitor's, or adopted): gone once its parent reaped it.
                Err(Errno::ECHILD) => (!crate::monitor::alive(self.pid)).then_some((None, None)),
                Err(e) => {
                    return Err(OciError::io(
                        "wait for",
                        format!("/proc/{}", self.pid),
                        io::Error::from(e),
                    ));
                }
            };
            if let Some((code, signal)) = ended {
                return Ok(Some(Exit {
                    code,
                    signal,
                    oom_killed: cgroup::oom_killed(&self.cgroups_path),
                }));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
            sleep(POLL);
        }
    }

    /// Stops the container as docker does: SIGTERM, then SIGKILL once `grace` has passed.
    pub fn stop(&self, grace: Duration) -> Result<Exit, OciError> {
        self.signal_if_running(Signal::SIGTERM)?;
        if let Some(exit) = self.wait(Some(grace))? {
            return Ok(exit);
        }
        self.signal_if_running(Signal::SIGKILL)?;
        Ok(self.wait(None)?.unwrap_or(Exit {
            code: None,
            signal: None,
            oom_killed: false,
        }))
    }

    fn signal_if_running(&self, signal: Signal) -> Result<(), OciError> {
        match self.kill(signal) {
            Err(OciError::Runtime { message, .. }) if message.contains("not running") => Ok(()),
            other => other,
        }
    }

    /// Removes runc's state and the container's cgroups (`force`: kills it first if it
    /// still runs).
    pub fn delete(&self, force: bool) -> Result<(), OciError> {
        self.runc.delete(&self.id, force)
    }
}

/// The last error runc logged (`--log-format json`: one object per line).
pub fn last_error(log: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Line {
        level: String,
        msg: String,
    }
    log.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Line>(l).ok())
        .find(|l| l.level == "error" || l.level == "fatal")
        .map(|l| l.msg)
}

fn runtime_error(op: &'static str, message: String) -> OciError {
    OciError::Runtime { op, message }
}

/// runc's "container does not exist" as our `NoSuchContainer`.
fn not_found(e: OciError, id: &str) -> OciError {
    match e {
        OciError::Runtime { ref message, .. } if message.contains("does not exist") => {
            OciError::NoSuchContainer(id.to_string())
        }
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runcs_logged_error_is_the_message() {
        let log = r#"{"level":"warning","msg":"something odd","time":"t"}
{"level":"error","msg":"runc create failed: unable to start container process: exec: \"nosuch\": executable file not found in $PATH","time":"t"}
"#;
        assert_eq!(
            last_error(log).as_deref(),
            Some(
                "runc create failed: unable to start container process: exec: \"nosuch\": \
                 executable file not found in $PATH"
            )
        );
        assert_eq!(last_error("not json\n"), None);
    }

    #[test]
    fn exits_read_as_swarm_words_them() {
        let exit = |code, oom_killed| Exit {
            code,
            signal: None,
            oom_killed,
        };
        assert_eq!(exit(Some(0), false).error(), None);
        assert_eq!(
            exit(Some(2), false).error().as_deref(),
            Some("task: non-zero exit (2)")
        );
        assert_eq!(exit(Some(137), true).error().as_deref(), Some("OOMKilled"));
    }
}
