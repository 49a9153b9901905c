//! The node's gateway, like Docker's `docker_gwbridge`: every task's way out (masqueraded
//! by the node) and the routing mesh's way in to local tasks. Node-local: the same subnet on
//! every node, never routed between nodes.
//!
//! Each task's veth is routed, not bridged: the node has a /32 route to the task's address
//! over the veth and a permanent neighbour entry for it; the task has one for the gateway
//! address, whose MAC every host-side veth carries. A packet to a task crosses one veth and
//! no bridge (no bridge port lookup, and no `br_netfilter` pass over its replies, which ran
//! the nat and conntrack hooks a second time on a host where it is loaded): bench/mesh.
//! The bridge `shoal_gwbridge` stays, without ports, as the holder of the gateway address
//! and its subnet, so that the node's own addresses name the subnet as taken.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

use ipnet::Ipv4Net;
use netlink_packet_route::link::{InfoData, InfoVeth};
use netlink_packet_route::route::RouteScope;
use rtnetlink::{LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::netns::open_netns;
use crate::overlay::mac_for;
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

/// Turns `route_localnet` off again in the caller's namespace: the node left, and nothing
/// answers on 127.0.0.1 for it any more.
pub fn release_route_localnet() -> Result<()> {
    write_sysctl_here("net/ipv4/conf/all/route_localnet", "0")
}

/// Gives `sandbox` an interface `ifname` with `addr` (prefix of the gateway subnet), routed
/// from the node over its own veth; with `default_route`, the sandbox's way out goes
/// through the node.
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
    if nl.link(&host).await?.is_some() {
        nl.delete_link(&host).await?;
    }
    // The peer is made in the sandbox under its final name, so a crash cannot leave it in
    // the node's namespace under a temporary one.
    let sandbox_fd = open_netns(sandbox)?;
    let peer = LinkUnspec::new_with_name(ifname)
        .address(mac_for(addr).to_vec())
        .setns_by_fd(sandbox_fd.as_raw_fd())
        .build();
    let msg = LinkVeth::new(&host, ifname)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .address(mac_for(gw.addr).to_vec())
        .build();
    let made = nl.handle().link().add(msg).execute().await;
    drop(sandbox_fd);
    made.map_err(|e| {
        NetError::netlink(
            format!("create veth {host} with peer {ifname} in netns {sandbox}"),
            e,
        )
    })?;
    // No IPv6 on it (shoal's tasks are IPv4): a link-local address and routes per veth
    // would make every veth's removal walk a node-wide IPv6 table that grows with the tasks.
    disable_ipv6_here(&host)?;
    nl.set_up(&host).await?;
    let index = nl.index_of(&host).await?;
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(addr, 32)
        .output_interface(index)
        .scope(RouteScope::Link)
        .pref_source(gw.addr)
        .build();
    nl.handle()
        .route()
        .add(route)
        .execute()
        .await
        .map_err(|e| {
            NetError::netlink(
                format!("add route {addr}/32 dev {host} in {}", nl.place()),
                e,
            )
        })?;
    // Both ends know each other's MAC: no ARP, whatever arp_ignore the host has.
    nl.replace_neighbour(&host, addr, mac_for(addr)).await?;
    let inside = Netlink::in_netns(sandbox).await?;
    inside
        .add_address(ifname, addr, gw.subnet.prefix_len())
        .await?;
    inside.set_up(ifname).await?;
    inside
        .replace_neighbour(ifname, gw.addr, mac_for(gw.addr))
        .await?;
    if default_route {
        inside.add_default_route(gw.addr).await?;
    }
    Ok(())
}

/// Removes a sandbox's gateway veth (both ends go, and the node's route to it). False if it
/// was not there.
pub async fn detach_gateway(addr: Ipv4Addr) -> Result<bool> {
    Netlink::current()?
        .delete_link_if_present(&gw_ifname(addr))
        .await
}

/// Sets a sysctl under /proc/sys in namespace `netns` (opened from a thread inside it, as
/// /proc/sys/net follows the opener's namespace).
pub async fn set_sysctl(netns: &str, key: &str, value: &str) -> Result<()> {
    let (key, value) = (key.to_string(), value.to_string());
    run_in_netns_async(netns, move || write_sysctl_here(&key, &value)).await?
}

/// Turns IPv6 off on link `dev` of this thread's namespace before it goes up, so that it
/// gets no IPv6 address or route; nothing to do on a kernel without IPv6.
pub(crate) fn disable_ipv6_here(dev: &str) -> Result<()> {
    if !std::path::Path::new("/proc/sys/net/ipv6/conf").exists() {
        return Ok(());
    }
    write_sysctl_here(&format!("net/ipv6/conf/{dev}/disable_ipv6"), "1")
}

fn write_sysctl_here(key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{key}");
    std::fs::write(&path, value).map_err(|e| NetError::Io {
        action: format!("write {value} to {path}"),
        source: e,
    })
}
