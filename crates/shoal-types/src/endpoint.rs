//! The endpoint table: who answers on each network, as the agents need it for DNS, VIP
//! rules and VXLAN forwarding entries. Derived from the cluster state by the dispatcher
//! (`shoal_manager::endpoints`), sent to each agent as versioned deltas.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use imbl::OrdMap;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::diff::changes;
use crate::{EndpointMode, PortConfig};

mod by_service;
pub use by_service::ServiceTasks;

/// Default DNS TTL for a VIP: it does not change while the service lives.
pub const VIP_TTL: u32 = 60;
/// Default DNS TTL for task addresses (dnsrr, `tasks.`, task names): short, because they
/// change whenever a task does (Swarm's fixed 600 s is a top complaint).
pub const TASK_TTL: u32 = 5;

/// What one node knows: every network it takes part in.
///
/// The maps are persistent (`imbl`): a copy of a view shares everything with the original,
/// and comparing two versions walks only the parts that differ, so cutting a node's view
/// from the table and finding what a change touched cost the size of the change, not of
/// the network (a network of a thousand tasks changes one task at a time).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointView {
    pub version: u64,
    pub networks: OrdMap<String, NetworkEndpoints>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkEndpoints {
    pub info: NetworkInfo,
    pub services: OrdMap<String, ServiceEndpoint>,
    pub tasks: OrdMap<String, TaskEndpoint>,
    /// The nodes' own endpoints (ingress only): the routing mesh's source addresses, to which
    /// tasks on other nodes reply.
    #[serde(default)]
    pub nodes: OrdMap<String, NodeEndpoint>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEndpoint {
    pub node_id: String,
    pub addr: Ipv4Net,
    pub vtep: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInfo {
    pub id: String,
    pub name: String,
    pub vni: u32,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub ingress: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEndpoint {
    pub id: String,
    pub name: String,
    pub mode: EndpointMode,
    pub vip: Option<Ipv4Net>,
    pub ports: Vec<PortConfig>,
    /// The service's aliases on this network (`--network name=x,alias=y`).
    pub aliases: Vec<String>,
    pub dns_ttl: Option<u32>,
    /// `tasks.<svc>` lists tasks that are not ready yet too (`--endpoint-publish-not-ready`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub publish_not_ready: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskEndpoint {
    pub id: String,
    /// `vote.1.<id>`.
    pub name: String,
    pub service_id: String,
    pub addr: Ipv4Net,
    pub node_id: String,
    /// The underlay address of the task's node: where VXLAN frames for it go.
    pub vtep: Ipv4Addr,
    /// It may take traffic (`health::Readiness`). A task that runs but is not ready is
    /// reachable on the overlay (forwarding entries, so that it can talk to others while it
    /// starts) but is in no name, VIP or published port (`tasks.<svc>` with
    /// `publish_not_ready` aside).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub ready: bool,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

impl NetworkEndpoints {
    /// The ids of the services whose entry or tasks differ between `self` and `new` (the
    /// same network at two versions; the walk skips what they share).
    pub fn changed_services<'a>(&'a self, new: &'a NetworkEndpoints) -> BTreeSet<&'a str> {
        let mut out: BTreeSet<&str> = changes(&self.services, &new.services)
            .map(|(k, _, _)| k.as_str())
            .collect();
        for (_, a, b) in changes(&self.tasks, &new.tasks) {
            out.extend(a.iter().chain(b.iter()).map(|t| t.service_id.as_str()));
        }
        out
    }

    pub fn empty(info: NetworkInfo) -> NetworkEndpoints {
        NetworkEndpoints {
            info,
            services: OrdMap::new(),
            tasks: OrdMap::new(),
            nodes: OrdMap::new(),
        }
    }
}

/// Appends what changed from `old` to `new` (one map of one network) to a delta's lists.
fn map_diff<V: Clone + PartialEq>(
    old: &OrdMap<String, V>,
    new: &OrdMap<String, V>,
    net: &str,
    changed: &mut Vec<(String, V)>,
    removed: &mut Vec<(String, String)>,
) {
    for (k, _, now) in changes(old, new) {
        match now {
            Some(v) => changed.push((net.to_string(), v.clone())),
            None => removed.push((net.to_string(), k.clone())),
        }
    }
}

/// The change from one version of a node's view to the next.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointDelta {
    /// The version this delta applies to (0: a full table, apply to an empty view).
    pub from: u64,
    pub to: u64,
    pub networks: Vec<NetworkInfo>,
    pub networks_removed: Vec<String>,
    pub services: Vec<(String, ServiceEndpoint)>,
    pub services_removed: Vec<(String, String)>,
    pub tasks: Vec<(String, TaskEndpoint)>,
    pub tasks_removed: Vec<(String, String)>,
    #[serde(default)]
    pub nodes: Vec<(String, NodeEndpoint)>,
    #[serde(default)]
    pub nodes_removed: Vec<(String, String)>,
}

impl EndpointDelta {
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
            && self.networks_removed.is_empty()
            && self.services.is_empty()
            && self.services_removed.is_empty()
            && self.tasks.is_empty()
            && self.tasks_removed.is_empty()
            && self.nodes.is_empty()
            && self.nodes_removed.is_empty()
    }
}

impl EndpointView {
    /// The delta that turns `self` into `new`.
    pub fn diff(&self, new: &EndpointView) -> EndpointDelta {
        let mut d = EndpointDelta {
            from: self.version,
            to: new.version,
            ..Default::default()
        };
        let empty = NetworkEndpoints::empty;
        for (id, old, n) in changes(&self.networks, &new.networks) {
            let Some(n) = n else {
                d.networks_removed.push(id.clone());
                continue;
            };
            let id = &n.info.id;
            if old.map(|o| &o.info) != Some(&n.info) {
                d.networks.push(n.info.clone());
            }
            let base = old.cloned().unwrap_or_else(|| empty(n.info.clone()));
            map_diff(
                &base.services,
                &n.services,
                id,
                &mut d.services,
                &mut d.services_removed,
            );
            map_diff(
                &base.tasks,
                &n.tasks,
                id,
                &mut d.tasks,
                &mut d.tasks_removed,
            );
            map_diff(
                &base.nodes,
                &n.nodes,
                id,
                &mut d.nodes,
                &mut d.nodes_removed,
            );
        }
        d
    }

    /// Applies a delta; refuses one that was made for another version.
    pub fn apply(&mut self, d: &EndpointDelta) -> Result<(), String> {
        if d.from == 0 {
            *self = EndpointView::default();
        } else if d.from != self.version {
            return Err(format!(
                "delta from version {} does not apply to version {}",
                d.from, self.version
            ));
        }
        for id in &d.networks_removed {
            self.networks.remove(id);
        }
        for info in &d.networks {
            self.networks
                .entry(info.id.clone())
                .and_modify(|n| n.info = info.clone())
                .or_insert_with(|| NetworkEndpoints::empty(info.clone()));
        }
        for (net, s) in &d.services {
            if let Some(n) = self.networks.get_mut(net) {
                n.services.insert(s.id.clone(), s.clone());
            }
        }
        for (net, id) in &d.services_removed {
            if let Some(n) = self.networks.get_mut(net) {
                n.services.remove(id);
            }
        }
        for (net, t) in &d.tasks {
            if let Some(n) = self.networks.get_mut(net) {
                n.tasks.insert(t.id.clone(), t.clone());
            }
        }
        for (net, id) in &d.tasks_removed {
            if let Some(n) = self.networks.get_mut(net) {
                n.tasks.remove(id);
            }
        }
        for (net, e) in &d.nodes {
            if let Some(n) = self.networks.get_mut(net) {
                n.nodes.insert(e.node_id.clone(), e.clone());
            }
        }
        for (net, id) in &d.nodes_removed {
            if let Some(n) = self.networks.get_mut(net) {
                n.nodes.remove(id);
            }
        }
        self.version = d.to;
        Ok(())
    }
}
