//! The node guard: host hardening the data plane needs, in one nftables table of shoal's in
//! the node's namespace (`inet shoal_guard`, rendered by `guard::rules`, which says what each
//! rule stops and why). Made before the node sets `route_localnet` or makes an overlay,
//! kept in step with the cluster's nodes (one set update per change, counters kept) and the
//! gateway subnet, and removed with the data plane when the node leaves. No other table is
//! read or touched.

pub mod rules;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use imbl::OrdMap;
use ipnet::Ipv4Net;
use shoal_types::diff::changes;
use shoal_types::endpoint::EndpointView;

/// The cluster's nodes' addresses (VTEPs) as the endpoint table names them: every node's
/// own ingress endpoint and the node of every task on this node's networks. Kept by
/// difference (the table's maps are persistent), so a change costs its own size.
#[derive(Debug, Default, Clone)]
pub struct Members {
    /// VTEP -> how many entries (ingress nodes, task endpoints) name it.
    refs: BTreeMap<Ipv4Addr, usize>,
}

impl Members {
    /// Follows the view from `old` to `new`.
    pub fn update(&mut self, old: &EndpointView, new: &EndpointView) {
        let (no_nodes, no_tasks) = (OrdMap::new(), OrdMap::new());
        for (_, was, now) in changes(&old.networks, &new.networks) {
            let nodes = (
                was.map_or(&no_nodes, |n| &n.nodes),
                now.map_or(&no_nodes, |n| &n.nodes),
            );
            for (_, a, b) in changes(nodes.0, nodes.1) {
                self.swap(a.map(|n| n.vtep), b.map(|n| n.vtep));
            }
            let tasks = (
                was.map_or(&no_tasks, |n| &n.tasks),
                now.map_or(&no_tasks, |n| &n.tasks),
            );
            for (_, a, b) in changes(tasks.0, tasks.1) {
                self.swap(a.map(|t| t.vtep), b.map(|t| t.vtep));
            }
        }
    }

    fn swap(&mut self, gone: Option<Ipv4Addr>, came: Option<Ipv4Addr>) {
        if let Some(v) = came {
            *self.refs.entry(v).or_default() += 1;
        }
        if let Some(v) = gone
            && let Some(n) = self.refs.get_mut(&v)
        {
            *n -= 1;
            if *n == 0 {
                self.refs.remove(&v);
            }
        }
    }

    pub fn addrs(&self) -> BTreeSet<Ipv4Addr> {
        self.refs.keys().copied().collect()
    }
}

/// What the agent has programmed of the guard table.
#[derive(Default)]
pub struct Guard {
    made: bool,
    members: Members,
    view: std::sync::Arc<EndpointView>,
    /// The `nodes` set as programmed; `None` after a failed change (refilled next time).
    programmed: Option<BTreeSet<Ipv4Addr>>,
    gateway: Option<Ipv4Net>,
}

async fn nft(script: &str, what: &str) -> Result<(), String> {
    shoal_lb::nft_transaction(None, script)
        .await
        .map_err(|e| format!("failed to {what} (table {}): {e}", rules::TABLE))
}

impl Guard {
    /// Makes the table once (idempotent), replacing one an earlier daemon left, with what is
    /// known now. Nothing that needs the guard may be set up when this fails.
    pub async fn ensure(&mut self) -> Result<(), String> {
        if self.made {
            return Ok(());
        }
        let nodes = self.members.addrs();
        nft(
            &rules::render_table(&nodes, self.gateway),
            "make the node's guard",
        )
        .await?;
        self.programmed = Some(nodes);
        self.made = true;
        Ok(())
    }

    /// A new endpoint table: VXLAN is accepted from the nodes it names, from now on.
    pub async fn follow(&mut self, view: &std::sync::Arc<EndpointView>) -> Result<(), String> {
        self.members.update(&self.view, view);
        self.view = std::sync::Arc::clone(view);
        if !self.made {
            return Ok(());
        }
        let new = self.members.addrs();
        let script = match &self.programmed {
            Some(old) => rules::members_change(old, &new),
            None => Some(rules::members_refill(&new)),
        };
        let Some(script) = script else {
            return Ok(());
        };
        self.programmed = None;
        nft(&script, "update the cluster's nodes in the node's guard").await?;
        self.programmed = Some(new);
        Ok(())
    }

    /// The gateway's subnet, whose addresses only the routing mesh may reach.
    pub async fn set_gateway(&mut self, subnet: Ipv4Net) -> Result<(), String> {
        if self.gateway == Some(subnet) && self.made {
            return Ok(());
        }
        self.gateway = Some(subnet);
        if self.made {
            nft(
                &rules::gateway_change(subnet),
                "set the gateway subnet in the node's guard",
            )
            .await?;
        }
        Ok(())
    }

    /// Removes the table (the node's data plane is going); made again by `ensure`.
    pub async fn remove(&mut self) -> Result<(), String> {
        nft(&rules::render_remove(), "remove the node's guard").await?;
        self.made = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_types::endpoint::{NetworkEndpoints, NetworkInfo, NodeEndpoint, TaskEndpoint};

    fn net(id: &str, ingress: bool) -> NetworkEndpoints {
        NetworkEndpoints::empty(NetworkInfo {
            id: id.into(),
            name: id.into(),
            vni: 4096,
            subnet: "10.0.1.0/24".parse().unwrap(),
            gateway: "10.0.1.1".parse().unwrap(),
            ingress,
        })
    }

    fn task(id: &str, vtep: &str) -> TaskEndpoint {
        TaskEndpoint {
            id: id.into(),
            name: id.into(),
            service_id: "s".into(),
            addr: "10.0.1.5/24".parse().unwrap(),
            node_id: vtep.into(),
            vtep: vtep.parse().unwrap(),
            ready: true,
        }
    }

    fn node(vtep: &str) -> NodeEndpoint {
        NodeEndpoint {
            node_id: vtep.into(),
            addr: "10.0.0.9/24".parse().unwrap(),
            vtep: vtep.parse().unwrap(),
        }
    }

    fn strs(m: &Members) -> Vec<String> {
        m.addrs().iter().map(Ipv4Addr::to_string).collect()
    }

    #[test]
    fn members_are_ingress_nodes_and_the_nodes_of_tasks() {
        let mut v1 = EndpointView::default();
        let mut ingress = net("ing", true);
        ingress.nodes.insert("n1".into(), node("192.168.0.1"));
        ingress.nodes.insert("n2".into(), node("192.168.0.2"));
        v1.networks.insert("ing".into(), ingress);
        let mut a = net("a", false);
        a.tasks.insert("t1".into(), task("t1", "192.168.0.2"));
        a.tasks.insert("t2".into(), task("t2", "192.168.0.3"));
        v1.networks.insert("a".into(), a);
        let mut m = Members::default();
        m.update(&EndpointView::default(), &v1);
        assert_eq!(strs(&m), ["192.168.0.1", "192.168.0.2", "192.168.0.3"]);

        // n2 leaves the ingress table but a task of it is still named: it stays a member.
        let mut v2 = v1.clone();
        v2.networks
            .get_mut("ing")
            .unwrap()
            .nodes
            .remove("n2")
            .unwrap();
        // The task on .3 moved to .4.
        v2.networks
            .get_mut("a")
            .unwrap()
            .tasks
            .insert("t2".into(), task("t2", "192.168.0.4"));
        m.update(&v1, &v2);
        assert_eq!(strs(&m), ["192.168.0.1", "192.168.0.2", "192.168.0.4"]);

        // Network a leaves the view: its tasks' nodes go with it.
        let mut v3 = v2.clone();
        v3.networks.remove("a");
        m.update(&v2, &v3);
        assert_eq!(strs(&m), ["192.168.0.1"]);
        m.update(&v3, &EndpointView::default());
        assert!(m.addrs().is_empty());
    }
}
