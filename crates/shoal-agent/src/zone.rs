//! The node's DNS zones (one per network, shared by every sandbox; ingress carries no names,
//! as in Swarm) and what one sandbox's VIP balancer programs.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use shoal_dns::{NetworkZone, NodeZones, Protocol, ServiceView, ServiceZone, SrvPort, TaskView};
use shoal_types::diff::changes;
use shoal_types::endpoint::{
    EndpointView, NetworkEndpoints, ServiceEndpoint, ServiceTasks, TASK_TTL, TaskEndpoint, VIP_TTL,
};
use shoal_types::{EndpointMode, Protocol as PortProtocol};
use tokio::sync::watch;

/// The node's DNS zones and the one channel every sandbox's DNS server follows them on.
///
/// An endpoint change rebuilds the names of the services it touched, once for the node, and
/// publishes the networks' new zones with one send: its cost depends neither on how many
/// sandboxes there are nor on how many other services share the network.
pub struct Zones {
    tx: watch::Sender<Arc<NodeZones>>,
    /// The endpoint table the published zones were built from.
    view: Arc<EndpointView>,
    /// Its tasks by service: a changed service's tasks without a walk of the network's.
    tasks: ServiceTasks,
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
            tasks: ServiceTasks::default(),
        }
    }

    /// What a new sandbox's DNS server reads the node's zones from.
    pub fn subscribe(&self) -> watch::Receiver<Arc<NodeZones>> {
        self.tx.subscribe()
    }

    /// Follows a new endpoint table. Returns how many networks' zones changed.
    pub fn update(&mut self, view: &Arc<EndpointView>) -> usize {
        self.update_with(view, service_zone)
    }

    /// [`Zones::update`] with the builder of one service's names given (tests count calls).
    ///
    /// Why per service: a network with hundreds of services used to be re-indexed whole for a
    /// change of one of them. Now the services whose endpoints differ from the last table are
    /// found by comparing the two (cheap equality, no allocation), only their parts are built,
    /// and the network's new zone shares everything else with the one readers still hold.
    fn update_with(
        &mut self,
        view: &Arc<EndpointView>,
        mut build: impl FnMut(&str, &ServiceEndpoint, &[&TaskEndpoint]) -> ServiceZone,
    ) -> usize {
        self.tasks.follow(&self.view, view);
        let mut zones = NodeZones::clone(&self.tx.borrow());
        let mut changed = 0;
        let gone: Vec<String> = zones
            .ids()
            .filter(|id| view.networks.get(*id).is_none_or(|n| n.info.ingress))
            .map(str::to_string)
            .collect();
        let removed = !gone.is_empty();
        for id in gone {
            zones.remove(&id);
        }
        for (id, n) in &view.networks {
            if n.info.ingress {
                continue;
            }
            let old = zones.get(id).zip(self.view.networks.get(id));
            let zone = match old {
                // Same network name: every other service's names stay as they are.
                Some((zone, old)) if old.info.name == n.info.name => {
                    let services = changed_services(old, n);
                    if services.is_empty() {
                        continue;
                    }
                    let mut zone = NetworkZone::clone(zone);
                    for sid in services {
                        let part = n.services.get(sid).map(|s| {
                            let tasks: Vec<&TaskEndpoint> = self.tasks.tasks(id, n, sid).collect();
                            Arc::new(build(&n.info.name, s, &tasks))
                        });
                        zone.set_service(sid, part);
                    }
                    zone
                }
                // New, or renamed (every qualified name changes): build every service.
                _ => {
                    let mut zone = NetworkZone::named(&n.info.name);
                    let tasks = tasks_by_service(n, |_| true);
                    for (sid, s) in &n.services {
                        let tasks = tasks.get(sid.as_str()).map_or(&[][..], Vec::as_slice);
                        zone.set_service(sid, Some(Arc::new(build(&n.info.name, s, tasks))));
                    }
                    zone
                }
            };
            zones.insert(id, Arc::new(zone));
            changed += 1;
        }
        self.view = Arc::clone(view);
        if changed > 0 || removed {
            self.tx.send_replace(Arc::new(zones));
        }
        changed
    }
}

/// The ids of the services of a network whose names may differ between `old` and `new`:
/// added, removed or changed services, and the services of tasks that came, went or changed
/// their name or address (the ingress endpoints of nodes, a task's node and VTEP are not names).
fn changed_services<'a>(old: &'a NetworkEndpoints, new: &'a NetworkEndpoints) -> BTreeSet<&'a str> {
    // The maps are persistent: their difference is walked, not the whole network.
    let mut changed = BTreeSet::new();
    for (id, _, _) in changes(&old.services, &new.services) {
        changed.insert(id.as_str());
    }
    let named = |t: &TaskEndpoint, u: &TaskEndpoint| {
        t.name == u.name
            && t.service_id == u.service_id
            && t.addr.addr() == u.addr.addr()
            && t.ready == u.ready
    };
    for (_, was, now) in changes(&old.tasks, &new.tasks) {
        if let (Some(o), Some(t)) = (was, now)
            && named(o, t)
        {
            continue;
        }
        changed.extend(was.iter().chain(now.iter()).map(|t| t.service_id.as_str()));
    }
    changed
}

/// The tasks of the services `wanted` picks, by service, in task id order (one pass).
fn tasks_by_service(
    n: &NetworkEndpoints,
    wanted: impl Fn(&str) -> bool,
) -> HashMap<&str, Vec<&TaskEndpoint>> {
    let mut by_service: HashMap<&str, Vec<&TaskEndpoint>> = HashMap::new();
    for t in n.tasks.values() {
        if wanted(&t.service_id) {
            by_service.entry(&t.service_id).or_default().push(t);
        }
    }
    by_service
}

/// The names of one service on the network called `network`: its VIP, ports and running
/// tasks (`tasks`, in task id order).
pub fn service_zone(network: &str, s: &ServiceEndpoint, tasks: &[&TaskEndpoint]) -> ServiceZone {
    let vip = if s.mode == EndpointMode::Vip {
        s.vip.map(|v| v.addr())
    } else {
        None
    };
    let service = ServiceView {
        name: s.name.clone(),
        vip,
        dnsrr: s.mode == EndpointMode::Dnsrr,
        ttl: s
            .dns_ttl
            .unwrap_or(if vip.is_some() { VIP_TTL } else { TASK_TTL }),
        // `--dns-ttl` is the user's choice for every record of the service; without it,
        // task addresses get the short TTL in every endpoint mode.
        task_ttl: s.dns_ttl.unwrap_or(TASK_TTL),
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
        // A task that is not ready is in no name, unless the service publishes it in
        // `tasks.<svc>` (`--endpoint-publish-not-ready`).
        tasks: tasks
            .iter()
            .filter(|t| t.ready || s.publish_not_ready)
            .map(|t| TaskView {
                id: t.id.clone(),
                name: t.name.clone(),
                addr: t.addr.addr(),
                aliases: vec![],
                ready: t.ready,
            })
            .collect(),
    };
    ServiceZone::new(network, &service)
}

/// The names of one network built whole, services in id order: what an incremental update
/// must equal (tests).
#[cfg(test)]
pub fn network_zone(n: &NetworkEndpoints) -> NetworkZone {
    let mut zone = NetworkZone::named(&n.info.name);
    let tasks = tasks_by_service(n, |_| true);
    for (sid, s) in &n.services {
        let tasks = tasks.get(sid.as_str()).map_or(&[][..], Vec::as_slice);
        zone.set_service(sid, Some(Arc::new(service_zone(&n.info.name, s, tasks))));
    }
    zone
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
                .filter(|t| t.service_id == s.id && t.ready)
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
