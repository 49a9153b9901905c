//! The I/O of the routing mesh at tc: `bpf/tc_mesh.c` loaded from the embedded object,
//! `mesh_ingress` attached at the ingress of the node's underlay interface and `mesh_reply`
//! at the ingress of each task's host-side gateway veth, and the maps kept in step with the
//! node's published ports.
//!
//! Attachments are tcx links (Linux 6.6+; aya falls back to a clsact qdisc and netlink on
//! older kernels) held by this process only, so the programs go when the [`TcMesh`] is
//! dropped or the daemon dies, as the socket balancer's do. Interfaces are named in the
//! calling thread's network namespace: the node's.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use aya::maps::{HashMap, MapData};
use aya::programs::tc::SchedClassifierLinkId;
use aya::programs::{SchedClassifier, TcAttachType};

use crate::error::BpfError;
use crate::loader::{ignore_missing, take_hash};
use crate::mesh_maps::{BeKey, BeVal, MeshConfig, MeshEntries, MeshOp, PubKey, PubVal, plan};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tc_mesh.o"));
static BUILD_ERROR: &str = include_str!(concat!(env!("OUT_DIR"), "/tc_mesh.err"));

const INGRESS: &str = "mesh_ingress";
const REPLY: &str = "mesh_reply";

/// One node's published ports at tc.
pub struct TcMesh {
    ebpf: aya::Ebpf,
    published: HashMap<MapData, PubKey, PubVal>,
    backends: HashMap<MapData, BeKey, BeVal>,
    peers: HashMap<MapData, [u8; 4], u8>,
    /// The ifindex of each task veth in `tasks`: a connection under way keeps its local task
    /// only while that task's veth exists.
    task_veths: HashMap<MapData, u32, u8>,
    /// New flows per backend, counted by `mesh_ingress` (read, never written).
    conns: HashMap<MapData, [u8; 8], u64>,
    underlay: String,
    /// Host-side veth -> its `mesh_reply` link and its ifindex.
    tasks: BTreeMap<String, (SchedClassifierLinkId, u32)>,
    programmed: MeshEntries,
    /// False after a failed update: every entry is written again on the next one.
    in_sync: bool,
}

impl std::fmt::Debug for TcMesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcMesh")
            .field("underlay", &self.underlay)
            .field("ports", &self.programmed.published.len())
            .field("tasks", &self.tasks.len())
            .finish()
    }
}

fn program<'a>(
    ebpf: &'a mut aya::Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, BpfError> {
    ebpf.program_mut(name)
        .ok_or(BpfError::Missing {
            kind: "program",
            name,
        })?
        .try_into()
        .map_err(|source| BpfError::TcProgram {
            action: "open",
            program: name,
            iface: String::new(),
            source: Box::new(source),
        })
}

/// The interface index of `ifname` in the calling thread's namespace.
pub fn ifindex(ifname: &str) -> Result<u32, BpfError> {
    nix::net::if_::if_nametoindex(ifname).map_err(|source| BpfError::Interface {
        ifname: ifname.to_string(),
        source,
    })
}

/// The interface holding `addr` in the calling thread's namespace (the node's underlay).
pub fn interface_of(addr: Ipv4Addr) -> Result<String, BpfError> {
    let not_found = |detail: String| BpfError::NoInterfaceFor { addr, detail };
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| not_found(e.to_string()))?;
    for a in addrs {
        let held = a
            .address
            .as_ref()
            .and_then(|s| s.as_sockaddr_in())
            .map(|s| s.ip());
        if held == Some(addr) {
            return Ok(a.interface_name);
        }
    }
    Err(not_found("no interface has it".into()))
}

impl TcMesh {
    /// Loads the programs and attaches `mesh_ingress` to `underlay` (the interface holding
    /// the node's address).
    pub fn load(underlay: &str) -> Result<TcMesh, BpfError> {
        if OBJECT.is_empty() {
            return Err(BpfError::MeshNotBuilt(BUILD_ERROR.trim().to_string()));
        }
        ifindex(underlay)?;
        let mut ebpf = aya::Ebpf::load(OBJECT)?;
        let published = take_hash(&mut ebpf, "published")?;
        let backends = take_hash(&mut ebpf, "backends")?;
        let peers = take_hash(&mut ebpf, "peers")?;
        let task_veths = take_hash(&mut ebpf, "task_veths")?;
        let conns = take_hash(&mut ebpf, "conns")?;
        for name in [INGRESS, REPLY] {
            program(&mut ebpf, name)?
                .load()
                .map_err(|source| BpfError::TcProgram {
                    action: "load",
                    program: name,
                    iface: String::new(),
                    source: Box::new(source),
                })?;
        }
        program(&mut ebpf, INGRESS)?
            .attach(underlay, TcAttachType::Ingress)
            .map_err(|source| BpfError::TcProgram {
                action: "attach",
                program: INGRESS,
                iface: underlay.to_string(),
                source: Box::new(source),
            })?;
        Ok(TcMesh {
            ebpf,
            published,
            backends,
            peers,
            task_veths,
            conns,
            underlay: underlay.to_string(),
            tasks: BTreeMap::new(),
            programmed: MeshEntries::default(),
            in_sync: true,
        })
    }

    /// New flows `mesh_ingress` sent to each backend of each published port since it was
    /// loaded, read from the kernel's counters as they are now.
    pub fn connection_counts(&self) -> Vec<crate::mesh_maps::MeshCount> {
        self.conns
            .iter()
            .filter_map(Result::ok)
            .map(|(k, n)| crate::mesh_maps::MeshCount::decode(&k, n))
            .collect()
    }

    /// The interface `mesh_ingress` is attached to.
    pub fn underlay(&self) -> &str {
        &self.underlay
    }

    /// The kernel ids of the two programs (as `bpftool net` lists them).
    pub fn program_ids(&self) -> Vec<u32> {
        [INGRESS, REPLY]
            .iter()
            .filter_map(|name| self.ebpf.program(name))
            .filter_map(|p| p.info().ok())
            .map(|info| info.id())
            .collect()
    }

    /// Attaches `mesh_reply` to a task's host-side gateway veth (again if it was: the veth
    /// may be a new one under the same name).
    pub fn attach_task(&mut self, host_veth: &str) -> Result<(), BpfError> {
        self.detach_task(host_veth);
        let index = ifindex(host_veth)?;
        let link = program(&mut self.ebpf, REPLY)?
            .attach(host_veth, TcAttachType::Ingress)
            .map_err(|source| BpfError::TcProgram {
                action: "attach",
                program: REPLY,
                iface: host_veth.to_string(),
                source: Box::new(source),
            })?;
        self.tasks.insert(host_veth.to_string(), (link, index));
        self.task_veths
            .insert(index, 1u8, 0)
            .map_err(|source| BpfError::Map {
                action: "write a task veth",
                map: "task_veths",
                source,
            })
    }

    /// Drops a task's link (its veth is gone or going; the kernel has detached it then).
    /// Its connections under way are balanced again (to be reset) from now on.
    pub fn detach_task(&mut self, host_veth: &str) {
        let Some((link, index)) = self.tasks.remove(host_veth) else {
            return;
        };
        // Nothing to do if it is not there; any other error leaves an entry that only
        // keeps connections to a task that is gone on their way nowhere.
        let _ = self.task_veths.remove(&index);
        if let Ok(prog) = program(&mut self.ebpf, REPLY) {
            // A link whose device is gone is defunct; closing it is all that is left.
            let _ = prog.detach(link);
        }
    }

    /// Brings the maps to `config`; returns the number of map writes.
    pub fn apply(&mut self, config: &MeshConfig) -> Result<usize, BpfError> {
        let desired = config.entries();
        if !self.in_sync {
            self.clear()?;
        }
        let ops = plan(&self.programmed, &desired);
        for op in &ops {
            if let Err(e) = self.write(op) {
                self.in_sync = false;
                return Err(e);
            }
        }
        self.programmed = desired;
        Ok(ops.len())
    }

    fn clear(&mut self) -> Result<(), BpfError> {
        let err = |map, source| BpfError::Map {
            action: "empty",
            map,
            source,
        };
        let keys: Vec<PubKey> = self.published.keys().filter_map(Result::ok).collect();
        for k in keys {
            ignore_missing(self.published.remove(&k)).map_err(|e| err("published", e))?;
        }
        let keys: Vec<BeKey> = self.backends.keys().filter_map(Result::ok).collect();
        for k in keys {
            ignore_missing(self.backends.remove(&k)).map_err(|e| err("backends", e))?;
        }
        let keys: Vec<[u8; 4]> = self.peers.keys().filter_map(Result::ok).collect();
        for k in keys {
            ignore_missing(self.peers.remove(&k)).map_err(|e| err("peers", e))?;
        }
        self.programmed = MeshEntries::default();
        self.in_sync = true;
        Ok(())
    }

    fn write(&mut self, op: &MeshOp) -> Result<(), BpfError> {
        let (action, map, result) = match op {
            MeshOp::PutBackend(k, v) => {
                ("write a backend", "backends", self.backends.insert(k, v, 0))
            }
            MeshOp::DeleteBackend(k) => (
                "delete a backend",
                "backends",
                ignore_missing(self.backends.remove(k)),
            ),
            MeshOp::PutPublished(k, v) => (
                "write a published port",
                "published",
                self.published.insert(k, v, 0),
            ),
            MeshOp::DeletePublished(k) => (
                "delete a published port",
                "published",
                ignore_missing(self.published.remove(k)),
            ),
            MeshOp::PutPeer(k) => ("write a peer", "peers", self.peers.insert(k, 1u8, 0)),
            MeshOp::DeletePeer(k) => (
                "delete a peer",
                "peers",
                ignore_missing(self.peers.remove(k)),
            ),
        };
        result.map_err(|source| BpfError::Map {
            action,
            map,
            source,
        })
    }
}

/// The MAC a task's gateway interface gets (`shoal_net::overlay::mac_for`), for the
/// program's Ethernet rewrite.
pub fn task_mac(addr: Ipv4Addr) -> [u8; 6] {
    shoal_net::overlay::mac_for(addr)
}
