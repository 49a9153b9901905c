//! The lab's cgroup (v2): every daemon, task and `lab exec` process of a lab lives in
//! `<cgroup2 root>/shoal-lab-<lab>/`, so `cgroup.kill` ends them all at once, however they
//! were forked, and `down` can find their namespaces before it does.

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, statfs};
use tokio::time::{Instant, sleep};

use crate::error::LabError;

/// Where the cgroup v2 hierarchy may be mounted: a hybrid v1/v2 system (like this one) has it
/// at `unified`, a pure v2 system at the top.
const CANDIDATE_ROOTS: [&str; 2] = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"];

/// How long the kernel may take to empty a killed cgroup.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// The mounted cgroup v2 root.
pub(crate) fn v2_root() -> Result<PathBuf, LabError> {
    CANDIDATE_ROOTS
        .iter()
        .map(PathBuf::from)
        .find(|p| statfs(p).is_ok_and(|s| s.filesystem_type() == CGROUP2_SUPER_MAGIC))
        .ok_or_else(|| {
            LabError::cgroup(
                "find the cgroup v2 hierarchy",
                std::io::Error::other(format!("none mounted at {}", CANDIDATE_ROOTS.join(" or "))),
            )
        })
}

/// The cgroup of lab `lab` (whether or not it exists).
pub(crate) fn lab_cgroup(lab: &str) -> Result<PathBuf, LabError> {
    Ok(v2_root()?.join(format!("shoal-lab-{lab}")))
}

/// Creates the cgroup; it must not exist yet.
pub(crate) fn create(path: &Path) -> Result<(), LabError> {
    fs::create_dir(path)
        .map_err(|e| LabError::cgroup(format!("create cgroup {}", path.display()), e))
}

/// Opens `cgroup.procs` for writing, for a child to move itself in (by writing "0").
pub(crate) fn open_procs(path: &Path) -> Result<OwnedFd, LabError> {
    let procs = path.join("cgroup.procs");
    OpenOptions::new()
        .write(true)
        .open(&procs)
        .map(OwnedFd::from)
        .map_err(|e| LabError::cgroup(format!("open {}", procs.display()), e))
}

/// The pids in the cgroup and all cgroups below it.
pub(crate) fn pids(path: &Path) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(procs) = fs::read_to_string(path.join("cgroup.procs")) {
        out.extend(procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
    for child in subgroups(path) {
        out.extend(pids(&child));
    }
    out
}

fn subgroups(path: &Path) -> Vec<PathBuf> {
    fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// The network namespaces (as nsfs inode numbers) of the processes in the cgroup.
pub(crate) fn netns_inodes(path: &Path) -> HashSet<u64> {
    pids(path)
        .into_iter()
        .filter_map(|pid| fs::metadata(format!("/proc/{pid}/ns/net")).ok())
        .map(|m| m.ino())
        .collect()
}

fn populated(path: &Path) -> bool {
    match fs::read_to_string(path.join("cgroup.events")) {
        Ok(events) => events.lines().any(|l| l.trim() == "populated 1"),
        // Gone, or unreadable: nothing we can wait for.
        Err(_) => false,
    }
}

/// Kills every process in the cgroup (and below), waits until it is empty and removes it
/// and its descendants. A missing cgroup is fine.
pub(crate) async fn kill_and_remove(path: &Path) -> Result<(), LabError> {
    if !path.exists() {
        return Ok(());
    }
    let kill = path.join("cgroup.kill");
    fs::write(&kill, "1")
        .map_err(|e| LabError::cgroup(format!("write 1 to {}", kill.display()), e))?;
    let deadline = Instant::now() + KILL_TIMEOUT;
    while populated(path) {
        if Instant::now() >= deadline {
            return Err(LabError::cgroup(
                format!("empty cgroup {}", path.display()),
                std::io::Error::other(format!(
                    "processes {:?} still there {}s after cgroup.kill (stuck in the kernel?)",
                    pids(path),
                    KILL_TIMEOUT.as_secs()
                )),
            ));
        }
        sleep(Duration::from_millis(20)).await;
    }
    remove_tree(path)
}

fn remove_tree(path: &Path) -> Result<(), LabError> {
    for child in subgroups(path) {
        remove_tree(&child)?;
    }
    match fs::remove_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LabError::cgroup(
            format!("remove cgroup {}", path.display()),
            e,
        )),
    }
}
