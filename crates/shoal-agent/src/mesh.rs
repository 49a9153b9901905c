//! The routing mesh on this node: the gateway (tasks' way out, like `docker_gwbridge`, and
//! the way in to local tasks for published ports; a routed veth per task, no bridge on the
//! path: `shoal_net::gateway`) and the nftables rules that publish ports (`mesh::rules`):
//! one DNAT per flow on each node, to a local task over its veth or to a node that runs one
//! over the underlay. Swarm's ingress sandbox
//! (a second DNAT, a masquerade and the ingress overlay on every connection) is gone; why,
//! with figures: bench/mesh.
//!
//! The mesh's path on this node (`MeshPathChoice`, `shoald --mesh-path`): `tc`, where
//! `shoal_bpf::TcMesh` translates packets arriving on the underlay interface for a local
//! task at tc and hands them to the task's namespace (no netfilter, no conntrack in the
//! node's namespace), replies translated back at the task's veth; the nftables rules stay for
//! everything else (the node's own clients, tasks, remote backends by mark). Or `nftables`
//! alone, the fallback when the program cannot load (`auto`), said in `node inspect`.

pub mod rules;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::str::FromStr;

use shoal_net::gateway::{self, Gateway};
use shoal_types::endpoint::EndpointView;
use shoal_types::{PublishMode, Task, TrafficPolicy};
use tracing::{info, warn};

use rules::{Backend, MeshInput, Published, Serve};

/// The first task address on the gateway bridge (.1 is the bridge; .2 was the ingress
/// sandbox's, kept free so a restarted older node's address cannot clash).
const FIRST_TASK: u32 = 3;
/// A task's interface on the gateway bridge.
pub const TASK_GW_IF: &str = "gw0";

/// How published ports are served: `auto` (tc eBPF, else nftables with a warning naming the
/// error), `tc` (a load failure fails every published port with that error) or `nftables`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MeshPathChoice {
    #[default]
    Auto,
    Tc,
    Nftables,
}

impl FromStr for MeshPathChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(MeshPathChoice::Auto),
            "tc" => Ok(MeshPathChoice::Tc),
            "nftables" => Ok(MeshPathChoice::Nftables),
            _ => Err(format!("unknown mesh path {s:?}: use auto, tc or nftables")),
        }
    }
}

/// Which path a node's published ports take, and why if it is the fallback (`node inspect`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshPathInfo {
    pub kind: &'static str,
    pub fallback_reason: Option<String>,
}

pub struct Mesh {
    pub gateway: Gateway,
    /// The tc programs, when they loaded.
    tc: Option<shoal_bpf::TcMesh>,
    /// `--mesh-path tc` and they did not: why (published ports fail with it).
    tc_error: Option<String>,
    info: MeshPathInfo,
    vtep: Ipv4Addr,
    /// Local tasks whose veth has the reply program: gateway address -> veth ifindex.
    veths: BTreeMap<Ipv4Addr, u32>,
    /// The ingress sandbox an older shoal made, removed once.
    old_sandbox: String,
    /// Set once the gateway bridge exists.
    pub ready: bool,
    /// Local addresses on the gateway bridge in use (tasks).
    used: BTreeSet<Ipv4Addr>,
    /// What is programmed, to skip identical updates and find removed backends.
    node_rules: String,
    programmed: Option<MeshInput>,
}

/// A local task as the mesh needs it: its gateway address and the ports its service publishes.
pub struct LocalTask<'a> {
    pub service_id: &'a str,
    pub gw_addr: Ipv4Addr,
    pub task: &'a Task,
    /// Its agent found it ready (`health::Readiness`): only then do local ports reach it.
    pub ready: bool,
}

impl Mesh {
    /// Loads the tc programs on the interface holding `vtep` unless told not to. Runs in the
    /// node's network namespace.
    pub fn new(node_id: &str, vtep: Ipv4Addr, choice: MeshPathChoice) -> Mesh {
        let loaded = match choice {
            MeshPathChoice::Nftables => Err("--mesh-path nftables".to_string()),
            MeshPathChoice::Auto | MeshPathChoice::Tc => shoal_bpf::interface_of(vtep)
                .and_then(|underlay| shoal_bpf::TcMesh::load(&underlay))
                .map_err(|e| e.to_string()),
        };
        let (tc, tc_error, info) = match loaded {
            Ok(tc) => {
                info!(
                    underlay = tc.underlay(),
                    "routing mesh: tc eBPF on the underlay"
                );
                let info = MeshPathInfo {
                    kind: "tc",
                    fallback_reason: None,
                };
                (Some(tc), None, info)
            }
            Err(why) => {
                if choice == MeshPathChoice::Auto {
                    warn!("routing mesh: nftables, the tc program could not load: {why}");
                }
                let error = (choice == MeshPathChoice::Tc)
                    .then(|| format!("the routing mesh's tc program could not load: {why}"));
                let info = MeshPathInfo {
                    kind: "nftables",
                    fallback_reason: Some(why),
                };
                (None, error, info)
            }
        };
        Mesh {
            tc,
            tc_error,
            info,
            vtep,
            veths: BTreeMap::new(),
            // Chosen for real in `ensure`, against what the node uses.
            gateway: Gateway::docker_default(),
            old_sandbox: format!("shoal-ingress-{}", &node_id[..12.min(node_id.len())]),
            ready: false,
            used: BTreeSet::new(),
            node_rules: String::new(),
            programmed: None,
        }
    }

    /// The gateway bridge (idempotent). `overlays` are the subnets of the networks this node
    /// knows: a task has both, so they must not overlap.
    pub async fn ensure(&mut self, overlays: &[ipnet::Ipv4Net]) -> Result<(), String> {
        if self.ready {
            return Ok(());
        }
        if let Some(e) = &self.tc_error {
            return Err(e.clone());
        }
        self.gateway = choose_gateway(&shoal_net::host::host_reserved(), overlays).ok_or(
            "no free /16 in 172.18.0.0-172.31.255.255 for the gateway bridge: the host uses them all",
        )?;
        gateway::ensure_gateway(&self.gateway)
            .await
            .map_err(|e| e.to_string())?;
        // The ingress sandbox of an older shoal is no longer on any path.
        if shoal_net::netns_exists(&self.old_sandbox)
            && let Err(e) = shoal_net::delete_netns(&self.old_sandbox)
        {
            warn!(netns = %self.old_sandbox, "failed to remove the old ingress sandbox: {e}");
        }
        info!(bridge = gateway::GW_BRIDGE, "routing mesh ready");
        self.ready = true;
        Ok(())
    }

    /// A free address on the gateway bridge for a task.
    pub fn take_addr(&mut self) -> Option<Ipv4Addr> {
        let base = u32::from(self.gateway.subnet.network());
        let hosts = 1u32 << (32 - u32::from(self.gateway.subnet.prefix_len()));
        let addr = (FIRST_TASK..hosts - 1)
            .map(|i| Ipv4Addr::from(base + i))
            .find(|a| !self.used.contains(a))?;
        self.used.insert(addr);
        Some(addr)
    }

    pub fn free_addr(&mut self, addr: Ipv4Addr) {
        self.used.remove(&addr);
    }

    /// The path published ports take on this node.
    /// New flows the tc program sent to each backend (empty on the nftables path).
    pub fn connection_counts(&self) -> Vec<shoal_bpf::MeshCount> {
        self.tc
            .as_ref()
            .map(|tc| tc.connection_counts())
            .unwrap_or_default()
    }

    pub fn info(&self) -> MeshPathInfo {
        self.info.clone()
    }

    /// A task's gateway veth exists: with the tc path, its replies get the reverse program.
    pub fn task_attached(&mut self, addr: Ipv4Addr) -> Result<(), String> {
        let Some(tc) = &mut self.tc else {
            return Ok(());
        };
        let veth = gateway::gw_ifname(addr);
        let ifindex = tc
            .attach_task(&veth)
            .and_then(|()| shoal_bpf::ifindex(&veth))
            .map_err(|e| format!("failed to attach the routing mesh to the task's veth: {e}"))?;
        self.veths.insert(addr, ifindex);
        Ok(())
    }

    /// A task's gateway veth is gone.
    pub fn task_detached(&mut self, addr: Ipv4Addr) {
        self.veths.remove(&addr);
        if let Some(tc) = &mut self.tc {
            tc.detach_task(&gateway::gw_ifname(addr));
        }
    }

    /// What to publish: cluster ports from the ingress network's services (each task reached
    /// on this node over its veth, or through its own node), local and host ports from this
    /// node's own tasks.
    pub fn input(&self, view: &EndpointView, node_id: &str, local: &[LocalTask<'_>]) -> MeshInput {
        let here: BTreeMap<&str, Ipv4Addr> = local
            .iter()
            .map(|t| (t.task.id.as_str(), t.gw_addr))
            .collect();
        let ready_here: BTreeMap<&str, Ipv4Addr> = local
            .iter()
            .filter(|t| t.ready)
            .map(|t| (t.task.id.as_str(), t.gw_addr))
            .collect();
        let mut ports = Vec::new();
        let mut peers = BTreeSet::new();
        if let Some(ingress) = view.networks.values().find(|n| n.info.ingress) {
            peers.extend(
                ingress
                    .nodes
                    .values()
                    .filter(|n| n.node_id != node_id)
                    .map(|n| n.vtep),
            );
            peers.extend(
                ingress
                    .tasks
                    .values()
                    .filter(|t| t.node_id != node_id)
                    .map(|t| t.vtep),
            );
            for s in ingress.services.values() {
                for p in &s.ports {
                    let Some(port) = p.published_port else {
                        continue;
                    };
                    if p.publish_mode != PublishMode::Ingress || p.traffic != TrafficPolicy::Cluster
                    {
                        continue;
                    }
                    // A task of this node without a sandbox (starting, or gone) is skipped.
                    let mut backends: Vec<Backend> = ingress
                        .tasks
                        .values()
                        .filter(|t| t.service_id == s.id && t.ready)
                        .filter_map(|t| {
                            if t.node_id == node_id {
                                here.get(t.id.as_str()).map(|a| Backend::Here(*a))
                            } else {
                                Some(Backend::Node(t.vtep))
                            }
                        })
                        .collect();
                    backends.sort();
                    // Not ready in the table but ready here: told to stop and still running,
                    // or ready before the table says so (another node may forward to it first).
                    let mut leaving: Vec<Ipv4Addr> = ingress
                        .tasks
                        .values()
                        .filter(|t| t.service_id == s.id && !t.ready && t.node_id == node_id)
                        .filter_map(|t| ready_here.get(t.id.as_str()).copied())
                        .collect();
                    leaving.sort();
                    ports.push(Published {
                        protocol: p.protocol,
                        port,
                        target: p.target_port,
                        serve: Serve::Cluster { backends },
                        leaving,
                    });
                }
            }
        }
        let mut local_ports: BTreeMap<(u8, u16, u16), Vec<Ipv4Addr>> = Default::default();
        for t in local.iter().filter(|t| t.ready) {
            for p in &t.task.ports {
                let Some(port) = p.published_port else {
                    continue;
                };
                if p.publish_mode == PublishMode::Host || p.traffic == TrafficPolicy::Local {
                    let key = (p.protocol as u8, port, p.target_port);
                    local_ports.entry(key).or_default().push(t.gw_addr);
                }
            }
        }
        for ((proto, port, target), mut backends) in local_ports {
            backends.sort();
            let protocol = if proto == shoal_types::Protocol::Tcp as u8 {
                shoal_types::Protocol::Tcp
            } else {
                shoal_types::Protocol::Udp
            };
            ports.push(Published {
                protocol,
                port,
                target,
                serve: Serve::Local {
                    gateway_backends: backends,
                },
                leaving: Vec::new(),
            });
        }
        ports.sort_by_key(|p| (p.port, p.protocol as u8));
        MeshInput {
            gateway: self.gateway,
            peers: peers.into_iter().collect(),
            ports,
            tc_marks: self.tc.is_some(),
        }
    }

    /// Programs the node's table if it changed (one atomic transaction), then deletes the
    /// conntrack entries of UDP flows to backends that left (before returning, so before the
    /// ack: the new rules already send no new flow there, the entries pin the old ones).
    pub async fn apply(&mut self, input: &MeshInput) -> Result<(), String> {
        // The tc maps first (a plan of what changed; nothing when nothing did): a task that
        // left gets no new flow from the underlay.
        if let Some(tc) = &mut self.tc {
            tc.apply(&rules::tc_config(input, self.vtep, &self.veths))
                .map_err(|e| format!("failed to program the routing mesh's tc maps: {e}"))?;
        }
        let node = rules::render_node(input);
        if node == self.node_rules {
            return Ok(());
        }
        shoal_lb::nft_transaction(None, &node)
            .await
            .map_err(|e| format!("nft refused the routing mesh rules: {e}"))?;
        self.node_rules = node;
        let stale = self
            .programmed
            .replace(input.clone())
            .map(|old| rules::stale_udp_flows(&old, input))
            .unwrap_or_default();
        // Before this returns, so before the endpoint table is acked: a task leaving gets its
        // SIGTERM once every node has acked, and a UDP flow still on its way to it (the rules
        // only steer new flows) would lose its datagrams from then until the flush.
        if !stale.is_empty()
            && let Err(e) = shoal_lb::delete_flows(None, &stale).await
        {
            warn!("failed to delete conntrack entries of removed published-port backends: {e}");
        }
        Ok(())
    }
}

/// Our bridge, or a task's gateway veth (`gateway::gw_ifname`): a restarted daemon finds
/// the routes to the sandboxes of containers it adopts on those.
fn ours(ifname: &str) -> bool {
    ifname == gateway::GW_BRIDGE
        || (ifname.len() == 9
            && ifname.starts_with('g')
            && ifname[1..].bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The first /16 of 172.18–172.31 (Docker's range for its bridges) that overlaps nothing the
/// node uses, other than our own bridge and task veths (so a restarted daemon keeps its
/// subnet), and no overlay network.
pub fn choose_gateway(
    reserved: &[shoal_net::host::Reserved],
    overlays: &[ipnet::Ipv4Net],
) -> Option<Gateway> {
    let overlaps =
        |a: ipnet::Ipv4Net, b: ipnet::Ipv4Net| a.contains(&b.network()) || b.contains(&a.network());
    (18..=31u8).find_map(|second| {
        let subnet = ipnet::Ipv4Net::new(Ipv4Addr::new(172, second, 0, 0), 16).ok()?;
        let taken = reserved
            .iter()
            .filter(|r| !r.ifname.as_deref().is_some_and(ours))
            .any(|r| overlaps(r.net, subnet))
            || overlays.iter().any(|o| overlaps(*o, subnet));
        (!taken).then(|| Gateway {
            subnet,
            addr: Ipv4Addr::new(172, second, 0, 1),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_net::host::Reserved;

    fn r(net: &str, ifname: Option<&str>) -> Reserved {
        Reserved {
            net: net.parse().unwrap(),
            what: net.into(),
            ifname: ifname.map(str::to_string),
        }
    }

    #[test]
    fn the_gateway_avoids_the_host_and_overlays_but_not_itself() {
        assert_eq!(
            choose_gateway(&[], &[]).unwrap().subnet.to_string(),
            "172.18.0.0/16"
        );
        let host = [r("172.18.5.0/24", Some("eth0")), r("172.19.0.0/16", None)];
        let g = choose_gateway(&host, &["172.20.1.0/24".parse().unwrap()]).unwrap();
        assert_eq!(
            (g.subnet.to_string(), g.addr.to_string()),
            ("172.21.0.0/16".into(), "172.21.0.1".into())
        );
        let ours = [
            r("172.18.0.0/16", Some(gateway::GW_BRIDGE)),
            r("172.18.0.3/32", Some("gac120003")),
        ];
        assert_eq!(
            choose_gateway(&ours, &[]).unwrap().subnet.to_string(),
            "172.18.0.0/16"
        );
    }
}
