//! The one-map build every zone was made with before zones had per-service parts, kept as
//! the oracle of precedence: the first definition in one pass over all services, then one
//! over all tasks, wins.

use std::collections::{HashMap, HashSet};
use std::iter;
use std::net::Ipv4Addr;

use crate::zone::{
    AddrSet, Entry, NetworkView, NetworkZone, Ptr, SHORT_ID_LEN, ServiceView, SrvSet, SrvTarget,
    TaskView, fqdn, key,
};

#[derive(Debug, Default)]
pub(super) struct Reference {
    network: Box<str>,
    names: HashMap<Box<str>, Entry>,
    reverse: HashMap<Ipv4Addr, Ptr>,
    srv_owners: HashSet<Box<str>>,
}

impl Reference {
    pub(super) fn new(network: &NetworkView) -> Reference {
        let mut zone = Reference::default();
        zone.add_network(network);
        zone
    }

    /// Whether `zone` answers every name, address and SRV owner as this does, and no others.
    pub(super) fn same_as(&self, zone: &NetworkZone) -> bool {
        *zone.network == *self.network
            && zone.names.len() == self.names.len()
            && self
                .names
                .iter()
                .all(|(k, e)| zone.names.get(&**k).is_some_and(|s| **s.winner() == *e))
            && zone.reverse.len() == self.reverse.len()
            && self
                .reverse
                .iter()
                .all(|(a, p)| zone.ptr(*a).is_some_and(|q| q == p))
            && zone.srv_owners.len() == self.srv_owners.len()
            && self.srv_owners.iter().all(|o| zone.owns_srv(o))
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
                self.add_task(task, service.task_ttl, &net);
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
                ttl: service.task_ttl,
                addrs: task_addrs.clone(),
                shuffle: true,
            },
        };
        let tasks = AddrSet {
            ttl: service.task_ttl,
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
        let srv_ttl = if vip.is_some() { ttl } else { service.task_ttl };
        for port in &service.ports {
            let srv = SrvSet {
                ttl: srv_ttl,
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
