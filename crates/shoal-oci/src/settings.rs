//! What a container is made of: the image's config and the task's settings, as plain data.

use std::net::IpAddr;
use std::path::PathBuf;

use oci_spec::image::ImageConfiguration;

use crate::error::OciError;

/// The parts of an image's config that decide how its process runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

impl ImageConfig {
    /// Reads an image config blob (OCI or docker; both carry `config.{Entrypoint,Cmd,…}`).
    pub fn from_json(bytes: &[u8]) -> Result<ImageConfig, OciError> {
        let image: ImageConfiguration =
            serde_json::from_slice(bytes).map_err(|e| OciError::ImageConfig(e.to_string()))?;
        let Some(c) = image.config() else {
            return Ok(ImageConfig::default());
        };
        let non_empty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        Ok(ImageConfig {
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            env: c.env().clone().unwrap_or_default(),
            working_dir: non_empty(c.working_dir()),
            user: non_empty(c.user()),
        })
    }
}

/// A mount as `--mount type=bind|volume|tmpfs,…` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSpec {
    /// A host path bind-mounted (recursively, private propagation).
    Bind {
        source: PathBuf,
        target: String,
        read_only: bool,
    },
    /// A named volume: a directory of the node's (`<volumes_dir>/<name>/_data`, as docker's
    /// local driver keeps them).
    Volume {
        name: String,
        target: String,
        read_only: bool,
    },
    /// A tmpfs of the container's own.
    Tmpfs {
        target: String,
        size_bytes: Option<u64>,
        mode: Option<u32>,
    },
}

impl MountSpec {
    pub fn target(&self) -> &str {
        match self {
            MountSpec::Bind { target, .. }
            | MountSpec::Volume { target, .. }
            | MountSpec::Tmpfs { target, .. } => target,
        }
    }
}

/// A task's settings, as `service create` takes them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskSettings {
    /// COMMAND [ARG…]: replaces the image's Cmd.
    pub command: Option<Vec<String>>,
    /// `--entrypoint`: replaces the image's Entrypoint and clears its Cmd.
    pub entrypoint: Option<Vec<String>>,
    /// `-e KEY=VALUE`, after the image's (a later value of a key wins).
    pub env: Vec<String>,
    pub workdir: Option<String>,
    /// `-u name|uid[:group|gid]`.
    pub user: Option<String>,
    pub hostname: String,
    /// The task's addresses, for /etc/hosts.
    pub addresses: Vec<IpAddr>,
    pub read_only: bool,
    pub mounts: Vec<MountSpec>,
    /// `--limit-cpu` as Swarm keeps it: CPUs × 10⁹.
    pub nano_cpus: Option<u64>,
    /// `--limit-memory` in bytes.
    pub memory_bytes: Option<i64>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// The task's network namespace (made by the agent), which the container joins.
    pub netns_path: PathBuf,
}

/// Where the container's files are on the host, decided by the caller (the driver's
/// `Bundle` gives the usual layout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// The mounted root filesystem (`shoal_image::rootfs::mount_rootfs`).
    pub rootfs: PathBuf,
    pub resolv_conf: PathBuf,
    pub hosts: PathBuf,
    pub hostname: PathBuf,
    /// Where named volumes live.
    pub volumes_dir: PathBuf,
    /// The cgroup of the container, absolute (`/shoal/<id>`): the same path under each v1
    /// controller and under the v2 root, so it means one thing on unified, hybrid and legacy
    /// hosts (a relative path would be relative to the runtime's own cgroup).
    pub cgroups_path: String,
}

/// The image's /etc/passwd and /etc/group, if it has them (read by the caller).
#[derive(Debug, Clone, Copy, Default)]
pub struct UserDb<'a> {
    pub passwd: Option<&'a str>,
    pub group: Option<&'a str>,
}
