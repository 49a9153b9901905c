//! Overlay networks on one node, the way Docker's overlay driver builds them.
//!
//! Each network has its own namespace ([`OverlaySpec::netns`]) holding a bridge `br0` and a
//! VXLAN device `vxlan0` (one VNI per network, UDP 4789, no learning, ARP proxy). Each local
//! task gets a veth: one end on `br0`, the other in the task's sandbox as `eth0`, `eth1`, ...
//! with a MAC derived from its address ([`mac_for`]), so no node needs to learn or exchange
//! MACs. Each remote endpoint gets a permanent FDB entry (`MAC -> remote VTEP`) and a
//! permanent neighbour entry (`IP -> MAC`) on `vxlan0`; `proxy` makes `vxlan0` answer ARP
//! from those, so nothing is flooded and no multicast is needed.
//!
//! `vxlan0` is created from the underlay namespace (where the node's address is) straight
//! into the overlay namespace. Its UDP socket lives where it was created from, so VXLAN
//! packets leave and arrive through the underlay while the device sits on the bridge.
//!
//! This file builds and removes the network's namespace; `endpoint` attaches tasks and
//! installs remote endpoints; [`plan`] computes the operations from the desired state, and
//! [`observe`], [`apply`] and [`reconcile`] connect it to the kernel.

mod endpoint;
pub mod plan;

pub use endpoint::{add_remote, apply, attach, detach, observe, reconcile, remove_remote};

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::link::{
    InfoData, InfoVxlan, LinkAttribute, LinkInfo as NlLinkInfo, LinkMessage,
};
use rtnetlink::LinkVxlan;

use crate::error::{NetError, Result};
use crate::link::Netlink;
use crate::neigh::Mac;
use crate::netns::{create_netns, delete_netns, netns_exists, open_netns, validate_netns_name};

/// The bridge in each overlay namespace.
pub const BRIDGE: &str = "br0";
/// The VXLAN device in each overlay namespace.
pub const VXLAN: &str = "vxlan0";
/// The IANA VXLAN port, as Docker uses it.
pub const VXLAN_PORT: u16 = 4789;
/// 1500 minus the 50 bytes of VXLAN over IPv4 encapsulation.
pub const OVERLAY_MTU: u32 = 1450;
/// VNIs are 24 bits.
const MAX_VNI: u32 = (1 << 24) - 1;
/// The kernel's limit on interface names (IFNAMSIZ - 1).
const MAX_IFNAME: usize = 15;

/// One overlay network on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlaySpec {
    /// The namespace that holds the network's bridge and VXLAN device (the caller picks the
    /// name, e.g. `shoal-ov-<node12>-<net12>`).
    pub netns: String,
    /// The network's VXLAN id, the same on every node (1 to 2^24-1).
    pub vni: u32,
    /// The network's subnet; every endpoint address must be in it.
    pub subnet: Ipv4Net,
    /// This node's underlay address: the source of its VXLAN packets, and what the other
    /// nodes use as this node's VTEP.
    pub local_vtep: Ipv4Addr,
    /// MTU of the bridge, the VXLAN device and the task interfaces.
    pub mtu: u32,
    /// The namespace `vxlan0`'s UDP socket lives in (the one holding `local_vtep`). `None`
    /// means the namespace of the thread that runs [`ensure_overlay`]; on a tokio worker that
    /// is the process's own. Only [`ensure_overlay`] uses it.
    pub underlay_netns: Option<String>,
}

impl OverlaySpec {
    /// A spec with the default MTU whose underlay is the caller's namespace.
    pub fn new(netns: impl Into<String>, vni: u32, subnet: Ipv4Net, local_vtep: Ipv4Addr) -> Self {
        OverlaySpec {
            netns: netns.into(),
            vni,
            subnet,
            local_vtep,
            mtu: OVERLAY_MTU,
            underlay_netns: None,
        }
    }

    fn invalid(&self, reason: String) -> NetError {
        NetError::InvalidOverlay {
            netns: self.netns.clone(),
            reason,
        }
    }

    fn validate(&self) -> Result<()> {
        validate_netns_name(&self.netns)?;
        if let Some(underlay) = &self.underlay_netns {
            validate_netns_name(underlay)?;
        }
        if !(1..=MAX_VNI).contains(&self.vni) {
            return Err(self.invalid(format!("VNI {} is out of range: use 1-{MAX_VNI}", self.vni)));
        }
        if !(68..=65535).contains(&self.mtu) {
            return Err(self.invalid(format!("MTU {} is out of range: use 68-65535", self.mtu)));
        }
        if self.local_vtep.is_unspecified() || self.local_vtep.is_multicast() {
            return Err(self.invalid(format!(
                "local VTEP {} must be the node's unicast underlay address",
                self.local_vtep
            )));
        }
        Ok(())
    }

    /// Checks that `addr` belongs to this network.
    fn check_addr(&self, addr: Ipv4Addr, shown: String) -> Result<()> {
        if self.subnet.contains(&addr) {
            Ok(())
        } else {
            Err(NetError::AddressOutsideSubnet {
                addr: shown,
                subnet: self.subnet.to_string(),
                netns: self.netns.clone(),
            })
        }
    }
}

/// The MAC of the endpoint with address `addr`: `02:42` and the four address bytes, as
/// Docker does. Every node derives the same MAC, so none has to be exchanged.
pub fn mac_for(addr: Ipv4Addr) -> Mac {
    let [a, b, c, d] = addr.octets();
    [0x02, 0x42, a, b, c, d]
}

/// The inverse of [`mac_for`], for MACs it made.
pub fn addr_for(mac: &Mac) -> Option<Ipv4Addr> {
    match mac {
        [0x02, 0x42, a, b, c, d] => Some(Ipv4Addr::new(*a, *b, *c, *d)),
        _ => None,
    }
}

/// The name of the bridge-side veth end of endpoint `addr`: `v`, the VNI and the address in
/// hex (at most 1 + 6 + 8 = 15 characters). Unique per node, and it encodes the address, so
/// [`observe`] reads the attachments back from the link names alone.
pub fn host_ifname(vni: u32, addr: Ipv4Addr) -> String {
    format!("v{vni:x}{:08x}", u32::from(addr))
}

fn parse_host_ifname(vni: u32, name: &str) -> Option<Ipv4Addr> {
    let hex = name.strip_prefix(&format!("v{vni:x}"))?;
    if hex.len() != 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(hex, 16).ok().map(Ipv4Addr::from)
}

fn validate_ifname(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_IFNAME
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(NetError::InvalidLinkName(name.to_string()))
    }
}

fn has_errno(err: &NetError, errno: nix::errno::Errno) -> bool {
    err.errno() == Some(errno as i32)
}

/// What `vxlan0` was made with, as far as [`ensure_overlay`] checks it.
#[derive(Debug, Default, PartialEq, Eq)]
struct VxlanConfig {
    vni: Option<u32>,
    local: Option<Ipv4Addr>,
    port: Option<u16>,
}

impl std::fmt::Display for VxlanConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn or_unset<T: ToString>(v: Option<T>) -> String {
            v.map_or_else(|| "unset".to_string(), |v| v.to_string())
        }
        write!(
            f,
            "VNI {} local {} dstport {}",
            or_unset(self.vni),
            or_unset(self.local),
            or_unset(self.port)
        )
    }
}

/// The kind and, for a VXLAN device, the configuration of link `name`, if there is one.
async fn link_config(nl: &Netlink, name: &str) -> Result<Option<(String, VxlanConfig)>> {
    let msgs: Vec<LinkMessage> = nl
        .handle()
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| NetError::netlink(format!("list links in {}", nl.place()), e))?;
    let Some(msg) = msgs.iter().find(|m| {
        m.attributes
            .contains(&LinkAttribute::IfName(name.to_string()))
    }) else {
        return Ok(None);
    };
    let mut kind = String::new();
    let mut cfg = VxlanConfig::default();
    for attr in &msg.attributes {
        let LinkAttribute::LinkInfo(infos) = attr else {
            continue;
        };
        for info in infos {
            match info {
                NlLinkInfo::Kind(k) => kind = k.to_string(),
                NlLinkInfo::Data(InfoData::Vxlan(data)) => {
                    for d in data {
                        match d {
                            InfoVxlan::Id(id) => cfg.vni = Some(*id),
                            InfoVxlan::Local(ip) => cfg.local = Some(*ip),
                            InfoVxlan::Port(port) => cfg.port = Some(*port),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
    }
    Ok(Some((kind, cfg)))
}

/// Creates (or checks) the overlay namespace of `spec` with its bridge and VXLAN device,
/// all up. Idempotent; a namespace built for another VNI, VTEP or port is an error, not
/// something to patch.
pub async fn ensure_overlay(spec: &OverlaySpec) -> Result<()> {
    spec.validate()?;
    let mut created = false;
    if !netns_exists(&spec.netns) {
        match create_netns(&spec.netns) {
            Ok(()) => created = true,
            // Another caller made it meanwhile; the rest is idempotent.
            Err(NetError::NetnsExists(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let outcome = build_overlay(spec).await;
    if outcome.is_err() && created {
        // Do not leave a half-built namespace that the next call would take for ours.
        if let Err(undo) = remove_overlay(&spec.netns).await {
            tracing::warn!(netns = %spec.netns, error = %undo, "failed to remove a half-built overlay namespace");
        }
    }
    outcome
}

async fn build_overlay(spec: &OverlaySpec) -> Result<()> {
    let ov = Netlink::in_netns(&spec.netns).await?;
    ov.set_lo_up().await?;

    let bridge = match link_config(&ov, BRIDGE).await? {
        None => ov.create_bridge(BRIDGE).await?,
        Some((kind, _)) if kind == "bridge" => ov.index_of(BRIDGE).await?,
        Some((kind, _)) => {
            return Err(mismatch(
                spec,
                format!("{BRIDGE} is a {kind} link, not a bridge"),
            ));
        }
    };
    ov.set_mtu(BRIDGE, spec.mtu).await?;

    match link_config(&ov, VXLAN).await? {
        None => create_vxlan(spec).await?,
        Some((kind, cfg)) => {
            let want = VxlanConfig {
                vni: Some(spec.vni),
                local: Some(spec.local_vtep),
                port: Some(VXLAN_PORT),
            };
            if kind != "vxlan" || cfg != want {
                return Err(mismatch(
                    spec,
                    format!("{VXLAN} is {kind} with {cfg}, expected vxlan with {want}"),
                ));
            }
        }
    }
    let vxlan = ov.link(VXLAN).await?.ok_or_else(|| NetError::NoSuchLink {
        link: VXLAN.to_string(),
        netns: ov.place(),
    })?;
    if vxlan.controller != Some(bridge) {
        ov.set_controller(VXLAN, BRIDGE).await?;
    }
    ov.set_up(VXLAN).await?;
    ov.set_up(BRIDGE).await?;
    tracing::debug!(netns = %spec.netns, vni = spec.vni, "overlay network ready");
    Ok(())
}

fn mismatch(spec: &OverlaySpec, what: String) -> NetError {
    NetError::OverlayMismatch {
        netns: spec.netns.clone(),
        what,
    }
}

/// Creates `vxlan0` from the underlay namespace directly into the overlay namespace (like
/// `ip link add vxlan0 netns OVERLAY type vxlan ...` run in the underlay). The kernel opens
/// the device's UDP socket, when it goes up, in the namespace the request came from; that is
/// what carries the tunnel over the underlay while the device sits on the overlay's bridge.
/// One request instead of create-then-move: no temporary name in the underlay, and nothing
/// left there if we crash.
async fn create_vxlan(spec: &OverlaySpec) -> Result<()> {
    let underlay = match &spec.underlay_netns {
        Some(ns) => Netlink::in_netns(ns).await?,
        None => Netlink::current()?,
    };
    let target = open_netns(&spec.netns)?;
    let msg = LinkVxlan::new(VXLAN, spec.vni)
        .port(VXLAN_PORT)
        .local(spec.local_vtep)
        // Remote endpoints come from shoal's endpoint table as static entries; learning
        // would let any packet that reaches the port rewrite them.
        .learning(false)
        // Answer ARP for remote endpoints from the static neighbour table instead of
        // sending the request anywhere.
        .proxy(true)
        .mtu(spec.mtu)
        .setns_by_fd(target.as_raw_fd())
        .build();
    // `target` stays open until the kernel has answered.
    let outcome = underlay.handle().link().add(msg).execute().await;
    drop(target);
    outcome.map_err(|e| {
        let err = NetError::netlink(
            format!(
                "create {VXLAN} (VNI {}) from {} in netns {}",
                spec.vni,
                underlay.place(),
                spec.netns
            ),
            e,
        );
        // The name is free in the overlay namespace (checked above), so EEXIST is the VNI.
        if has_errno(&err, nix::errno::Errno::EEXIST) {
            NetError::VniInUse {
                vni: spec.vni,
                underlay: underlay.place(),
            }
        } else {
            err
        }
    })
}

/// Deletes overlay namespace `netns` with everything in it. Returns `false` if there was none.
///
/// The veths and `vxlan0` are deleted first: the kernel tears a namespace down
/// asynchronously, and until it has, the task interfaces would linger in the sandboxes and
/// the VNI would stay taken in the underlay (so an immediate `ensure_overlay` would fail).
pub async fn remove_overlay(netns: &str) -> Result<bool> {
    validate_netns_name(netns)?;
    if !netns_exists(netns) {
        return delete_netns(netns);
    }
    {
        let ov = Netlink::in_netns(netns).await?;
        for link in ov.links().await? {
            if matches!(link.kind.as_deref(), Some("veth" | "vxlan")) {
                match ov.delete_link(&link.name).await {
                    // Gone meanwhile (a sandbox that went away takes its veth with it).
                    Err(NetError::NoSuchLink { .. }) => {}
                    Err(e) if has_errno(&e, nix::errno::Errno::ENODEV) => {}
                    other => other?,
                }
            }
        }
    }
    delete_netns(netns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_encode_the_address_and_back() {
        let addr = Ipv4Addr::new(10, 0, 9, 3);
        assert_eq!(mac_for(addr), [0x02, 0x42, 10, 0, 9, 3]);
        assert_eq!(addr_for(&mac_for(addr)), Some(addr));
        assert_eq!(addr_for(&[0x0a, 0x42, 10, 0, 9, 3]), None);
    }

    #[test]
    fn host_names_fit_and_parse_back() {
        let addr = Ipv4Addr::new(10, 255, 0, 17);
        let name = host_ifname(MAX_VNI, addr);
        assert_eq!(name, "vffffff0aff0011");
        assert!(name.len() <= MAX_IFNAME);
        assert_eq!(parse_host_ifname(MAX_VNI, &name), Some(addr));
        assert_eq!(
            host_ifname(0x1001, Ipv4Addr::new(10, 0, 9, 2)),
            "v10010a000902"
        );
        // Another VNI's prefix, a short tail and non-hex are not ours.
        assert_eq!(parse_host_ifname(0x100, "v10010a000902"), None);
        assert_eq!(parse_host_ifname(0x1001, "v10010a0009"), None);
        assert_eq!(parse_host_ifname(0x1001, "v1001zz000902"), None);
        assert_eq!(parse_host_ifname(0x1001, "vxlan0"), None);
    }

    #[test]
    fn specs_and_names_are_checked() {
        let subnet: Ipv4Net = "10.0.9.0/24".parse().unwrap();
        let ok = OverlaySpec::new("shoal-ov-a", 4097, subnet, Ipv4Addr::new(172, 30, 41, 1));
        assert!(ok.validate().is_ok());
        for bad in [
            OverlaySpec {
                vni: 0,
                ..ok.clone()
            },
            OverlaySpec {
                vni: MAX_VNI + 1,
                ..ok.clone()
            },
            OverlaySpec {
                mtu: 60,
                ..ok.clone()
            },
            OverlaySpec {
                local_vtep: Ipv4Addr::UNSPECIFIED,
                ..ok.clone()
            },
        ] {
            let err = bad.validate().unwrap_err();
            assert!(matches!(err, NetError::InvalidOverlay { .. }), "{err:?}");
        }
        let err = ok
            .check_addr(Ipv4Addr::new(10, 0, 10, 2), "10.0.10.2".into())
            .unwrap_err();
        assert!(err.to_string().contains("10.0.9.0/24"), "{err}");
        assert!(validate_ifname("eth0").is_ok());
        for bad in ["", "a/b", "eth 0", "x:1", "sixteen-chars-xx"] {
            assert!(validate_ifname(bad).is_err(), "{bad:?}");
        }
    }
}
