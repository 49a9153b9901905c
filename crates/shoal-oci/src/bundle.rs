//! A container's bundle on disk: `config.json` and the files bind-mounted over the image's
//! /etc (resolv.conf, hosts, hostname), in a directory of the task's own. The root
//! filesystem is mounted elsewhere by the caller (`shoal_image::rootfs`).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

use crate::error::OciError;
use crate::files;
use crate::seccomp::{PACKAGED_PROFILE, Target, kernel_version};
use crate::settings::{MountSpec, Paths, TaskSettings};
use crate::spec::volume_dir;

/// A bundle directory.
#[derive(Debug, Clone)]
pub struct Bundle {
    dir: PathBuf,
}

impl Bundle {
    pub fn new(dir: impl Into<PathBuf>) -> Bundle {
        Bundle { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The paths the config names: the per-task files in this bundle, the given root
    /// filesystem, volumes and cgroup.
    pub fn paths(&self, rootfs: &Path, volumes_dir: &Path, cgroups_path: &str) -> Paths {
        Paths {
            rootfs: rootfs.to_path_buf(),
            resolv_conf: self.dir.join("resolv.conf"),
            hosts: self.dir.join("hosts"),
            hostname: self.dir.join("hostname"),
            volumes_dir: volumes_dir.to_path_buf(),
            cgroups_path: cgroups_path.to_string(),
        }
    }

    /// Writes the per-task files and `config.json`, and makes the named volumes' directories
    /// that do not exist yet.
    pub fn write(
        &self,
        spec: &Spec,
        task: &TaskSettings,
        paths: &Paths,
        search: &[String],
    ) -> Result<(), OciError> {
        let write = |path: &Path, text: &[u8]| {
            fs::write(path, text).map_err(|e| OciError::io("write", path, e))
        };
        fs::create_dir_all(&self.dir).map_err(|e| OciError::io("create", &self.dir, e))?;
        write(&paths.resolv_conf, files::resolv_conf(search).as_bytes())?;
        write(
            &paths.hosts,
            files::hosts(&task.hostname, &task.addresses).as_bytes(),
        )?;
        write(&paths.hostname, files::hostname(&task.hostname).as_bytes())?;
        for m in &task.mounts {
            if let MountSpec::Volume { name, .. } = m {
                let d = volume_dir(&paths.volumes_dir, name);
                fs::create_dir_all(&d).map_err(|e| OciError::io("create volume", &d, e))?;
            }
        }
        let json = serde_json::to_vec_pretty(spec)
            .map_err(|e| OciError::Invalid(format!("config.json: {e}")))?;
        write(&self.dir.join("config.json"), &json)
    }

    /// Deletes the bundle directory (after `runc delete`).
    pub fn remove(&self) -> Result<(), OciError> {
        match fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(OciError::io("remove", &self.dir, e))
            }
            _ => Ok(()),
        }
    }
}

/// The image's /etc/passwd and /etc/group as found in the mounted root filesystem (absent
/// files are `None`; a symlink is not followed out of the rootfs because only regular files
/// are read).
pub fn read_user_db(rootfs: &Path) -> (Option<String>, Option<String>) {
    let read = |name: &str| {
        let p = rootfs.join("etc").join(name);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_file() => fs::read_to_string(&p).ok(),
            _ => None,
        }
    };
    (read("passwd"), read("group"))
}

/// The packaged seccomp profile's text and this machine as a filter's target, or why there
/// is none (the caller decides whether to run unconfined).
pub fn packaged_seccomp() -> Result<(String, Target<'static>), OciError> {
    let path = Path::new(PACKAGED_PROFILE);
    let json =
        fs::read_to_string(path).map_err(|e| OciError::io("read the seccomp profile", path, e))?;
    let release = Path::new("/proc/sys/kernel/osrelease");
    let text = fs::read_to_string(release).map_err(|e| OciError::io("read", release, e))?;
    let kernel = kernel_version(text.trim()).ok_or_else(|| {
        OciError::Invalid(format!("kernel release {text:?} is not <major>.<minor>…"))
    })?;
    let target = Target::native(kernel).ok_or_else(|| {
        OciError::Invalid(format!(
            "no seccomp architecture known for {}",
            std::env::consts::ARCH
        ))
    })?;
    Ok((json, target))
}
