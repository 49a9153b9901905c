//! The byte layout of the maps' keys and values, shared with `bpf/sock_lb.c` (change both
//! together). Pure.
//!
//! Keys and values travel as byte arrays so that no `unsafe impl Pod` is needed: integers the
//! programs only compare or index with are in host order, addresses and ports in network order
//! as the kernel's `struct bpf_sock_addr` holds them.

use std::net::Ipv4Addr;

/// Network index 0 in `membership` marks "a sandbox of this node" (real networks start at 1).
pub const NODE_SANDBOX: u32 = 0;

/// IP protocol numbers as `bpf_sock_addr.protocol` gives them; 0 = every protocol.
pub const PROTO_ANY: u8 = 0;

/// `struct member_key`: {netns cookie u64, network index u32, pad u32}.
pub fn member_key(netns_cookie: u64, net: u32) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&netns_cookie.to_ne_bytes());
    k[8..12].copy_from_slice(&net.to_ne_bytes());
    k
}

/// `struct svc_key`: {VIP be32, port be16, proto u8, pad u8}.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SvcKey {
    pub vip: Ipv4Addr,
    /// 0 with `proto` 0: every port.
    pub port: u16,
    pub proto: u8,
}

impl SvcKey {
    pub fn encode(&self) -> [u8; 8] {
        let mut k = [0u8; 8];
        k[..4].copy_from_slice(&self.vip.octets());
        k[4..6].copy_from_slice(&self.port.to_be_bytes());
        k[6] = self.proto;
        k
    }
}

/// `struct svc_val`: {service index, network index, backend count, round-robin counter}.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SvcVal {
    pub index: u32,
    pub net: u32,
    pub count: u32,
}

impl SvcVal {
    /// The counter starts at 0: rewriting the entry (a change in the number of backends)
    /// restarts the rotation, which is harmless.
    pub fn encode(&self) -> [u8; 16] {
        let mut v = [0u8; 16];
        v[..4].copy_from_slice(&self.index.to_ne_bytes());
        v[4..8].copy_from_slice(&self.net.to_ne_bytes());
        v[8..12].copy_from_slice(&self.count.to_ne_bytes());
        v
    }

    pub fn decode(v: &[u8; 16]) -> (SvcVal, u32) {
        let word = |i: usize| u32::from_ne_bytes([v[i], v[i + 1], v[i + 2], v[i + 3]]);
        (
            SvcVal {
                index: word(0),
                net: word(4),
                count: word(8),
            },
            word(12),
        )
    }
}

/// `struct be_key`: {service index, slot}.
pub fn backend_key(service: u32, slot: u32) -> [u8; 8] {
    let mut k = [0u8; 8];
    k[..4].copy_from_slice(&service.to_ne_bytes());
    k[4..].copy_from_slice(&slot.to_ne_bytes());
    k
}

/// `struct be_val`: {address be32, port be16 (0 = keep the requested port), pad}.
pub fn backend_val(addr: Ipv4Addr, port: u16) -> [u8; 8] {
    let mut v = [0u8; 8];
    v[..4].copy_from_slice(&addr.octets());
    v[4..6].copy_from_slice(&port.to_be_bytes());
    v
}

/// `struct conn_key`: {VIP be32, backend address be32} -> (VIP, backend).
pub fn decode_conn_key(k: &[u8; 8]) -> (Ipv4Addr, Ipv4Addr) {
    (
        Ipv4Addr::new(k[0], k[1], k[2], k[3]),
        Ipv4Addr::new(k[4], k[5], k[6], k[7]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_c_structs() {
        let k = SvcKey {
            vip: Ipv4Addr::new(10, 0, 0, 2),
            port: 80,
            proto: 6,
        };
        assert_eq!(k.encode(), [10, 0, 0, 2, 0, 80, 6, 0]);
        assert_eq!(
            backend_val(Ipv4Addr::new(10, 0, 0, 9), 0),
            [10, 0, 0, 9, 0, 0, 0, 0]
        );
        let v = SvcVal {
            index: 7,
            net: 3,
            count: 2,
        };
        assert_eq!(SvcVal::decode(&v.encode()), (v, 0));
        assert_eq!(&member_key(1, 2)[8..12], &2u32.to_ne_bytes());
        assert_eq!(
            decode_conn_key(&[10, 0, 0, 2, 10, 0, 0, 9]),
            (Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 9))
        );
    }
}
