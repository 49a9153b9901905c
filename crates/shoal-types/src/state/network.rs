//! Applying network commands: networks, task addresses and VIPs. Every address is checked
//! against the subnet and against every address in use, so two racing allocations cannot
//! hand out the same one.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use super::{ApplyError, ClusterState, VirtualIp};
use crate::network::{Attachment, Network};
use crate::{Millis, ServiceSpec, TaskState, TaskStatus};

impl ClusterState {
    /// A network by id, name, or unique id prefix.
    pub fn find_network(&self, key: &str) -> Option<&Network> {
        if let Some(n) = self
            .networks
            .get(key)
            .or_else(|| self.networks.values().find(|n| n.name == key))
        {
            return Some(n);
        }
        let mut it = self.networks.values().filter(|n| n.id.starts_with(key));
        match (it.next(), it.next()) {
            (Some(n), None) => Some(n),
            _ => None,
        }
    }

    pub fn ingress(&self) -> Option<&Network> {
        self.networks.values().find(|n| n.ingress)
    }

    /// The network as the API shows it: with its address use and capacity.
    pub fn network_with_usage(&self, network: &Network) -> Network {
        let in_use = self
            .addresses_in_use(&network.id)
            .into_iter()
            .filter(|a| network.usable(*a))
            .count() as u64;
        Network {
            usage: Some(crate::network::AddressUsage {
                in_use,
                capacity: network.capacity(),
            }),
            ..network.clone()
        }
    }

    /// Addresses taken on a network: its gateway, the nodes' ingress addresses (on
    /// ingress), the VIPs, and the addresses of tasks that have not finished.
    pub fn addresses_in_use(&self, network_id: &str) -> BTreeSet<Ipv4Addr> {
        let mut used = BTreeSet::new();
        if let Some(n) = self.networks.get(network_id) {
            used.insert(n.ipam.gateway);
        }
        used.extend(self.ingress_addrs(network_id));
        if let Some(held) = self.index.addrs.get(network_id) {
            used.extend(held.keys().copied());
        }
        used
    }

    /// Whether `addr` is taken on a network (see [`ClusterState::addresses_in_use`]),
    /// without collecting every address of the network.
    pub fn address_taken(&self, network_id: &str, addr: Ipv4Addr) -> bool {
        self.networks
            .get(network_id)
            .is_some_and(|n| n.ipam.gateway == addr)
            || self
                .index
                .addrs
                .get(network_id)
                .is_some_and(|held| held.contains_key(&addr))
            || self.ingress_addrs(network_id).any(|a| a == addr)
    }

    /// The nodes' addresses on `network_id` if it is the ingress network (a few nodes: not
    /// indexed).
    fn ingress_addrs(&self, network_id: &str) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let ingress = self.networks.get(network_id).is_some_and(|n| n.ingress);
        self.nodes
            .values()
            .filter(move |_| ingress)
            .filter_map(|n| n.ingress_addr.map(|a| a.addr()))
    }

    /// Services name networks by id (the API resolves names); each must exist and not be
    /// the ingress network, which only published ports join.
    pub(super) fn check_networks(&self, spec: &ServiceSpec) -> Result<(), ApplyError> {
        for att in &spec.task_template.networks {
            let n = self
                .networks
                .get(&att.target)
                .ok_or_else(|| ApplyError::NoSuchNetwork(att.target.clone()))?;
            if n.ingress {
                return Err(ApplyError::Invalid(
                    "services can't be attached to the ingress network by hand; publish a port with -p instead".into(),
                ));
            }
        }
        Ok(())
    }

    pub(super) fn create_network(&mut self, network: Network) -> Result<(), ApplyError> {
        crate::service::validate_name("network", &network.name).map_err(ApplyError::Invalid)?;
        if self.networks.values().any(|n| n.name == network.name) {
            return Err(ApplyError::NetworkNameInUse(network.name));
        }
        if let Some(other) = self.networks.values().find(|n| {
            n.ipam.subnet.contains(&network.ipam.subnet.network())
                || network.ipam.subnet.contains(&n.ipam.subnet.network())
        }) {
            return Err(ApplyError::Invalid(format!(
                "subnet {} overlaps network {} ({}); choose another --subnet",
                network.ipam.subnet, other.name, other.ipam.subnet
            )));
        }
        if !network.ipam.subnet.contains(&network.ipam.gateway) {
            return Err(ApplyError::Invalid(format!(
                "gateway {} is not in subnet {}",
                network.ipam.gateway, network.ipam.subnet
            )));
        }
        if network.ingress && self.ingress().is_some() {
            return Err(ApplyError::Invalid(
                "the cluster already has an ingress network".into(),
            ));
        }
        if self.networks.values().any(|n| n.vni == network.vni) {
            return Err(ApplyError::Invalid(format!(
                "VXLAN id {} is already in use",
                network.vni
            )));
        }
        self.networks.insert(network.id.clone(), network);
        Ok(())
    }

    pub(super) fn remove_network(&mut self, id: &str) -> Result<(), ApplyError> {
        let network = self
            .networks
            .get(id)
            .ok_or_else(|| ApplyError::NoSuchNetwork(id.to_string()))?;
        if network.ingress {
            return Err(ApplyError::Invalid(
                "the ingress network can't be removed".into(),
            ));
        }
        let users: Vec<&str> = self
            .services
            .values()
            .filter(|s| s.spec.task_template.networks.iter().any(|a| a.target == id))
            .map(|s| s.spec.name.as_str())
            .collect();
        if !users.is_empty() {
            return Err(ApplyError::NetworkInUse {
                network: network.name.clone(),
                services: users.join(", "),
            });
        }
        self.networks.remove(id);
        Ok(())
    }

    /// Checks an address for `network_id` and moves the network's search cursor past it.
    /// The caller then records what holds it, which the indexes follow.
    fn claim(&mut self, network_id: &str, addr: Ipv4Addr) -> Result<(), ApplyError> {
        let taken = self.address_taken(network_id, addr);
        let n = self
            .networks
            .get_mut(network_id)
            .ok_or_else(|| ApplyError::NoSuchNetwork(network_id.to_string()))?;
        if !n.usable(addr) || taken {
            return Err(ApplyError::AddressInUse {
                network: n.name.clone(),
                addr: addr.to_string(),
            });
        }
        let offset = u32::from(addr) - u32::from(n.ipam.subnet.network());
        n.next_host = offset + 1;
        Ok(())
    }

    pub(super) fn allocate_tasks(
        &mut self,
        allocations: Vec<(String, Vec<Attachment>)>,
        at: Millis,
    ) -> Result<(), ApplyError> {
        let mut first_err = None;
        for (task_id, attachments) in allocations {
            let Some(task) = self.tasks.get(&task_id) else {
                continue;
            };
            if task.status.state != TaskState::New {
                continue;
            }
            let mut ok = true;
            for a in &attachments {
                if let Err(e) = self.claim(&a.network_id, a.addr.addr()) {
                    first_err.get_or_insert(e);
                    ok = false;
                    break;
                }
            }
            if ok {
                self.with_task(&task_id, |t| {
                    t.networks = attachments;
                    t.status = TaskStatus::new(TaskState::Pending, at, "pending task scheduling");
                    t.updated_at = at;
                });
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    pub(super) fn set_node_ingress(
        &mut self,
        node_id: &str,
        addr: ipnet::Ipv4Net,
    ) -> Result<(), ApplyError> {
        let ingress = self
            .ingress()
            .map(|n| n.id.clone())
            .ok_or_else(|| ApplyError::NoSuchNetwork("ingress".into()))?;
        let node = self
            .nodes
            .get(node_id)
            .ok_or_else(|| ApplyError::NoSuchNode(node_id.to_string()))?;
        if node.ingress_addr.is_some() {
            return Ok(());
        }
        self.claim(&ingress, addr.addr())?;
        if let Some(n) = self.nodes.get_mut(node_id) {
            n.ingress_addr = Some(addr);
        }
        Ok(())
    }

    pub(super) fn set_vips(
        &mut self,
        service_id: &str,
        vips: Vec<VirtualIp>,
    ) -> Result<(), ApplyError> {
        let current = self
            .services
            .get(service_id)
            .ok_or_else(|| ApplyError::NoSuchService(service_id.to_string()))?
            .endpoint
            .virtual_ips
            .clone();
        for v in vips.iter().filter(|v| !current.contains(v)) {
            self.claim(&v.network_id, v.addr.addr())?;
        }
        if let Some(s) = self.services.get_mut(service_id) {
            let before = super::index::vips_of(s);
            s.endpoint.virtual_ips = vips;
            let after = super::index::vips_of(s);
            self.index.release(&before);
            self.index.hold(&after, 1);
        }
        Ok(())
    }
}
