//! The node's DNS zones (one per network, shared by every sandbox; ingress carries no names,
//! as in Swarm) and what one sandbox's VIP balancer programs.

use std::sync::Arc;

use shoal_dns::{NetworkView, NetworkZone, NodeZones, Protocol, ServiceView, SrvPort, TaskView};
use shoal_types::endpoint::{EndpointView, NetworkEndpoints, TASK_TTL, VIP_TTL};
use shoal_types::{EndpointMode, Protocol as PortProtocol};
use tokio::sync::watch;

/// The node's DNS zones and the one channel every sandbox's DNS server follows them on.
///
/// An endpoint change rebuilds the zones of the networks it touched, once for the node, and
/// publishes them with one send: its cost does not depend on how many sandboxes there are.
pub struct Zones {
    tx: watch::Sender<Arc<NodeZones>>,
    /// The endpoint table the published zones were built from.
    view: Arc<EndpointView>,
}

impl Default for Zones {
    fn default() -> Zones {
        Zones::new()
    }
}

impl Zones {
    pub fn new() -> Zones {
        Zones {
            tx: watch::Sender::new(Arc::new(NodeZones::new())),
            view: Arc::new(EndpointView::default()),
        }
    }

    /// What a new sandbox's DNS server reads the node's zones from.
    pub fn subscribe(&self) -> watch::Receiver<Arc<NodeZones>> {
        self.tx.subscribe()
    }

    /// Follows a new endpoint table. Returns how many networks' zones were rebuilt.
    pub fn update(&mut self, view: &Arc<EndpointView>) -> usize {
        self.update_with(view, network_zone)
    }

    /// [`Zones::update`] with the builder of one network's zone given (tests count calls).
    fn update_with(
        &mut self,
        view: &Arc<EndpointView>,
        mut build: impl FnMut(&NetworkEndpoints) -> NetworkZone,
    ) -> usize {
        let mut zones = NodeZones::clone(&self.tx.borrow());
        let mut changed = false;
        let gone: Vec<String> = zones
            .ids()
            .filter(|id| view.networks.get(*id).is_none_or(|n| n.info.ingress))
            .map(str::to_string)
            .collect();
        for id in gone {
            zones.remove(&id);
            changed = true;
        }
        let mut rebuilt = 0;
        for (id, n) in &view.networks {
            if n.info.ingress {
                continue;
            }
            let same = zones.get(id).is_some()
                && self
                    .view
                    .networks
                    .get(id)
                    .is_some_and(|old| same_names(old, n));
            if same {
                continue;
            }
            zones.insert(id, Arc::new(build(n)));
            rebuilt += 1;
            changed = true;
        }
        self.view = Arc::clone(view);
        if changed {
            self.tx.send_replace(Arc::new(zones));
        }
        rebuilt
    }
}

/// Whether two versions of a network define the same names (the ingress endpoints of nodes
/// are not names).
fn same_names(a: &NetworkEndpoints, b: &NetworkEndpoints) -> bool {
    a.info == b.info && a.services == b.services && a.tasks == b.tasks
}

/// The names of one network: its services with their VIPs, ports and running tasks.
pub fn network_zone(n: &NetworkEndpoints) -> NetworkZone {
    let services = n
        .services
        .values()
        .map(|s| {
            let vip = if s.mode == EndpointMode::Vip {
                s.vip.map(|v| v.addr())
            } else {
                None
            };
            ServiceView {
                name: s.name.clone(),
                vip,
                dnsrr: s.mode == EndpointMode::Dnsrr,
                ttl: s
                    .dns_ttl
                    .unwrap_or(if vip.is_some() { VIP_TTL } else { TASK_TTL }),
                aliases: s.aliases.clone(),
                ports: s
                    .ports
                    .iter()
                    .map(|p| SrvPort {
                        name: p.name.clone(),
                        protocol: match p.protocol {
                            PortProtocol::Tcp => Protocol::Tcp,
                            PortProtocol::Udp => Protocol::Udp,
                        },
                        target_port: p.target_port,
                    })
                    .collect(),
                tasks: n
                    .tasks
                    .values()
                    .filter(|t| t.service_id == s.id)
                    .map(|t| TaskView {
                        id: t.id.clone(),
                        name: t.name.clone(),
                        addr: t.addr.addr(),
                        aliases: vec![],
                    })
                    .collect(),
            }
        })
        .collect();
    NetworkZone::new(&NetworkView {
        name: n.info.name.clone(),
        services,
    })
}

/// What one sandbox's VIP balancer programs: every vip-mode service on the sandbox's
/// networks (ingress excluded), all ports of its VIP, to its running tasks on that network.
pub fn lb_for(view: &EndpointView, networks: &[String]) -> shoal_lb::LbConfig {
    let mut services = Vec::new();
    for id in networks {
        let Some(n) = view.networks.get(id) else {
            continue;
        };
        if n.info.ingress {
            continue;
        }
        for s in n.services.values() {
            let (EndpointMode::Vip, Some(vip)) = (s.mode, s.vip) else {
                continue;
            };
            let mut backends: Vec<_> = n
                .tasks
                .values()
                .filter(|t| t.service_id == s.id)
                .map(|t| t.addr.addr())
                .collect();
            backends.sort();
            services.push(shoal_lb::VipService {
                // One chain per service and network: a sandbox on two of its networks has
                // two VIPs for it.
                id: format!(
                    "{}_{}",
                    &s.id[..12.min(s.id.len())],
                    &id[..12.min(id.len())]
                ),
                vip: vip.addr(),
                ports: Vec::new(),
                backends,
            });
        }
    }
    shoal_lb::LbConfig::new(services)
}

#[cfg(test)]
mod tests;
