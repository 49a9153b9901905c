//! What a lab's daemons leave outside its cgroup and namespaces: containers, which runc runs
//! in cgroups of their own and which outlive their daemon on purpose (a restarted daemon
//! adopts them), and the mounts of their root filesystems under the lab's directory.
//! `down` removes both, through runc's own state so that runc also removes their cgroups.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The runc state roots of a lab's nodes (`<lab dir>/node<i>/data/runc`) that exist.
fn runc_roots(lab_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(lab_dir) else {
        return Vec::new();
    };
    let mut roots: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("node"))
        .map(|e| e.path().join("data").join("runc"))
        .filter(|p| p.is_dir())
        .collect();
    roots.sort();
    roots
}

/// Kills and deletes every container runc still has under the lab's nodes; returns what it
/// could not.
pub(crate) fn remove_containers(lab_dir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for root in runc_roots(lab_dir) {
        let runc = || {
            let mut c = Command::new("runc");
            c.arg("--root").arg(&root);
            c
        };
        let ids = match runc().args(["list", "-q"]).output() {
            Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
            Ok(out) => {
                problems.push(format!(
                    "runc --root {} list: {}",
                    root.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
                continue;
            }
            Err(e) => {
                problems.push(format!("run runc (install the runc package): {e}"));
                continue;
            }
        };
        for id in ids.lines().filter(|l| !l.is_empty()) {
            match runc().args(["delete", "--force", id]).output() {
                Ok(out) if out.status.success() => {}
                Ok(out) => problems.push(format!(
                    "runc --root {} delete --force {id}: {}",
                    root.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
                Err(e) => problems.push(format!("run runc delete {id}: {e}")),
            }
        }
    }
    problems
}

/// The mount points in `mountinfo` (the text of /proc/self/mountinfo) at or below `dir`,
/// deepest first, so that unmounting them in order never meets a busy parent.
pub fn mounts_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape)
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    points
}

/// mountinfo writes space, tab, newline and backslash in octal (`\040`).
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(c as char);
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Detaches every mount below `dir` (containers' root filesystems); returns what it could not.
pub(crate) fn unmount_under(dir: &Path) -> Vec<String> {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return vec!["read /proc/self/mountinfo".to_string()];
    };
    mounts_under(&mountinfo, dir)
        .into_iter()
        .filter_map(|point| {
            nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH)
                .err()
                .map(|e| format!("unmount {}: {e}", point.display()))
        })
        .collect()
}

/// The prefixes of the namespace names a lab's nodes own, whoever made them: each node's
/// overlays (`shoal-ov-<node id, 12>-`), read from its `data/node.json`. A namespace made
/// while the registry was not written (an older daemon, a node started by hand) is found by
/// its name, and so is the empty file of one whose mount never reached this mount namespace.
pub(crate) fn node_netns_prefixes(lab_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(lab_dir) else {
        return Vec::new();
    };
    let mut prefixes: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("node"))
        .filter_map(|e| std::fs::read(e.path().join("data/node.json")).ok())
        .filter_map(|bytes| {
            let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
            let id = v.get("node_id")?.as_str()?;
            // Too short an id would name other nodes' namespaces too.
            (id.len() >= 12).then(|| format!("shoal-ov-{}-", &id[..12]))
        })
        .collect();
    prefixes.sort();
    prefixes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_under_picks_the_labs_deepest_first() {
        let info = "\
24 1 0:22 / / rw - ext4 /dev/vda rw
90 24 0:50 / /run/shoal-lab/a/node1/data/containers/t1/rootfs rw - overlay overlay rw
91 24 0:51 / /run/shoal-lab/a/node1/data/containers/t1/rootfs/proc rw - proc proc rw
92 24 0:52 / /run/shoal-lab/ab/node1/x rw - tmpfs tmpfs rw
93 24 0:53 / /run/shoal-lab/a/with\\040space rw - tmpfs tmpfs rw
";
        assert_eq!(
            mounts_under(info, Path::new("/run/shoal-lab/a")),
            [
                "/run/shoal-lab/a/node1/data/containers/t1/rootfs/proc",
                "/run/shoal-lab/a/node1/data/containers/t1/rootfs",
                "/run/shoal-lab/a/with space",
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn runc_roots_are_each_nodes_data_runc() {
        let dir = std::env::temp_dir().join(format!("shoal-lab-roots-{}", std::process::id()));
        for n in ["node1", "node2"] {
            std::fs::create_dir_all(dir.join(n).join("data/runc")).unwrap();
        }
        std::fs::create_dir_all(dir.join("registry")).unwrap();
        std::fs::create_dir_all(dir.join("node3")).unwrap();
        let roots = runc_roots(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            roots,
            [dir.join("node1/data/runc"), dir.join("node2/data/runc")]
        );
    }

    #[test]
    fn node_prefixes_come_from_each_nodes_identity() {
        let dir = std::env::temp_dir().join(format!("shoal-lab-ids-{}", std::process::id()));
        for (n, id) in [
            ("node1", "0123456789abcdef"),
            ("node2", "short"),
            ("node3", ""),
        ] {
            std::fs::create_dir_all(dir.join(n).join("data")).unwrap();
            if !id.is_empty() {
                let json = format!("{{\"node_id\":\"{id}\",\"role\":\"worker\"}}");
                std::fs::write(dir.join(n).join("data/node.json"), json).unwrap();
            }
        }
        let prefixes = node_netns_prefixes(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(prefixes, ["shoal-ov-0123456789ab-"]);
    }
}
