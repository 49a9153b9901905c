//! A container's cgroup as runc makes it from an absolute `cgroupsPath`: the same path under
//! the v2 root on a unified host, or under each v1 controller on a legacy or hybrid one
//! (hybrid: v1 controllers plus an empty v2 tree at /sys/fs/cgroup/unified, like this
//! machine). The OOM killer's count is read from it after the process ends.

use std::fs;
use std::path::{Path, PathBuf};

/// Where cgroups are mounted.
pub const ROOT: &str = "/sys/fs/cgroup";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// cgroup v2 only (the v2 root is /sys/fs/cgroup).
    Unified,
    /// v1 controllers (legacy, or hybrid with a v2 tree beside them).
    V1,
}

impl Layout {
    pub fn detect() -> Layout {
        if Path::new(ROOT).join("cgroup.controllers").exists() {
            Layout::Unified
        } else {
            Layout::V1
        }
    }
}

fn relative(cgroups_path: &str) -> &str {
    cgroups_path.trim_start_matches('/')
}

/// The directory whose files tell about the container's memory.
pub fn memory_dir(layout: Layout, cgroups_path: &str) -> PathBuf {
    match layout {
        Layout::Unified => Path::new(ROOT).join(relative(cgroups_path)),
        Layout::V1 => Path::new(ROOT).join("memory").join(relative(cgroups_path)),
    }
}

/// The `oom_kill` count of a v2 `memory.events`, or of a v1 `memory.oom_control` (kernel
/// 4.13 and later; older ones have no such line).
pub fn oom_kill_count(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (key, value) = l.split_once(' ')?;
        (key == "oom_kill").then(|| value.trim().parse().ok())?
    })
}

/// Whether the OOM killer killed a process of the container. v2: `memory.events`. v1:
/// `memory.oom_control`'s count, or, on kernels before 4.13 that have none,
/// `memory.failcnt` (the limit was hit; with no swap that is where the kernel kills).
pub fn oom_killed(cgroups_path: &str) -> bool {
    let layout = Layout::detect();
    let dir = memory_dir(layout, cgroups_path);
    let read = |f: &str| fs::read_to_string(dir.join(f)).ok();
    match layout {
        Layout::Unified => read("memory.events")
            .and_then(|t| oom_kill_count(&t))
            .is_some_and(|n| n > 0),
        Layout::V1 => match read("memory.oom_control").and_then(|t| oom_kill_count(&t)) {
            Some(n) => n > 0,
            None => read("memory.failcnt")
                .and_then(|t| t.trim().parse::<u64>().ok())
                .is_some_and(|n| n > 0),
        },
    }
}

/// The container's cgroup directories that exist now (every v1 controller's and the v2
/// one): what `runc delete` must leave none of.
pub fn existing_dirs(cgroups_path: &str) -> Vec<PathBuf> {
    let rel = relative(cgroups_path);
    match Layout::detect() {
        Layout::Unified => vec![Path::new(ROOT).join(rel)],
        Layout::V1 => fs::read_dir(ROOT)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join(rel))
            .collect(),
    }
    .into_iter()
    .filter(|d| d.is_dir())
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kills_are_read_from_either_file() {
        let v2 = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(oom_kill_count(v2), Some(1));
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(oom_kill_count(v1), Some(2));
        assert_eq!(oom_kill_count("oom_kill_disable 0\nunder_oom 0\n"), None);
    }

    #[test]
    fn memory_dirs_per_layout() {
        assert_eq!(
            memory_dir(Layout::Unified, "/shoal/t1"),
            Path::new("/sys/fs/cgroup/shoal/t1")
        );
        assert_eq!(
            memory_dir(Layout::V1, "/shoal/t1"),
            Path::new("/sys/fs/cgroup/memory/shoal/t1")
        );
    }
}
