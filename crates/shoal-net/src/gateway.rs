//! The node's gateway bridge, like Docker's `docker_gwbridge`: a bridge in the node's own
//! namespace that gives every task a way out (masqueraded by the node) and carries the
//! routing mesh from the node to its ingress sandbox. Node-local: the same subnet on every
//! node, never routed between nodes.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::{NetError, Netlink, Result, run_in_netns_async};

/// The bridge's name in the node's namespace.
pub const GW_BRIDGE: &str = "shoal_gwbridge";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gateway {
    pub subnet: Ipv4Net,
    /// The bridge's address: the default route of every attached sandbox.
    pub addr: Ipv4Addr,
}

impl Gateway {
    /// Docker's choice, 172.18.0.0/16 with the bridge on .1.
    pub fn docker_default() -> Gateway {
        Gateway {
            subnet: Ipv4Net::new(Ipv4Addr::new(172, 18, 0, 0), 16).unwrap_or_default(),
            addr: Ipv4Addr::new(172, 18, 0, 1),
        }
    }
}

/// The host-side name of a sandbox's gateway veth: `g` and the address in hex (≤ 15 chars).
pub fn gw_ifname(addr: Ipv4Addr) -> String {
    format!("g{:08x}", u32::from(addr))
}

/// Creates the bridge in the caller's namespace (idempotent) with the gateway address, and
/// turns on forwarding there (the node routes between its uplink and the bridge).
pub async fn ensure_gateway(gw: &Gateway) -> Result<()> {
    let nl = Netlink::current()?;
    if nl.link(GW_BRIDGE).await?.is_none() {
        nl.create_bridge(GW_BRIDGE).await?;
        nl.add_address(GW_BRIDGE, gw.addr, gw.subnet.prefix_len())
            .await?;
    }
    nl.set_up(GW_BRIDGE).await?;
    write_sysctl_here("net/ipv4/ip_forward", "1")?;
    // Published ports answer on 127.0.0.1 too: DNATed loopback traffic must be routable.
    write_sysctl_here("net/ipv4/conf/all/route_localnet", "1")?;
    Ok(())
}

/// Gives `sandbox` an interface `ifname` on the bridge with `addr` (prefix of the gateway
/// subnet); with `default_route`, the sandbox's way out goes through the node.
pub async fn attach_gateway(
    gw: &Gateway,
    sandbox: &str,
    ifname: &str,
    addr: Ipv4Addr,
    default_route: bool,
) -> Result<()> {
    if !gw.subnet.contains(&addr) || addr == gw.addr {
        return Err(NetError::AddressOutsideSubnet {
            addr: addr.to_string(),
            subnet: gw.subnet.to_string(),
            netns: sandbox.into(),
        });
    }
    let nl = Netlink::current()?;
    let host = gw_ifname(addr);
    // The peer gets a temporary name here, unique like the host side, so it cannot clash
    // with the node's own interfaces before it moves.
    let peer = format!("p{:08x}", u32::from(addr));
    if nl.link(&host).await?.is_some() {
        nl.delete_link(&host).await?;
    }
    nl.create_veth(&host, &peer).await?;
    nl.set_controller(&host, GW_BRIDGE).await?;
    nl.set_up(&host).await?;
    nl.move_to_netns(&peer, sandbox).await?;
    let inside = Netlink::in_netns(sandbox).await?;
    inside.rename(&peer, ifname).await?;
    inside
        .add_address(ifname, addr, gw.subnet.prefix_len())
        .await?;
    inside.set_up(ifname).await?;
    if default_route {
        inside.add_default_route(gw.addr).await?;
    }
    Ok(())
}

/// Removes a sandbox's gateway veth (both ends go). False if it was not there.
pub async fn detach_gateway(addr: Ipv4Addr) -> Result<bool> {
    let nl = Netlink::current()?;
    let host = gw_ifname(addr);
    if nl.link(&host).await?.is_none() {
        return Ok(false);
    }
    nl.delete_link(&host).await?;
    Ok(true)
}

/// Sets a sysctl under /proc/sys in namespace `netns` (opened from a thread inside it, as
/// /proc/sys/net follows the opener's namespace).
pub async fn set_sysctl(netns: &str, key: &str, value: &str) -> Result<()> {
    let (key, value) = (key.to_string(), value.to_string());
    run_in_netns_async(netns, move || write_sysctl_here(&key, &value)).await?
}

fn write_sysctl_here(key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{key}");
    std::fs::write(&path, value).map_err(|e| NetError::Io {
        action: format!("write {value} to {path}"),
        source: e,
    })
}
