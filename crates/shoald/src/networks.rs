//! Network creation on a manager: what the host already uses (read here, the only I/O),
//! the subnet and VXLAN id chosen by the pure allocator, and name-to-id resolution for
//! service specs.

use std::net::Ipv4Addr;

use crate::errors::DaemonError;
use ipnet::Ipv4Net;
use shoal_manager::allocator::{self, overlaps};
pub use shoal_net::host::{Reserved, host_reserved};
use shoal_types::network::{Ipam, parse_subnet};
use shoal_types::node::HostNetwork;
use shoal_types::{ClusterState, Network, ServiceSpec};

/// What this host reports to the cluster, for the other managers' checks.
pub use shoal_agent::session::host_networks;

/// What a new network must not cover: this host's own (`here`), and what every node of the
/// cluster reported of its host, named with the node.
pub fn cluster_reserved(state: &ClusterState, here: Vec<Reserved>) -> Vec<Reserved> {
    let nodes = state.nodes.values().flat_map(|n| {
        n.description.host_networks.iter().map(move |h| Reserved {
            net: h.net,
            what: format!("{} on node {}", h.what, n.hostname()),
            ifname: None,
        })
    });
    here.into_iter().chain(nodes).collect()
}

/// The first of a joining node's host networks that an existing overlay network covers.
pub fn overlapping_network<'a>(
    state: &'a ClusterState,
    host: &'a [HostNetwork],
) -> Option<(&'a HostNetwork, &'a Network)> {
    host.iter().find_map(|h| {
        state
            .networks
            .values()
            .find(|n| overlaps(n.ipam.subnet, h.net))
            .map(|n| (h, n))
    })
}

fn conflict(net: Ipv4Net, reserved: &[Reserved]) -> Option<&Reserved> {
    reserved.iter().find(|r| overlaps(r.net, net))
}

/// What a user (or `init`, for ingress) asks for.
#[derive(Debug, Clone, Default)]
pub struct NetworkRequest<'a> {
    pub name: &'a str,
    pub subnet: Option<&'a str>,
    pub gateway: Option<&'a str>,
    pub attachable: bool,
    pub ingress: bool,
}

/// A network as the user asked for it, checked against the host and the cluster.
pub fn plan_network(
    state: &ClusterState,
    id: String,
    req: &NetworkRequest<'_>,
    reserved: &[Reserved],
    at: shoal_types::Millis,
) -> Result<Network, DaemonError> {
    let NetworkRequest {
        name,
        subnet,
        gateway,
        attachable,
        ingress,
    } = *req;
    shoal_types::service::validate_name("network", name).map_err(DaemonError::Invalid)?;
    if state.find_network(name).is_some_and(|n| n.name == name) {
        return Err(DaemonError::Conflict(format!(
            "network name {name:?} is already in use"
        )));
    }
    let subnet = match subnet {
        Some(s) => {
            let net = parse_subnet(s).map_err(DaemonError::Invalid)?;
            if let Some(r) = conflict(net, reserved) {
                return Err(DaemonError::Invalid(format!(
                    "subnet {net} overlaps {}; choose another --subnet",
                    r.what
                )));
            }
            net
        }
        None => {
            let pool: Ipv4Net = allocator::DEFAULT_POOL
                .parse()
                .map_err(|e| crate::errors::internal("failed to read the host's addresses", e))?;
            let avoid: Vec<Ipv4Net> = reserved.iter().map(|r| r.net).collect();
            allocator::choose_subnet(state, pool, allocator::DEFAULT_SUBNET_LEN, &avoid)
                .ok_or_else(|| {
                    DaemonError::Conflict(
                        "the default address pool 10.0.0.0/8 has no free /24 left; pass --subnet"
                            .into(),
                    )
                })?
        }
    };
    let gateway = match gateway {
        Some(g) => {
            let g: Ipv4Addr = g.parse().map_err(|_| {
                DaemonError::Invalid(format!("invalid gateway {g:?}: expected an IPv4 address"))
            })?;
            if !subnet.contains(&g) || g == subnet.network() || g == subnet.broadcast() {
                return Err(DaemonError::Invalid(format!(
                    "gateway {g} is not a host address of subnet {subnet}"
                )));
            }
            g
        }
        None => subnet.hosts().next().ok_or_else(|| {
            DaemonError::Invalid(format!("subnet {subnet} has no host addresses"))
        })?,
    };
    Ok(Network {
        id,
        name: name.to_string(),
        created_at: at,
        driver: "overlay".into(),
        scope: "swarm".into(),
        ingress,
        attachable,
        ipam: Ipam { subnet, gateway },
        vni: allocator::next_vni(state),
        labels: Default::default(),
        next_host: 0,
        usage: None,
    })
}

/// Swarm's ingress subnet, when nothing of the host's is in it.
pub const INGRESS_SUBNET: &str = "10.255.0.0/16";

/// The ingress subnet for `init`: the user's, else Swarm's 10.255.0.0/16, else the highest
/// free /16 of 10.0.0.0/8 — with a note saying why, since the user did not choose it.
pub fn ingress_subnet(
    requested: Option<&str>,
    reserved: &[Reserved],
) -> Result<(String, Option<String>), DaemonError> {
    if let Some(s) = requested {
        return Ok((s.to_string(), None));
    }
    let default: Ipv4Net = INGRESS_SUBNET
        .parse()
        .map_err(|e| crate::errors::internal("failed to read the host's addresses", e))?;
    let Some(r) = conflict(default, reserved) else {
        return Ok((INGRESS_SUBNET.to_string(), None));
    };
    for second in (1..=254u8).rev() {
        let candidate = Ipv4Net::new(Ipv4Addr::new(10, second, 0, 0), 16)
            .map_err(|e| crate::errors::internal("failed to read the host's addresses", e))?;
        if conflict(candidate, reserved).is_none() {
            let note = format!(
                "ingress network: {INGRESS_SUBNET} overlaps {}, so the ingress network uses {candidate} \
                 (choose another with `shoal init --ingress-subnet`)",
                r.what
            );
            return Ok((candidate.to_string(), Some(note)));
        }
    }
    Err(DaemonError::Invalid(
        "no free /16 for the ingress network in 10.0.0.0/8; pass --ingress-subnet".into(),
    ))
}

/// Replaces network names in a spec by ids, as docker stores them.
pub fn resolve_networks(state: &ClusterState, spec: &mut ServiceSpec) -> Result<(), DaemonError> {
    for att in &mut spec.task_template.networks {
        let n = state.find_network(&att.target).ok_or_else(|| {
            DaemonError::NotFound(format!(
                "network {} not found; create it with `shoal network create --driver overlay {}`",
                att.target, att.target
            ))
        })?;
        att.target = n.id.clone();
    }
    let mut seen = std::collections::BTreeSet::new();
    for att in &spec.task_template.networks {
        if !seen.insert(att.target.clone()) {
            return Err(DaemonError::Invalid(
                "the same network is given twice".into(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reserved(net: &str, what: &str) -> Reserved {
        Reserved {
            net: net.parse().unwrap(),
            what: what.into(),
            ifname: None,
        }
    }

    #[test]
    fn ingress_moves_off_the_host_resolver_and_says_so() {
        let (s, note) = ingress_subnet(None, &[]).unwrap();
        assert_eq!((s.as_str(), note), (INGRESS_SUBNET, None));
        let r = [reserved(
            "10.255.255.53/32",
            "the host's DNS resolver 10.255.255.53",
        )];
        let (s, note) = ingress_subnet(None, &r).unwrap();
        assert_eq!(s, "10.254.0.0/16");
        assert!(note.unwrap().contains("10.255.255.53"));
    }

    #[test]
    fn a_subnet_over_a_workers_address_is_refused_naming_the_worker() {
        let mut st = shoal_types::fixtures::cluster(&[("n1", "node1"), ("n2", "node2")]);
        if let Some(n) = st.nodes.get_mut("n2") {
            n.description.host_networks = vec![HostNetwork {
                net: "10.77.0.0/24".parse().unwrap(),
                what: "the host's address 10.77.0.1 (lo)".into(),
            }];
        }
        let req = NetworkRequest {
            name: "net",
            subnet: Some("10.77.0.0/16"),
            ..Default::default()
        };
        let reserved = cluster_reserved(&st, vec![]);
        let err = plan_network(&st, "x".into(), &req, &reserved, Default::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "subnet 10.77.0.0/16 overlaps the host's address 10.77.0.1 (lo) on node node2; choose another --subnet"
        );
        // A subnet of its own is chosen around it.
        let req = NetworkRequest {
            name: "net",
            ..Default::default()
        };
        let auto = plan_network(&st, "x".into(), &req, &reserved, Default::default()).unwrap();
        assert!(!overlaps(auto.ipam.subnet, "10.77.0.0/24".parse().unwrap()));
    }

    #[test]
    fn a_joining_node_covered_by_a_network_is_told_which() {
        let mut st = shoal_types::fixtures::cluster(&[("n1", "node1")]);
        st.apply(shoal_types::Command::CreateNetwork {
            network: shoal_types::fixtures::network("net1", "n78", "10.78.0.0/24", 4096),
        })
        .unwrap();
        let host = [
            HostNetwork {
                net: "172.29.1.0/24".parse().unwrap(),
                what: "the host's address 172.29.1.2 (eth0)".into(),
            },
            HostNetwork {
                net: "10.78.0.0/24".parse().unwrap(),
                what: "the host's address 10.78.0.5 (lo)".into(),
            },
        ];
        let (h, n) = overlapping_network(&st, &host).unwrap();
        assert_eq!(
            (h.what.as_str(), n.name.as_str()),
            ("the host's address 10.78.0.5 (lo)", "n78")
        );
        assert!(overlapping_network(&st, &host[..1]).is_none());
    }

    #[test]
    fn a_subnet_over_the_host_is_refused() {
        let st = shoal_types::fixtures::cluster(&[("n1", "node1")]);
        let r = [reserved(
            "192.0.2.0/24",
            "the host's address 192.0.2.2 (eth0)",
        )];
        let req = NetworkRequest {
            name: "net",
            subnet: Some("192.0.2.0/25"),
            ..Default::default()
        };
        let err = plan_network(&st, "x".into(), &req, &r, Default::default()).unwrap_err();
        assert!(
            err.to_string()
                .contains("overlaps the host's address 192.0.2.2"),
            "{err}"
        );
        let req = NetworkRequest {
            name: "net",
            ..Default::default()
        };
        let n = plan_network(&st, "x".into(), &req, &r, Default::default()).unwrap();
        assert_eq!(n.ipam.subnet.to_string(), "10.0.0.0/24");
        assert_eq!(n.ipam.gateway.to_string(), "10.0.0.1");
    }
}
