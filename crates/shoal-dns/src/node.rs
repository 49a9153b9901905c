//! The node's DNS state: one [`NetworkZone`] per network, shared by every sandbox, and the
//! [`Scope`] through which one sandbox sees the networks it is attached to.
//!
//! An endpoint change replaces the zones of the networks it touched and publishes one new
//! [`NodeZones`] (cheap: a map of `Arc`s); every server reads the latest one per query. So the
//! cost of a change does not depend on how many sandboxes the node runs.

use std::collections::HashMap;
use std::sync::Arc;

use crate::zone::{Lookup, NetworkView, NetworkZone, parse_reverse};

/// Every network's zone on this node, by network id. Ingress has none (it carries no names).
#[derive(Clone, Debug, Default)]
pub struct NodeZones {
    /// foldhash rather than SipHash: every query hashes the id of each network in scope.
    networks: HashMap<Box<str>, Arc<NetworkZone>, foldhash::fast::RandomState>,
}

impl NodeZones {
    /// No networks.
    pub fn new() -> NodeZones {
        NodeZones::default()
    }

    /// Sets the zone of network `id`, replacing what it had.
    pub fn insert(&mut self, id: &str, zone: Arc<NetworkZone>) {
        self.networks.insert(id.into(), zone);
    }

    /// Drops the zone of network `id`.
    pub fn remove(&mut self, id: &str) -> Option<Arc<NetworkZone>> {
        self.networks.remove(id)
    }

    /// The zone of network `id`.
    pub fn get(&self, id: &str) -> Option<&Arc<NetworkZone>> {
        self.networks.get(id)
    }

    /// The ids of the networks that have a zone.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.networks.keys().map(|id| &**id)
    }

    /// How many networks have a zone.
    pub fn len(&self) -> usize {
        self.networks.len()
    }

    /// Whether no network has a zone.
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }

    /// What a sandbox attached to `networks` (ids, in the sandbox's order) can resolve.
    /// Ids without a zone (ingress, or a network the node no longer has) are skipped.
    pub fn scope<'a>(&'a self, networks: &'a [String]) -> Scope<'a> {
        Scope {
            zones: self,
            networks,
        }
    }
}

/// Builds zones from `(network id, view)` pairs: how tests, benchmarks and fuzzing make them.
impl FromIterator<(String, NetworkView)> for NodeZones {
    fn from_iter<I: IntoIterator<Item = (String, NetworkView)>>(iter: I) -> NodeZones {
        let mut zones = NodeZones::new();
        for (id, view) in iter {
            zones.insert(&id, Arc::new(NetworkZone::new(&view)));
        }
        zones
    }
}

/// One sandbox's view of the node's zones: its networks, in order. Answering looks in each of
/// them in turn, so the first network that defines an unqualified name wins.
#[derive(Clone, Copy, Debug)]
pub struct Scope<'a> {
    zones: &'a NodeZones,
    networks: &'a [String],
}

impl<'a> Scope<'a> {
    fn zones(self) -> impl Iterator<Item = &'a NetworkZone> {
        self.networks
            .iter()
            .filter_map(move |id| self.zones.get(id).map(|z| &**z))
    }

    /// How many forward names the sandbox can resolve, counting a name each network defines.
    pub fn name_count(self) -> usize {
        self.zones().map(NetworkZone::name_count).sum()
    }

    /// Looks up `key`: a lowercase name without the trailing dot (see
    /// [`key_of`](crate::zone::key_of)).
    pub(crate) fn lookup(self, key: &str) -> Lookup<'a> {
        if let Some(found) = self.zones().find_map(|z| z.get(key)) {
            return found;
        }
        if let Some(addr) = parse_reverse(key) {
            // Reverse names of addresses that are not ours may be the host's: forward them.
            return self
                .zones()
                .find_map(|z| z.ptr(addr))
                .map_or(Lookup::NotOurs, Lookup::Ptr);
        }
        if let Some((_, last)) = key.rsplit_once('.')
            && self.zones().any(|z| z.is_named(last))
        {
            return Lookup::NxDomain;
        }
        if let Some(("tasks", rest)) = key.split_once('.')
            && !rest.contains('.')
        {
            // Only `tasks.<one label>`: `tasks.example.com` is somebody else's name.
            return Lookup::NxDomain;
        }
        let mut parts = key.splitn(3, '.');
        if let (Some(port), Some(proto), Some(owner)) = (parts.next(), parts.next(), parts.next())
            && port.starts_with('_')
            && (proto == "_tcp" || proto == "_udp")
            && self.zones().any(|z| z.owns_srv(owner))
        {
            return Lookup::NxDomain;
        }
        Lookup::NotOurs
    }
}
