//! What one network's tasks can resolve: its cluster names, indexed once per change.
//!
//! The agent keeps a [`NetworkZone`] per network made of one [`ServiceZone`] per service,
//! replaces only the parts of the services whose endpoints changed, and publishes the zones
//! together as one [`NodeZones`](crate::NodeZones) that every sandbox's server reads through
//! its own ordered list of networks. All the work (lowercasing, qualifying with the network,
//! SRV owner names, reverse names) happens when a part is built, so that answering a query is
//! one hash lookup per attached network plus building the records.
//!
//! Precedence within a network: an unqualified name that a service and an alias (or a task)
//! both claim resolves to the first definition in a full build that adds every service's own
//! names in the services' order, then every task's names in the same order. Parts keep that
//! order by their order key (`slot`), however the changes came. Across networks, the sandbox's
//! order decides ([`Scope`](crate::Scope)). `<name>.<network>` is never ambiguous.

use std::hash::Hash;
use std::net::Ipv4Addr;
use std::sync::Arc;

use hickory_proto::rr::Name;

mod service;
mod slot;
#[cfg(test)]
mod tests;

pub use service::ServiceZone;
use slot::Claims;

/// One network the sandbox is attached to, with the services that have endpoints on it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkView {
    /// The network's name (`overlay1`); `<name>.<network>` resolves for every name below.
    pub name: String,
    /// The services attached to this network.
    pub services: Vec<ServiceView>,
}

/// One service as seen on one network.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceView {
    /// The service name (`vote`).
    pub name: String,
    /// The service's virtual IP on this network (vip mode). The name resolves to it even
    /// with no running task, so a service scaled to zero keeps resolving.
    pub vip: Option<Ipv4Addr>,
    /// Endpoint mode dnsrr: the name resolves to the running tasks' addresses, shuffled.
    /// A service without a VIP on this network is treated the same way.
    pub dnsrr: bool,
    /// TTL of the records about the service itself (its name's VIP, the VIP's PTR, SRV to
    /// the VIP), in seconds.
    pub ttl: u32,
    /// TTL of the records that hold task addresses (`tasks.<svc>`, dnsrr answers, task
    /// names, their PTR and SRV), in seconds: short in every endpoint mode, since they
    /// change whenever a task does.
    pub task_ttl: u32,
    /// `--network-alias` names of the service; each resolves like the service name.
    pub aliases: Vec<String>,
    /// Ports answered as SRV records.
    pub ports: Vec<SrvPort>,
    /// Running tasks only: a task leaves DNS before it is stopped. Those not ready yet only
    /// for a service that publishes them (see [`TaskView::ready`]).
    pub tasks: Vec<TaskView>,
}

/// A port of a service, answered as `_<name or port>._<tcp|udp>.<service>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrvPort {
    /// The port's name (`http`), if it has one; the number always works too.
    pub name: Option<String>,
    /// Transport.
    pub protocol: Protocol,
    /// The port the tasks listen on.
    pub target_port: u16,
}

/// Transport of an SRV port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `_tcp`.
    Tcp,
    /// `_udp`.
    Udp,
}

impl Protocol {
    fn label(self) -> &'static str {
        match self {
            Protocol::Tcp => "_tcp",
            Protocol::Udp => "_udp",
        }
    }
}

/// One running task of a service, on one network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskView {
    /// Full task id (24 hex digits); the first 12 resolve too.
    pub id: String,
    /// Task name, `<service>.<slot>.<id>` (`vote.1.<id>`); the reverse name of `addr`.
    pub name: String,
    /// The task's address on this network.
    pub addr: Ipv4Addr,
    /// `--network-alias` names of the task.
    pub aliases: Vec<String>,
    /// It takes traffic. A task that is not ready is listed only in `tasks.<svc>` and under
    /// its own names (a service's `--endpoint-publish-not-ready`); the service's name, its
    /// aliases and SRV records name ready tasks only.
    pub ready: bool,
}

/// How many hex digits a short task id has.
const SHORT_ID_LEN: usize = 12;

/// The names of one network, shared by every sandbox on the node that is attached to it
/// (through [`NodeZones`]). Immutable once published: a change makes a new version with
/// [`NetworkZone::set_service`] on a clone, which shares everything it does not touch.
///
/// Why per-service parts in persistent maps: with hundreds of services on one network, a
/// change of one service used to re-index every name of the network (a third of a busy
/// node's CPU). Now a change costs the names of the services it touched times O(log n), and
/// readers still see one whole version or the other (one `Arc` swap in [`NodeZones`]).
#[derive(Clone, Debug, Default)]
pub struct NetworkZone {
    /// The network's name, lowercase: `<unknown>.<network>` is ours to deny. Empty for a
    /// network without a usable name, whose zone then holds nothing.
    network: Arc<str>,
    /// Every forward name, lowercase, without the trailing dot, with the services claiming it.
    names: Claims<Arc<str>, Arc<Entry>>,
    /// Task addresses and VIPs to their canonical name.
    reverse: Claims<Ipv4Addr, Arc<Ptr>>,
    /// Unqualified service names and aliases: `_<unknown port>._tcp.<service>` is ours to deny.
    srv_owners: Claims<Arc<str>, ()>,
    /// Each service's names by its order key, to withdraw them when it changes.
    services: imbl::HashMap<Arc<str>, Arc<ServiceZone>>,
}
/// What a forward name holds.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Entry {
    Addrs(AddrSet),
    Srv(SrvSet),
}

/// A-record data of one name. May be empty (a dnsrr service with no running task): the name
/// still exists, so other types and the empty set answer NODATA, not NXDOMAIN.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct AddrSet {
    pub ttl: u32,
    pub addrs: Vec<Ipv4Addr>,
    /// Shuffled per query (dnsrr and `tasks.`), so that clients taking the first address
    /// spread their load.
    pub shuffle: bool,
}

/// SRV data of one `_<port>._<proto>.<service>` name.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SrvSet {
    pub ttl: u32,
    pub targets: Vec<SrvTarget>,
    pub shuffle: bool,
}

/// One SRV target: its name (also answered in the additional section with `addr`) and port.
#[derive(Clone, Debug)]
pub(crate) struct SrvTarget {
    pub name: Name,
    pub port: u16,
    pub addr: Ipv4Addr,
}

/// Names compare with their case: the answer carries it.
impl PartialEq for SrvTarget {
    fn eq(&self, other: &SrvTarget) -> bool {
        self.name.eq_case(&other.name) && self.port == other.port && self.addr == other.addr
    }
}

/// The reverse name of an address.
#[derive(Clone, Debug)]
pub(crate) struct Ptr {
    pub ttl: u32,
    pub name: Name,
}

impl PartialEq for Ptr {
    fn eq(&self, other: &Ptr) -> bool {
        self.ttl == other.ttl && self.name.eq_case(&other.name)
    }
}

/// The result of looking a name up.
#[derive(Debug)]
pub(crate) enum Lookup<'z> {
    Addrs(&'z AddrSet),
    Srv(&'z SrvSet),
    Ptr(&'z Ptr),
    /// Not a cluster name, but one under a name the cluster owns.
    NxDomain,
    /// Not ours: forward it.
    NotOurs,
}

impl NetworkZone {
    /// Indexes the names of `network` (see the module docs for precedence within it): the
    /// services are ordered as listed.
    pub fn new(network: &NetworkView) -> NetworkZone {
        let mut zone = NetworkZone::named(&network.name);
        for (i, service) in network.services.iter().enumerate() {
            let part = ServiceZone::new(&network.name, service);
            // Fixed width, so that the keys sort as the positions do.
            zone.set_service(&format!("{i:020}"), Some(Arc::new(part)));
        }
        zone
    }

    /// A network called `name`, with no services yet.
    pub fn named(name: &str) -> NetworkZone {
        NetworkZone {
            network: key(name).into(),
            ..NetworkZone::default()
        }
    }

    /// Replaces the names of the service whose order key is `order` with `part` (`None`:
    /// the service left the network). Where two services claim an unqualified name, the one
    /// with the lower key answers (services' own names before any task's, as in
    /// [`NetworkZone::new`]), whatever order the changes came in. `part` must have been built
    /// for this network's name. Costs the names of the old and new part, O(log n) each.
    pub fn set_service(&mut self, order: &str, part: Option<Arc<ServiceZone>>) {
        let order: Arc<str> = order.into();
        let old = match &part {
            Some(part) => {
                debug_assert_eq!(*part.network, *self.network, "built for another network");
                self.services.insert(Arc::clone(&order), Arc::clone(part))
            }
            None => self.services.remove(&order),
        };
        if let (Some(old), Some(new)) = (&old, &part)
            && Arc::ptr_eq(old, new)
        {
            return;
        }
        let none = ServiceZone::default();
        let old = old.as_deref().unwrap_or(&none);
        let new = part.as_deref().unwrap_or(&none);
        slot::replace(&mut self.names, &order, &old.names, &new.names);
        slot::replace(&mut self.reverse, &order, &old.reverse, &new.reverse);
        slot::replace(
            &mut self.srv_owners,
            &order,
            &old.srv_owners,
            &new.srv_owners,
        );
    }

    /// How many services have names here.
    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// How many forward names (including qualified and SRV names) the network answers.
    pub fn name_count(&self) -> usize {
        self.names.len()
    }

    /// The records of exactly `key`, if this network defines it.
    pub(crate) fn get(&self, key: &str) -> Option<Lookup<'_>> {
        self.names.get(key).map(|slot| match &**slot.winner() {
            Entry::Addrs(set) => Lookup::Addrs(set),
            Entry::Srv(set) => Lookup::Srv(set),
        })
    }

    /// The reverse name of `addr`, if it is a task or VIP of this network.
    pub(crate) fn ptr(&self, addr: Ipv4Addr) -> Option<&Ptr> {
        self.reverse.get(&addr).map(|slot| &**slot.winner())
    }

    /// Whether `label` is this network's name.
    pub(crate) fn is_named(&self, label: &str) -> bool {
        !self.network.is_empty() && *self.network == *label
    }

    /// Whether `owner` is a service name or alias here (its SRV names are ours).
    pub(crate) fn owns_srv(&self, owner: &str) -> bool {
        self.srv_owners.contains_key(owner)
    }
}

/// Two zones are equal when they answer the same: same network name, and every name, reverse
/// address and SRV owner resolves to the same records (how the order of changes is checked
/// not to matter). Which services hold the losing claims does not count.
impl PartialEq for NetworkZone {
    fn eq(&self, other: &NetworkZone) -> bool {
        fn same<K: Hash + Eq + Clone, T: Clone + PartialEq>(
            a: &Claims<K, T>,
            b: &Claims<K, T>,
        ) -> bool {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, s)| b.get(k).is_some_and(|t| s.winner() == t.winner()))
        }
        self.network == other.network
            && same(&self.names, &other.names)
            && same(&self.reverse, &other.reverse)
            && same(&self.srv_owners, &other.srv_owners)
    }
}

/// The lookup key of a configured name: lowercase, without a trailing dot.
fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The lookup key of a queried name, or `None` if it cannot be a cluster name (a label with
/// a dot, a space or a non-ASCII byte in it): such a name is forwarded as it came.
pub(crate) fn key_of(name: &Name) -> Option<String> {
    let mut key = String::with_capacity(name.len());
    for label in name.iter() {
        if !key.is_empty() {
            key.push('.');
        }
        for &b in label {
            if b == b'.' || !b.is_ascii_graphic() {
                return None;
            }
            key.push(char::from(b.to_ascii_lowercase()));
        }
    }
    Some(key)
}

/// A fully qualified name for record data; `None` if it is not a valid DNS name.
fn fqdn(name: &str) -> Option<Name> {
    let mut name = Name::from_ascii(name).ok()?;
    name.set_fqdn(true);
    Some(name)
}

/// `d.c.b.a.in-addr.arpa` to `a.b.c.d`.
pub(crate) fn parse_reverse(key: &str) -> Option<Ipv4Addr> {
    let octets = key.strip_suffix(".in-addr.arpa")?;
    let mut parts = octets.split('.');
    let mut addr = [0u8; 4];
    for slot in addr.iter_mut().rev() {
        let part = parts.next()?;
        // No leading zeros, as in the names PTR queries use: "010" is not 10.
        if part.is_empty()
            || !part.bytes().all(|b| b.is_ascii_digit())
            || (part.len() > 1 && part.starts_with('0'))
        {
            return None;
        }
        *slot = part.parse().ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Ipv4Addr::from(addr))
}
