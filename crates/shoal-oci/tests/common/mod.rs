//! A lab for the runc tests (root): a network namespace of the test's own holding a
//! docker-registry with the busybox image and an address the containers must see; the image
//! pulled with shoal-image into a fresh store; runc with a state root of the test's own; a
//! cgroup parent unique to the test. Everything is removed on drop, also when the test fails.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use shoal_image::rootfs::{mount_rootfs, remove_rootfs};
use shoal_image::{ImageRecord, ImageRef, Images, Store};
use shoal_oci::bundle::{packaged_seccomp, read_user_db};
use shoal_oci::seccomp::Seccomp;
use shoal_oci::spec::generate;
use shoal_oci::{Bundle, Container, Exit, ImageConfig, Logs, OciError, Runc, TaskSettings, UserDb};
use shoal_testns::registry::{LabRegistry, ManifestFormat};
use shoal_testns::{Netns, unique_prefix};

/// The address the lab's namespace has, which a container joining it must see.
pub const TASK_ADDR: &str = "10.77.0.2";

/// The longest a test container may take; a guard against a hang, not a timing assertion.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub struct Lab {
    pub ns: Netns,
    _registry: LabRegistry,
    pub dir: tempfile::TempDir,
    pub images: Images,
    pub image: ImageRecord,
    pub runc: Runc,
    /// `/shoal-oci-<pid>-<n>`: every container's cgroup is under it.
    pub cgroup_parent: String,
}

impl Lab {
    pub fn new() -> Lab {
        shoal_oci::become_subreaper().unwrap();
        let prefix = unique_prefix("oci");
        let ns = Netns::new(prefix.clone());
        ns.cmd(
            "ip",
            &["addr", "add", &format!("{TASK_ADDR}/32"), "dev", "lo"],
        );
        let registry = LabRegistry::start(&ns, 5000);
        registry.push_busybox("lab/busybox:1", ManifestFormat::Oci);
        let dir = tempfile::tempdir().unwrap();
        let images = Images::new(Store::open(dir.path().join("images")).unwrap(), vec![]);
        let reference = ImageRef::parse(&format!("{}/lab/busybox:1", registry.addr)).unwrap();
        let i = images.clone();
        let image = ns.run(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move { i.pull(&reference, None).await })
        });
        let image = image.expect("pull busybox from the lab registry");
        Lab {
            runc: Runc::new(dir.path().join("runc")),
            images: images.clone(),
            image,
            cgroup_parent: format!("/shoal-{prefix}"),
            ns,
            _registry: registry,
            dir,
        }
    }

    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.ns.name))
    }

    /// Settings for a task of the lab with `command`.
    pub fn task(&self, command: &[&str]) -> TaskSettings {
        TaskSettings {
            command: Some(command.iter().map(|s| s.to_string()).collect()),
            hostname: "web-1".into(),
            addresses: vec![TASK_ADDR.parse().unwrap()],
            netns_path: self.netns_path(),
            ..Default::default()
        }
    }

    pub fn cgroups_path(&self, id: &str) -> String {
        format!("{}/{id}", self.cgroup_parent)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // runc delete removes the containers' own cgroups; the parent is the test's.
        for d in shoal_oci::cgroup::existing_dirs(&self.cgroup_parent) {
            let _ = fs::remove_dir(d);
        }
    }
}

/// One container of a test, made in a private mount namespace (its rootfs mount stays
/// there): `run` does everything on one thread of its own and cleans up on the way out,
/// also when the test fails.
pub struct Task<'a> {
    pub lab: &'a Lab,
    pub id: String,
    pub settings: TaskSettings,
    /// With the packaged seccomp profile (what a task gets by default).
    pub seccomp: bool,
}

/// What a finished container left: its exit, its stdout and stderr.
#[derive(Debug)]
pub struct Finished {
    pub exit: Exit,
    pub stdout: String,
    pub stderr: String,
}

struct Cleanup<'a> {
    runc: Runc,
    store: &'a Store,
    id: String,
    rootfs: PathBuf,
    bundle: Bundle,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = self.runc.delete(&self.id, true);
        let _ = remove_rootfs(self.store, &self.id, &self.rootfs);
        let _ = self.bundle.remove();
    }
}

impl Task<'_> {
    /// Creates the container and hands it to `f` on a thread with private mounts; the
    /// container is deleted and its rootfs removed afterwards. `Err` is create's error.
    pub fn with<T: Send>(
        &self,
        f: impl FnOnce(&Container, &Path) -> T + Send,
    ) -> Result<T, OciError> {
        let lab = self.lab;
        std::thread::scope(|s| {
            s.spawn(|| {
                shoal_testns::private_mounts();
                let base = lab.dir.path().join("tasks").join(&self.id);
                let rootfs = base.join("rootfs");
                let bundle = Bundle::new(base.join("bundle"));
                let _cleanup = Cleanup {
                    runc: lab.runc.clone(),
                    store: lab.images.store(),
                    id: self.id.clone(),
                    rootfs: rootfs.clone(),
                    bundle: bundle.clone(),
                };
                mount_rootfs(lab.images.store(), &lab.image, &self.id, &rootfs).unwrap();
                let config = lab.images.store().read_blob(&lab.image.config).unwrap();
                let image = ImageConfig::from_json(&config).unwrap();
                let (passwd, group) = read_user_db(&rootfs);
                let users = UserDb {
                    passwd: passwd.as_deref(),
                    group: group.as_deref(),
                };
                let paths = bundle.paths(
                    &rootfs,
                    &lab.dir.path().join("volumes"),
                    &lab.cgroups_path(&self.id),
                );
                let profile = if self.seccomp {
                    Some(packaged_seccomp().expect("the packaged seccomp profile"))
                } else {
                    None
                };
                let seccomp = match &profile {
                    Some((json, target)) => Seccomp::Profile {
                        json,
                        target: *target,
                    },
                    None => Seccomp::Unconfined,
                };
                let spec = generate(&image, &self.settings, &paths, users, seccomp)?;
                bundle.write(&spec, &self.settings, &paths, &[])?;
                let logs = Logs {
                    stdout: fs::File::create(base.join("stdout.log")).unwrap().into(),
                    stderr: fs::File::create(base.join("stderr.log")).unwrap().into(),
                };
                let container = lab.runc.create(&self.id, &bundle, logs)?;
                Ok(f(&container, &base))
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// Runs the container to its end and returns what it left.
    pub fn run(&self) -> Result<Finished, OciError> {
        self.with(|c, base| {
            c.start().unwrap();
            let exit = c
                .wait(Some(PATIENCE))
                .unwrap()
                .expect("the container ended within the test's patience");
            Finished {
                exit,
                stdout: fs::read_to_string(base.join("stdout.log")).unwrap(),
                stderr: fs::read_to_string(base.join("stderr.log")).unwrap(),
            }
        })
    }
}
