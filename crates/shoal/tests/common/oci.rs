//! What the container lab tests share: a registry with busybox in each node's namespace, and
//! the runc containers a node's daemon left, removed when a test ends.

use std::path::{Path, PathBuf};
use std::process::Command;

use shoal_testns::Netns;
use shoal_testns::registry::{LabRegistry, ManifestFormat};

use super::{Lab, text};

pub const IMAGE: &str = "127.0.0.1:5000/lab/busybox:1";

/// Removes, when the test ends (also by failing), what runc still runs for a lab node: a
/// container's processes are in a cgroup of their own, outside the lab's.
pub struct Runcs(pub Vec<PathBuf>);

impl Runcs {
    pub fn of(lab: &Lab) -> Runcs {
        Runcs(
            (1..=lab.nodes)
                .map(|n| data_dir(lab, n).join("runc"))
                .collect(),
        )
    }
}

impl Drop for Runcs {
    fn drop(&mut self) {
        for root in &self.0 {
            // Gone with the lab already (`runc list` would make it again).
            if !root.exists() {
                continue;
            }
            for id in runc_ids(root) {
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(root)
                    .args(["delete", "--force", &id])
                    .output();
            }
            // The root filesystems of containers a failed test left (under the node's data
            // dir, beside the runc root), or `lab down` cannot remove the lab's directory.
            let Some(data) = root.parent() else { continue };
            let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            for point in mounts.lines().filter_map(|l| l.split(' ').nth(4)) {
                if Path::new(point).starts_with(data) {
                    let _ = Command::new("umount").arg(point).output();
                }
            }
        }
    }
}

/// The containers runc knows under a node's root.
pub fn runc_ids(root: &PathBuf) -> Vec<String> {
    let out = Command::new("runc")
        .arg("--root")
        .arg(root)
        .args(["list", "-q"])
        .output()
        .expect("run runc list");
    text(&out.stdout).lines().map(str::to_string).collect()
}

pub fn data_dir(lab: &Lab, node: u32) -> PathBuf {
    lab.dir().join(format!("node{node}")).join("data")
}

/// A registry on 127.0.0.1:5000 in each node's namespace with `lab/busybox:1`. They live in
/// the lab's namespaces, which `lab down` deletes: the `Netns` handles are forgotten, not
/// dropped.
pub fn registries(lab: &Lab) -> Vec<LabRegistry> {
    (1..=lab.nodes)
        .map(|n| {
            let ns = Netns { name: lab.netns(n) };
            let registry = LabRegistry::start(&ns, 5000);
            registry.push_busybox("lab/busybox:1", ManifestFormat::Oci);
            std::mem::forget(ns);
            registry
        })
        .collect()
}
