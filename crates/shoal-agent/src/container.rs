//! The OCI runtime of `--runtime oci` tasks: the image pulled with shoal-image into the
//! node's store (one pull per image however many tasks want it), the task's root filesystem
//! (overlayfs, a writable layer of its own), a bundle from shoal-oci joining the task's
//! network namespace, and runc. The sandbox (namespace, overlays, DNS, VIPs, mesh) is the
//! worker's, exactly as for host commands.
//!
//! Exit statuses: each container runs under `runc run --keep` in the foreground, a child of
//! the daemon that stays the container's parent and exits with its status. That is a waiter
//! per container with nothing of ours to write; the other way, making the daemon a child
//! subreaper, would also hand it every orphan of the host-command tasks, which nothing
//! reaps (tokio waits for its own children only), so their zombies would pile up.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use shoal_image::rootfs::{mount_rootfs, remove_rootfs};
use shoal_image::{ImageRecord, ImageRef, Images, Store};
use shoal_oci::bundle::{packaged_seccomp, read_user_db};
use shoal_oci::seccomp::{Seccomp, Target};
use shoal_oci::spec::generate;
use shoal_oci::{Bundle, Container, ContainerState, ImageConfig, Runc, TaskSettings, UserDb};
use shoal_types::Task;
use tokio::process::Child;
use tracing::warn;

/// The node's container runtime: its image store, runc's state root and the tasks'
/// bundles, all under the node's data dir.
pub struct OciRuntime {
    images: Images,
    runc: Runc,
    /// `<data>/containers/<task>/{bundle,rootfs}`.
    dir: PathBuf,
    volumes: PathBuf,
    /// containers-common's profile, read once: docker's default filter for every task.
    seccomp: Result<(String, Target<'static>), String>,
}

/// A container that runs: runc's foreground process (its waiter) and what `stop` needs.
pub struct Running {
    pub waiter: Child,
    pub pid: u32,
    pub container: Container,
}

impl OciRuntime {
    pub fn open(data_dir: &Path, insecure: Vec<String>) -> Result<OciRuntime, String> {
        let store = Store::open(data_dir.join("images")).map_err(|e| e.to_string())?;
        Ok(OciRuntime {
            images: Images::new(store, insecure),
            runc: Runc::new(data_dir.join("runc")),
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

    pub fn images(&self) -> &Images {
        &self.images
    }

    /// Mounts the root filesystem, writes the bundle and starts `runc run` (blocking file
    /// work: call from a blocking thread). Returns once the container's process runs; on
    /// error nothing of the container is left but what `remove` deletes.
    pub fn start(
        &self,
        task: &Task,
        image: &ImageRecord,
        netns_path: PathBuf,
        log: &Path,
    ) -> Result<Running, String> {
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
        let out = fs::File::create(log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("open {}: {e}", log.display()))?;
        let mut cmd = tokio::process::Command::from(self.runc.run_command(&task.id, &bundle));
        cmd.stdout(Stdio::from(out)).stderr(Stdio::from(err));
        // Called on a blocking thread of the daemon's runtime, so tokio can spawn here.
        let mut waiter = cmd
            .spawn()
            .map_err(|e| format!("cannot run runc: {e} (install the runc package)"))?;
        let pid_file = bundle.dir().join("init.pid");
        // runc writes the pid once the process runs, or exits with its error: wait for
        // either (each check is a file read or a non-blocking wait).
        loop {
            if let Ok(text) = fs::read_to_string(&pid_file)
                && let Ok(pid) = text.trim().parse::<u32>()
            {
                let container = self
                    .runc
                    .adopt(&ContainerState {
                        id: task.id.clone(),
                        pid: pid as i32,
                        status: "running".into(),
                        bundle: bundle.dir().to_path_buf(),
                    })
                    .map_err(|e| e.to_string())?;
                return Ok(Running {
                    waiter,
                    pid,
                    container,
                });
            }
            if let Ok(Some(status)) = waiter.try_wait() {
                let logged = fs::read_to_string(bundle.dir().join("runc.log")).unwrap_or_default();
                let message = shoal_oci::runc::last_error(&logged)
                    .unwrap_or_else(|| format!("runc run exited with {status} and logged nothing"));
                return Err(format!("OCI runtime create failed: {message}"));
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Removes every container this node's runc root or containers dir still holds: at
    /// agent start nothing runs yet, and a container left by a daemon that died is not
    /// adopted (no live restore yet), so it must not keep running unseen.
    pub fn remove_leftovers(&self) -> Vec<String> {
        let mut ids: Vec<String> = match self.runc.list() {
            Ok(list) => list.into_iter().map(|c| c.id).collect(),
            Err(e) => {
                warn!("failed to list leftover containers: {e}");
                vec![]
            }
        };
        if let Ok(dir) = fs::read_dir(&self.dir) {
            ids.extend(
                dir.flatten()
                    .filter_map(|e| e.file_name().into_string().ok()),
            );
        }
        ids.sort();
        ids.dedup();
        for id in &ids {
            self.remove(id);
        }
        ids
    }

    /// Whether the kernel's OOM killer struck the container (read before `remove`).
    pub fn oom_killed(&self, container: &Container) -> bool {
        shoal_oci::cgroup::oom_killed(&container.cgroups_path)
    }

    /// Removes the container (runc's state and cgroup, killing it if it still runs), its
    /// root filesystem mount and writable layer, and its bundle (blocking).
    pub fn remove(&self, task_id: &str) {
        match self.runc.delete(task_id, true) {
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
        hostname: task.hostname().to_string(),
        addresses: task
            .networks
            .iter()
            .map(|a| std::net::IpAddr::V4(a.addr.addr()))
            .collect(),
        read_only: cs.read_only,
        mounts: vec![],
        nano_cpus: cs.limits.nano_cpus,
        memory_bytes: cs.limits.memory_bytes,
        cap_add: vec![],
        cap_drop: vec![],
        netns_path,
    }
}
