//! The agent: runs on every node, keeps a session with the Raft leader and makes the node's
//! tasks match what the leader assigns.
//!
//! # Layout
//! - `session`: connects to a manager, follows the leader, streams assignments in,
//!   sends heartbeats and task status reports out; `backoff`: the jittered wait before
//!   it tries again.
//! - `worker`: turns assignments into started and stopped task processes (through
//!   `shoal-exec`) and reports every state change.
//! - `network`: overlay namespaces, veths, VXLAN forwarding entries and each sandbox's
//!   DNS server, kept in step with the endpoint table; `zone` builds the node's DNS zones
//!   (one per network, shared by every sandbox's server).
//! - `vip`: the node's VIP balancer: eBPF (`shoal-bpf`, one per node) or the nftables
//!   fallback (`shoal-lb`, one table per sandbox), behind one interface.
//! - `container`: the OCI runtime of `--runtime oci` tasks (image pull, root filesystem,
//!   bundle, runc), inside the sandbox the worker makes.
//! - `mesh`: the routing mesh (gateway, published ports at tc or in nftables).
//! - `guard`: the node's guard table (loopback from outside, VXLAN from non-members and
//!   task-to-task through the gateway dropped).
//! - `counts`: the data plane's per-backend connection counters (eBPF maps) named with the
//!   services and tasks of the applied endpoint view (pure), for shoald's `/metrics`.
//! - `metrics`: the agent's Prometheus series (image pull durations).
//! - `logs`: the `Agent` gRPC service (task logs) that managers call.
//!
//! Architecture invariant: the agent never writes cluster state; it reports, and the
//! manager decides.
#![forbid(unsafe_code)]

pub mod backoff;
pub mod container;
pub mod counts;
pub mod guard;
pub mod logs;
pub mod mesh;
pub mod metrics;
pub mod network;
pub mod session;
pub mod vip;
pub mod worker;
pub mod zone;

use std::path::PathBuf;

/// What the agent needs to know about its node.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node_id: String,
    /// Where task run directories (logs, resolv.conf) live.
    pub run_dir: PathBuf,
    /// The node's data dir: images, containers and runc's state go under it.
    pub data_dir: PathBuf,
    /// Registries (`host[:port]`) pulled from over plain HTTP (`--insecure-registry`).
    pub insecure_registries: Vec<String>,
    /// Cluster addresses (ip:port) of managers to try, the leader first if known.
    pub managers: Vec<String>,
    /// Extra lines for every task's /etc/hosts (the lab's node names).
    pub extra_hosts: Option<PathBuf>,
    /// This node's underlay address: its VXLAN endpoint.
    pub vtep: std::net::Ipv4Addr,
    /// Where the sandboxes' DNS servers send names that are not the cluster's.
    pub upstream: shoal_dns::Upstream,
    /// The node's VIP balancer, loaded once when the daemon starts (`vip::VipBalancer::select`).
    pub vip_balancer: std::sync::Arc<vip::VipBalancer>,
    /// How published ports are served (`--mesh-path`).
    pub mesh_path: mesh::MeshPathChoice,
    /// What every sandbox's DNS server counts (shoald's `/metrics`).
    pub dns_metrics: std::sync::Arc<shoal_dns::DnsMetrics>,
    /// `--dns-steering cpu`: each query to the DNS thread on the CPU that received it.
    pub dns_steer_by_cpu: bool,
    /// The agent's own series (shoald's `/metrics`).
    pub metrics: std::sync::Arc<metrics::AgentMetrics>,
}
