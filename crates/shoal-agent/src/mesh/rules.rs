//! The routing mesh's nftables rules, rendered from what the node knows (pure).
//!
//! One table of ours, `ip shoal_mesh` in the node's namespace, replaced whole in one `nft -f`
//! transaction (one rule per published port, so a rebuild is cheap; conntrack keeps
//! established flows). Each published port takes one path per node, with one DNAT:
//! - a task on this node: DNAT straight to its gateway address, routed over its veth (no
//!   bridge, no masquerade, the client's address kept);
//! - a task on another node: DNAT to that node's own address, same port, over the underlay
//!   (no VXLAN, no ingress sandbox), masqueraded so that replies come back through this node,
//!   and the flow's first packet marked with DSCP [`FORWARDED_DSCP`]. A marked flow from a
//!   peer node goes to a local task only, never onward: no loops, one extra hop at most.
//!   The mark, not the peer's address, tells a forwarded flow from a peer's own client
//!   (`curl node2:8080` on node1), which is balanced over the whole cluster like any other.
//!
//! Measured against the old path (DNAT to an ingress sandbox, DNAT + masquerade there, the
//! ingress overlay and VXLAN to the task): see bench/mesh. Loopback sources are
//! masqueraded (so `curl localhost:8080` works), so are tasks reaching a published port
//! served by a task of their own node (hairpin) and the tasks' egress. The gateway subnet is
//! matched by address, not by interface: each task has a veth of its own (`shoal_net::gateway`).
//!
//! With the tc path (`shoal_bpf::TcMesh`, see `tc_config`), packets arriving on the node's
//! underlay interface never reach these rules when their backend is a local task: the
//! program translates them and hands them to the task. For a backend on another node it
//! marks the packet `MESH_MARK | i` and lets it up the stack, and the port's first rule here
//! sends it to chain `i` (so the program's round robin is the one that counts). Everything
//! else (the node's own clients, tasks reaching a published port, the fallback) takes the
//! rules as before.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::net::Ipv4Addr;

use shoal_bpf::{MESH_MARK, MeshBackend, MeshConfig, MeshPort};
use shoal_lb::FlowFilter;
use shoal_net::gateway::Gateway;
use shoal_types::Protocol;

/// DSCP of the first packet of a flow forwarded to another node: 43 (0b101011), in RFC
/// 2474's pool 2 for local use, so no standard marking collides with it. Only the first
/// packet matters: the receiving node decides a flow's NAT on it. If a network between
/// nodes rewrites DSCP, a forwarded flow is balanced again on arrival: still delivered, at
/// the cost of another hop now and then.
pub const FORWARDED_DSCP: u8 = 43;

/// Where one task of a published port is reached from this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Backend {
    /// A task on this node: its address on the gateway bridge.
    Here(Ipv4Addr),
    /// A task on another node: that node's address.
    Node(Ipv4Addr),
}

/// How a node serves one published port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Serve {
    /// Round robin over every task of the service in the cluster (ingress mode).
    Cluster { backends: Vec<Backend> },
    /// Straight to this node's own tasks (`traffic=local` or `mode=host`).
    Local { gateway_backends: Vec<Ipv4Addr> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub protocol: Protocol,
    pub port: u16,
    pub target: u16,
    pub serve: Serve,
    /// This node's tasks of the service that are ready here but not in the table's ready
    /// tasks: told to stop but still running (the task gets SIGTERM only once every node has
    /// applied the change), or found ready here before the table says so. A flow another node
    /// forwards here goes to them when no task here is ready in the table, since that node
    /// applied its table before this one did. Never picked for a flow that starts here.
    pub leaving: Vec<Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshInput {
    pub gateway: Gateway,
    /// The other nodes' addresses: flows they forward here are delivered locally.
    pub peers: Vec<Ipv4Addr>,
    pub ports: Vec<Published>,
    /// The tc program balances the underlay's packets: dispatch its marks to the chains.
    pub tc_marks: bool,
}

fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

/// A rule that jumps round robin to one chain per target (`<prefix>_<i>`, each `body(i)`).
fn round_robin(out: &mut String, prefix: &str, n: usize, body: impl Fn(usize) -> String) -> String {
    let vmap: Vec<String> = (0..n).map(|i| format!("{i} : goto {prefix}_{i}")).collect();
    for i in 0..n {
        let _ = writeln!(out, "  chain {prefix}_{i} {{\n    {}\n  }}", body(i));
    }
    format!("numgen inc mod {n} vmap {{ {} }}", vmap.join(", "))
}

/// The backends of this node's own tasks among `backends`.
fn here(backends: &[Backend]) -> Vec<Ipv4Addr> {
    backends
        .iter()
        .filter_map(|b| match b {
            Backend::Here(a) => Some(*a),
            Backend::Node(_) => None,
        })
        .collect()
}

/// The rule of chain `delivered` for a port: flows another node forwarded here, round robin
/// over `local` (none: no rule, the node refuses).
fn deliver(
    chains: &mut String,
    delivered: &mut String,
    p: &Published,
    matcher: &str,
    local: &[Ipv4Addr],
) {
    if local.is_empty() {
        return;
    }
    let l4 = proto(p.protocol);
    let prefix = format!("d_{l4}_{}", p.port);
    // The mark is cleared: it means something only between nodes.
    let rr = round_robin(chains, &prefix, local.len(), |i| {
        format!(
            "ip dscp set 0 meta l4proto {l4} dnat to {}:{}",
            local[i], p.target
        )
    });
    let _ = writeln!(delivered, "    {matcher} {rr}");
}

/// `ip shoal_mesh`, for the node's namespace.
pub fn render_node(m: &MeshInput) -> String {
    let mut chains = String::new();
    let mut published = String::new();
    let mut delivered = String::new();
    for p in &m.ports {
        let l4 = proto(p.protocol);
        let matcher = format!("meta l4proto {l4} th dport {}", p.port);
        let local_dnat = |a: &Ipv4Addr| format!("meta l4proto {l4} dnat to {a}:{}", p.target);
        match &p.serve {
            // No task anywhere: no rule, so the node refuses (reset, port unreachable); a flow
            // forwarded here may still go to a task that is leaving.
            Serve::Cluster { backends } if backends.is_empty() => {
                deliver(&mut chains, &mut delivered, p, &matcher, &p.leaving);
            }
            Serve::Cluster { backends } => {
                let prefix = format!("c_{l4}_{}", p.port);
                let rr = round_robin(&mut chains, &prefix, backends.len(), |i| {
                    match backends[i] {
                        Backend::Here(a) => local_dnat(&a),
                        Backend::Node(n) => format!(
                            "ip dscp set {FORWARDED_DSCP} meta l4proto {l4} dnat to {n}:{}",
                            p.port
                        ),
                    }
                });
                let marks: Vec<String> = backends
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| matches!(b, Backend::Node(_)))
                    .map(|(i, _)| format!("{:#x} : goto {prefix}_{i}", MESH_MARK | i as u32))
                    .collect();
                if m.tc_marks && !marks.is_empty() {
                    let _ = writeln!(
                        published,
                        "    {matcher} meta mark vmap {{ {} }}",
                        marks.join(", ")
                    );
                }
                let _ = writeln!(published, "    {matcher} {rr}");
                let local = here(backends);
                let local = if local.is_empty() { &p.leaving } else { &local };
                deliver(&mut chains, &mut delivered, p, &matcher, local);
            }
            // No local task: no rule, so the port is closed on this node.
            Serve::Local { gateway_backends } if gateway_backends.is_empty() => {}
            Serve::Local { gateway_backends } => {
                let prefix = format!("l_{l4}_{}", p.port);
                let rr = round_robin(&mut chains, &prefix, gateway_backends.len(), |i| {
                    local_dnat(&gateway_backends[i])
                });
                let _ = writeln!(published, "    {matcher} {rr}");
            }
        }
    }
    let peers = if m.peers.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = m.peers.iter().map(Ipv4Addr::to_string).collect();
        format!("\n    elements = {{ {} }}", list.join(", "))
    };
    format!(
        "table ip shoal_mesh {{}}\ndelete table ip shoal_mesh\ntable ip shoal_mesh {{\n\
         \x20 set peers {{\n    type ipv4_addr;{peers}\n  }}\n{chains}\
         \x20 chain published {{\n    ip saddr @peers ip dscp {FORWARDED_DSCP} goto delivered\n{published}  }}\n\
         \x20 chain delivered {{\n{delivered}  }}\n\
         \x20 chain prerouting {{\n    type nat hook prerouting priority -100; policy accept;\n    fib daddr type local jump published\n  }}\n\
         \x20 chain output {{\n    type nat hook output priority -100; policy accept;\n    fib daddr type local jump published\n  }}\n\
         \x20 chain postrouting {{\n    type nat hook postrouting priority 100; policy accept;\n\
         \x20   ip dscp {FORWARDED_DSCP} ct status dnat masquerade\n\
         \x20   ip saddr 127.0.0.0/8 ip daddr {subnet} masquerade\n\
         \x20   ip saddr {subnet} ip daddr {subnet} ct status dnat masquerade\n\
         \x20   ip saddr {subnet} ip daddr != {subnet} masquerade\n  }}\n}}\n",
        subnet = m.gateway.subnet,
    )
}

/// What the tc program serves (`shoal_bpf::TcMesh`): the same ports and backends in the same
/// order, so that a remote backend's mark names its chain in [`render_node`]. A local task
/// whose veth has no program yet (`veths`: gateway address -> host-side ifindex) is left out.
pub fn tc_config(
    m: &MeshInput,
    node: Ipv4Addr,
    veths: &std::collections::BTreeMap<Ipv4Addr, u32>,
) -> MeshConfig {
    let local = |addr: Ipv4Addr, port: u16| {
        veths.get(&addr).map(|&ifindex| MeshBackend::Local {
            addr,
            mac: shoal_bpf::task_mac(addr),
            port,
            ifindex,
        })
    };
    let ports = m
        .ports
        .iter()
        .map(|p| {
            let (local_only, backends) = match &p.serve {
                Serve::Cluster { backends } => (
                    false,
                    backends
                        .iter()
                        .enumerate()
                        .filter_map(|(i, b)| match b {
                            Backend::Here(a) => local(*a, p.target),
                            Backend::Node(n) => Some(MeshBackend::Remote {
                                node: *n,
                                index: i as u16,
                            }),
                        })
                        .collect(),
                ),
                Serve::Local { gateway_backends } => (
                    true,
                    gateway_backends
                        .iter()
                        .filter_map(|a| local(*a, p.target))
                        .collect(),
                ),
            };
            MeshPort {
                // IPPROTO_TCP, IPPROTO_UDP.
                proto: match p.protocol {
                    Protocol::Tcp => 6,
                    Protocol::Udp => 17,
                },
                port: p.port,
                local_only,
                backends,
            }
        })
        .collect();
    MeshConfig {
        node_addr: Some(node),
        peers: m.peers.iter().copied().collect(),
        ports,
    }
}

/// The addresses each UDP port's flows were translated to (its backends).
fn udp_backends(m: &MeshInput) -> BTreeSet<(u16, Ipv4Addr)> {
    let mut out = BTreeSet::new();
    for p in m.ports.iter().filter(|p| p.protocol == Protocol::Udp) {
        match &p.serve {
            Serve::Cluster { backends } => out.extend(backends.iter().map(|b| match b {
                Backend::Here(a) | Backend::Node(a) => (p.port, *a),
            })),
            Serve::Local { gateway_backends } => {
                out.extend(gateway_backends.iter().map(|a| (p.port, *a)))
            }
        }
    }
    out
}

/// The conntrack entries to delete after going from `old` to `new`: UDP flows of a published
/// port whose reply came from a backend that no longer serves it (a removed local task, or a
/// node with no task of the service left), or they keep reaching it. TCP is left alone: a
/// connection to a removed task ends with it, and one to a live backend must go on.
pub fn stale_udp_flows(old: &MeshInput, new: &MeshInput) -> Vec<FlowFilter> {
    let live = udp_backends(new);
    udp_backends(old)
        .difference(&live)
        .map(|&(port, backend)| FlowFilter {
            reply_src: backend,
            orig_dst: None,
            proto: Some(shoal_lb::ctnetlink::UDP),
            orig_dport: Some(port),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    const NODE2: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 2);

    fn input() -> MeshInput {
        MeshInput {
            gateway: Gateway::docker_default(),
            peers: vec![NODE2, Ipv4Addr::new(192, 168, 50, 3)],
            ports: vec![
                Published {
                    protocol: Protocol::Tcp,
                    port: 8080,
                    target: 80,
                    serve: Serve::Cluster {
                        backends: vec![
                            Backend::Here(Ipv4Addr::new(172, 18, 0, 3)),
                            Backend::Node(NODE2),
                        ],
                    },
                    leaving: vec![],
                },
                Published {
                    protocol: Protocol::Udp,
                    port: 5353,
                    target: 53,
                    serve: Serve::Local {
                        gateway_backends: vec![Ipv4Addr::new(172, 18, 0, 3)],
                    },
                    leaving: vec![],
                },
                Published {
                    protocol: Protocol::Tcp,
                    port: 9000,
                    target: 9000,
                    serve: Serve::Local {
                        gateway_backends: vec![],
                    },
                    leaving: vec![],
                },
                Published {
                    protocol: Protocol::Udp,
                    port: 7000,
                    target: 7,
                    serve: Serve::Cluster {
                        backends: vec![Backend::Node(NODE2)],
                    },
                    leaving: vec![Ipv4Addr::new(172, 18, 0, 4)],
                },
            ],
            tc_marks: false,
        }
    }

    #[test]
    fn tc_marks_name_the_remote_backends_chains() {
        let mut m = input();
        m.tc_marks = true;
        let table = render_node(&m);
        assert!(
            table.contains(
                "meta l4proto tcp th dport 8080 meta mark vmap { 0x53480001 : goto c_tcp_8080_1 }\n    meta l4proto tcp th dport 8080 numgen"
            ),
            "{table}"
        );
        assert!(table.contains(
            "meta l4proto udp th dport 7000 meta mark vmap { 0x53480000 : goto c_udp_7000_0 }"
        ));
        // A port with local tasks only has no mark to dispatch.
        assert!(!table.contains("dport 5353 meta mark"));
    }

    #[test]
    fn tc_config_keeps_the_rules_order() {
        let gw = Ipv4Addr::new(172, 18, 0, 3);
        let veths = [(gw, 7u32)].into();
        let c = tc_config(&input(), Ipv4Addr::new(192, 168, 50, 1), &veths);
        assert_eq!(c.ports.len(), 4);
        assert_eq!(
            (c.ports[0].port, c.ports[0].proto, c.ports[0].local_only),
            (8080, 6, false)
        );
        assert_eq!(
            c.ports[0].backends,
            [
                MeshBackend::Local {
                    addr: gw,
                    mac: shoal_bpf::task_mac(gw),
                    port: 80,
                    ifindex: 7
                },
                MeshBackend::Remote {
                    node: NODE2,
                    index: 1
                },
            ]
        );
        assert!(c.ports[1].local_only);
        assert_eq!(c.ports[1].backends.len(), 1);
        // A local task without a program on its veth is left to nftables.
        let c = tc_config(
            &input(),
            Ipv4Addr::new(192, 168, 50, 1),
            &Default::default(),
        );
        assert_eq!(c.ports[0].backends.len(), 1);
        assert!(c.ports[1].backends.is_empty());
    }

    #[test]
    fn node_table() {
        expect![[r#"
            table ip shoal_mesh {}
            delete table ip shoal_mesh
            table ip shoal_mesh {
              set peers {
                type ipv4_addr;
                elements = { 192.168.50.2, 192.168.50.3 }
              }
              chain c_tcp_8080_0 {
                meta l4proto tcp dnat to 172.18.0.3:80
              }
              chain c_tcp_8080_1 {
                ip dscp set 43 meta l4proto tcp dnat to 192.168.50.2:8080
              }
              chain d_tcp_8080_0 {
                ip dscp set 0 meta l4proto tcp dnat to 172.18.0.3:80
              }
              chain l_udp_5353_0 {
                meta l4proto udp dnat to 172.18.0.3:53
              }
              chain c_udp_7000_0 {
                ip dscp set 43 meta l4proto udp dnat to 192.168.50.2:7000
              }
              chain d_udp_7000_0 {
                ip dscp set 0 meta l4proto udp dnat to 172.18.0.4:7
              }
              chain published {
                ip saddr @peers ip dscp 43 goto delivered
                meta l4proto tcp th dport 8080 numgen inc mod 2 vmap { 0 : goto c_tcp_8080_0, 1 : goto c_tcp_8080_1 }
                meta l4proto udp th dport 5353 numgen inc mod 1 vmap { 0 : goto l_udp_5353_0 }
                meta l4proto udp th dport 7000 numgen inc mod 1 vmap { 0 : goto c_udp_7000_0 }
              }
              chain delivered {
                meta l4proto tcp th dport 8080 numgen inc mod 1 vmap { 0 : goto d_tcp_8080_0 }
                meta l4proto udp th dport 7000 numgen inc mod 1 vmap { 0 : goto d_udp_7000_0 }
              }
              chain prerouting {
                type nat hook prerouting priority -100; policy accept;
                fib daddr type local jump published
              }
              chain output {
                type nat hook output priority -100; policy accept;
                fib daddr type local jump published
              }
              chain postrouting {
                type nat hook postrouting priority 100; policy accept;
                ip dscp 43 ct status dnat masquerade
                ip saddr 127.0.0.0/8 ip daddr 172.18.0.0/16 masquerade
                ip saddr 172.18.0.0/16 ip daddr 172.18.0.0/16 ct status dnat masquerade
                ip saddr 172.18.0.0/16 ip daddr != 172.18.0.0/16 masquerade
              }
            }
        "#]].assert_eq(&render_node(&input()));
    }

    #[test]
    fn udp_flows_of_removed_backends_only() {
        let old = input();
        let mut new = input();
        // The local task of 5353 left; node2 still serves 7000; 8080 is TCP (left alone).
        new.ports[1].serve = Serve::Local {
            gateway_backends: vec![],
        };
        new.ports[0].serve = Serve::Cluster { backends: vec![] };
        assert_eq!(
            stale_udp_flows(&old, &new),
            [FlowFilter {
                reply_src: Ipv4Addr::new(172, 18, 0, 3),
                orig_dst: None,
                proto: Some(17),
                orig_dport: Some(5353),
            }]
        );
        // node2 has no task of 7000 left: flows forwarded there go.
        new.ports[3].serve = Serve::Cluster { backends: vec![] };
        assert_eq!(stale_udp_flows(&old, &new).len(), 2);
        assert!(stale_udp_flows(&old, &old).is_empty());
    }
}
