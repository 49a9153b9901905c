//! The I/O: one node's programs and maps, loaded from the embedded object, attached at the root
//! of the cgroup v2 tree through bpf links, and kept in step with the node's config.
//!
//! Links are not pinned: they live as long as this process holds their fds, so the programs
//! are detached when the [`SockLb`] is dropped and also when the daemon dies, SIGKILL included.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use aya::maps::{Array, HashMap, Map, MapData, MapError};
use aya::programs::{CgroupAttachMode, CgroupSock, CgroupSockAddr};
use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, statfs};
use tracing::warn;

use crate::error::BpfError;
use crate::maps::{NODE_SANDBOX, backend_key, backend_val, member_key};
use crate::plan::{MapOp, NodeConfig, Programmed, ServiceKey, plan, plan_changes};

pub(crate) static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sock_lb.o"));
pub(crate) static BUILD_ERROR: &str = include_str!(concat!(env!("OUT_DIR"), "/sock_lb.err"));

/// The programs, by function name in bpf/sock_lb.c.
pub const PROGRAMS: [&str; 4] = [
    "shoal_connect4",
    "shoal_sendmsg4",
    "shoal_recvmsg4",
    "shoal_getpeername4",
];

/// The cgroup/sock_release program: empties a closing TCP socket's `tcp_slots` slot (or
/// deletes its `reverse` entry), so that an occupied slot is a live socket and `reverse` never
/// evicts one (bpf/sock_lb.c says why).
pub const RELEASE_PROGRAM: &str = "shoal_sock_release";

/// Where a cgroup v2 hierarchy may be mounted: at the top on a pure v2 system, at `unified`
/// on a hybrid v1/v2 one (like the development machine).
const CGROUP2_CANDIDATES: [&str; 2] = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"];

/// The root of the mounted cgroup v2 hierarchy.
pub fn cgroup2_root() -> Result<PathBuf, BpfError> {
    CGROUP2_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| statfs(p).is_ok_and(|s| s.filesystem_type() == CGROUP2_SUPER_MAGIC))
        .ok_or_else(|| BpfError::NoCgroup2 {
            tried: CGROUP2_CANDIDATES.join(" and "),
        })
}

/// How to load.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The cgroup to attach at; default: the root of the cgroup v2 tree, so that every
    /// process is covered whatever cgroup a runtime puts it in.
    pub cgroup: Option<PathBuf>,
}

/// One node's socket-level VIP balancer.
pub struct SockLb {
    // Owns the programs and, through them, the links: dropping it detaches them.
    pub(crate) ebpf: aya::Ebpf,
    membership: HashMap<MapData, [u8; 16], u8>,
    pub(crate) udp_peers: HashMap<MapData, [u8; 16], u8>,
    /// The backend addresses `udp_peers` names (written by connect4 with it).
    pub(crate) udp_backends: HashMap<MapData, [u8; 4], u8>,
    pub(crate) closing: HashMap<MapData, [u8; 4], u8>,
    /// {socket cookie, backend, port} → {VIP, port}: read here only to count its entries.
    reverse: HashMap<MapData, [u8; 16], [u8; 8]>,
    /// `struct tcp_slot` by slot (connected TCP sockets' VIPs): read here only to count them.
    tcp_slots: Array<MapData, [u8; 24]>,
    /// Why connected UDP sockets of removed backends cannot be closed here (the iterator
    /// did not load), or None when they can.
    pub(crate) udp_close_unavailable: Option<String>,
    services: HashMap<MapData, [u8; 8], [u8; 16]>,
    backends: HashMap<MapData, [u8; 8], [u8; 8]>,
    /// {VIP, backend} -> connections sent there, counted by the programs (read, never written).
    conns: HashMap<MapData, [u8; 8], u64>,
    cgroup: PathBuf,
    programmed: Programmed,
    /// False after a failed update: the maps are emptied and rewritten on the next one.
    in_sync: bool,
    /// Netns cookie -> the network indices written for it.
    sandboxes: BTreeMap<u64, Vec<u32>>,
}

impl std::fmt::Debug for SockLb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SockLb")
            .field("cgroup", &self.cgroup)
            .field("services", &self.programmed.service_count())
            .field("sandboxes", &self.sandboxes.len())
            .finish()
    }
}

/// The outcome of [`SockLb::apply`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Map operations sent to the kernel.
    pub ops: usize,
    /// Services left out because their VIP is another service's (see [`crate::plan::Plan`]).
    pub conflicts: Vec<String>,
    /// Backends that left a service (see [`crate::plan::Plan`]): give them to
    /// [`SockLb::close_udp`] before the change is acknowledged.
    pub removed: Vec<std::net::Ipv4Addr>,
}

/// The program `name` of the object, as the kind the caller asks for.
fn program<'a, P>(ebpf: &'a mut aya::Ebpf, name: &'static str) -> Result<&'a mut P, BpfError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(BpfError::Missing {
            kind: "program",
            name,
        })?
        .try_into()
        .map_err(failed("open", name))
}

/// What failed doing `action` to the program `program`.
fn failed(
    action: &'static str,
    program: &'static str,
) -> impl FnOnce(aya::programs::ProgramError) -> BpfError {
    move |source| BpfError::Program {
        action,
        program,
        source,
    }
}

/// Takes hash map `name` out of a loaded object, typed (both loaders' maps).
pub(crate) fn take_hash<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut aya::Ebpf,
    name: &'static str,
) -> Result<HashMap<MapData, K, V>, BpfError> {
    take_map(ebpf, name, HashMap::try_from)
}

/// Takes map `name` out of a loaded object as the kind `open` makes of it.
fn take_map<M>(
    ebpf: &mut aya::Ebpf,
    name: &'static str,
    open: impl FnOnce(Map) -> Result<M, MapError>,
) -> Result<M, BpfError> {
    let map: Map = ebpf
        .take_map(name)
        .ok_or(BpfError::Missing { kind: "map", name })?;
    open(map).map_err(|source| BpfError::Map {
        action: "open",
        map: name,
        source,
    })
}

impl SockLb {
    /// Loads this node's programs and maps and attaches the programs (multi-attach, so other
    /// nodes' and other tools' programs keep running). Needs Linux 5.7+ for links; an older
    /// kernel would get a plain attachment that does not die with the process.
    pub fn load(opts: &Options) -> Result<SockLb, BpfError> {
        if OBJECT.is_empty() {
            return Err(BpfError::NotBuilt(BUILD_ERROR.trim().to_string()));
        }
        let cgroup = match &opts.cgroup {
            Some(p) => p.clone(),
            None => cgroup2_root()?,
        };
        let is_cgroup2 = statfs(&cgroup).is_ok_and(|s| s.filesystem_type() == CGROUP2_SUPER_MAGIC);
        if !is_cgroup2 {
            return Err(BpfError::Cgroup {
                path: cgroup,
                source: std::io::Error::other("not a directory of a cgroup v2 hierarchy"),
            });
        }
        // The kfunc bpf_sock_destroy's id in this kernel, written into the object (kfunc.rs).
        let btf = aya::Btf::from_sys_fs();
        let destroy_id = btf.as_ref().map_err(|e| e.to_string()).and_then(|btf| {
            btf.id_by_type_name_kind("bpf_sock_destroy", aya_obj::btf::BtfKind::Func)
                .map_err(|e| format!("the kernel has no kfunc bpf_sock_destroy (Linux 6.5+): {e}"))
        });
        let (mut object, start) = aligned_copy(OBJECT);
        let mut udp_close_unavailable = match &destroy_id {
            Ok(id) => match crate::kfunc::patch(&mut object[start..], *id) {
                1 => None,
                n => Some(format!(
                    "the object has {n} calls to rewrite into bpf_sock_destroy, not 1"
                )),
            },
            Err(e) => Some(e.clone()),
        };
        let mut ebpf = aya::EbpfLoader::new()
            .btf(btf.as_ref().ok())
            .load(&object[start..])?;
        let membership = take_hash(&mut ebpf, "membership")?;
        let udp_peers = take_hash(&mut ebpf, "udp_peers")?;
        let udp_backends = take_hash(&mut ebpf, "udp_backends")?;
        let closing = take_hash(&mut ebpf, "closing")?;
        let reverse = take_hash(&mut ebpf, "reverse")?;
        let tcp_slots = take_map(&mut ebpf, "tcp_slots", Array::try_from)?;
        let services = take_hash(&mut ebpf, "services")?;
        let backends = take_hash(&mut ebpf, "backends")?;
        let conns = take_hash(&mut ebpf, "conns")?;
        let dir = File::open(&cgroup).map_err(|source| BpfError::Cgroup {
            path: cgroup.clone(),
            source,
        })?;
        for name in PROGRAMS {
            let prog: &mut CgroupSockAddr = program(&mut ebpf, name)?;
            prog.load().map_err(failed("load", name))?;
            // Through a bpf link (aya uses one on 5.7+), which the kernel always attaches as
            // multi; it refuses any flag on a link, so "Single" (no flag) is what asks for it.
            prog.attach(&dir, CgroupAttachMode::Single)
                .map_err(failed("attach", name))?;
        }
        let release: &mut CgroupSock = program(&mut ebpf, RELEASE_PROGRAM)?;
        release.load().map_err(failed("load", RELEASE_PROGRAM))?;
        release
            .attach(&dir, CgroupAttachMode::Single)
            .map_err(failed("attach", RELEASE_PROGRAM))?;
        if let (None, Ok(btf)) = (&udp_close_unavailable, &btf) {
            udp_close_unavailable = crate::udp_close::load_iterator(&mut ebpf, btf).err();
        }
        if let Some(why) = &udp_close_unavailable {
            warn!(
                "eBPF VIP balancer: a UDP socket connected through a VIP will keep its task \
                 after that task leaves (it cannot be closed here: {why})"
            );
        }
        Ok(SockLb {
            ebpf,
            membership,
            udp_peers,
            udp_backends,
            closing,
            reverse,
            tcp_slots,
            udp_close_unavailable,
            services,
            backends,
            conns,
            cgroup,
            programmed: Programmed::default(),
            in_sync: true,
            sandboxes: BTreeMap::new(),
        })
    }

    /// The cgroup the programs are attached at.
    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    /// The kernel ids of this instance's programs (as `bpftool cgroup show` lists them).
    pub fn program_ids(&self) -> Vec<u32> {
        PROGRAMS
            .iter()
            .chain([&RELEASE_PROGRAM])
            .filter_map(|name| self.ebpf.program(name))
            .filter_map(|p| p.info().ok())
            .map(|info| info.id())
            .collect()
    }

    /// Sockets whose peer the programs show as a VIP, as the kernel holds them now: occupied
    /// `tcp_slots` slots and `reverse` entries (a closed TCP socket's go with it). Reads all
    /// 65,536 slots, one syscall each: for tests, not a hot path.
    pub fn reverse_entries(&self) -> usize {
        let slots = self
            .tcp_slots
            .iter()
            .filter_map(Result::ok)
            .filter(|slot| slot[..8] != [0; 8])
            .count();
        slots + self.reverse.keys().filter(Result::is_ok).count()
    }

    /// The time the kernel spent in the connect4 program and how many times it ran, as its
    /// counters are now. The kernel counts only while some process holds the fd of
    /// [`enable_run_stats`] (a benchmark's way to see the balancer's own cost per connect).
    pub fn connect4_runs(&self) -> Result<(std::time::Duration, u64), BpfError> {
        self.program_runs("shoal_connect4")
    }

    /// The same for getpeername4, which also runs in every `accept()` on the node.
    pub fn getpeername4_runs(&self) -> Result<(std::time::Duration, u64), BpfError> {
        self.program_runs("shoal_getpeername4")
    }

    /// The same for sock_release, which runs when any TCP or UDP socket on the node closes.
    pub fn sock_release_runs(&self) -> Result<(std::time::Duration, u64), BpfError> {
        self.program_runs(RELEASE_PROGRAM)
    }

    fn program_runs(&self, name: &'static str) -> Result<(std::time::Duration, u64), BpfError> {
        let info = self
            .ebpf
            .program(name)
            .ok_or(BpfError::Missing {
                kind: "program",
                name,
            })?
            .info()
            .map_err(failed("read the counters of", name))?;
        Ok((info.run_time(), info.run_count()))
    }

    /// Connections the programs sent to each backend of each VIP since they were loaded:
    /// (VIP, backend address, count), read from the kernel's counters as they are now.
    pub fn connection_counts(&self) -> Vec<(Ipv4Addr, Ipv4Addr, u64)> {
        self.conns
            .iter()
            .filter_map(Result::ok)
            .map(|(k, n)| {
                let (vip, addr) = crate::maps::decode_conn_key(&k);
                (vip, addr, n)
            })
            .collect()
    }

    /// Makes the sockets of the namespace with `netns_cookie` this node's, able to reach the
    /// VIPs of `networks` (network ids) and refused the VIPs of any other network. Replaces
    /// what an earlier call said for the same cookie.
    pub fn add_sandbox(&mut self, netns_cookie: u64, networks: &[String]) -> Result<(), BpfError> {
        let mut nets: Vec<u32> = networks
            .iter()
            .map(|n| self.programmed.network_index(n))
            .collect();
        nets.sort_unstable();
        nets.dedup();
        // Networks first, the "this node's sandbox" mark last: until it is there the programs
        // leave the sandbox alone rather than refuse a network not written yet.
        for &net in &nets {
            self.put_member(netns_cookie, net)?;
        }
        self.put_member(netns_cookie, NODE_SANDBOX)?;
        let old = self.sandboxes.insert(netns_cookie, nets.clone());
        for net in old.unwrap_or_default() {
            if !nets.contains(&net) {
                self.delete_member(netns_cookie, net)?;
            }
        }
        Ok(())
    }

    /// Forgets a sandbox (after its task ended).
    pub fn remove_sandbox(&mut self, netns_cookie: u64) -> Result<(), BpfError> {
        let nets = self.sandboxes.remove(&netns_cookie).unwrap_or_default();
        self.delete_member(netns_cookie, NODE_SANDBOX)?;
        for net in nets {
            self.delete_member(netns_cookie, net)?;
        }
        Ok(())
    }

    fn put_member(&mut self, cookie: u64, net: u32) -> Result<(), BpfError> {
        self.membership
            .insert(member_key(cookie, net), 1u8, 0)
            .map_err(|source| BpfError::Map {
                action: "add a sandbox",
                map: "membership",
                source,
            })
    }

    fn delete_member(&mut self, cookie: u64, net: u32) -> Result<(), BpfError> {
        ignore_missing(self.membership.remove(&member_key(cookie, net))).map_err(|source| {
            BpfError::Map {
                action: "remove a sandbox",
                map: "membership",
                source,
            }
        })
    }

    /// Brings the service and backend maps to `desired`; returns what it took.
    pub fn apply(&mut self, desired: &NodeConfig) -> Result<Applied, BpfError> {
        self.apply_planned(desired, None)
    }

    /// [`SockLb::apply`] when only the services `changed` may differ from the last config
    /// applied (a superset is fine): the plan visits them alone (`plan::plan_changes`), so a
    /// change costs the same whatever the number of services. After a failed update, the
    /// whole of `desired` is written again.
    pub fn apply_changes(
        &mut self,
        desired: &NodeConfig,
        changed: &BTreeSet<ServiceKey>,
    ) -> Result<Applied, BpfError> {
        self.apply_planned(desired, Some(changed))
    }

    fn apply_planned(
        &mut self,
        desired: &NodeConfig,
        changed: Option<&BTreeSet<ServiceKey>>,
    ) -> Result<Applied, BpfError> {
        let p = match changed {
            Some(changed) if self.in_sync => plan_changes(&mut self.programmed, desired, changed),
            _ => {
                if !self.in_sync {
                    self.clear()?;
                }
                plan(&mut self.programmed, desired)
            }
        };
        for c in &p.conflicts {
            warn!("eBPF VIP balancer: {c}; that VIP keeps its first service");
        }
        for op in &p.ops {
            if let Err(e) = self.write(op) {
                // `programmed` already says what this plan meant to do: rewrite everything
                // on the next apply.
                self.in_sync = false;
                return Err(e);
            }
        }
        Ok(Applied {
            ops: p.ops.len(),
            conflicts: p.conflicts,
            removed: p.removed,
        })
    }

    /// Empties the service and backend maps (after a failure left them unknown).
    fn clear(&mut self) -> Result<(), BpfError> {
        let err = |map, source| BpfError::Map {
            action: "empty",
            map,
            source,
        };
        let keys: Vec<[u8; 8]> = self.services.keys().filter_map(Result::ok).collect();
        for k in keys {
            ignore_missing(self.services.remove(&k)).map_err(|e| err("services", e))?;
        }
        let keys: Vec<[u8; 8]> = self.backends.keys().filter_map(Result::ok).collect();
        for k in keys {
            ignore_missing(self.backends.remove(&k)).map_err(|e| err("backends", e))?;
        }
        self.programmed.clear_services();
        self.in_sync = true;
        Ok(())
    }

    fn write(&mut self, op: &MapOp) -> Result<(), BpfError> {
        let (action, map, result) = match op {
            MapOp::PutBackend {
                service,
                slot,
                addr,
            } => (
                "write a backend",
                "backends",
                self.backends
                    .insert(backend_key(*service, *slot), backend_val(*addr, 0), 0),
            ),
            MapOp::DeleteBackend { service, slot } => (
                "delete a backend",
                "backends",
                ignore_missing(self.backends.remove(&backend_key(*service, *slot))),
            ),
            MapOp::PutService { key, value } => (
                "write a service",
                "services",
                self.services.insert(key.encode(), value.encode(), 0),
            ),
            MapOp::DeleteService { key } => (
                "delete a service",
                "services",
                ignore_missing(self.services.remove(&key.encode())),
            ),
        };
        result.map_err(|source| BpfError::Map {
            action,
            map,
            source,
        })
    }
}

/// A copy of `bytes` starting at an 8-byte aligned address (the ELF parser reads its headers
/// in place and needs them aligned), and where it starts in the returned buffer.
fn aligned_copy(bytes: &[u8]) -> (Vec<u8>, usize) {
    let mut buf = vec![0u8; bytes.len() + 8];
    let start = buf.as_ptr().align_offset(8);
    buf[start..start + bytes.len()].copy_from_slice(bytes);
    buf.truncate(start + bytes.len());
    (buf, start)
}

/// Deleting what is already gone is success (the goal is its absence).
pub(crate) fn ignore_missing(r: Result<(), MapError>) -> Result<(), MapError> {
    match r {
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}

/// Makes the kernel count the run time of every eBPF program (`BPF_ENABLE_STATS`) while the
/// returned fd is open; closing it stops the counting (it costs two clock reads per run).
pub fn enable_run_stats() -> Result<std::os::fd::OwnedFd, BpfError> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(|e| BpfError::RunStats(e.io_error))
}
