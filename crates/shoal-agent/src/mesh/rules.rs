//! The routing mesh's nftables rules, rendered from what the node knows (pure).
//!
//! Two tables of ours, each replaced whole in one `nft -f` transaction (they hold one rule
//! per published port, so a rebuild is cheap; conntrack keeps established flows):
//! - `ip shoal_mesh` in the node's namespace: a published port on any local address goes
//!   to the ingress sandbox (cluster traffic), or straight to this node's own tasks on the
//!   gateway bridge (`traffic=local`, `mode=host`: the client's address is kept). Loopback
//!   sources are masqueraded (so `curl localhost:8080` works), and so is the tasks' egress.
//! - `ip shoal_ingress` in the node's ingress sandbox: round robin over the service's tasks
//!   on the ingress network, masqueraded so that replies come back through this node.

use std::fmt::Write;
use std::net::Ipv4Addr;

use shoal_net::gateway::{GW_BRIDGE, Gateway};
use shoal_types::Protocol;

/// How a node serves one published port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Serve {
    /// Through the ingress sandbox to every task on the ingress network.
    Cluster { ingress_backends: Vec<Ipv4Addr> },
    /// Straight to this node's own tasks (`traffic=local` or `mode=host`).
    Local { gateway_backends: Vec<Ipv4Addr> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub protocol: Protocol,
    pub port: u16,
    pub target: u16,
    pub serve: Serve,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshInput {
    pub gateway: Gateway,
    /// The ingress sandbox's address on the gateway bridge.
    pub sandbox: Ipv4Addr,
    /// The ingress sandbox's interface on the ingress network.
    pub ingress_if: String,
    pub ports: Vec<Published>,
}

fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

/// Appends a round-robin over `backends` (port `target`) from a rule prefix: chains named
/// `<prefix>_<i>`, each DNATing to one backend.
fn round_robin(
    out: &mut String,
    chain_prefix: &str,
    p: &Published,
    backends: &[Ipv4Addr],
) -> String {
    let vmap: Vec<String> = (0..backends.len())
        .map(|i| format!("{i} : goto {chain_prefix}_{i}"))
        .collect();
    for (i, b) in backends.iter().enumerate() {
        let _ = writeln!(
            out,
            "  chain {chain_prefix}_{i} {{\n    meta l4proto {} dnat to {b}:{}\n  }}",
            proto(p.protocol),
            p.target
        );
    }
    format!(
        "numgen inc mod {} vmap {{ {} }}",
        backends.len(),
        vmap.join(", ")
    )
}

/// `ip shoal_mesh`, for the node's namespace.
pub fn render_node(m: &MeshInput) -> String {
    let mut chains = String::new();
    let mut published = String::new();
    for p in &m.ports {
        let matcher = format!("meta l4proto {} th dport {}", proto(p.protocol), p.port);
        match &p.serve {
            Serve::Cluster { .. } => {
                let _ = writeln!(published, "    {matcher} dnat to {}", m.sandbox);
            }
            // No local task: no rule, so the port is closed on this node.
            Serve::Local { gateway_backends } if gateway_backends.is_empty() => {}
            Serve::Local { gateway_backends } => {
                let prefix = format!("l_{}_{}", proto(p.protocol), p.port);
                let rr = round_robin(&mut chains, &prefix, p, gateway_backends);
                let _ = writeln!(published, "    {matcher} {rr}");
            }
        }
    }
    format!(
        "table ip shoal_mesh {{}}\ndelete table ip shoal_mesh\ntable ip shoal_mesh {{\n{chains}\
         \x20 chain published {{\n{published}  }}\n\
         \x20 chain prerouting {{\n    type nat hook prerouting priority -100; policy accept;\n    fib daddr type local jump published\n  }}\n\
         \x20 chain output {{\n    type nat hook output priority -100; policy accept;\n    fib daddr type local jump published\n  }}\n\
         \x20 chain postrouting {{\n    type nat hook postrouting priority 100; policy accept;\n\
         \x20   oifname \"{GW_BRIDGE}\" ip saddr 127.0.0.0/8 masquerade\n\
         \x20   ip saddr {subnet} oifname != \"{GW_BRIDGE}\" masquerade\n  }}\n}}\n",
        subnet = m.gateway.subnet,
    )
}

/// `ip shoal_ingress`, for the node's ingress sandbox.
pub fn render_ingress(m: &MeshInput) -> String {
    let mut chains = String::new();
    let mut rules = String::new();
    for p in &m.ports {
        let Serve::Cluster { ingress_backends } = &p.serve else {
            continue;
        };
        if ingress_backends.is_empty() {
            // No rule: the sandbox itself answers with a reset (TCP) or port unreachable
            // (UDP), so the client is refused at once.
            continue;
        }
        let prefix = format!("i_{}_{}", proto(p.protocol), p.port);
        let rr = round_robin(&mut chains, &prefix, p, ingress_backends);
        let _ = writeln!(
            rules,
            "    meta l4proto {} th dport {} {rr}",
            proto(p.protocol),
            p.port
        );
    }
    format!(
        "table ip shoal_ingress {{}}\ndelete table ip shoal_ingress\ntable ip shoal_ingress {{\n{chains}\
         \x20 chain prerouting {{\n    type nat hook prerouting priority -100; policy accept;\n{rules}  }}\n\
         \x20 chain postrouting {{\n    type nat hook postrouting priority 100; policy accept;\n    oifname \"{}\" masquerade\n  }}\n}}\n",
        m.ingress_if
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    fn input() -> MeshInput {
        MeshInput {
            gateway: Gateway::docker_default(),
            sandbox: Ipv4Addr::new(172, 18, 0, 2),
            ingress_if: "eth0".into(),
            ports: vec![
                Published {
                    protocol: Protocol::Tcp,
                    port: 8080,
                    target: 80,
                    serve: Serve::Cluster {
                        ingress_backends: vec![
                            Ipv4Addr::new(10, 254, 0, 5),
                            Ipv4Addr::new(10, 254, 0, 6),
                        ],
                    },
                },
                Published {
                    protocol: Protocol::Udp,
                    port: 5353,
                    target: 53,
                    serve: Serve::Local {
                        gateway_backends: vec![Ipv4Addr::new(172, 18, 0, 3)],
                    },
                },
                Published {
                    protocol: Protocol::Tcp,
                    port: 9000,
                    target: 9000,
                    serve: Serve::Local {
                        gateway_backends: vec![],
                    },
                },
            ],
        }
    }

    #[test]
    fn node_table() {
        expect![[r#"
            table ip shoal_mesh {}
            delete table ip shoal_mesh
            table ip shoal_mesh {
              chain l_udp_5353_0 {
                meta l4proto udp dnat to 172.18.0.3:53
              }
              chain published {
                meta l4proto tcp th dport 8080 dnat to 172.18.0.2
                meta l4proto udp th dport 5353 numgen inc mod 1 vmap { 0 : goto l_udp_5353_0 }
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
                oifname "shoal_gwbridge" ip saddr 127.0.0.0/8 masquerade
                ip saddr 172.18.0.0/16 oifname != "shoal_gwbridge" masquerade
              }
            }
        "#]]
        .assert_eq(&render_node(&input()));
    }

    #[test]
    fn ingress_table() {
        expect![[r#"
            table ip shoal_ingress {}
            delete table ip shoal_ingress
            table ip shoal_ingress {
              chain i_tcp_8080_0 {
                meta l4proto tcp dnat to 10.254.0.5:80
              }
              chain i_tcp_8080_1 {
                meta l4proto tcp dnat to 10.254.0.6:80
              }
              chain prerouting {
                type nat hook prerouting priority -100; policy accept;
                meta l4proto tcp th dport 8080 numgen inc mod 2 vmap { 0 : goto i_tcp_8080_0, 1 : goto i_tcp_8080_1 }
              }
              chain postrouting {
                type nat hook postrouting priority 100; policy accept;
                oifname "eth0" masquerade
              }
            }
        "#]]
        .assert_eq(&render_ingress(&input()));
    }
}
