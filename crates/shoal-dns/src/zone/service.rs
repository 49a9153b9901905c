//! One service's names on one network: the unit a change replaces.
//!
//! A full build of a network used to add every service's names, then every task's names, into
//! one map where the first definition wins. Here each service's share of those names is built
//! on its own ([`ServiceZone`]), tagged with the pass it belonged to ([`Tier`]), and the zone
//! decides between services by their order (see `slot`), which gives the same winners.

use std::collections::HashSet;
use std::iter;
use std::net::Ipv4Addr;
use std::sync::Arc;

use super::{
    AddrSet, Entry, Ptr, SHORT_ID_LEN, ServiceView, SrvSet, SrvTarget, TaskView, fqdn, key,
};

/// Which pass of a full build a name belongs to: every service's own names (name, aliases,
/// `tasks.`, SRV, VIP reverse) come before any task's names, whatever the service order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Tier {
    Service,
    Task,
}

/// The names one service defines on one network, built once per change of that service and
/// shared (by `Arc`) between the versions of the network's zone that contain it.
#[derive(Debug, Default)]
pub struct ServiceZone {
    /// The network's name (lookup key) these names are qualified with.
    pub(super) network: Box<str>,
    /// Forward names, each at most once per tier (the first definition in the service wins,
    /// as in one map filled in order).
    pub(super) names: Vec<(Arc<str>, Tier, Arc<Entry>)>,
    /// Reverse entries, each address at most once per tier.
    pub(super) reverse: Vec<(Ipv4Addr, Tier, Arc<Ptr>)>,
    /// The service's name and aliases, for SRV denial; each once.
    pub(super) srv_owners: Vec<(Arc<str>, Tier, ())>,
}

impl ServiceZone {
    /// The names of `service` on the network called `network`. Empty if the network has no
    /// usable name (its zone holds nothing).
    pub fn new(network: &str, service: &ServiceView) -> ServiceZone {
        let net = key(network);
        let mut part = Builder {
            zone: ServiceZone {
                network: net.clone().into(),
                ..ServiceZone::default()
            },
            net,
            seen: HashSet::new(),
            seen_reverse: HashSet::new(),
        };
        if part.net.is_empty() {
            return part.zone;
        }
        part.add_service(service);
        for task in &service.tasks {
            part.add_task(task, service.task_ttl);
        }
        part.zone
    }

    /// How many forward names this service claims (before precedence with other services).
    pub fn name_count(&self) -> usize {
        self.names.len()
    }
}

struct Builder {
    zone: ServiceZone,
    net: String,
    seen: HashSet<(Arc<str>, Tier)>,
    seen_reverse: HashSet<(Ipv4Addr, Tier)>,
}

impl Builder {
    fn add_service(&mut self, service: &ServiceView) {
        let net = self.net.clone();
        let ttl = service.ttl;
        let task_addrs: Vec<Ipv4Addr> = service.tasks.iter().map(|t| t.addr).collect();
        let ready_addrs: Vec<Ipv4Addr> = service
            .tasks
            .iter()
            .filter(|t| t.ready)
            .map(|t| t.addr)
            .collect();
        let vip = if service.dnsrr { None } else { service.vip };
        let resolved = match vip {
            Some(vip) => AddrSet {
                ttl,
                addrs: vec![vip],
                shuffle: false,
            },
            None => AddrSet {
                ttl: service.task_ttl,
                addrs: ready_addrs,
                shuffle: true,
            },
        };
        let resolved = Arc::new(Entry::Addrs(resolved));
        let tasks = Arc::new(Entry::Addrs(AddrSet {
            ttl: service.task_ttl,
            addrs: task_addrs,
            shuffle: true,
        }));
        let owners: Vec<&String> = iter::once(&service.name)
            .chain(&service.aliases)
            .filter(|n| !key(n).is_empty())
            .collect();
        for owner in &owners {
            self.add(owner, Tier::Service, &resolved);
            self.add(&format!("tasks.{owner}"), Tier::Service, &tasks);
            let owner: Arc<str> = key(owner).into();
            if !self.zone.srv_owners.iter().any(|(o, _, _)| *o == owner) {
                self.zone.srv_owners.push((owner, Tier::Service, ()));
            }
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
                .filter(|t| t.ready)
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
        // SRV to the VIP lives as long as the VIP; SRV to tasks as long as task addresses.
        let srv_ttl = if vip.is_some() { ttl } else { service.task_ttl };
        for port in &service.ports {
            let srv = Arc::new(Entry::Srv(SrvSet {
                ttl: srv_ttl,
                targets: targets
                    .iter()
                    .map(|t| SrvTarget {
                        port: port.target_port,
                        ..t.clone()
                    })
                    .collect(),
                shuffle: vip.is_none(),
            }));
            let labels = port
                .name
                .iter()
                .cloned()
                .chain(iter::once(port.target_port.to_string()));
            for label in labels {
                for owner in &owners {
                    let name = format!("_{label}.{}.{owner}", port.protocol.label());
                    self.add(&name, Tier::Service, &srv);
                }
            }
        }

        if let Some(vip) = vip
            && let Some(name) = fqdn(&format!("{}.{net}", service.name))
        {
            self.add_reverse(vip, Tier::Service, Ptr { ttl, name });
        }
    }

    fn add_task(&mut self, task: &TaskView, ttl: u32) {
        let entry = Arc::new(Entry::Addrs(AddrSet {
            ttl,
            addrs: vec![task.addr],
            shuffle: false,
        }));
        let short_id = task
            .id
            .get(..SHORT_ID_LEN)
            .filter(|s| s.len() < task.id.len());
        let names = iter::once(task.name.as_str())
            .chain(iter::once(task.id.as_str()))
            .chain(short_id)
            .chain(task.aliases.iter().map(String::as_str));
        for name in names {
            self.add(name, Tier::Task, &entry);
        }
        if let Some(name) = fqdn(&format!("{}.{}", task.name, self.net)) {
            self.add_reverse(task.addr, Tier::Task, Ptr { ttl, name });
        }
    }

    /// Claims `name` and `name.net`, each unless this service already claimed it in `tier`.
    fn add(&mut self, name: &str, tier: Tier, entry: &Arc<Entry>) {
        let name = key(name);
        if name.is_empty() {
            return;
        }
        let qualified = format!("{name}.{}", self.net);
        for name in [name, qualified] {
            let name: Arc<str> = name.into();
            if self.seen.insert((Arc::clone(&name), tier)) {
                self.zone.names.push((name, tier, Arc::clone(entry)));
            }
        }
    }

    fn add_reverse(&mut self, addr: Ipv4Addr, tier: Tier, ptr: Ptr) {
        if self.seen_reverse.insert((addr, tier)) {
            self.zone.reverse.push((addr, tier, Arc::new(ptr)));
        }
    }
}
