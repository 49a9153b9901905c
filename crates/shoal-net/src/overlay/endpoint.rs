//! Task attachments and remote endpoints of an overlay network: the operations that
//! [`super::plan::Op`] names, reading the state back, and applying a plan.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

use ipnet::Ipv4Net;
use netlink_packet_route::link::{InfoData, InfoVeth};
use rtnetlink::{LinkUnspec, LinkVeth};

use super::plan::{self, Current, Desired, Op};
use super::{
    BRIDGE, OverlaySpec, VXLAN, addr_for, ensure_overlay, has_errno, host_ifname, mac_for,
    parse_host_ifname, validate_ifname,
};
use crate::error::{NetError, Result};
use crate::link::Netlink;
use crate::netns::{netns_exists, open_netns, validate_netns_name};

/// Opens the overlay namespace of `spec`, which [`ensure_overlay`] must have made.
async fn open_overlay(spec: &OverlaySpec) -> Result<Netlink> {
    validate_netns_name(&spec.netns)?;
    if !netns_exists(&spec.netns) {
        return Err(NetError::OverlayMissing(spec.netns.clone()));
    }
    Netlink::in_netns(&spec.netns).await
}

/// Maps "no br0/vxlan0" to the hint to run [`ensure_overlay`].
fn missing_as_overlay(spec: &OverlaySpec, err: NetError) -> NetError {
    match err {
        NetError::NoSuchLink { link, .. } if link == BRIDGE || link == VXLAN => {
            NetError::OverlayMissing(spec.netns.clone())
        }
        other => other,
    }
}

/// Gives a local task an interface on the network: a veth from `br0` into namespace
/// `sandbox`, named `ifname` there, with address `addr`, MAC [`mac_for`] and the overlay's
/// MTU, up. An existing attachment for the same address is replaced.
pub async fn attach(spec: &OverlaySpec, sandbox: &str, ifname: &str, addr: Ipv4Net) -> Result<()> {
    let ov = open_overlay(spec).await?;
    attach_in(&ov, spec, sandbox, ifname, addr).await
}

async fn attach_in(
    ov: &Netlink,
    spec: &OverlaySpec,
    sandbox: &str,
    ifname: &str,
    addr: Ipv4Net,
) -> Result<()> {
    spec.check_addr(addr.addr(), addr.to_string())?;
    if addr.prefix_len() != spec.subnet.prefix_len() {
        return Err(spec.invalid(format!(
            "attachment {addr} has another prefix length than subnet {}",
            spec.subnet
        )));
    }
    validate_ifname(ifname)?;
    let bridge = ov
        .index_of(BRIDGE)
        .await
        .map_err(|e| missing_as_overlay(spec, e))?;
    let host = host_ifname(spec.vni, addr.addr());
    if ov.link(&host).await?.is_some() {
        // A left-over or half-made attachment: start again rather than patch it.
        ov.delete_link(&host).await?;
    }

    let sandbox_fd = open_netns(sandbox)?;
    // The peer is created directly in the sandbox under its final name and MAC, so a crash
    // cannot leave it behind in the overlay namespace under a temporary name.
    let peer = LinkUnspec::new_with_name(ifname)
        .address(mac_for(addr.addr()).to_vec())
        .mtu(spec.mtu)
        .setns_by_fd(sandbox_fd.as_raw_fd())
        .build();
    let msg = LinkVeth::new(&host, ifname)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .mtu(spec.mtu)
        .controller(bridge)
        .build();
    let outcome = ov.handle().link().add(msg).execute().await;
    drop(sandbox_fd);
    if let Err(e) = outcome {
        let err = NetError::netlink(
            format!(
                "create veth {host} in {} with peer {ifname} in netns {sandbox}",
                ov.place()
            ),
            e,
        );
        // The host-side name was freed above, so EEXIST is the sandbox side.
        return Err(if has_errno(&err, nix::errno::Errno::EEXIST) {
            NetError::LinkExists {
                link: ifname.to_string(),
                netns: format!("netns {sandbox}"),
            }
        } else {
            err
        });
    }

    let configured = async {
        // No IPv6 on the overlay's end (as for the gateway veth): its removal then walks no
        // IPv6 table that grows with the tasks on this network.
        let link = host.clone();
        crate::netns::run_in_netns_async(&spec.netns, move || {
            crate::gateway::disable_ipv6_here(&link)
        })
        .await??;
        ov.set_up(&host).await?;
        let sb = Netlink::in_netns(sandbox).await?;
        sb.add_address(ifname, addr.addr(), addr.prefix_len())
            .await?;
        sb.set_up(ifname).await
    }
    .await;
    if let Err(e) = configured {
        // Leave nothing half-made: deleting the host end takes the sandbox end with it.
        if let Err(undo) = ov.delete_link(&host).await {
            tracing::warn!(link = %host, error = %undo, "failed to remove a half-made attachment");
        }
        return Err(e);
    }
    tracing::debug!(netns = %spec.netns, %sandbox, ifname, %addr, "attached");
    Ok(())
}

/// Removes the local task `addr` from the network (its veth; the sandbox end goes with it).
/// Returns `false` if it was not attached.
pub async fn detach(spec: &OverlaySpec, addr: Ipv4Addr) -> Result<bool> {
    validate_netns_name(&spec.netns)?;
    if !netns_exists(&spec.netns) {
        return Ok(false);
    }
    let ov = Netlink::in_netns(&spec.netns).await?;
    detach_in(&ov, spec, addr).await
}

async fn detach_in(ov: &Netlink, spec: &OverlaySpec, addr: Ipv4Addr) -> Result<bool> {
    ov.delete_link_if_present(&host_ifname(spec.vni, addr))
        .await
}

/// Makes remote endpoint `addr` reachable through the node with underlay address `vtep`:
/// `MAC dev vxlan0 dst VTEP self permanent` and `ADDR lladdr MAC dev vxlan0 permanent`.
/// Idempotent; an endpoint already known at another VTEP is repointed.
pub async fn add_remote(spec: &OverlaySpec, addr: Ipv4Addr, vtep: Ipv4Addr) -> Result<()> {
    let ov = open_overlay(spec).await?;
    add_remote_in(&ov, spec, addr, vtep).await
}

async fn add_remote_in(
    ov: &Netlink,
    spec: &OverlaySpec,
    addr: Ipv4Addr,
    vtep: Ipv4Addr,
) -> Result<()> {
    spec.check_addr(addr, addr.to_string())?;
    let mac = mac_for(addr);
    // FDB first: once the neighbour entry exists, ARP is answered and frames flow; without
    // the FDB entry they would be dropped at vxlan0.
    ov.replace_fdb_remote(VXLAN, mac, vtep)
        .await
        .map_err(|e| missing_as_overlay(spec, e))?;
    ov.replace_neighbour(VXLAN, addr, mac).await
}

/// Forgets remote endpoint `addr`. With `Some(vtep)`, only if it is (still) known at that
/// VTEP: an endpoint event that arrives after the endpoint was repointed elsewhere removes
/// nothing. With `None`, whatever is there goes. Idempotent.
pub async fn remove_remote(
    spec: &OverlaySpec,
    addr: Ipv4Addr,
    vtep: Option<Ipv4Addr>,
) -> Result<()> {
    validate_netns_name(&spec.netns)?;
    if !netns_exists(&spec.netns) {
        return Ok(());
    }
    let ov = Netlink::in_netns(&spec.netns).await?;
    remove_remote_in(&ov, addr, vtep).await
}

async fn remove_remote_in(ov: &Netlink, addr: Ipv4Addr, vtep: Option<Ipv4Addr>) -> Result<()> {
    let mac = mac_for(addr);
    match ov.delete_fdb_remote(VXLAN, mac, vtep).await {
        Ok(_) => {}
        // No vxlan0, nothing to forget.
        Err(NetError::NoSuchLink { .. }) => return Ok(()),
        Err(e) => return Err(e),
    }
    // The kernel ignores a delete whose VTEP does not match, so look at what is left: if the
    // MAC still points somewhere, the endpoint lives there now and keeps its neighbour entry.
    // Without a VTEP the delete took whatever was there: no dump (it costs O(remote
    // endpoints), and the agent's plan removes endpoints this way on every change).
    if vtep.is_some() && ov.fdb_remotes(VXLAN).await?.iter().any(|r| r.mac == mac) {
        tracing::debug!(%addr, ?vtep, "kept remote endpoint: it is known at another VTEP");
        return Ok(());
    }
    ov.delete_neighbour(VXLAN, addr).await?;
    Ok(())
}

/// Reads the state of the overlay network of `spec` for [`plan::plan`]. A missing namespace
/// reads as empty.
pub async fn observe(spec: &OverlaySpec) -> Result<Current> {
    validate_netns_name(&spec.netns)?;
    if !netns_exists(&spec.netns) {
        return Ok(Current::default());
    }
    let ov = Netlink::in_netns(&spec.netns).await?;
    observe_in(&ov, spec).await
}

async fn observe_in(ov: &Netlink, spec: &OverlaySpec) -> Result<Current> {
    let mut current = Current::default();
    let links = ov.links().await?;
    current.attached = links
        .iter()
        .filter_map(|l| parse_host_ifname(spec.vni, &l.name))
        .collect();
    if !links.iter().any(|l| l.name == VXLAN) {
        return Ok(current);
    }
    // Only entries shoal makes: MACs from `mac_for`, permanent neighbours carrying them.
    for remote in ov.fdb_remotes(VXLAN).await? {
        if let Some(addr) = addr_for(&remote.mac) {
            current.fdb.insert(addr, remote.dst);
        }
    }
    current.neighbours = ov
        .neighbours(VXLAN)
        .await?
        .into_iter()
        .filter(|n| n.permanent && n.mac == Some(mac_for(n.addr)))
        .map(|n| n.addr)
        .collect();
    Ok(current)
}

/// Carries out `ops` in order, stopping at the first failure (the next [`reconcile`] plans
/// again from what the kernel then has).
pub async fn apply(spec: &OverlaySpec, ops: &[Op]) -> Result<()> {
    if ops.is_empty() {
        return Ok(());
    }
    let ov = open_overlay(spec).await?;
    for op in ops {
        match op {
            Op::Detach(addr) => detach_in(&ov, spec, *addr).await.map(drop)?,
            Op::RemoveRemote(addr) => remove_remote_in(&ov, *addr, None).await?,
            Op::Attach(a) => attach_in(&ov, spec, &a.sandbox, &a.ifname, a.addr).await?,
            Op::AddRemote(r) => add_remote_in(&ov, spec, r.addr, r.vtep).await?,
        }
    }
    Ok(())
}

/// Ensures the overlay namespace, then brings its attachments and remote endpoints to
/// `desired`. Returns the operations it carried out.
pub async fn reconcile(spec: &OverlaySpec, desired: &Desired) -> Result<Vec<Op>> {
    ensure_overlay(spec).await?;
    let current = observe(spec).await?;
    let ops = plan::plan(&current, desired);
    apply(spec, &ops).await?;
    Ok(ops)
}
