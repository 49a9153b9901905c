//! Static neighbour (ARP) entries and VXLAN forwarding-database (FDB) entries, on a
//! [`Netlink`].
//!
//! Both are neighbour messages to the kernel: family `AF_INET` for ARP entries, `AF_BRIDGE`
//! for FDB entries. Every entry made here is permanent (never aged out, never probed): shoal
//! knows where each endpoint is and says so, instead of letting the kernel learn or flood.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};

use crate::error::{NetError, Result};
use crate::link::Netlink;

/// A MAC address.
pub type Mac = [u8; 6];

/// A unicast FDB entry of a VXLAN device: frames for `mac` are sent to the VTEP `dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FdbRemote {
    /// The destination MAC of inner frames.
    pub mac: Mac,
    /// The underlay address of the node that has it.
    pub dst: Ipv4Addr,
}

/// An IPv4 neighbour (ARP) entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    /// The neighbour's IP address.
    pub addr: Ipv4Addr,
    /// Its link-layer address, if the entry has one (an incomplete entry has none).
    pub mac: Option<Mac>,
    /// Whether it is a static (`permanent`) entry rather than one the kernel resolved.
    pub permanent: bool,
}

/// Formats a MAC the way `ip` does, for messages.
pub fn format_mac(mac: &Mac) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

fn as_mac(bytes: &[u8]) -> Option<Mac> {
    bytes.try_into().ok()
}

/// The kernel's "no such entry" answer to a delete.
fn is_enoent(err: &NetError) -> bool {
    err.errno() == Some(nix::errno::Errno::ENOENT as i32)
}

impl Netlink {
    /// Adds or replaces the FDB entry `MAC dev LINK dst DST self permanent`.
    ///
    /// Replacing moves an existing entry for `mac` to `dst` in one step, so an endpoint that
    /// changes node never has a moment without an entry.
    pub async fn replace_fdb_remote(&self, link: &str, mac: Mac, dst: Ipv4Addr) -> Result<()> {
        let index = self.index_of(link).await?;
        self.handle()
            .neighbours()
            .add_bridge(index, &mac)
            // NTF_SELF: the entry belongs to the VXLAN device's own table. Without it the
            // kernel hands a request for a bridge port to the bridge's table, which has no
            // notion of a remote VTEP.
            .flags(NeighbourFlags::Own)
            .state(NeighbourState::Permanent)
            .destination(IpAddr::V4(dst))
            .replace()
            .execute()
            .await
            .map_err(|e| {
                NetError::netlink(
                    format!(
                        "add FDB entry {} dst {dst} on {link} in {}",
                        format_mac(&mac),
                        self.place()
                    ),
                    e,
                )
            })
    }

    /// Deletes the FDB entry for `mac` on `link`: only its remote `dst` if given, else the
    /// whole entry. Returns whether the kernel had an entry for `mac`.
    ///
    /// Kernel behaviour worth knowing: deleting with a `dst` the entry does not have succeeds
    /// and changes nothing; callers that care read [`Netlink::fdb_remotes`] afterwards.
    pub async fn delete_fdb_remote(
        &self,
        link: &str,
        mac: Mac,
        dst: Option<Ipv4Addr>,
    ) -> Result<bool> {
        let index = self.index_of(link).await?;
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Bridge;
        msg.header.ifindex = index;
        msg.header.flags = NeighbourFlags::Own;
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        if let Some(dst) = dst {
            msg.attributes
                .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(dst)));
        }
        let outcome = self
            .handle()
            .neighbours()
            .del(msg)
            .execute()
            .await
            .map_err(|e| {
                NetError::netlink(
                    format!(
                        "delete FDB entry {} on {link} in {}",
                        format_mac(&mac),
                        self.place()
                    ),
                    e,
                )
            });
        match outcome {
            Ok(()) => Ok(true),
            Err(e) if is_enoent(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The unicast FDB entries with an IPv4 remote in `link`'s own table (`bridge fdb show
    /// dev LINK self`), one per (MAC, remote).
    pub async fn fdb_remotes(&self, link: &str) -> Result<Vec<FdbRemote>> {
        let index = self.index_of(link).await?;
        let msgs: Vec<NeighbourMessage> = self
            .handle()
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute()
            .try_collect()
            .await
            .map_err(|e| NetError::netlink(format!("list FDB entries in {}", self.place()), e))?;
        let mut out = Vec::new();
        for msg in msgs.iter().filter(|m| {
            // The dump covers every device, and for a bridge port also the bridge's entries
            // (NTF_MASTER) about it; only the device's own ones carry remotes.
            m.header.ifindex == index && m.header.flags.contains(NeighbourFlags::Own)
        }) {
            let mut mac = None;
            let mut dst = None;
            for attr in &msg.attributes {
                match attr {
                    NeighbourAttribute::LinkLayerAddress(bytes) => mac = as_mac(bytes),
                    // With family AF_BRIDGE the parser cannot know NDA_DST's family and
                    // leaves the raw bytes; four of them are an IPv4 address.
                    NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) => {
                        dst = <[u8; 4]>::try_from(bytes.as_slice())
                            .ok()
                            .map(Ipv4Addr::from);
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => {
                        dst = Some(*ip);
                    }
                    _ => {}
                }
            }
            if let (Some(mac), Some(dst)) = (mac, dst) {
                out.push(FdbRemote { mac, dst });
            }
        }
        Ok(out)
    }

    /// Adds or replaces the permanent neighbour entry `ADDR lladdr MAC dev LINK`.
    pub async fn replace_neighbour(&self, link: &str, addr: Ipv4Addr, mac: Mac) -> Result<()> {
        let index = self.index_of(link).await?;
        self.handle()
            .neighbours()
            .add(index, IpAddr::V4(addr))
            .link_layer_address(&mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(|e| {
                NetError::netlink(
                    format!(
                        "add neighbour {addr} lladdr {} on {link} in {}",
                        format_mac(&mac),
                        self.place()
                    ),
                    e,
                )
            })
    }

    /// Deletes the neighbour entry for `addr` on `link`. Returns whether there was one.
    pub async fn delete_neighbour(&self, link: &str, addr: Ipv4Addr) -> Result<bool> {
        let index = self.index_of(link).await?;
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.ifindex = index;
        msg.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                addr,
            )));
        let outcome = self
            .handle()
            .neighbours()
            .del(msg)
            .execute()
            .await
            .map_err(|e| {
                NetError::netlink(
                    format!("delete neighbour {addr} on {link} in {}", self.place()),
                    e,
                )
            });
        match outcome {
            Ok(()) => Ok(true),
            Err(e) if is_enoent(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The IPv4 neighbour entries on `link`.
    pub async fn neighbours(&self, link: &str) -> Result<Vec<Neighbour>> {
        let index = self.index_of(link).await?;
        let msgs: Vec<NeighbourMessage> = self
            .handle()
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Inet)
            .execute()
            .try_collect()
            .await
            .map_err(|e| NetError::netlink(format!("list neighbours in {}", self.place()), e))?;
        let mut out = Vec::new();
        for msg in msgs.iter().filter(|m| m.header.ifindex == index) {
            let mut addr = None;
            let mut mac = None;
            for attr in &msg.attributes {
                match attr {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => {
                        addr = Some(*ip);
                    }
                    NeighbourAttribute::LinkLayerAddress(bytes) => mac = as_mac(bytes),
                    _ => {}
                }
            }
            if let Some(addr) = addr {
                out.push(Neighbour {
                    addr,
                    mac,
                    permanent: msg.header.state == NeighbourState::Permanent,
                });
            }
        }
        Ok(out)
    }
}
