//! Closing the UDP sockets connected through a VIP to a backend that left (the I/O).
//!
//! connect4 translates a UDP socket's VIP once; when that task goes, the socket would send
//! into the void. `shoal_udp_close` (an `iter/udp` program in bpf/sock_lb.c) destroys such
//! sockets with the kfunc `bpf_sock_destroy()` (Linux 6.5+): the application's next receive
//! fails with ECONNABORTED (a send, with EDESTADDRREQ: the socket is no longer connected) and
//! it connects again, through the VIP, to a live task. As Cilium's socket balancer does.
//!
//! An iterator walks the sockets of the network namespace it is opened in, so it is opened
//! from a thread inside each sandbox that `udp_peers` says has a UDP socket connected to one
//! of the removed backends: none in the common case (no connected UDP client, nothing walked),
//! whatever the number of sandboxes on the node.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::Ipv4Addr;

use aya::programs::Iter;

use crate::error::BpfError;
use crate::loader::{SockLb, ignore_missing};

/// The iterator program, by function name in bpf/sock_lb.c.
const PROGRAM: &str = "shoal_udp_close";

/// Loads the iterator (after [`crate::kfunc::patch`] made its call a kfunc call); the error
/// says why it cannot run here.
pub(crate) fn load_iterator(ebpf: &mut aya::Ebpf, btf: &aya::Btf) -> Result<(), String> {
    let prog: &mut Iter = ebpf
        .program_mut(PROGRAM)
        .ok_or_else(|| format!("the object has no program {PROGRAM}"))?
        .try_into()
        .map_err(|e| format!("{PROGRAM} is not an iterator: {e}"))?;
    prog.load("udp", btf).map_err(|e| {
        format!("the kernel refused {PROGRAM} (bpf_sock_destroy needs Linux 6.5+): {e}")
    })
}

/// What [`SockLb::close_udp`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClosedUdp {
    /// Sandboxes walked (those with a UDP socket connected to a removed backend).
    pub namespaces: usize,
    /// Sockets destroyed.
    pub sockets: usize,
}

/// `struct udp_peer_key`'s fields: {netns cookie u64, address be32, pad}.
fn decode_peer(k: &[u8; 16]) -> (u64, Ipv4Addr) {
    let mut cookie = [0u8; 8];
    cookie.copy_from_slice(&k[..8]);
    (
        u64::from_ne_bytes(cookie),
        Ipv4Addr::new(k[8], k[9], k[10], k[11]),
    )
}

impl SockLb {
    /// Whether [`SockLb::close_udp`] can close sockets here, or why not.
    pub fn udp_close_unavailable(&self) -> Option<&str> {
        self.udp_close_unavailable.as_deref()
    }

    /// Destroys the UDP sockets that connect4 pointed, through a VIP, at one of `removed`
    /// (backends that just left: [`crate::Applied::removed`]), in each sandbox that has one.
    /// `netns_of` names a sandbox's namespace (under /run/netns) by its netns cookie; a
    /// sandbox it does not know is gone, and with it its sockets. Call after `apply` took the
    /// backends out of the maps (a socket connecting again must not get one of them back), and
    /// before the change is acknowledged (the task is told to stop after that).
    pub async fn close_udp(
        &mut self,
        removed_addrs: &[Ipv4Addr],
        netns_of: impl Fn(u64) -> Option<String>,
    ) -> Result<ClosedUdp, BpfError> {
        let mut done = ClosedUdp::default();
        if removed_addrs.is_empty() || self.udp_close_unavailable.is_some() {
            return Ok(done);
        }
        // A lookup per removed backend first: with no UDP socket ever connected to one of
        // them (the common case), `udp_peers` is not walked (a walk reads every bucket of the
        // map, one bpf() call per entry, on every scale-down).
        let mut removed: BTreeSet<Ipv4Addr> = BTreeSet::new();
        for a in removed_addrs {
            match self.udp_backends.get(&a.octets(), 0) {
                Ok(_) => {
                    removed.insert(*a);
                }
                Err(aya::maps::MapError::KeyNotFound) => {}
                Err(source) => return Err(map_err("read", "udp_backends", source)),
            }
        }
        if removed.is_empty() {
            return Ok(done);
        }
        let mut by_netns: BTreeMap<u64, Vec<[u8; 16]>> = BTreeMap::new();
        for key in self.udp_peers.keys() {
            let key = key.map_err(|source| map_err("read", "udp_peers", source))?;
            let (cookie, addr) = decode_peer(&key);
            if removed.contains(&addr) {
                by_netns.entry(cookie).or_default().push(key);
            }
        }
        if by_netns.is_empty() {
            // LRU evicted them: nothing to close, nothing to look up next time.
            self.forget_udp_backends(&removed)?;
            return Ok(done);
        }
        let closing: Vec<[u8; 4]> = by_netns
            .values()
            .flatten()
            .map(|k| [k[8], k[9], k[10], k[11]])
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for a in &closing {
            self.closing
                .insert(a, 1u8, 0)
                .map_err(|source| map_err("write", "closing", source))?;
        }
        let mut outcome = Ok(());
        for (cookie, keys) in &by_netns {
            if let Some(netns) = netns_of(*cookie) {
                match self.walk(&netns).await {
                    Ok(n) => {
                        done.namespaces += 1;
                        done.sockets += n;
                    }
                    Err(e) => {
                        outcome = Err(e);
                        continue; // its entries stay: the next removal tries again
                    }
                }
            }
            for k in keys {
                ignore_missing(self.udp_peers.remove(k))
                    .map_err(|source| map_err("delete", "udp_peers", source))?;
            }
        }
        for a in &closing {
            ignore_missing(self.closing.remove(a))
                .map_err(|source| map_err("delete", "closing", source))?;
        }
        // After a failed walk the entries stay, and their addresses with them (tried again).
        if outcome.is_ok() {
            self.forget_udp_backends(&removed)?;
        }
        outcome.map(|()| done)
    }

    fn forget_udp_backends(&mut self, addrs: &BTreeSet<Ipv4Addr>) -> Result<(), BpfError> {
        for a in addrs {
            ignore_missing(self.udp_backends.remove(&a.octets()))
                .map_err(|source| map_err("delete", "udp_backends", source))?;
        }
        Ok(())
    }

    /// One pass of the iterator in namespace `netns`: how many sockets it destroyed.
    async fn walk(&mut self, netns: &str) -> Result<usize, BpfError> {
        let prog: &mut Iter = self
            .ebpf
            .program_mut(PROGRAM)
            .ok_or(BpfError::Missing {
                kind: "program",
                name: PROGRAM,
            })?
            .try_into()
            .map_err(|source| program_err("open", source))?;
        let id = prog
            .attach()
            .map_err(|source| program_err("attach", source))?;
        let link = prog
            .take_link(id)
            .map_err(|source| program_err("take the link of", source))?;
        let name = netns.to_string();
        // The iterator binds to the namespace of the thread that opens it (bpf_iter_create);
        // reading it runs the program over that namespace's UDP sockets.
        shoal_net::run_in_netns_async(netns, move || -> Result<usize, BpfError> {
            let walk_err = |source: std::io::Error| BpfError::UdpClose {
                netns: name.clone(),
                source,
            };
            let mut file = link
                .into_file()
                .map_err(|e| walk_err(std::io::Error::other(e)))?;
            let mut out = Vec::new();
            file.read_to_end(&mut out).map_err(walk_err)?;
            // One socket cookie (8 bytes) per socket destroyed.
            Ok(out.len() / 8)
        })
        .await?
    }
}

fn map_err(action: &'static str, map: &'static str, source: aya::maps::MapError) -> BpfError {
    BpfError::Map {
        action,
        map,
        source,
    }
}

fn program_err(action: &'static str, source: aya::programs::ProgramError) -> BpfError {
    BpfError::Iterator { action, source }
}
