//! shoal's task executor: runs a task's command in its own network, UTS and mount
//! namespaces, with generated `/etc/resolv.conf` and `/etc/hosts` and a log file.
//!
//! # Layout
//! - `sandbox`: [`SandboxSpec`] → [`start`] → [`Running`] (`wait`), [`prepare_netns`],
//!   [`cleanup`].
//! - `stop`: [`stop`]: SIGTERM to the task's process group, SIGKILL after a grace period.
//! - `join`: [`exec_in`]: a `Command` that joins a running task's namespaces (`shoal exec`).
//! - `files`: the run directory: `resolv.conf`, `hosts`, `task.log` (and `task.log.1` once
//!   rotated, [`rotate_log`]).
//! - `orphan`: the `pid` record of the run directory, and [`orphan::find`], a task process
//!   that outlived the daemon that started it.
//! - `resolve`: checks done before anything is created (program lookup, env, hostname).
//! - `entry`: what a child does before exec: enter a task's sandbox, or join a running
//!   task's namespaces.
//! - `pidfd`: a task's process held by its pidfd: `wait` and `try_wait`, reaping it.
//! - `sys`: the one unsafe module: starting a task's process (clone with CLONE_VM and
//!   CLONE_VFORK, `entry` run before exec), waitid on a pidfd, and the `pre_exec` of a
//!   `shoal exec` child.
//!
//! A task's run directory holds `resolv.conf` (nameserver 127.0.0.11, `ndots:0`), `hosts`,
//! `task.log` and `pid` (the process's pid and start time). The task is the leader of its
//! own session and process group; it shares the host's pid namespace and filesystem.
//!
//! Architecture invariant: namespaces are created through shoal-net; this crate never talks
//! netlink and never changes the namespaces of its caller's threads.
#![deny(unsafe_code)]

mod entry;
mod error;
mod files;
mod join;
pub mod orphan;
mod pidfd;
mod resolve;
mod sandbox;
mod stop;
mod sys;

pub use error::ExecError;
pub use files::{
    NAMESERVER, hosts_path, log_path, old_log_path, read_logs, render_hosts, render_resolv_conf,
    resolv_conf_path, rotate_log, update_hosts,
};
pub use join::exec_in;
pub use resolve::DEFAULT_PATH;
pub use sandbox::{Running, SandboxSpec, TaskExit, cleanup, prepare_netns, start, task_netns_name};
pub use stop::{is_running, stop};
