//! A lab's names, addresses and paths, and its record on disk (`/run/shoal-lab/<lab>/lab.json`).
//!
//! Everything here is derived from the lab's name, its subnet number and node numbers, so
//! `down` can find every piece even when lab.json was never written or is damaged.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::error::LabError;

/// Where labs keep their state.
pub const LABS_DIR: &str = "/run/shoal-lab";

/// The port every lab daemon listens on for other nodes.
pub const CLUSTER_PORT: u16 = 2377;

/// Checks a lab name: it becomes part of namespace, cgroup and directory names.
pub fn validate_name(name: &str) -> Result<(), LabError> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(LabError::InvalidName(name.to_string()))
    }
}

/// The state directory of lab `lab`.
pub fn lab_dir(lab: &str) -> PathBuf {
    Path::new(LABS_DIR).join(lab)
}

/// The directory of node `node` of lab `lab`.
pub fn node_dir(lab: &str, node: u32) -> PathBuf {
    lab_dir(lab).join(format!("node{node}"))
}

/// The API socket of node `node` of lab `lab` (for `shoal -H unix://...`).
pub fn node_socket(lab: &str, node: u32) -> PathBuf {
    node_dir(lab, node).join("shoal.sock")
}

/// The hosts-style file naming the lab's nodes (`172.29.k.i nodeI`).
pub fn hosts_path(lab: &str) -> PathBuf {
    lab_dir(lab).join("hosts")
}

/// Where the lab's daemons record the namespaces they create (see shoal-net's registry).
pub(crate) fn registry_dir(lab: &str) -> PathBuf {
    lab_dir(lab).join("netns.d")
}

fn state_path(lab: &str) -> PathBuf {
    lab_dir(lab).join("lab.json")
}

/// The namespace holding the lab's bridge.
pub fn lab_netns(lab: &str) -> String {
    format!("shoal-{lab}-net")
}

/// The namespace of node `node`.
pub fn node_netns(lab: &str, node: u32) -> String {
    format!("shoal-{lab}-node{node}")
}

/// Whether namespace `ns` is one of lab `lab`'s own (its bridge or a node), exactly: lab
/// `a` must not claim lab `a-b`'s namespaces.
pub(crate) fn is_lab_netns(lab: &str, ns: &str) -> bool {
    let Some(rest) = ns
        .strip_prefix("shoal-")
        .and_then(|r| r.strip_prefix(lab))
        .and_then(|r| r.strip_prefix('-'))
    else {
        return false;
    };
    rest == "net"
        || rest
            .strip_prefix("node")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The underlay address of node `node` in subnet `172.29.k.0/24`.
pub fn node_addr(subnet: u8, node: u32) -> Ipv4Addr {
    Ipv4Addr::new(172, 29, subnet, node as u8)
}

/// The node number in "node3" or "3".
pub fn parse_node(s: &str) -> Option<u32> {
    s.strip_prefix("node")
        .unwrap_or(s)
        .parse()
        .ok()
        .filter(|&n| n > 0)
}

/// Where a lab is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabStatus {
    /// `up` is building it.
    #[default]
    Creating,
    /// Built, daemons running, cluster formed.
    Up,
    /// `up` failed; only logs are left.
    Failed,
    /// Its directory exists but lab.json is missing or unreadable.
    Broken,
}

/// A node's role in the lab's cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// Holds Raft state (node1 .. node<managers>).
    Manager,
    /// Runs tasks only.
    Worker,
}

/// One node of a lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// 1-based.
    pub index: u32,
    /// "node1"; also its hostname.
    pub name: String,
    /// Its network namespace.
    pub netns: String,
    /// Its underlay address.
    pub addr: Ipv4Addr,
    /// Manager or worker.
    pub role: NodeRole,
    /// Its daemon's API socket.
    pub socket: PathBuf,
    /// Its daemon's `--data-dir`.
    pub data_dir: PathBuf,
    /// Its daemon's stdout and stderr.
    pub log: PathBuf,
    /// Its daemon's pid, once started.
    pub pid: Option<u32>,
}

/// A lab as recorded in lab.json.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LabInfo {
    /// The lab's name.
    pub name: String,
    /// Where the lab is in its life.
    pub status: LabStatus,
    /// `k` of its underlay subnet 172.29.k.0/24.
    pub subnet: u8,
    /// How many of the nodes are managers.
    pub managers: u32,
    /// Its nodes, node1 first.
    pub nodes: Vec<NodeInfo>,
    /// Its state directory.
    pub dir: PathBuf,
    /// The namespace holding its bridge.
    pub bridge_netns: String,
    /// Its cgroup (every daemon, task and `lab exec` process lives in it).
    pub cgroup: PathBuf,
    /// The hosts-style file naming its nodes.
    pub hosts_file: PathBuf,
    /// `172.29.k.254:5000` when it runs an image registry (`lab up --registry`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    /// The images pushed to that registry (full references).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
}

impl LabInfo {
    /// A new record for lab `name` with `nodes` nodes in subnet `k`, nothing started yet.
    pub(crate) fn plan(name: &str, subnet: u8, nodes: u32, managers: u32, cgroup: PathBuf) -> Self {
        let nodes = (1..=nodes)
            .map(|i| NodeInfo {
                index: i,
                name: format!("node{i}"),
                netns: node_netns(name, i),
                addr: node_addr(subnet, i),
                role: if i <= managers {
                    NodeRole::Manager
                } else {
                    NodeRole::Worker
                },
                socket: node_socket(name, i),
                data_dir: node_dir(name, i).join("data"),
                log: node_dir(name, i).join("shoald.log"),
                pid: None,
            })
            .collect();
        LabInfo {
            name: name.to_string(),
            status: LabStatus::Creating,
            subnet,
            managers,
            nodes,
            dir: lab_dir(name),
            bridge_netns: lab_netns(name),
            cgroup,
            hosts_file: hosts_path(name),
            registry: None,
            images: Vec::new(),
        }
    }

    /// Its underlay subnet, as text.
    pub fn subnet_cidr(&self) -> String {
        format!("172.29.{}.0/24", self.subnet)
    }

    /// Node `node` (1-based).
    pub fn node(&self, node: u32) -> Result<&NodeInfo, LabError> {
        self.nodes
            .iter()
            .find(|n| n.index == node)
            .ok_or_else(|| LabError::NoSuchNode {
                lab: self.name.clone(),
                node: node.to_string(),
                nodes: self.nodes.len() as u32,
            })
    }

    /// The lab's hosts file: each node's name on its address.
    pub fn render_hosts(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("{}\t{}\n", n.addr, n.name))
            .collect()
    }

    /// Writes lab.json atomically (temporary file, then rename).
    pub(crate) fn save(&self) -> Result<(), LabError> {
        let path = state_path(&self.name);
        let tmp = path.with_extension("json.tmp");
        let json =
            serde_json::to_vec_pretty(self).map_err(|e| LabError::io("encode lab.json", e))?;
        let mut file =
            File::create(&tmp).map_err(|e| LabError::io(format!("create {}", tmp.display()), e))?;
        file.write_all(&json)
            .and_then(|()| file.sync_all())
            .map_err(|e| LabError::io(format!("write {}", tmp.display()), e))?;
        fs::rename(&tmp, &path).map_err(|e| LabError::io(format!("replace {}", path.display()), e))
    }
}

/// Reads lab `lab`'s lab.json.
pub fn load(lab: &str) -> Result<LabInfo, LabError> {
    validate_name(lab)?;
    let path = state_path(lab);
    let data = match fs::read(&path) {
        Ok(data) => data,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(LabError::NoSuchLab(lab.to_string()));
        }
        Err(e) => return Err(LabError::io(format!("read {}", path.display()), e)),
    };
    serde_json::from_slice(&data).map_err(|source| LabError::State {
        lab: lab.to_string(),
        path,
        source,
    })
}

/// Every lab with a state directory, by name. A lab whose lab.json cannot be read is listed
/// with status [`LabStatus::Broken`] and only its name and directory.
pub fn list() -> Vec<LabInfo> {
    let Ok(entries) = fs::read_dir(LABS_DIR) else {
        return Vec::new();
    };
    let mut labs: Vec<LabInfo> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|name| validate_name(name).is_ok())
        .map(|name| match load(&name) {
            Ok(info) => info,
            Err(e) => {
                tracing::warn!(lab = %name, "{e}");
                LabInfo {
                    dir: lab_dir(&name),
                    name,
                    status: LabStatus::Broken,
                    ..LabInfo::default()
                }
            }
        })
        .collect();
    labs.sort_by(|a, b| a.name.cmp(&b.name));
    labs
}

/// The lowest subnet number in 1..=254 that no lab in `used` has.
pub(crate) fn free_subnet(used: &[u8]) -> Option<u8> {
    (1..=254).find(|k| !used.contains(k))
}

/// Held while a lab is being reserved, so two `up`s never pick the same name or subnet.
pub(crate) struct LabsLock(#[allow(dead_code)] Flock<File>);

impl LabsLock {
    pub(crate) fn acquire() -> Result<Self, LabError> {
        fs::create_dir_all(LABS_DIR).map_err(|e| LabError::io(format!("create {LABS_DIR}"), e))?;
        let path = Path::new(LABS_DIR).join(".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| LabError::io(format!("open {}", path.display()), e))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| LabError::io(format!("lock {}", path.display()), e))?;
        Ok(LabsLock(lock))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["demo", "a", "lab-2", "0x"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "A", "a_b", "a/b", "a.b", &"x".repeat(33)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn lab_namespaces_are_matched_exactly() {
        assert!(is_lab_netns("a", "shoal-a-net"));
        assert!(is_lab_netns("a", "shoal-a-node12"));
        assert!(
            !is_lab_netns("a", "shoal-a-b-node1"),
            "lab a-b is another lab"
        );
        assert!(!is_lab_netns("a", "shoal-a-node"));
        assert!(!is_lab_netns("a", "shoal-a-nodex"));
        assert!(!is_lab_netns("a", "shoal-task-abc"));
        assert!(is_lab_netns("a-b", "shoal-a-b-node1"));
    }

    #[test]
    fn plan_addresses_roles_and_paths() {
        let lab = LabInfo::plan("demo", 7, 3, 2, PathBuf::from("/cg"));
        assert_eq!(lab.subnet_cidr(), "172.29.7.0/24");
        let n3 = lab.node(3).unwrap();
        assert_eq!(n3.addr, Ipv4Addr::new(172, 29, 7, 3));
        assert_eq!(n3.role, NodeRole::Worker);
        assert_eq!(lab.node(2).unwrap().role, NodeRole::Manager);
        assert_eq!(n3.netns, "shoal-demo-node3");
        assert_eq!(
            n3.socket,
            PathBuf::from("/run/shoal-lab/demo/node3/shoal.sock")
        );
        assert_eq!(n3.data_dir, PathBuf::from("/run/shoal-lab/demo/node3/data"));
        assert_eq!(
            lab.render_hosts(),
            "172.29.7.1\tnode1\n172.29.7.2\tnode2\n172.29.7.3\tnode3\n"
        );
        assert!(matches!(
            lab.node(4),
            Err(LabError::NoSuchNode { nodes: 3, .. })
        ));
        let json = serde_json::to_string(&lab).unwrap();
        assert_eq!(serde_json::from_str::<LabInfo>(&json).unwrap(), lab);
    }

    #[test]
    fn subnets_and_node_numbers() {
        assert_eq!(free_subnet(&[]), Some(1));
        assert_eq!(free_subnet(&[1, 2, 4]), Some(3));
        assert_eq!(free_subnet(&(1..=254).collect::<Vec<_>>()), None);
        assert_eq!(parse_node("node3"), Some(3));
        assert_eq!(parse_node("3"), Some(3));
        assert_eq!(parse_node("node0"), None);
        assert_eq!(parse_node("nodex"), None);
    }
}
