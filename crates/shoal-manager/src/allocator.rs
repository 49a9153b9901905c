//! Addresses: a subnet and VXLAN id for each new network, an address on each of its
//! networks for each new task, a VIP per network for each vip-mode service.
//!
//! Addresses are searched from each network's cursor (`Network::next_host`) round the
//! subnet, so an address freed by a dead task is not handed to the next task at once:
//! a client that cached it reaches nothing rather than the wrong service.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use shoal_types::network::FIRST_VNI;
use shoal_types::state::VirtualIp;
use shoal_types::{
    Attachment, ClusterState, Command, EndpointMode, Millis, PublishMode, Service, TaskState,
};

/// The pool overlay subnets come from when none is given (Swarm's default).
pub const DEFAULT_POOL: &str = "10.0.0.0/8";
pub const DEFAULT_SUBNET_LEN: u8 = 24;

/// Bookkeeping for one allocation pass: what it handed out (the state says what was taken
/// before, `ClusterState::address_taken`) and where each search resumes.
struct Pass<'a> {
    state: &'a ClusterState,
    claimed: BTreeMap<String, BTreeSet<Ipv4Addr>>,
    cursor: BTreeMap<String, u32>,
    /// Networks found full in this pass: not searched again (a /16 is 65,534 addresses).
    full: BTreeSet<String>,
}

impl<'a> Pass<'a> {
    fn new(state: &'a ClusterState) -> Pass<'a> {
        Pass {
            state,
            claimed: BTreeMap::new(),
            cursor: BTreeMap::new(),
            full: BTreeSet::new(),
        }
    }

    /// The next free address on a network, or None when it is full.
    fn next(&mut self, network_id: &str) -> Option<Ipv4Net> {
        let net = self.state.networks.get(network_id)?;
        if self.full.contains(network_id) {
            return None;
        }
        let claimed = self.claimed.entry(network_id.to_string()).or_default();
        let start = *self
            .cursor
            .entry(network_id.to_string())
            .or_insert(net.next_host);
        let size = 1u32
            .checked_shl(32 - u32::from(net.ipam.subnet.prefix_len()))
            .unwrap_or(0);
        let base = u32::from(net.ipam.subnet.network());
        for i in 0..size {
            let offset = (start + i) % size;
            let addr = Ipv4Addr::from(base + offset);
            if net.usable(addr)
                && !claimed.contains(&addr)
                && !self.state.address_taken(network_id, addr)
            {
                claimed.insert(addr);
                self.cursor.insert(network_id.to_string(), offset + 1);
                return Ipv4Net::new(addr, net.ipam.subnet.prefix_len()).ok();
            }
        }
        self.full.insert(network_id.to_string());
        None
    }

    /// Why a task gets no address on a full network, with the figures a user needs.
    fn exhausted(&self, network_id: &str) -> String {
        let Some(net) = self.state.networks.get(network_id) else {
            return format!("network {network_id} no longer exists");
        };
        // The gateway is taken but not in the capacity. (A walk of the network's addresses,
        // but only when it is full.)
        let mut used = self.state.addresses_in_use(network_id);
        used.extend(self.claimed.get(network_id).into_iter().flatten());
        let in_use = used.iter().filter(|a| net.usable(**a)).count();
        format!(
            "no available IPv4 address in network {} ({}): {} of {} in use",
            net.name,
            net.ipam.subnet,
            in_use,
            net.capacity()
        )
    }
}

/// The networks a service's tasks join: its own, plus ingress when it publishes a port in
/// ingress mode. With the aliases each network gives the service.
pub fn service_networks(state: &ClusterState, service: &Service) -> Vec<(String, Vec<String>)> {
    let mut nets: Vec<(String, Vec<String>)> = service
        .spec
        .task_template
        .networks
        .iter()
        .map(|a| (a.target.clone(), a.aliases.clone()))
        .collect();
    let ingress_ports = service
        .spec
        .endpoint_spec
        .ports
        .iter()
        .any(|p| p.publish_mode == PublishMode::Ingress);
    if ingress_ports && let Some(ing) = state.ingress() {
        nets.push((ing.id.clone(), vec![]));
    }
    nets
}

pub fn allocate(state: &ClusterState, now: Millis) -> Vec<Command> {
    allocate_for(state, now, None)
}

/// [`allocate`], looking at the VIPs of the services in `services` only (all with `None`):
/// the leader passes the services whose spec changed. New tasks come from the state's
/// index of waiting tasks (`ClusterState::waiting`).
pub fn allocate_for(
    state: &ClusterState,
    now: Millis,
    services: Option<&BTreeSet<String>>,
) -> Vec<Command> {
    let mut pass = Pass::new(state);
    let mut cmds = Vec::new();
    let in_scope: Box<dyn Iterator<Item = &Service>> = match services {
        Some(ids) => Box::new(ids.iter().filter_map(|id| state.services.get(id))),
        None => Box::new(state.services.values()),
    };
    for service in in_scope {
        let wanted: Vec<String> = match service.spec.endpoint_spec.mode {
            EndpointMode::Vip => service_networks(state, service)
                .into_iter()
                .map(|(id, _)| id)
                .collect(),
            EndpointMode::Dnsrr => vec![],
        };
        let current = &service.endpoint.virtual_ips;
        let mut vips: Vec<VirtualIp> = current
            .iter()
            .filter(|v| wanted.contains(&v.network_id))
            .cloned()
            .collect();
        for net in &wanted {
            if !vips.iter().any(|v| &v.network_id == net)
                && let Some(addr) = pass.next(net)
            {
                vips.push(VirtualIp {
                    network_id: net.clone(),
                    addr,
                });
            }
        }
        if &vips != current {
            cmds.push(Command::SetVips {
                service_id: service.id.clone(),
                vips,
            });
        }
    }
    // Each Ready node gets its own address on ingress: the routing mesh's endpoint.
    if let Some(ingress) = state.ingress() {
        for node in state.nodes.values() {
            if node.ingress_addr.is_none()
                && node.status.state == shoal_types::NodeState::Ready
                && let Some(addr) = pass.next(&ingress.id)
            {
                cmds.push(Command::SetNodeIngress {
                    node_id: node.id.clone(),
                    addr,
                });
            }
        }
    }
    let mut allocations = Vec::new();
    let mut errors = Vec::new();
    for task in state.waiting(TaskState::New) {
        let Some(service) = state.services.get(&task.service_id) else {
            continue;
        };
        let mut attachments = Vec::new();
        for (network_id, aliases) in service_networks(state, service) {
            match pass.next(&network_id) {
                Some(addr) => attachments.push(Attachment {
                    network_id,
                    addr,
                    aliases,
                }),
                // A full network: the task stays New until an address frees up, and
                // says so. (Addresses taken for its other networks are only this
                // pass's bookkeeping; nothing is claimed.)
                None => {
                    errors.push((task.id.clone(), pass.exhausted(&network_id)));
                    break;
                }
            }
        }
        if attachments.len() == service_networks(state, service).len() {
            allocations.push((task.id.clone(), attachments));
        }
    }
    cmds.extend(task_errors(state, errors));
    if !allocations.is_empty() {
        cmds.push(Command::AllocateTasks {
            allocations,
            at: now,
        });
    }
    cmds
}

/// The command that shows why tasks wait, for those whose ERROR does not say so yet (so a
/// leader pass over an unchanged cluster proposes nothing).
pub fn task_errors(state: &ClusterState, errors: Vec<(String, String)>) -> Option<Command> {
    let errors: Vec<(String, String)> = errors
        .into_iter()
        .filter(|(id, err)| state.tasks.get(id).is_some_and(|t| &t.status.err != err))
        .collect();
    (!errors.is_empty()).then_some(Command::SetTaskErrors { errors })
}

/// The lowest VXLAN id no network uses.
pub fn next_vni(state: &ClusterState) -> u32 {
    let used: BTreeSet<u32> = state.networks.values().map(|n| n.vni).collect();
    (FIRST_VNI..)
        .find(|v| !used.contains(v))
        .unwrap_or(FIRST_VNI)
}

/// The first `/len` subnet of `pool` that overlaps no existing network and nothing in
/// `avoid` (the host's own addresses, routes and resolvers, read by the caller).
pub fn choose_subnet(
    state: &ClusterState,
    pool: Ipv4Net,
    len: u8,
    avoid: &[Ipv4Net],
) -> Option<Ipv4Net> {
    let taken: Vec<Ipv4Net> = state
        .networks
        .values()
        .map(|n| n.ipam.subnet)
        .chain(avoid.iter().copied())
        .collect();
    pool.subnets(len)
        .ok()?
        .find(|candidate| taken.iter().all(|t| !overlaps(*t, *candidate)))
}

pub fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests;
