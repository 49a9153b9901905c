//! Stopping a task: SIGTERM to its process group, SIGKILL after the grace period.

use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::{Pid, getpgid};
use tokio::time::{Instant, sleep};

use crate::error::ExecError;

/// How often liveness is checked while waiting.
const POLL: Duration = Duration::from_millis(20);
/// How long a process may take to disappear after SIGKILL.
const AFTER_KILL: Duration = Duration::from_secs(10);

/// Whether `pid` is running: it exists and is not a zombie (a zombie has exited and only
/// waits for its parent to reap it).
pub fn is_running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S ...": comm may contain spaces and parentheses, the state follows the last ')'.
    match stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next())
    {
        Some(state) => !matches!(state, "Z" | "X" | "x"),
        None => false,
    }
}

/// Whether any running (non-zombie) process is in process group `pgid`.
fn group_has_members(pgid: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            return false;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        // After "pid (comm)": state, ppid, pgrp, ...
        let mut fields = stat
            .rfind(')')
            .map(|i| stat[i + 1..].split_whitespace())
            .into_iter()
            .flatten();
        let state = fields.next();
        let pgrp = fields.nth(1);
        pgrp == Some(pgid.to_string().as_str()) && !matches!(state, Some("Z" | "X" | "x") | None)
    })
}

/// Sends `sig` to the task: to its whole process group when it leads one (as tasks started
/// by this crate do), else to the process alone. `Ok(false)` if it no longer exists.
fn signal(pid: Pid, group: bool, sig: Signal) -> Result<bool, ExecError> {
    let sent = if group {
        killpg(pid, sig)
    } else {
        kill(pid, sig)
    };
    match sent {
        Ok(()) => Ok(true),
        Err(Errno::ESRCH) => Ok(false),
        Err(e) => Err(ExecError::io(format!("send {sig} to {pid}"), e)),
    }
}

async fn exited_within(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if !is_running(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(POLL).await;
    }
}

/// Stops task process `pid`: SIGTERM, then SIGKILL if it is still running after `grace`.
/// Processes left in its group once it has gone are killed too (a task has no pid
/// namespace, so nothing else would end them). Returns once the process has exited; it is
/// not reaped here (its parent does that).
pub async fn stop(pid: u32, grace: Duration) -> Result<(), ExecError> {
    let raw = i32::try_from(pid).map_err(|_| ExecError::BadPid(pid))?;
    // 0 and negative pids address groups, 1 is init: never.
    if raw <= 1 || raw == std::process::id() as i32 {
        return Err(ExecError::BadPid(pid));
    }
    let target = Pid::from_raw(raw);
    let group = getpgid(Some(target)) == Ok(target);
    if !is_running(pid) || !signal(target, group, Signal::SIGTERM)? {
        return Ok(());
    }
    if !exited_within(pid, grace).await {
        tracing::info!(
            pid,
            grace_ms = grace.as_millis() as u64,
            "task ignored SIGTERM; sending SIGKILL"
        );
        signal(target, group, Signal::SIGKILL)?;
        if !exited_within(pid, AFTER_KILL).await {
            return Err(ExecError::Unkillable(pid));
        }
    }
    if group && signal(target, true, Signal::SIGKILL)? {
        let deadline = Instant::now() + AFTER_KILL;
        while group_has_members(pid) {
            if Instant::now() >= deadline {
                return Err(ExecError::Unkillable(pid));
            }
            sleep(POLL).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_process_is_running_and_pid_zero_is_refused() {
        assert!(is_running(std::process::id()));
        assert!(!is_running(u32::MAX));
    }

    #[tokio::test]
    async fn dangerous_pids_are_refused() {
        for pid in [0, 1, u32::MAX, std::process::id()] {
            assert!(
                matches!(stop(pid, Duration::ZERO).await, Err(ExecError::BadPid(_))),
                "{pid}"
            );
        }
    }
}
