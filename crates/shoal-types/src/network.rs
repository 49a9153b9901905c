//! Overlay networks and the addresses tasks and services hold on them.
//! Serialised like docker's `network inspect` (`{{.IPAM.Config}}`, `{{.Id}}` → `ID` here).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::Millis;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Network {
    #[serde(rename = "ID")]
    pub id: String,
    pub name: String,
    pub created_at: Millis,
    /// Always `overlay` for now.
    pub driver: String,
    /// Always `swarm`: the network spans the cluster.
    pub scope: String,
    /// The routing mesh's network, joined by every node.
    pub ingress: bool,
    pub attachable: bool,
    #[serde(rename = "IPAM")]
    pub ipam: Ipam,
    /// The VXLAN id that carries this network between nodes.
    #[serde(rename = "VNI")]
    pub vni: u32,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Host offset where the next address search starts. Addresses are handed out round
    /// the subnet, so a freed address is not given to another task at once.
    #[serde(default)]
    pub next_host: u32,
    /// How many addresses are taken and how many there are. Derived, never stored:
    /// filled in when the network is read through the API.
    #[serde(rename = "IPAMUsage", default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<AddressUsage>,
}

/// Addresses of a network in use (tasks, VIPs, nodes' ingress endpoints) and its capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AddressUsage {
    pub in_use: u64,
    pub capacity: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Ipam {
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
}

/// A task's (or a service's VIP's) address on one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Attachment {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// With the network's prefix length, as docker prints it: `10.0.0.5/24`.
    pub addr: Ipv4Net,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

/// The lowest VXLAN id shoal hands out (Swarm starts at 4096 too).
pub const FIRST_VNI: u32 = 4096;

impl Network {
    /// Hosts of the subnet that tasks may get: not the network/broadcast addresses, not the
    /// gateway.
    /// How many addresses tasks, VIPs and nodes can get: the subnet without its network,
    /// broadcast and gateway addresses.
    pub fn capacity(&self) -> u64 {
        let size = 1u64 << (32 - u32::from(self.ipam.subnet.prefix_len()));
        size.saturating_sub(3)
    }

    pub fn usable(&self, addr: Ipv4Addr) -> bool {
        let net = self.ipam.subnet;
        net.contains(&addr)
            && addr != net.network()
            && addr != net.broadcast()
            && addr != self.ipam.gateway
    }
}

/// Parses a user's `--subnet`: a network address with its prefix (`10.1.2.0/24`).
pub fn parse_subnet(s: &str) -> Result<Ipv4Net, String> {
    let net: Ipv4Net = s
        .parse()
        .map_err(|_| format!("invalid subnet {s:?}: expected e.g. 10.0.1.0/24"))?;
    if net.trunc() != net {
        return Err(format!(
            "invalid subnet {s}: host bits are set; did you mean {}?",
            net.trunc()
        ));
    }
    if net.prefix_len() > 29 {
        return Err(format!("subnet {s} is too small: use /29 or larger"));
    }
    Ok(net)
}
