//! The routing mesh's tc maps (`bpf/tc_mesh.c`): the node's published ports as map entries,
//! their byte layouts (shared with the C file; change both together), and the operations
//! between what is programmed and what is wanted. Pure.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// `skb->mark` of a packet the program leaves to nftables for a backend on another node:
/// `MESH_MARK | index`, index being the nftables chain of that backend.
pub const MESH_MARK: u32 = 0x5348_0000;
/// Slots of a port's local-only list.
const LOCAL_LIST: u32 = 0x8000_0000;
const KIND_LOCAL: u8 = 1;
const KIND_REMOTE: u8 = 2;
const FLAG_LOCAL_ONLY: u32 = 1;

/// Where one backend of a published port is, as the program needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MeshBackend {
    /// A task on this node: its gateway address and MAC, the target port, the host-side veth.
    Local {
        addr: Ipv4Addr,
        mac: [u8; 6],
        port: u16,
        ifindex: u32,
    },
    /// A task on another node: left to nftables, whose chain `index` of the port reaches it.
    Remote { node: Ipv4Addr, index: u16 },
}

/// One published port on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshPort {
    /// `libc::IPPROTO_TCP` or `IPPROTO_UDP`.
    pub proto: u8,
    pub port: u16,
    /// `traffic=local` or `mode=host`: this node's tasks only, the client's address kept.
    pub local_only: bool,
    /// Every task of the service, round robin in this order.
    pub backends: Vec<MeshBackend>,
}

/// What the node's tc program serves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MeshConfig {
    /// The node's underlay address, the one published ports answer on at tc.
    pub node_addr: Option<Ipv4Addr>,
    /// The other nodes' addresses (flows they forward with DSCP 43 stay here).
    pub peers: BTreeSet<Ipv4Addr>,
    pub ports: Vec<MeshPort>,
}

/// One backend's count of new flows through a published port (`struct conn_key` → u64).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct MeshCount {
    pub port: u16,
    pub proto: u8,
    /// True: a task on this node (`addr` is its gateway address); false: forwarded to the
    /// node at `addr`.
    pub local: bool,
    pub addr: Ipv4Addr,
    pub count: u64,
}

impl MeshCount {
    /// From `struct conn_key` {addr be32, port be16, proto u8, kind u8} and its count.
    pub fn decode(k: &[u8; 8], count: u64) -> MeshCount {
        MeshCount {
            addr: Ipv4Addr::new(k[0], k[1], k[2], k[3]),
            port: u16::from_be_bytes([k[4], k[5]]),
            proto: k[6],
            local: k[7] == KIND_LOCAL,
            count,
        }
    }
}

pub type PubKey = [u8; 8];
pub type PubVal = [u8; 16];
pub type BeKey = [u8; 8];
pub type BeVal = [u8; 20];

/// The map contents a config stands for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MeshEntries {
    pub published: BTreeMap<PubKey, PubVal>,
    pub backends: BTreeMap<BeKey, BeVal>,
    pub peers: BTreeSet<[u8; 4]>,
}

/// One write to the maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MeshOp {
    PutBackend(BeKey, BeVal),
    PutPublished(PubKey, PubVal),
    PutPeer([u8; 4]),
    DeletePublished(PubKey),
    DeleteBackend(BeKey),
    DeletePeer([u8; 4]),
}

fn pub_key(addr: Ipv4Addr, port: u16, proto: u8) -> PubKey {
    let mut k = [0u8; 8];
    k[..4].copy_from_slice(&addr.octets());
    k[4..6].copy_from_slice(&port.to_be_bytes());
    k[6] = proto;
    k
}

/// `struct pub_val`: {id u32, count u16, local_count u16, rr u32, flags u32}. The counter
/// starts at 0: rewriting the entry restarts the rotation, which is harmless.
fn pub_val(id: u32, count: u16, local_count: u16, local_only: bool) -> PubVal {
    let mut v = [0u8; 16];
    v[..4].copy_from_slice(&id.to_ne_bytes());
    v[4..6].copy_from_slice(&count.to_ne_bytes());
    v[6..8].copy_from_slice(&local_count.to_ne_bytes());
    let flags = if local_only { FLAG_LOCAL_ONLY } else { 0 };
    v[12..16].copy_from_slice(&flags.to_ne_bytes());
    v
}

fn be_key(id: u32, slot: u32) -> BeKey {
    let mut k = [0u8; 8];
    k[..4].copy_from_slice(&id.to_ne_bytes());
    k[4..8].copy_from_slice(&slot.to_ne_bytes());
    k
}

/// `struct be_val`: {addr be32, port be16, kind u8, pad u8, ifindex u32, index u16, mac[6]}.
fn be_val(b: &MeshBackend) -> BeVal {
    let mut v = [0u8; 20];
    match b {
        MeshBackend::Local {
            addr,
            mac,
            port,
            ifindex,
        } => {
            v[..4].copy_from_slice(&addr.octets());
            v[4..6].copy_from_slice(&port.to_be_bytes());
            v[6] = KIND_LOCAL;
            v[8..12].copy_from_slice(&ifindex.to_ne_bytes());
            v[14..20].copy_from_slice(mac);
        }
        MeshBackend::Remote { node, index } => {
            v[..4].copy_from_slice(&node.octets());
            v[6] = KIND_REMOTE;
            v[12..14].copy_from_slice(&index.to_ne_bytes());
        }
    }
    v
}

impl MeshConfig {
    /// The map contents: port `i` of the config gets id `i`; its backends take slots
    /// 0..count, its local ones also the local list's slots. Ports beyond what a u16 counts
    /// are cut (a service with 65,536 tasks).
    pub fn entries(&self) -> MeshEntries {
        let mut e = MeshEntries::default();
        let Some(node) = self.node_addr else {
            return e;
        };
        e.peers = self.peers.iter().map(Ipv4Addr::octets).collect();
        for (id, p) in self.ports.iter().enumerate() {
            let id = id as u32;
            let all = if p.local_only {
                &[][..]
            } else {
                &p.backends[..p.backends.len().min(u16::MAX as usize)]
            };
            let local: Vec<&MeshBackend> = p
                .backends
                .iter()
                .filter(|b| matches!(b, MeshBackend::Local { .. }))
                .take(u16::MAX as usize)
                .collect();
            for (slot, b) in all.iter().enumerate() {
                e.backends.insert(be_key(id, slot as u32), be_val(b));
            }
            for (slot, b) in local.iter().enumerate() {
                e.backends
                    .insert(be_key(id, LOCAL_LIST | slot as u32), be_val(b));
            }
            e.published.insert(
                pub_key(node, p.port, p.proto),
                pub_val(id, all.len() as u16, local.len() as u16, p.local_only),
            );
        }
        e
    }
}

/// The writes from `old` to `new`, in an order the program can run through: backends before
/// the entries that count them, an entry shrunk before its slots go.
pub fn plan(old: &MeshEntries, new: &MeshEntries) -> Vec<MeshOp> {
    let mut ops = Vec::new();
    for (k, v) in &new.backends {
        if old.backends.get(k) != Some(v) {
            ops.push(MeshOp::PutBackend(*k, *v));
        }
    }
    for p in new.peers.difference(&old.peers) {
        ops.push(MeshOp::PutPeer(*p));
    }
    for (k, v) in &new.published {
        if old.published.get(k) != Some(v) {
            ops.push(MeshOp::PutPublished(*k, *v));
        }
    }
    for k in old.published.keys() {
        if !new.published.contains_key(k) {
            ops.push(MeshOp::DeletePublished(*k));
        }
    }
    for p in old.peers.difference(&new.peers) {
        ops.push(MeshOp::DeletePeer(*p));
    }
    for k in old.backends.keys() {
        if !new.backends.contains_key(k) {
            ops.push(MeshOp::DeleteBackend(*k));
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 1);

    fn local(last: u8) -> MeshBackend {
        MeshBackend::Local {
            addr: Ipv4Addr::new(172, 18, 0, last),
            mac: [2, 66, 172, 18, 0, last],
            port: 80,
            ifindex: 10 + u32::from(last),
        }
    }

    fn config(backends: Vec<MeshBackend>, local_only: bool) -> MeshConfig {
        MeshConfig {
            node_addr: Some(NODE),
            peers: [Ipv4Addr::new(192, 168, 50, 2)].into(),
            ports: vec![MeshPort {
                proto: 6,
                port: 8080,
                local_only,
                backends,
            }],
        }
    }

    #[test]
    fn layouts() {
        assert_eq!(pub_key(NODE, 8080, 6), [192, 168, 50, 1, 0x1f, 0x90, 6, 0]);
        let v = be_val(&local(3));
        assert_eq!(&v[..4], &[172, 18, 0, 3]);
        assert_eq!(&v[4..7], &[0, 80, KIND_LOCAL]);
        assert_eq!(u32::from_ne_bytes(v[8..12].try_into().unwrap()), 13);
        assert_eq!(&v[14..], &[2, 66, 172, 18, 0, 3]);
        let r = be_val(&MeshBackend::Remote {
            node: Ipv4Addr::new(192, 168, 50, 2),
            index: 1,
        });
        assert_eq!((r[6], u16::from_ne_bytes([r[12], r[13]])), (KIND_REMOTE, 1));
    }

    #[test]
    fn cluster_ports_list_every_task_and_the_local_ones_apart() {
        let remote = MeshBackend::Remote {
            node: Ipv4Addr::new(192, 168, 50, 2),
            index: 1,
        };
        let e = config(vec![local(3), remote.clone()], false).entries();
        assert_eq!(e.backends.len(), 3);
        assert_eq!(e.backends[&be_key(0, 1)], be_val(&remote));
        assert_eq!(e.backends[&be_key(0, LOCAL_LIST)], be_val(&local(3)));
        assert_eq!(
            e.published[&pub_key(NODE, 8080, 6)],
            pub_val(0, 2, 1, false)
        );
        // traffic=local: the local list alone.
        let e = config(vec![local(3), local(4)], true).entries();
        assert_eq!(e.published[&pub_key(NODE, 8080, 6)], pub_val(0, 0, 2, true));
        assert_eq!(e.backends.len(), 2);
        // Without the node's address the program serves nothing.
        let mut c = config(vec![local(3)], false);
        c.node_addr = None;
        assert_eq!(c.entries(), MeshEntries::default());
    }

    #[test]
    fn plan_orders_growth_and_shrinking() {
        let one = config(vec![local(3)], false).entries();
        let two = config(vec![local(3), local(4)], false).entries();
        let ops = plan(&one, &two);
        // Slot 1 and local slot 1 first, then the entry that counts them.
        assert!(matches!(
            ops[..],
            [
                MeshOp::PutBackend(..),
                MeshOp::PutBackend(..),
                MeshOp::PutPublished(..)
            ]
        ));
        let ops = plan(&two, &one);
        assert!(matches!(
            ops[..],
            [
                MeshOp::PutPublished(..),
                MeshOp::DeleteBackend(..),
                MeshOp::DeleteBackend(..)
            ]
        ));
        assert!(plan(&two, &two).is_empty());
        let gone = plan(&one, &MeshEntries::default());
        assert_eq!(
            gone.iter()
                .filter(|o| matches!(o, MeshOp::DeletePublished(_)))
                .count(),
            1
        );
        assert!(matches!(gone.last(), Some(MeshOp::DeleteBackend(_))));
        assert!(gone.contains(&MeshOp::DeletePeer([192, 168, 50, 2])));
    }
}
