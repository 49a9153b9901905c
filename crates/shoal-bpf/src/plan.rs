//! What the node's maps must hold, and the map operations from one config to the next. Pure:
//! no I/O, unit-tested without root.
//!
//! The input is node-wide: every VIP service of every network the node takes part in, keyed
//! by (network, service). Which sandbox may use which network is `membership`, kept apart by
//! the loader, so one endpoint change costs a handful of map operations for that service
//! whatever the number of sandboxes on the node.
//!
//! Ordering keeps the programs consistent at every step: backends are written before a service
//! entry counts them, and a service entry shrinks before the slots it no longer counts are
//! deleted. Slots are stable: replacing one task rewrites one backend slot, and the service
//! entry (and its round-robin counter) is untouched while the number of tasks stays the same.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use crate::maps::{PROTO_ANY, SvcKey, SvcVal};

/// A transport protocol a VIP port is balanced for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    /// The IP protocol number, as `bpf_sock_addr.protocol` gives it.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }
}

/// (network id, service id).
pub type ServiceKey = (String, String);

/// One service's VIP on one network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub vip: Ipv4Addr,
    /// Ports balanced (VIP port = task port, as in Swarm). Empty: every port and protocol of
    /// the VIP, which is what shoal's services use (Swarm balances a VIP by firewall mark).
    pub ports: Vec<(Proto, u16)>,
    /// The service's running tasks on that network. Empty: connections are refused.
    pub backends: Vec<Ipv4Addr>,
}

impl Service {
    fn keys(&self) -> BTreeSet<SvcKey> {
        if self.ports.is_empty() {
            return BTreeSet::from([SvcKey {
                vip: self.vip,
                port: 0,
                proto: PROTO_ANY,
            }]);
        }
        self.ports
            .iter()
            .map(|&(proto, port)| SvcKey {
                vip: self.vip,
                port,
                proto: proto.number(),
            })
            .collect()
    }
}

/// Everything the node balances.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeConfig {
    pub services: BTreeMap<ServiceKey, Service>,
}

/// One map operation, in the order it must reach the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapOp {
    PutBackend {
        service: u32,
        slot: u32,
        addr: Ipv4Addr,
    },
    DeleteBackend {
        service: u32,
        slot: u32,
    },
    PutService {
        key: SvcKey,
        value: SvcVal,
    },
    DeleteService {
        key: SvcKey,
    },
}

/// What the maps hold for one service.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    index: u32,
    net: u32,
    /// As last given, to recognise an unchanged service without allocating.
    vip: Ipv4Addr,
    ports: Vec<(Proto, u16)>,
    backends: Vec<Ipv4Addr>,
    /// The keys it holds (a key another service held first is not among them).
    keys: BTreeSet<SvcKey>,
    /// Backends by slot.
    slots: Vec<Ipv4Addr>,
}

/// What the loader has programmed, and the indices it gave networks and services. Indices
/// are never reused while the maps live, so no stale key can mean a new service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Programmed {
    networks: BTreeMap<String, u32>,
    next_net: u32,
    services: BTreeMap<ServiceKey, Entry>,
    /// Which service holds each key.
    owners: BTreeMap<SvcKey, ServiceKey>,
    /// Services that lost a key to another: [`plan_changes`] looks at them again at every
    /// plan, to take the key back once it is free (as [`plan`] does by visiting everything).
    waiting: BTreeSet<ServiceKey>,
    next_service: u32,
}

impl Default for Programmed {
    fn default() -> Programmed {
        Programmed {
            networks: BTreeMap::new(),
            next_net: crate::maps::NODE_SANDBOX + 1,
            services: BTreeMap::new(),
            owners: BTreeMap::new(),
            waiting: BTreeSet::new(),
            next_service: 0,
        }
    }
}

impl Programmed {
    /// The index of network `id`, given one on first sight.
    pub fn network_index(&mut self, id: &str) -> u32 {
        if let Some(&i) = self.networks.get(id) {
            return i;
        }
        let i = self.next_net;
        self.next_net += 1;
        self.networks.insert(id.to_string(), i);
        i
    }

    /// Forgets every service, keeping the network indices: what the maps hold after they
    /// were emptied.
    pub fn clear_services(&mut self) {
        self.services.clear();
        self.owners.clear();
        self.waiting.clear();
    }

    pub fn service_count(&self) -> usize {
        self.services.len()
    }
}

/// The operations from what `state` holds to `desired` (`state` is updated to match), and the
/// services left out because another service already holds their VIP (networks with
/// overlapping subnets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub ops: Vec<MapOp>,
    pub conflicts: Vec<String>,
    /// Addresses that were a service's backends and no longer are (sorted, once each): UDP
    /// sockets connected to them through the VIP must be closed (`SockLb::close_udp`).
    pub removed: Vec<Ipv4Addr>,
}

/// Unchanged services cost a lookup and a comparison each, no allocation: an endpoint change
/// at 10,000 services plans in well under a millisecond. [`plan_changes`] does the same
/// without visiting the unchanged services.
pub fn plan(state: &mut Programmed, desired: &NodeConfig) -> Plan {
    // One pass over both sorted maps side by side: unchanged services cost a comparison.
    let mut gone: Vec<ServiceKey> = Vec::new();
    let mut touched: Vec<(&ServiceKey, &Service, bool)> = Vec::new();
    {
        let mut current = state.services.iter().peekable();
        for (skey, svc) in &desired.services {
            while let Some((k, _)) = current.next_if(|(k, _)| *k < skey) {
                gone.push(k.clone());
            }
            let Some((_, e)) = current.next_if(|(k, _)| *k == skey) else {
                touched.push((skey, svc, false));
                continue;
            };
            if let Some(keeps_keys) = compare(state, skey, e, svc) {
                touched.push((skey, svc, keeps_keys));
            }
        }
        gone.extend(current.map(|(k, _)| k.clone()));
    }
    plan_from(state, gone, touched)
}

/// [`plan`] when the caller knows which services may differ from the last plan (`changed`,
/// a superset is fine): only those are visited, with the services waiting for a key, so an
/// endpoint change costs the same whatever else the node balances. Gives what [`plan`]
/// would (same operations, same state).
pub fn plan_changes(
    state: &mut Programmed,
    desired: &NodeConfig,
    changed: &BTreeSet<ServiceKey>,
) -> Plan {
    let visit: BTreeSet<&ServiceKey> = changed.iter().chain(&state.waiting).collect();
    let mut gone: Vec<ServiceKey> = Vec::new();
    let mut touched: Vec<(&ServiceKey, &Service, bool)> = Vec::new();
    for key in visit {
        match (desired.services.get_key_value(key), state.services.get(key)) {
            (Some((skey, svc)), Some(e)) => {
                if let Some(keeps_keys) = compare(state, skey, e, svc) {
                    touched.push((skey, svc, keeps_keys));
                }
            }
            (Some((skey, svc)), None) => touched.push((skey, svc, false)),
            (None, Some(_)) => gone.push(key.clone()),
            (None, None) => {}
        }
    }
    plan_from(state, gone, touched)
}

/// None: `svc` is what `e` was programmed from. Some(whether its entry keeps its keys: same
/// network, VIP and ports): it must be planned again.
fn compare(state: &Programmed, skey: &ServiceKey, e: &Entry, svc: &Service) -> Option<bool> {
    // A service that lost a key to another goes the long way, to take it back once it is
    // free.
    let keeps_keys = state.networks.get(&skey.0) == Some(&e.net)
        && e.vip == svc.vip
        && e.ports == svc.ports
        && e.keys.len() == svc.ports.len().max(1);
    (!keeps_keys || e.backends != svc.backends).then_some(keeps_keys)
}

/// The plan from the services that left (`gone`) and those to program again (`touched`,
/// with whether each keeps its keys), both in key order.
fn plan_from(
    state: &mut Programmed,
    gone: Vec<ServiceKey>,
    touched: Vec<(&ServiceKey, &Service, bool)>,
) -> Plan {
    let mut conflicts = Vec::new();
    // Four phases, so that each step leaves the programs consistent: (1) backends a service
    // will count, (2) service entries, (3) keys nobody holds any more, (4) backends nobody
    // counts any more.
    let (mut put_backends, mut put_services) = (Vec::new(), Vec::new());
    let mut drop_backends = Vec::new();
    // Keys given up in this plan; deleted at the end unless another service takes them.
    let mut released: BTreeSet<SvcKey> = BTreeSet::new();
    let mut removed: BTreeSet<Ipv4Addr> = BTreeSet::new();

    for key in gone {
        state.waiting.remove(&key);
        if let Some(old) = state.services.remove(&key) {
            removed.extend(old.slots.iter().copied());
            release(state, &old, &mut released);
            drop_backends.extend(all_slots(&old));
        }
    }
    // Services that changed, with their entry taken out of `state` (None: new).
    let mut changed: Vec<(&ServiceKey, &Service, Option<Entry>)> = Vec::new();
    for (skey, svc, keeps_keys) in touched {
        let mut old = state.services.remove(skey);
        if let Some(e) = old.as_mut().filter(|_| !keeps_keys) {
            release(state, e, &mut released);
            e.keys.clear();
        }
        changed.push((skey, svc, old));
    }
    for (skey, svc, old) in changed {
        let net = state.network_index(&skey.0);
        // An entry kept its keys (same VIP and ports); otherwise it gave them up above.
        let (index, old_slots, kept_keys) = match old {
            Some(e) if e.net == net => (e.index, e.slots, e.keys),
            other => {
                if let Some(e) = other {
                    drop_backends.extend(all_slots(&e));
                    // Now another network's entry: its old backends are gone from this one.
                    removed.extend(e.slots.iter().filter(|a| !svc.backends.contains(a)));
                }
                let i = state.next_service;
                state.next_service += 1;
                (i, Vec::new(), BTreeSet::new())
            }
        };
        let slots = assign_slots(&old_slots, &svc.backends);
        removed.extend(old_slots.iter().filter(|a| !slots.contains(a)));
        for (slot, addr) in slots.iter().enumerate() {
            if old_slots.get(slot) != Some(addr) {
                put_backends.push(MapOp::PutBackend {
                    service: index,
                    slot: slot as u32,
                    addr: *addr,
                });
            }
        }
        let value = SvcVal {
            index,
            net,
            count: slots.len() as u32,
        };
        let count_changed = slots.len() != old_slots.len();
        let mut keys = BTreeSet::new();
        for k in svc.keys() {
            if kept_keys.contains(&k) {
                if count_changed {
                    put_services.push(MapOp::PutService { key: k, value });
                }
                keys.insert(k);
                continue;
            }
            if let Some(owner) = state.owners.get(&k) {
                conflicts.push(format!(
                    "service {} on network {}: {}:{} is already the VIP of service {} on network {}",
                    skey.1, skey.0, k.vip, k.port, owner.1, owner.0
                ));
                continue;
            }
            state.owners.insert(k, skey.clone());
            released.remove(&k);
            put_services.push(MapOp::PutService { key: k, value });
            keys.insert(k);
        }
        // What `compare` calls losing a key: looked at again at every plan.
        if keys.len() != svc.ports.len().max(1) {
            state.waiting.insert(skey.clone());
        } else {
            state.waiting.remove(skey);
        }
        for slot in slots.len()..old_slots.len() {
            drop_backends.push(MapOp::DeleteBackend {
                service: index,
                slot: slot as u32,
            });
        }
        state.services.insert(
            skey.clone(),
            Entry {
                index,
                net,
                vip: svc.vip,
                ports: svc.ports.clone(),
                backends: svc.backends.clone(),
                keys,
                slots,
            },
        );
    }
    let mut ops = put_backends;
    ops.append(&mut put_services);
    ops.extend(released.into_iter().map(|key| MapOp::DeleteService { key }));
    ops.append(&mut drop_backends);
    Plan {
        ops,
        conflicts,
        removed: removed.into_iter().collect(),
    }
}

/// Gives up `e`'s keys (their deletion is decided at the end of the plan).
fn release(state: &mut Programmed, e: &Entry, released: &mut BTreeSet<SvcKey>) {
    for k in &e.keys {
        state.owners.remove(k);
        released.insert(*k);
    }
}

fn all_slots(e: &Entry) -> impl Iterator<Item = MapOp> + '_ {
    (0..e.slots.len() as u32).map(|slot| MapOp::DeleteBackend {
        service: e.index,
        slot,
    })
}

/// Backends by slot after a change: a kept backend keeps its slot, a new one takes a freed
/// slot, and when the service shrinks the last backends move down into the holes. A fresh
/// service keeps the order it was given (round robin visits them in that order).
fn assign_slots(old: &[Ipv4Addr], desired: &[Ipv4Addr]) -> Vec<Ipv4Addr> {
    let mut want: Vec<Ipv4Addr> = Vec::with_capacity(desired.len());
    for a in desired {
        if !want.contains(a) {
            want.push(*a);
        }
    }
    let wanted: BTreeSet<Ipv4Addr> = want.iter().copied().collect();
    let mut slots: Vec<Option<Ipv4Addr>> = old
        .iter()
        .map(|a| wanted.contains(a).then_some(*a))
        .collect();
    let kept: BTreeSet<Ipv4Addr> = slots.iter().flatten().copied().collect();
    let mut additions = want.into_iter().filter(|a| !kept.contains(a));
    for slot in slots.iter_mut().filter(|s| s.is_none()) {
        match additions.next() {
            Some(a) => *slot = Some(a),
            None => break,
        }
    }
    slots.extend(additions.map(Some));
    // Close the holes from the end.
    while let Some(hole) = slots.iter().position(Option::is_none) {
        match slots.pop() {
            Some(Some(last)) => slots[hole] = Some(last),
            _ => continue,
        }
    }
    slots.into_iter().flatten().collect()
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
