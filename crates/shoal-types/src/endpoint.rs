//! The endpoint table: who answers on each network, as the agents need it for DNS, VIP
//! rules and VXLAN forwarding entries. Derived from the cluster state by the dispatcher
//! (`shoal_manager::endpoints`), sent to each agent as versioned deltas.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::{EndpointMode, PortConfig};

/// Default DNS TTL for a VIP: it does not change while the service lives.
pub const VIP_TTL: u32 = 60;
/// Default DNS TTL for task addresses (dnsrr, `tasks.`, task names): short, because they
/// change whenever a task does (Swarm's fixed 600 s is a top complaint).
pub const TASK_TTL: u32 = 5;

/// What one node knows: every network it takes part in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointView {
    pub version: u64,
    pub networks: BTreeMap<String, NetworkEndpoints>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkEndpoints {
    pub info: NetworkInfo,
    pub services: BTreeMap<String, ServiceEndpoint>,
    pub tasks: BTreeMap<String, TaskEndpoint>,
    /// The nodes' own endpoints (ingress only): the routing mesh's source addresses, to which
    /// tasks on other nodes reply.
    #[serde(default)]
    pub nodes: BTreeMap<String, NodeEndpoint>,
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
        for (id, n) in &new.networks {
            let old = self.networks.get(id);
            if old.map(|o| &o.info) != Some(&n.info) {
                d.networks.push(n.info.clone());
            }
            for (sid, s) in &n.services {
                if old.and_then(|o| o.services.get(sid)) != Some(s) {
                    d.services.push((id.clone(), s.clone()));
                }
            }
            for (tid, t) in &n.tasks {
                if old.and_then(|o| o.tasks.get(tid)) != Some(t) {
                    d.tasks.push((id.clone(), t.clone()));
                }
            }
            for (nid, e) in &n.nodes {
                if old.and_then(|o| o.nodes.get(nid)) != Some(e) {
                    d.nodes.push((id.clone(), e.clone()));
                }
            }
            if let Some(o) = old {
                d.nodes_removed.extend(
                    o.nodes
                        .keys()
                        .filter(|k| !n.nodes.contains_key(*k))
                        .map(|k| (id.clone(), k.clone())),
                );
                d.services_removed.extend(
                    o.services
                        .keys()
                        .filter(|k| !n.services.contains_key(*k))
                        .map(|k| (id.clone(), k.clone())),
                );
                d.tasks_removed.extend(
                    o.tasks
                        .keys()
                        .filter(|k| !n.tasks.contains_key(*k))
                        .map(|k| (id.clone(), k.clone())),
                );
            }
        }
        d.networks_removed = self
            .networks
            .keys()
            .filter(|k| !new.networks.contains_key(*k))
            .cloned()
            .collect();
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
                .or_insert_with(|| NetworkEndpoints {
                    info: info.clone(),
                    services: BTreeMap::new(),
                    tasks: BTreeMap::new(),
                    nodes: BTreeMap::new(),
                });
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
