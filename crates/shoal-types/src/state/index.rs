//! Indexes kept beside the tasks, so that what the leader asks at every change (which tasks
//! wait, how many live tasks a node and a service have there, whether an address is taken)
//! costs the size of the change, not a walk of every task of the cluster.
//!
//! Each index is a function of the state: a task (or a service's VIPs) contributes a
//! [`Footprint`], and `apply` replaces a task's old footprint with its new one whenever it
//! changes the task. `build` makes the same indexes from scratch (a snapshot read back;
//! the tests compare the two after every command).

use std::net::Ipv4Addr;

use imbl::{OrdMap, OrdSet};

use crate::{Service, Task, TaskState};

/// What the live tasks placed on one node hold: how many, and what they reserve
/// (`--reserve-cpu`, `--reserve-memory`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeLoad {
    pub tasks: u64,
    pub nano_cpus: u64,
    pub memory_bytes: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Index {
    /// Task ids by service id.
    pub(super) by_service: OrdMap<String, OrdSet<String>>,
    /// Addresses held on each network by unfinished tasks and by services' VIPs, each with
    /// how many hold it (one, unless a log written before the checks held one twice).
    pub(super) addrs: OrdMap<String, OrdMap<Ipv4Addr, u32>>,
    /// Live tasks (`Task::is_live`) per node they are placed on.
    pub(super) load: OrdMap<String, NodeLoad>,
    /// Live tasks per service, per node.
    pub(super) spread: OrdMap<String, OrdMap<String, u64>>,
    /// Tasks desired Running that wait for addresses (New) or for a node (Pending).
    pub(super) new: OrdSet<String>,
    pub(super) pending: OrdSet<String>,
    /// Service ids by name (a name is never changed, and `apply` refuses a second).
    pub(super) names: OrdMap<String, String>,
    /// Services that carry a registry login (`--with-registry-auth`).
    pub(super) with_login: OrdSet<String>,
}

/// What one task contributes to the indexes.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Footprint {
    id: String,
    service: String,
    /// The node and reservations of a live, placed task.
    live_on: Option<(String, u64, i64)>,
    /// Addresses held while the task is not finished.
    addrs: Vec<(String, Ipv4Addr)>,
    /// New or Pending while desired Running.
    waits: Option<TaskState>,
}

impl Footprint {
    pub(super) fn of(t: &Task) -> Footprint {
        let live_on = t.node_id.as_ref().filter(|_| t.is_live()).map(|n| {
            let r = &t.spec.reservations;
            (
                n.clone(),
                r.nano_cpus.unwrap_or(0),
                r.memory_bytes.unwrap_or(0),
            )
        });
        let addrs = if t.status.state.is_terminal() {
            Vec::new()
        } else {
            t.networks
                .iter()
                .map(|a| (a.network_id.clone(), a.addr.addr()))
                .collect()
        };
        let waits = (t.desired_state == TaskState::Running
            && matches!(t.status.state, TaskState::New | TaskState::Pending))
        .then_some(t.status.state);
        Footprint {
            id: t.id.clone(),
            service: t.service_id.clone(),
            live_on,
            addrs,
            waits,
        }
    }
}

/// The addresses a service's VIPs hold.
pub(super) fn vips_of(s: &Service) -> Vec<(String, Ipv4Addr)> {
    s.endpoint
        .virtual_ips
        .iter()
        .map(|v| (v.network_id.clone(), v.addr.addr()))
        .collect()
}

impl Index {
    pub(super) fn build<'a>(
        tasks: impl Iterator<Item = &'a Task>,
        services: impl Iterator<Item = &'a Service>,
    ) -> Index {
        let mut ix = Index::default();
        for t in tasks {
            ix.add(&Footprint::of(t));
        }
        for s in services {
            ix.add_service(s);
        }
        ix
    }

    /// Counts a service's VIPs and name.
    pub(super) fn add_service(&mut self, s: &Service) {
        self.hold(&vips_of(s), 1);
        self.names.insert(s.spec.name.clone(), s.id.clone());
        if s.registry_auth.is_some() {
            self.with_login.insert(s.id.clone());
        }
    }

    /// Forgets what [`Index::add_service`] counted.
    pub(super) fn remove_service(&mut self, s: &Service) {
        self.release(&vips_of(s));
        if self.names.get(&s.spec.name) == Some(&s.id) {
            self.names.remove(&s.spec.name);
        }
        self.with_login.remove(&s.id);
    }

    /// Replaces a task's contribution (`None`: the task did not exist, or no longer does).
    pub(super) fn replace(&mut self, before: Option<&Footprint>, after: Option<&Footprint>) {
        if before == after {
            return;
        }
        if let Some(b) = before {
            self.remove(b);
        }
        if let Some(a) = after {
            self.add(a);
        }
    }

    fn add(&mut self, f: &Footprint) {
        self.by_service
            .entry(f.service.clone())
            .or_default()
            .insert(f.id.clone());
        if let Some((node, cpus, mem)) = &f.live_on {
            let l = self.load.entry(node.clone()).or_default();
            l.tasks += 1;
            l.nano_cpus += cpus;
            l.memory_bytes += mem;
            *self
                .spread
                .entry(f.service.clone())
                .or_default()
                .entry(node.clone())
                .or_default() += 1;
        }
        self.hold(&f.addrs, 1);
        match f.waits {
            Some(TaskState::New) => self.new.insert(f.id.clone()),
            Some(_) => self.pending.insert(f.id.clone()),
            None => None,
        };
    }

    fn remove(&mut self, f: &Footprint) {
        if let Some(ids) = self.by_service.get_mut(&f.service) {
            ids.remove(&f.id);
            if ids.is_empty() {
                self.by_service.remove(&f.service);
            }
        }
        if let Some((node, cpus, mem)) = &f.live_on {
            if let Some(l) = self.load.get_mut(node) {
                l.tasks -= 1;
                l.nano_cpus -= cpus;
                l.memory_bytes -= mem;
                if l.tasks == 0 {
                    self.load.remove(node);
                }
            }
            if let Some(nodes) = self.spread.get_mut(&f.service) {
                if let Some(n) = nodes.get_mut(node) {
                    *n -= 1;
                    if *n == 0 {
                        nodes.remove(node);
                    }
                }
                if nodes.is_empty() {
                    self.spread.remove(&f.service);
                }
            }
        }
        self.release(&f.addrs);
        self.new.remove(&f.id);
        self.pending.remove(&f.id);
    }

    /// Counts `addrs` as held (once more each).
    pub(super) fn hold(&mut self, addrs: &[(String, Ipv4Addr)], times: u32) {
        for (net, addr) in addrs {
            *self
                .addrs
                .entry(net.clone())
                .or_default()
                .entry(*addr)
                .or_default() += times;
        }
    }

    /// Counts `addrs` as held once less each.
    pub(super) fn release(&mut self, addrs: &[(String, Ipv4Addr)]) {
        for (net, addr) in addrs {
            let Some(held) = self.addrs.get_mut(net) else {
                continue;
            };
            if let Some(n) = held.get_mut(addr) {
                *n -= 1;
                if *n == 0 {
                    held.remove(addr);
                }
            }
            if held.is_empty() {
                self.addrs.remove(net);
            }
        }
    }
}
