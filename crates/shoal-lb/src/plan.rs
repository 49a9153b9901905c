//! The pure diff: what must change in a sandbox's table to go from one config to another.
//!
//! Both writers ([`crate::text`] for `nft -f`, [`crate::netlink`] for our own netlink batch)
//! consume the same [`Op`] list, so the rules a test reads as text are the rules the fast path
//! sends.
//!
//! # Table model
//! - `vips`: every VIP. The filter chain refuses whatever is still addressed to one after the
//!   nat chain: a service with no backends, or a port the service does not balance.
//! - `ports` (VIP . proto . port → goto chain) and `addrs` (VIP → goto chain, services without
//!   declared ports): the verdict maps of the nat OUTPUT chain.
//! - one chain per service, `svc_<id>`, whose one rule is
//!   `dnat to ip daddr . numgen inc mod N map @be_07`: the chain exists for its own `numgen`
//!   counter, and the backend addresses live in a shared map keyed by (VIP, slot).
//!
//! One counter per service, not per port, as Swarm's IPVS does (one firewall mark per VIP):
//! the kernel validates every chain of the table when a rule with `dnat` is added, so the
//! number of chains is what an update at 10,000 services costs (~0.4 µs per chain here).
//! The price is Swarm's too: a client that alternates between two ports in lockstep with two
//! tasks sees each port always on the same task.
//!
//! Why shared, sharded maps instead of an inline map per rule: this kernel keeps a table's sets
//! in a list, so each anonymous or named per-service set makes every set lookup and every new
//! set cost O(sets) (10,000 inline maps took 8 s to create and ~8 ms of kernel time per rule
//! replacement). One shared map instead costs O(rules bound to it) per element added and
//! O(elements) per rule bound to it. Spreading services over [`SHARDS`] maps by a hash of
//! their id bounds both. It also means that
//! replacing a task by another (same N) changes one map element and no rule at all, so the
//! kernel skips the table-wide validation.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use crate::model::{LbConfig, Ports, VipService};

/// How many backend maps the services are spread over (~160 services each at 10,000).
pub const SHARDS: u32 = 64;

/// One of the shared backend maps, `be_07`, keyed by VIP . slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Shard(pub u8);

impl Shard {
    /// The shard of a service: FNV-1a of its id, so it never changes while the service lives.
    pub(crate) fn of(id: &str) -> Shard {
        let hash = id.bytes().fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        Shard((hash % SHARDS) as u8)
    }

    /// The map's name.
    pub fn name(self) -> String {
        format!("be_{:02}", self.0)
    }
}

/// The key a packet is looked up by in the nat chain's verdict maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JumpKey {
    /// The VIP.
    pub vip: Ipv4Addr,
    /// The port (map `ports`), or every port (map `addrs`).
    pub ports: Ports,
}

/// One change to the table. A plan applies them in order, as one transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Create a backend map.
    AddShard(Shard),
    /// Create a service chain (empty).
    AddChain(String),
    /// Remove the chain's rule.
    FlushChain(String),
    /// Remove an element from `ports`/`addrs`.
    DelJump(JumpKey),
    /// Remove a VIP from `vips`.
    DelVip(Ipv4Addr),
    /// Remove slot `slot` of `vip` from a backend map.
    DelBackend {
        /// The map.
        shard: Shard,
        /// The service's VIP.
        vip: Ipv4Addr,
        /// 0..N.
        slot: u32,
    },
    /// Set slot `slot` of `vip` to `addr`.
    AddBackend {
        /// The map.
        shard: Shard,
        /// The service's VIP.
        vip: Ipv4Addr,
        /// 0..N.
        slot: u32,
        /// The task address.
        addr: Ipv4Addr,
    },
    /// Add the chain's rule: DNAT round robin over `modulus` slots of `shard`.
    AddRule {
        /// The chain.
        chain: String,
        /// Where its backends are.
        shard: Shard,
        /// N, the number of backends (> 0).
        modulus: u32,
    },
    /// Send `key` to `chain`.
    AddJump {
        /// VIP and port.
        key: JumpKey,
        /// The service chain.
        chain: String,
    },
    /// Add a VIP to `vips`.
    AddVip(Ipv4Addr),
    /// Delete a chain (its rule is flushed and its jump removed earlier in the plan).
    DelChain(String),
    /// Delete a backend map (empty by then).
    DelShard(Shard),
    /// For [`ORPHAN_TIMEOUT_MS`], give a UDP datagram from `backend` that matches no
    /// conntrack entry the source address `vip` (map `orphans`).
    AddOrphan {
        /// A backend that left `vip`.
        backend: Ipv4Addr,
        /// The VIP its replies came from.
        vip: Ipv4Addr,
    },
}

/// Everything that is programmed for some services, as sets that can be diffed.
#[derive(Default)]
struct State {
    shards: BTreeSet<Shard>,
    /// Chain name → (shard, N).
    chains: BTreeMap<String, (Shard, u32)>,
    jumps: BTreeMap<JumpKey, String>,
    vips: BTreeSet<Ipv4Addr>,
    backends: BTreeMap<(Shard, Ipv4Addr, u32), Ipv4Addr>,
}

impl State {
    fn of<'a>(services: impl Iterator<Item = &'a VipService>) -> State {
        let mut st = State::default();
        for svc in services {
            let (name, shard) = (svc.chain(), Shard::of(&svc.id));
            st.vips.insert(svc.vip);
            st.shards.insert(shard);
            for ports in svc.jump_ports() {
                st.jumps.insert(
                    JumpKey {
                        vip: svc.vip,
                        ports,
                    },
                    name.clone(),
                );
            }
            for (slot, addr) in (0u32..).zip(&svc.backends) {
                st.backends.insert((shard, svc.vip, slot), *addr);
            }
            st.chains.insert(name, (shard, svc.backends.len() as u32));
        }
        st
    }
}

/// The ops that turn the table programmed for `old` into the one for `new`. Empty when
/// nothing changed. Deletions of elements come before additions, so a changed element is a
/// delete and an add in the same transaction.
///
/// Only services that differ are looked at (and, when a backend map may have become used or
/// unused, the chains of the others), so one change at 10,000 services stays cheap.
pub fn plan(old: &LbConfig, new: &LbConfig) -> Vec<Op> {
    plan_changes(new, &Changes::of(old, new))
}

/// [`plan`] from changes found already.
pub(crate) fn plan_changes(new: &LbConfig, changes: &Changes<'_>) -> Vec<Op> {
    let mut old_st = State::of(changes.old.iter().copied());
    let mut new_st = State::of(changes.new.iter().copied());
    // A map that a service left or joined stays if an unchanged service uses it.
    let moved: Vec<Shard> = old_st
        .shards
        .symmetric_difference(&new_st.shards)
        .copied()
        .collect();
    for shard in moved {
        let used = new
            .services
            .keys()
            .any(|id| !changes.ids.contains(id.as_str()) && Shard::of(id) == shard);
        if used {
            old_st.shards.insert(shard);
            new_st.shards.insert(shard);
        }
    }
    diff(&old_st, &new_st)
}

/// The services that differ between two configs, found by walking both (sorted by id) side
/// by side: no lookups, so 10,000 unchanged services cost ~10,000 comparisons.
pub(crate) struct Changes<'a> {
    /// Old versions of services changed or removed.
    pub old: Vec<&'a VipService>,
    /// New versions of services changed or added.
    pub new: Vec<&'a VipService>,
    /// The keys `new` are filed under in the new config (the same as their ids when valid).
    pub new_keys: Vec<&'a str>,
    /// The ids of both.
    ids: BTreeSet<&'a str>,
}

impl<'a> Changes<'a> {
    pub(crate) fn of(old: &'a LbConfig, new: &'a LbConfig) -> Changes<'a> {
        let mut changes = Changes {
            old: Vec::new(),
            new: Vec::new(),
            new_keys: Vec::new(),
            ids: BTreeSet::new(),
        };
        let mut a = old.services.iter().peekable();
        let mut b = new.services.iter().peekable();
        loop {
            let order = match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some((ka, _)), Some((kb, _))) => ka.cmp(kb),
            };
            match order {
                std::cmp::Ordering::Less => changes.push_old(a.next()),
                std::cmp::Ordering::Greater => changes.push_new(b.next()),
                std::cmp::Ordering::Equal => {
                    let (x, y) = (a.next(), b.next());
                    if x.map(|(_, s)| s) != y.map(|(_, s)| s) {
                        changes.push_old(x);
                        changes.push_new(y);
                    }
                }
            }
        }
        changes
    }

    fn push_old(&mut self, entry: Option<(&'a String, &'a VipService)>) {
        if let Some((id, svc)) = entry {
            self.ids.insert(id);
            self.old.push(svc);
        }
    }

    fn push_new(&mut self, entry: Option<(&'a String, &'a VipService)>) {
        if let Some((id, svc)) = entry {
            self.ids.insert(id);
            self.new.push(svc);
            self.new_keys.push(id);
        }
    }
}

fn diff(old: &State, new: &State) -> Vec<Op> {
    let mut ops = Vec::new();
    ops.extend(new.shards.difference(&old.shards).map(|s| Op::AddShard(*s)));
    for name in new.chains.keys().filter(|n| !old.chains.contains_key(*n)) {
        ops.push(Op::AddChain(name.clone()));
    }
    // A rule only depends on the chain's shard (fixed) and N: replace it when N changes.
    for (name, &(_, n)) in &old.chains {
        let kept = new.chains.get(name).map(|&(_, n)| n);
        if n > 0 && kept != Some(n) {
            ops.push(Op::FlushChain(name.clone()));
        }
    }
    for (key, chain) in &old.jumps {
        if new.jumps.get(key) != Some(chain) {
            ops.push(Op::DelJump(*key));
        }
    }
    ops.extend(old.vips.difference(&new.vips).map(|v| Op::DelVip(*v)));
    for (&(shard, vip, slot), addr) in &old.backends {
        if new.backends.get(&(shard, vip, slot)) != Some(addr) {
            ops.push(Op::DelBackend { shard, vip, slot });
        }
    }
    for (&(shard, vip, slot), &addr) in &new.backends {
        if old.backends.get(&(shard, vip, slot)) != Some(&addr) {
            ops.push(Op::AddBackend {
                shard,
                vip,
                slot,
                addr,
            });
        }
    }
    for (name, &(shard, n)) in &new.chains {
        let before = old.chains.get(name).map(|&(_, n)| n);
        if n > 0 && before != Some(n) {
            ops.push(Op::AddRule {
                chain: name.clone(),
                shard,
                modulus: n,
            });
        }
    }
    for (key, chain) in &new.jumps {
        if old.jumps.get(key) != Some(chain) {
            ops.push(Op::AddJump {
                key: *key,
                chain: chain.clone(),
            });
        }
    }
    ops.extend(new.vips.difference(&old.vips).map(|v| Op::AddVip(*v)));
    for name in old.chains.keys().filter(|n| !new.chains.contains_key(*n)) {
        ops.push(Op::DelChain(name.clone()));
    }
    ops.extend(old.shards.difference(&new.shards).map(|s| Op::DelShard(*s)));
    ops
}

/// Traffic that went to a backend the new config no longer balances to for that VIP. Its UDP
/// conntrack entries must go, or UDP "connections" keep being sent to a task that is gone (and
/// so must TCP flows still in their handshake; established connections stay, see
/// [`crate::conntrack`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StaleFlows {
    /// The VIP the client addressed (the original destination in conntrack).
    pub vip: Ipv4Addr,
    /// The backend the VIP was translated to (the reply source in conntrack).
    pub backend: Ipv4Addr,
}

/// The (VIP, backend) pairs present in `old` and gone in `new`. Established
/// connections to backends that stay are not listed, so flushing these never cuts them. Only
/// services that differ are looked at.
pub fn removed_backends(old: &LbConfig, new: &LbConfig) -> Vec<StaleFlows> {
    removed_changes(&Changes::of(old, new))
}

/// How long a removed backend's late UDP replies still reach their clients from the VIP.
///
/// Deleting a UDP flow's conntrack entry (so that its next datagram is balanced again) also
/// drops its reverse NAT: a reply already on its way from the removed backend would arrive
/// from the backend's own address, and a socket connected to the VIP discards it. The
/// `orphan_replies` chain gives such a datagram (one that matches no entry) the VIP's address
/// back. The window covers replies to requests sent before the flush; the kernel expires the
/// element, so no clock runs here.
pub const ORPHAN_TIMEOUT_MS: u64 = 10_000;

/// The [`Op::AddOrphan`]s for `stale`: one per backend address. A task has one address per
/// network and so one VIP there; should an address still appear twice, the first VIP wins.
pub fn orphan_ops(stale: &[StaleFlows]) -> Vec<Op> {
    let mut seen = BTreeSet::new();
    stale
        .iter()
        .filter(|f| seen.insert(f.backend))
        .map(|f| Op::AddOrphan {
            backend: f.backend,
            vip: f.vip,
        })
        .collect()
}

/// [`removed_backends`] from changes found already.
pub(crate) fn removed_changes(changes: &Changes<'_>) -> Vec<StaleFlows> {
    let live: BTreeSet<StaleFlows> = changes.new.iter().flat_map(|svc| flows(svc)).collect();
    let mut gone: Vec<StaleFlows> = changes
        .old
        .iter()
        .flat_map(|svc| flows(svc))
        .filter(|f| !live.contains(f))
        .collect();
    gone.sort();
    gone.dedup();
    gone
}

fn flows(svc: &VipService) -> impl Iterator<Item = StaleFlows> + '_ {
    svc.backends.iter().map(|&backend| StaleFlows {
        vip: svc.vip,
        backend,
    })
}

impl JumpKey {
    /// `10.0.0.9 . tcp . 80` or `10.0.0.9`, as nft writes the key.
    pub(crate) fn nft(&self) -> String {
        match self.ports {
            Ports::One(proto, port) => format!("{} . {proto} . {port}", self.vip),
            Ports::All => self.vip.to_string(),
        }
    }
}
