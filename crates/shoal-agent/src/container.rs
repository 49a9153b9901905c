//! The OCI runtime of `--runtime oci` tasks: the image pulled with shoal-image into the
//! node's store (one pull per image however many tasks want it), the task's root filesystem
//! (overlayfs, a writable layer of its own), a bundle from shoal-oci joining the task's
//! network namespace, and runc under conmon. The sandbox (namespace, overlays, DNS, VIPs,
//! mesh) is the worker's, exactly as for host commands.
//!
//! Live restore: each container runs under a conmon of its own (`shoal_oci::Monitor`),
//! which is not the daemon's child, writes the exit code to a file and keeps the log. A
//! daemon that stops (or dies) leaves its containers running; the next one finds them with
//! `survivors` and adopts those the node should still run.

use std::fs;
use std::path::{Path, PathBuf};

use shoal_image::rootfs::{mount_rootfs, remove_rootfs};
use shoal_image::{ImageRecord, ImageRef, Images, Store};
use shoal_oci::bundle::{packaged_seccomp, read_user_db};
use shoal_oci::seccomp::{Seccomp, Target};
use shoal_oci::spec::generate;
use shoal_oci::{
    Bundle, Container, ImageConfig, Monitor, MountSpec, Runc, Survivor, TaskSettings, UserDb, Watch,
};
use shoal_types::Task;
use shoal_types::mount::{Mount, MountType};
use tracing::warn;

/// The node's container runtime: its image store, runc's state root and the tasks'
/// bundles, all under the node's data dir.
pub struct OciRuntime {
    images: Images,
    monitor: Monitor,
    /// `<data>/containers/<task>/{bundle,rootfs}`.
    dir: PathBuf,
    volumes: PathBuf,
    /// containers-common's profile, read once: docker's default filter for every task.
    seccomp: Result<(String, Target<'static>), String>,
}

/// Where a container's log starts over (conmon's `--log-size-max`): what `service logs`
/// can show of one task is bounded, and fits one gRPC answer (4 MiB by default).
pub const LOG_MAX_BYTES: u64 = 2 << 20;

/// The container's log in its task's run dir (k8s-file lines, see `logs`).
pub fn log_path(run_dir: &Path) -> PathBuf {
    run_dir.join("container.log")
}

impl OciRuntime {
    pub fn open(data_dir: &Path, insecure: Vec<String>) -> Result<OciRuntime, String> {
        let store = Store::open(data_dir.join("images")).map_err(|e| e.to_string())?;
        Ok(OciRuntime {
            images: Images::new(store, insecure),
            monitor: Monitor::new(Runc::new(data_dir.join("runc")), data_dir.join("conmon")),
            dir: data_dir.join("containers"),
            volumes: data_dir.join("volumes"),
            seccomp: packaged_seccomp().map_err(|e| e.to_string()),
        })
    }

    fn bundle(&self, task_id: &str) -> Bundle {
        Bundle::new(self.dir.join(task_id).join("bundle"))
    }

    fn rootfs(&self, task_id: &str) -> PathBuf {
        self.dir.join(task_id).join("rootfs")
    }

    /// Pulls the task's image unless the store has it; concurrent tasks share one pull.
    /// The error is docker's ("No such image: …", "manifest unknown", the registry's address
    /// when it cannot be reached).
    /// `login`: the registry login the manager handed over for the task's service.
    pub async fn pull(
        &self,
        image: &str,
        login: Option<&shoal_image::Credentials>,
    ) -> Result<ImageRecord, String> {
        let reference = ImageRef::parse(image).map_err(|e| e.to_string())?;
        self.images
            .pull(&reference, login)
            .await
            .map_err(|e| e.to_string())
    }

    /// How far the pull of `image` in progress is, said as a `preparing` task says it
    /// (`pulling image: 12.3MB of 35.1MB`); `None` when it is not being pulled.
    pub fn pull_progress(&self, image: &str) -> Option<String> {
        let reference = ImageRef::parse(image).ok()?;
        let (done, total) = self.images.progress(&reference)?;
        Some(shoal_image::progress::describe(done, total))
    }

    pub fn images(&self) -> &Images {
        &self.images
    }

    /// Mounts the root filesystem, writes the bundle and starts the container under its
    /// conmon (blocking: call from a blocking thread). Returns once the container's process
    /// runs; on error nothing of the container is left but what `remove` deletes.
    pub fn start(
        &self,
        task: &Task,
        image: &ImageRecord,
        netns_path: PathBuf,
        log: &Path,
    ) -> Result<Container, String> {
        let seccomp = match &self.seccomp {
            Ok((json, target)) => Seccomp::Profile {
                json,
                target: *target,
            },
            Err(e) => return Err(format!("no seccomp profile for the container: {e}")),
        };
        let rootfs = self.rootfs(&task.id);
        mount_rootfs(self.images.store(), image, &task.id, &rootfs).map_err(|e| e.to_string())?;
        let config = self
            .images
            .store()
            .read_blob(&image.config)
            .map_err(|e| e.to_string())?;
        let image_config = ImageConfig::from_json(&config).map_err(|e| e.to_string())?;
        let (passwd, group) = read_user_db(&rootfs);
        let users = UserDb {
            passwd: passwd.as_deref(),
            group: group.as_deref(),
        };
        let settings = settings(task, netns_path);
        let bundle = self.bundle(&task.id);
        let paths = bundle.paths(&rootfs, &self.volumes, &format!("/shoal/{}", task.id));
        let spec = generate(&image_config, &settings, &paths, users, seccomp)
            .map_err(|e| e.to_string())?;
        bundle
            .write(&spec, &settings, &paths, &[])
            .map_err(|e| e.to_string())?;
        self.monitor
            .start(&task.id, &bundle, log, LOG_MAX_BYTES)
            .map_err(|e| e.to_string())
    }

    /// The image's HEALTHCHECK (`config.Healthcheck` of its config blob), if it has one.
    pub fn image_healthcheck(
        &self,
        image: &ImageRecord,
    ) -> Option<shoal_types::health::HealthConfig> {
        let config = self.images.store().read_blob(&image.config).ok()?;
        shoal_types::health::from_image_config(&config)
    }

    /// The runc root, for `runc exec` into this node's containers.
    pub fn runc_root(&self) -> &Path {
        self.monitor.runc().root()
    }

    /// How the task's container stands (a few small file reads).
    pub fn watch(&self, task_id: &str) -> Watch {
        self.monitor.watch(task_id, &self.bundle(task_id))
    }

    /// The containers an earlier daemon left (running, or ended while nobody watched).
    pub fn survivors(&self) -> Vec<Survivor> {
        self.monitor.survivors().unwrap_or_else(|e| {
            warn!("failed to list the containers an earlier daemon left: {e}");
            vec![]
        })
    }

    /// Task ids with a containers dir but no runc container: a start cut short by a crash.
    pub fn half_made(&self, known: &[String]) -> Vec<String> {
        let Ok(dir) = fs::read_dir(&self.dir) else {
            return vec![];
        };
        dir.flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|id| !known.contains(id))
            .collect()
    }

    /// Whether the kernel's OOM killer struck the container (read before `remove`).
    pub fn oom_killed(&self, container: &Container) -> bool {
        shoal_oci::cgroup::oom_killed(&container.cgroups_path)
    }

    /// Removes the container (runc's state and cgroup, killing it if it still runs), its
    /// root filesystem mount and writable layer, and its bundle (blocking).
    pub fn remove(&self, task_id: &str) {
        match self.monitor.runc().delete(task_id, true) {
            Ok(()) | Err(shoal_oci::OciError::NoSuchContainer(_)) => {}
            Err(e) => warn!(task = task_id, "failed to delete the container: {e}"),
        }
        if let Err(e) = remove_rootfs(self.images.store(), task_id, &self.rootfs(task_id)) {
            warn!(task = task_id, "failed to remove the root filesystem: {e}");
        }
        if let Err(e) = self.bundle(task_id).remove() {
            warn!(task = task_id, "failed to remove the bundle: {e}");
        }
        let _ = fs::remove_dir(self.dir.join(task_id));
        self.monitor.forget(task_id);
    }
}

/// The container settings of a task, from its spec.
fn settings(task: &Task, netns_path: PathBuf) -> TaskSettings {
    let cs = &task.spec;
    TaskSettings {
        command: (!cs.command.is_empty()).then(|| cs.command.clone()),
        entrypoint: cs.entrypoint.clone(),
        env: cs.env.clone(),
        workdir: cs.dir.clone(),
        user: cs.user.clone(),
        hostname: cs
            .hostname
            .clone()
            .unwrap_or_else(|| task.hostname().to_string()),
        addresses: task
            .networks
            .iter()
            .map(|a| std::net::IpAddr::V4(a.addr.addr()))
            .collect(),
        read_only: cs.read_only,
        mounts: cs.mounts.iter().map(mount_spec).collect(),
        nano_cpus: cs.limits.nano_cpus,
        memory_bytes: cs.limits.memory_bytes,
        cap_add: cs.cap_add.clone(),
        cap_drop: cs.cap_drop.clone(),
        netns_path,
    }
}

/// A `--mount` as shoal-oci renders it (volumes under the node's `<data>/volumes`).
fn mount_spec(m: &Mount) -> MountSpec {
    let source = m.source.clone().unwrap_or_default();
    let target = m.target.clone();
    match m.kind {
        MountType::Bind => MountSpec::Bind {
            source: PathBuf::from(source),
            target,
            read_only: m.read_only,
        },
        MountType::Volume => MountSpec::Volume {
            name: source,
            target,
            read_only: m.read_only,
        },
        MountType::Tmpfs => MountSpec::Tmpfs {
            target,
            size_bytes: m.tmpfs_size_bytes,
            mode: None,
        },
    }
}
