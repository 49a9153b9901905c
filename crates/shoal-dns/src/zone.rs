//! What one network's tasks can resolve: its cluster names, indexed once per change.
//!
//! The agent builds a [`NetworkZone`] per network from its endpoint table, only for networks
//! whose endpoints changed, and publishes them together as one [`NodeZones`](crate::NodeZones)
//! that every sandbox's server reads through its own ordered list of networks. All the work
//! (lowercasing, qualifying with the network, SRV owner names, reverse names) happens here, so
//! that answering a query is one hash lookup per attached network plus building the records.
//!
//! Precedence within a network: an unqualified name that a service and an alias (or a task)
//! both claim resolves to the first definition, services before their tasks. Across networks,
//! the sandbox's order decides ([`Scope`](crate::Scope)). `<name>.<network>` is never
//! ambiguous.

use std::collections::{HashMap, HashSet};
use std::iter;
use std::net::Ipv4Addr;

use hickory_proto::rr::Name;

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
    /// TTL of every record about this service and its tasks, in seconds.
    pub ttl: u32,
    /// `--network-alias` names of the service; each resolves like the service name.
    pub aliases: Vec<String>,
    /// Ports answered as SRV records.
    pub ports: Vec<SrvPort>,
    /// Running tasks only: a task leaves DNS before it is stopped.
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
}

/// How many hex digits a short task id has.
const SHORT_ID_LEN: usize = 12;

/// The names of one network, indexed once per change of that network and shared by every
/// sandbox on the node that is attached to it (through [`NodeZones`]). Immutable once built.
#[derive(Debug, Default)]
pub struct NetworkZone {
    /// The network's name, lowercase: `<unknown>.<network>` is ours to deny. Empty for a
    /// network without a usable name, whose zone then holds nothing.
    network: Box<str>,
    /// Every forward name, lowercase, without the trailing dot.
    names: HashMap<Box<str>, Entry>,
    /// Task addresses and VIPs to their canonical name.
    reverse: HashMap<Ipv4Addr, Ptr>,
    /// Unqualified service names and aliases: `_<unknown port>._tcp.<service>` is ours to deny.
    srv_owners: HashSet<Box<str>>,
}
/// What a forward name holds.
#[derive(Clone, Debug)]
pub(crate) enum Entry {
    Addrs(AddrSet),
    Srv(SrvSet),
}

/// A-record data of one name. May be empty (a dnsrr service with no running task): the name
/// still exists, so other types and the empty set answer NODATA, not NXDOMAIN.
#[derive(Clone, Debug)]
pub(crate) struct AddrSet {
    pub ttl: u32,
    pub addrs: Vec<Ipv4Addr>,
    /// Shuffled per query (dnsrr and `tasks.`), so that clients taking the first address
    /// spread their load.
    pub shuffle: bool,
}

/// SRV data of one `_<port>._<proto>.<service>` name.
#[derive(Clone, Debug)]
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

/// The reverse name of an address.
#[derive(Clone, Debug)]
pub(crate) struct Ptr {
    pub ttl: u32,
    pub name: Name,
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
    /// Indexes the names of `network` (see the module docs for precedence within it).
    pub fn new(network: &NetworkView) -> NetworkZone {
        let mut zone = NetworkZone::default();
        zone.add_network(network);
        zone
    }

    /// How many forward names (including qualified and SRV names) the network answers.
    pub fn name_count(&self) -> usize {
        self.names.len()
    }

    /// The records of exactly `key`, if this network defines it.
    pub(crate) fn get(&self, key: &str) -> Option<Lookup<'_>> {
        self.names.get(key).map(|entry| match entry {
            Entry::Addrs(set) => Lookup::Addrs(set),
            Entry::Srv(set) => Lookup::Srv(set),
        })
    }

    /// The reverse name of `addr`, if it is a task or VIP of this network.
    pub(crate) fn ptr(&self, addr: Ipv4Addr) -> Option<&Ptr> {
        self.reverse.get(&addr)
    }

    /// Whether `label` is this network's name.
    pub(crate) fn is_named(&self, label: &str) -> bool {
        !self.network.is_empty() && *self.network == *label
    }

    /// Whether `owner` is a service name or alias here (its SRV names are ours).
    pub(crate) fn owns_srv(&self, owner: &str) -> bool {
        self.srv_owners.contains(owner)
    }

    fn add_network(&mut self, network: &NetworkView) {
        let net = key(&network.name);
        if net.is_empty() {
            return;
        }
        self.network = net.clone().into();
        for service in &network.services {
            self.add_service(service, &net);
        }
        for service in &network.services {
            for task in &service.tasks {
                self.add_task(task, service.ttl, &net);
            }
        }
    }

    fn add_service(&mut self, service: &ServiceView, net: &str) {
        let ttl = service.ttl;
        let task_addrs: Vec<Ipv4Addr> = service.tasks.iter().map(|t| t.addr).collect();
        let vip = if service.dnsrr { None } else { service.vip };
        let resolved = match vip {
            Some(vip) => AddrSet {
                ttl,
                addrs: vec![vip],
                shuffle: false,
            },
            None => AddrSet {
                ttl,
                addrs: task_addrs.clone(),
                shuffle: true,
            },
        };
        let tasks = AddrSet {
            ttl,
            addrs: task_addrs,
            shuffle: true,
        };
        let owners: Vec<&String> = iter::once(&service.name)
            .chain(&service.aliases)
            .filter(|n| !key(n).is_empty())
            .collect();
        for owner in &owners {
            self.add(owner, net, &Entry::Addrs(resolved.clone()));
            self.add(&format!("tasks.{owner}"), net, &Entry::Addrs(tasks.clone()));
            self.srv_owners.insert(key(owner).into());
        }

        let targets: Vec<SrvTarget> = match vip {
            Some(vip) => fqdn(&format!("{}.{net}", service.name))
                .map(|name| SrvTarget {
                    name,
                    port: 0,
                    addr: vip,
                })
                .into_iter()
                .collect(),
            None => service
                .tasks
                .iter()
                .filter_map(|t| {
                    let name = fqdn(&format!("{}.{net}", t.name))?;
                    Some(SrvTarget {
                        name,
                        port: 0,
                        addr: t.addr,
                    })
                })
                .collect(),
        };
        for port in &service.ports {
            let srv = SrvSet {
                ttl,
                targets: targets
                    .iter()
                    .map(|t| SrvTarget {
                        port: port.target_port,
                        ..t.clone()
                    })
                    .collect(),
                shuffle: vip.is_none(),
            };
            let labels = port
                .name
                .iter()
                .cloned()
                .chain(iter::once(port.target_port.to_string()));
            for label in labels {
                for owner in &owners {
                    let name = format!("_{label}.{}.{owner}", port.protocol.label());
                    self.add(&name, net, &Entry::Srv(srv.clone()));
                }
            }
        }

        if let Some(vip) = vip
            && let Some(name) = fqdn(&format!("{}.{net}", service.name))
        {
            self.reverse.entry(vip).or_insert(Ptr { ttl, name });
        }
    }

    fn add_task(&mut self, task: &TaskView, ttl: u32, net: &str) {
        let entry = Entry::Addrs(AddrSet {
            ttl,
            addrs: vec![task.addr],
            shuffle: false,
        });
        let short_id = task
            .id
            .get(..SHORT_ID_LEN)
            .filter(|s| s.len() < task.id.len());
        let names = iter::once(task.name.as_str())
            .chain(iter::once(task.id.as_str()))
            .chain(short_id)
            .chain(task.aliases.iter().map(String::as_str));
        for name in names {
            self.add(name, net, &entry);
        }
        if let Some(name) = fqdn(&format!("{}.{net}", task.name)) {
            self.reverse.entry(task.addr).or_insert(Ptr { ttl, name });
        }
    }

    /// Adds `name` and `name.net`, each unless an earlier definition claimed it.
    fn add(&mut self, name: &str, net: &str, entry: &Entry) {
        let name = key(name);
        if name.is_empty() {
            return;
        }
        let qualified = format!("{name}.{net}");
        self.names
            .entry(name.into())
            .or_insert_with(|| entry.clone());
        self.names
            .entry(qualified.into())
            .or_insert_with(|| entry.clone());
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
