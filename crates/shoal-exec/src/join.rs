//! `shoal exec`: a command that joins a running task's namespaces.

use std::os::fd::OwnedFd;

use crate::entry::JoinEntry;
use crate::error::ExecError;
use crate::sys::join_on_spawn;

fn open_ns(pid: u32, kind: &str) -> Result<OwnedFd, ExecError> {
    let path = format!("/proc/{pid}/ns/{kind}");
    match std::fs::File::open(&path) {
        Ok(f) => Ok(f.into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ExecError::NoSuchProcess(pid)),
        Err(e) => Err(ExecError::io(format!("open {path}"), e)),
    }
}

/// The environment of process `pid` (`/proc/PID/environ`), to run commands as the task does.
fn environ(pid: u32) -> Result<Vec<(String, String)>, ExecError> {
    let path = format!("/proc/{pid}/environ");
    let raw = match std::fs::read(&path) {
        Ok(raw) => raw,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ExecError::NoSuchProcess(pid));
        }
        Err(e) => return Err(ExecError::io(format!("read {path}"), e)),
    };
    Ok(raw
        .split(|&b| b == 0)
        .filter_map(|entry| {
            let entry = String::from_utf8_lossy(entry);
            entry
                .split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .filter(|(k, _)| !k.is_empty())
        .collect())
}

/// A command that runs `cmd` inside the network, UTS and mount namespaces of process `pid`
/// (a task), from `/`, with the task's environment. Spawn it like any `Command`; the
/// namespace fds are opened now, so a task that exits meanwhile cannot be confused with a
/// new process that reuses its pid.
pub fn exec_in(pid: u32, cmd: &[String]) -> Result<std::process::Command, ExecError> {
    let program = cmd.first().ok_or(ExecError::EmptyCommand)?;
    let entry = JoinEntry {
        net: open_ns(pid, "net")?,
        uts: open_ns(pid, "uts")?,
        mnt: open_ns(pid, "mnt")?,
    };
    let env = environ(pid)?;
    let mut command = std::process::Command::new(program);
    command.args(&cmd[1..]).env_clear().envs(env);
    join_on_spawn(&mut command, entry);
    Ok(command)
}
