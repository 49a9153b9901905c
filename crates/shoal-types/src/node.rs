//! Nodes: the hosts of the cluster. Serialised with docker's field names so that
//! `node inspect --format '{{.Status.Addr}}'` works as a Swarm user expects.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Millis;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Node {
    #[serde(rename = "ID")]
    pub id: String,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub spec: NodeSpec,
    pub description: NodeDescription,
    pub status: NodeStatus,
    /// Present on managers only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager_status: Option<ManagerStatus>,
    /// The node's own address on the ingress network (its routing-mesh endpoint), set by
    /// the allocator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_addr: Option<ipnet::Ipv4Net>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeSpec {
    pub role: NodeRole,
    pub availability: Availability,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeDescription {
    pub hostname: String,
    /// What the node's agent runs its data plane with, as it reported at its last session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_plane: Option<DataPlane>,
    /// The node's own addresses, routes and resolvers, as it reported them when it joined
    /// and at each session: no overlay subnet may cover them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_networks: Vec<HostNetwork>,
    /// The node's CPUs and memory, as its agent reported them at its last session (zero:
    /// not reported; the scheduler then checks no reservation against it).
    #[serde(default, skip_serializing_if = "Resources::is_unknown")]
    pub resources: Resources,
}

/// What a node has for reservations (`Description.Resources`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Resources {
    /// CPUs × 10⁹.
    #[serde(rename = "NanoCPUs")]
    pub nano_cpus: u64,
    pub memory_bytes: i64,
}

impl Resources {
    pub fn is_unknown(&self) -> bool {
        self.nano_cpus == 0 && self.memory_bytes == 0
    }
}

/// Something of a node's host that an overlay must not cover (`10.0.0.0/24`, "the host's
/// address 10.0.0.5 (eth0)").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HostNetwork {
    pub net: ipnet::Ipv4Net,
    pub what: String,
}

/// How a node balances VIPs: `ebpf` (one socket-level balancer for the node) or
/// `nftables` (a table per task sandbox, the fallback), and why the fallback was taken; and
/// the routing mesh's path: `tc` (eBPF on the underlay) or `nftables` (the fallback).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DataPlane {
    #[serde(rename = "VIPBalancer")]
    pub vip_balancer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
    /// Empty from a node older than the tc mesh.
    #[serde(default)]
    pub mesh_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_fallback_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeStatus {
    pub state: NodeState,
    #[serde(default)]
    pub message: String,
    /// The node's IP address, as docker prints it.
    pub addr: String,
    /// `ip:port` of the node's cluster (gRPC) listener, where managers reach its agent.
    pub cluster_addr: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ManagerStatus {
    /// The node's id in the Raft group.
    #[serde(rename = "RaftID")]
    pub raft_id: u64,
    /// `ip:port` other managers and agents use.
    pub addr: String,
    /// Filled in when the node is read through the API; not Raft state.
    #[serde(default)]
    pub leader: bool,
    #[serde(default)]
    pub reachability: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    Worker,
    Manager,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Availability {
    Active,
    Pause,
    Drain,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Unknown,
    Down,
    Ready,
    Disconnected,
}

impl Node {
    pub fn hostname(&self) -> &str {
        &self.description.hostname
    }

    pub fn is_manager(&self) -> bool {
        self.spec.role == NodeRole::Manager
    }

    /// Ready and Active: the scheduler may place new tasks here.
    pub fn schedulable(&self) -> bool {
        self.status.state == NodeState::Ready && self.spec.availability == Availability::Active
    }
}

macro_rules! display_lowercase {
    ($t:ty { $($v:ident => $s:literal),* $(,)? }) => {
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(match self { $(Self::$v => $s),* })
            }
        }
        impl std::str::FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s.to_ascii_lowercase().as_str() {
                    $($s => Ok(Self::$v),)*
                    _ => Err(format!(
                        "invalid value {s:?}: expected one of {}",
                        [$($s),*].join(", ")
                    )),
                }
            }
        }
    };
}
pub(crate) use display_lowercase;

display_lowercase!(NodeRole { Worker => "worker", Manager => "manager" });
display_lowercase!(Availability { Active => "active", Pause => "pause", Drain => "drain" });
display_lowercase!(NodeState { Unknown => "unknown", Down => "down", Ready => "ready", Disconnected => "disconnected" });
