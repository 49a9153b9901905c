//! Runs a task's container: an OCI runtime bundle made from the image's config and the
//! task's settings, driven by runc through the OCI runtime contract.
//!
//! # Layout
//! - `settings`: the inputs (image config, task settings, paths) as plain data.
//! - `spec`: the runtime config (`oci_spec::runtime::Spec`) with docker's semantics.
//! - `user`, `caps`, `files`, `seccomp`: its parts (users from the image's passwd/group,
//!   capabilities, /etc/resolv.conf, hosts and hostname, the seccomp filter).
//! - `bundle`: the bundle directory on disk.
//! - `runc`: the driver (create, start, state, kill, delete, list, wait, stop).
//! - `logfile`: the container log conmon writes, read back.
//! - `monitor`: conmon, the per-container monitor that outlives the daemon.
//! - `cgroup`: where the container's cgroup is, and whether the OOM killer struck.
//!
//! `settings`, `spec`, `user`, `caps`, `files`, `seccomp` and `logfile` do no I/O.

#![forbid(unsafe_code)]

pub mod bundle;
pub mod caps;
pub mod cgroup;
pub mod error;
pub mod files;
pub mod logfile;
pub mod monitor;
pub mod runc;
pub mod seccomp;
pub mod settings;
pub mod spec;
pub mod user;

pub use bundle::Bundle;
pub use error::OciError;
pub use monitor::{Monitor, Survivor, Watch};
pub use runc::{Container, ContainerState, Exit, Logs, Runc, become_subreaper};
pub use settings::{ImageConfig, MountSpec, Paths, TaskSettings, UserDb};
