//! `shoal exec TASK -- CMD...`: runs a command inside a task on this node and exits with its
//! exit code. A container task: `runc exec`, in all the container's namespaces and cgroup
//! with its environment, user and capabilities. A host-command task: its network, UTS and
//! mount namespaces with its environment.
//!
//! The local daemon says which process (and container) is the task (`GET
//! /v1/tasks/{key}/pid`, which fails with the node's name when the task runs elsewhere);
//! shoal-exec's `exec_in` builds the command that joins a host task's namespaces.

use std::os::unix::process::ExitStatusExt;

use anyhow::{Context, Result};
use clap::Args;
use shoal_api::Client;

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The task: an id, id prefix or name (vote.1).
    #[arg(value_name = "TASK")]
    pub task: String,
    /// The command to run and its arguments (after `--`).
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

/// Returns the command's exit code (128 + signal when it was killed); like `docker exec`,
/// 127 when the program is not found and 126 when it can't be run.
pub async fn run(client: &Client, a: ExecArgs) -> Result<i32> {
    let task = client.local_task_pid(&a.task).await?;
    let mut cmd = match (&task.container, &task.runc_root) {
        (Some(id), Some(root)) => shoal_oci::Runc::new(root).exec_command(id, &a.command),
        _ => shoal_exec::exec_in(task.pid, &a.command)
            .map_err(|e| anyhow::anyhow!("task {}: {e}", a.task))?,
    };
    let status = tokio::task::spawn_blocking(move || cmd.status())
        .await
        .context("failed to wait for the command")?;
    match status {
        Ok(status) => Ok(status
            .code()
            .or_else(|| status.signal().map(|s| 128 + s))
            .unwrap_or(1)),
        Err(e) => {
            eprintln!(
                "Error: failed to run {:?} in task {}: {e}",
                a.command[0], a.task
            );
            Ok(if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            })
        }
    }
}
