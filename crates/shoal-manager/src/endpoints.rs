//! The endpoint table each agent needs: the networks it takes part in, their services
//! (VIPs, ports, aliases) and their running tasks, with the underlay address of each task's
//! node. A task is in the table while it runs, is meant to run, and its node is Ready.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use shoal_types::endpoint::{
    EndpointView, NetworkEndpoints, NetworkInfo, NodeEndpoint, ServiceEndpoint, TaskEndpoint,
};
use shoal_types::{ClusterState, Network, NodeState, TaskState};

use crate::allocator::service_networks;

fn info(n: &Network) -> NetworkInfo {
    NetworkInfo {
        id: n.id.clone(),
        name: n.name.clone(),
        vni: n.vni,
        subnet: n.ipam.subnet,
        gateway: n.ipam.gateway,
        ingress: n.ingress,
    }
}

/// A hash of everything [`table`] reads, without building it: most state changes (a task
/// scheduled, starting, a status message) leave the table as it was, and building and
/// comparing the whole table on each of them was the leader's largest cost per change at
/// 1,000 tasks. Equal fingerprints mean an equal table (up to a 64-bit hash collision).
pub fn table_fingerprint(state: &ClusterState) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for n in state.networks.values() {
        (
            &n.id,
            &n.name,
            n.vni,
            n.ipam.subnet,
            n.ipam.gateway,
            n.ingress,
        )
            .hash(&mut h);
    }
    // A spec change bumps the version: names, modes, ports, aliases, networks, TTLs.
    for s in state.services.values() {
        (&s.id, s.version).hash(&mut h);
        for v in &s.endpoint.virtual_ips {
            (&v.network_id, v.addr).hash(&mut h);
        }
    }
    for node in state.nodes.values() {
        (
            &node.id,
            node.status.state,
            node.ingress_addr,
            &node.status.addr,
        )
            .hash(&mut h);
    }
    for t in state.tasks.values() {
        if t.desired_state != TaskState::Running || t.status.state != TaskState::Running {
            continue;
        }
        (&t.id, &t.node_id, &t.service_id, &t.service_name, t.slot).hash(&mut h);
        for a in &t.networks {
            (&a.network_id, a.addr, &a.aliases).hash(&mut h);
        }
    }
    h.finish()
}

/// Every network with its services and running tasks.
pub fn table(state: &ClusterState) -> BTreeMap<String, NetworkEndpoints> {
    let mut nets: BTreeMap<String, NetworkEndpoints> = state
        .networks
        .values()
        .map(|n| {
            (
                n.id.clone(),
                NetworkEndpoints {
                    info: info(n),
                    services: BTreeMap::new(),
                    tasks: BTreeMap::new(),
                    nodes: BTreeMap::new(),
                },
            )
        })
        .collect();
    for s in state.services.values() {
        for (net, aliases) in service_networks(state, s) {
            let Some(entry) = nets.get_mut(&net) else {
                continue;
            };
            let vip = s
                .endpoint
                .virtual_ips
                .iter()
                .find(|v| v.network_id == net)
                .map(|v| v.addr);
            entry.services.insert(
                s.id.clone(),
                ServiceEndpoint {
                    id: s.id.clone(),
                    name: s.spec.name.clone(),
                    mode: s.spec.endpoint_spec.mode,
                    vip,
                    ports: s.spec.endpoint_spec.ports.clone(),
                    aliases,
                    dns_ttl: s.spec.endpoint_spec.dns_ttl,
                },
            );
        }
    }
    // Every Ready node's own ingress endpoint.
    if let Some(ingress) = state.ingress().and_then(|n| nets.get_mut(&n.id)) {
        for node in state
            .nodes
            .values()
            .filter(|n| n.status.state == NodeState::Ready)
        {
            let (Some(addr), Ok(vtep)) = (node.ingress_addr, node.status.addr.parse::<Ipv4Addr>())
            else {
                continue;
            };
            ingress.nodes.insert(
                node.id.clone(),
                NodeEndpoint {
                    node_id: node.id.clone(),
                    addr,
                    vtep,
                },
            );
        }
    }
    for t in state.tasks.values() {
        if t.desired_state != TaskState::Running || t.status.state != TaskState::Running {
            continue;
        }
        let Some(node) = t.node_id.as_ref().and_then(|n| state.nodes.get(n)) else {
            continue;
        };
        if node.status.state != NodeState::Ready {
            continue;
        }
        let Ok(vtep) = node.status.addr.parse::<Ipv4Addr>() else {
            continue;
        };
        for a in &t.networks {
            if let Some(entry) = nets.get_mut(&a.network_id) {
                entry.tasks.insert(
                    t.id.clone(),
                    TaskEndpoint {
                        id: t.id.clone(),
                        name: t.name(),
                        service_id: t.service_id.clone(),
                        addr: a.addr,
                        node_id: node.id.clone(),
                        vtep,
                    },
                );
            }
        }
    }
    nets
}

/// The networks a node takes part in: those of the tasks it should run, and ingress.
pub fn node_networks(state: &ClusterState, node_id: &str) -> Vec<String> {
    let mut ids: Vec<String> = state
        .tasks
        .values()
        .filter(|t| t.node_id.as_deref() == Some(node_id) && t.desired_state <= TaskState::Running)
        .flat_map(|t| t.networks.iter().map(|a| a.network_id.clone()))
        .chain(state.ingress().map(|n| n.id.clone()))
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// One node's view, cut from the full table.
pub fn node_view(
    state: &ClusterState,
    full: &BTreeMap<String, NetworkEndpoints>,
    node_id: &str,
) -> EndpointView {
    let networks = node_networks(state, node_id)
        .into_iter()
        .filter_map(|id| full.get(&id).map(|n| (id, n.clone())))
        .collect();
    EndpointView {
        version: state.version,
        networks,
    }
}

/// Services whose endpoints differ between two tables (their VIP, ports, or tasks).
pub fn changed_services(
    old: &BTreeMap<String, NetworkEndpoints>,
    new: &BTreeMap<String, NetworkEndpoints>,
) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let empty = BTreeMap::new();
    for id in old.keys().chain(new.keys()) {
        let (o, n) = (old.get(id), new.get(id));
        let (os, ns) = (
            o.map_or(&empty, |x| &x.services),
            n.map_or(&empty, |x| &x.services),
        );
        for sid in os.keys().chain(ns.keys()) {
            if os.get(sid) != ns.get(sid) {
                out.insert(sid.clone());
            }
        }
        let no_tasks = BTreeMap::new();
        let (ot, nt) = (
            o.map_or(&no_tasks, |x| &x.tasks),
            n.map_or(&no_tasks, |x| &x.tasks),
        );
        for tid in ot.keys().chain(nt.keys()) {
            if ot.get(tid) != nt.get(tid)
                && let Some(t) = nt.get(tid).or_else(|| ot.get(tid))
            {
                out.insert(t.service_id.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocator::allocate;
    use shoal_types::fixtures::*;
    use shoal_types::{Command, Millis, Task, TaskStatus};

    fn running_task(st: &mut ClusterState, id: &str, node: &str) {
        let mut t = Task {
            id: id.into(),
            service_id: "s1".into(),
            service_name: "vote".into(),
            slot: 1,
            node_id: None,
            desired_state: TaskState::Running,
            status: TaskStatus::new(TaskState::New, Millis(0), ""),
            spec_version: 1,
            spec: spec("vote", 1).task_template.container_spec,
            networks: vec![],
            ports: vec![],
            restarts: 0,
            created_at: Millis(0),
            updated_at: Millis(0),
        };
        t.slot = st.tasks.len() as u64 + 1;
        st.apply(Command::CreateTasks { tasks: vec![t] }).unwrap();
        for c in allocate(st, Millis(0)) {
            st.apply(c).unwrap();
        }
        st.apply(Command::AssignTasks {
            assignments: vec![(id.into(), node.into())],
            at: Millis(0),
        })
        .unwrap();
        let status = TaskStatus::new(TaskState::Running, Millis(1), "");
        st.apply(Command::UpdateTaskStatus {
            id: id.into(),
            node_id: node.into(),
            status,
        })
        .unwrap();
    }

    /// The fingerprint moves exactly when the table does, over a run of commands that
    /// touch it and commands that do not.
    #[test]
    fn the_fingerprint_follows_the_table() {
        let mut st = cluster(&[("n1", "node1"), ("n2", "node2")]);
        let mut last = (table_fingerprint(&st), table(&st));
        let mut step = |st: &mut ClusterState, cmd: Option<Command>, what: &str| {
            if let Some(cmd) = cmd {
                st.apply(cmd).unwrap();
            }
            let now = (table_fingerprint(st), table(st));
            assert_eq!(
                now.0 != last.0,
                now.1 != last.1,
                "{what}: fingerprint changed {}, table changed {}",
                now.0 != last.0,
                now.1 != last.1
            );
            last = now;
        };
        let net = network("net1", "overlay1", "10.0.0.0/24", 4096);
        step(
            &mut st,
            Some(Command::CreateNetwork { network: net }),
            "network",
        );
        let svc = service("s1", spec_on("vote", 2, &["net1"]));
        step(
            &mut st,
            Some(Command::CreateService { service: svc }),
            "service",
        );
        running_task(&mut st, "ta", "n1");
        step(&mut st, None, "a task runs");
        step(
            &mut st,
            Some(Command::SetTaskErrors {
                errors: vec![("ta".into(), "x".into())],
            }),
            "an error text",
        );
        let mut spec = spec_on("vote", 3, &["net1"]);
        spec.endpoint_spec.dns_ttl = Some(30);
        step(
            &mut st,
            Some(Command::UpdateService {
                id: "s1".into(),
                spec,
                at: Millis(2),
            }),
            "a TTL",
        );
        step(
            &mut st,
            Some(Command::SetDesiredState {
                tasks: vec!["ta".into()],
                state: TaskState::Shutdown,
                at: Millis(3),
            }),
            "a task stops",
        );
        running_task(&mut st, "tb", "n2");
        step(&mut st, None, "another task runs");
        step(
            &mut st,
            Some(Command::SetNodeState {
                id: "n2".into(),
                state: shoal_types::NodeState::Down,
                message: String::new(),
                at: Millis(4),
            }),
            "its node goes down",
        );
    }

    #[test]
    fn views_follow_tasks_and_deltas_rebuild_them() {
        let mut st = cluster(&[("n1", "node1"), ("n2", "node2"), ("n3", "node3")]);
        st.apply(Command::CreateNetwork {
            network: network("net1", "overlay1", "10.0.0.0/24", 4096),
        })
        .unwrap();
        st.apply(Command::CreateService {
            service: service("s1", spec_on("vote", 2, &["net1"])),
        })
        .unwrap();
        running_task(&mut st, "ta", "n1");
        running_task(&mut st, "tb", "n2");
        let full = table(&st);
        let v1 = node_view(&st, &full, "n1");
        assert_eq!(
            v1.networks["net1"].tasks.len(),
            2,
            "node1 sees both tasks of its network"
        );
        assert_eq!(
            v1.networks["net1"].services["s1"]
                .vip
                .map(|v| v.to_string())
                .as_deref(),
            Some("10.0.0.2/24")
        );
        assert!(
            node_view(&st, &full, "n3").networks.is_empty(),
            "node3 runs nothing on overlay1"
        );

        // A task on a node that goes down leaves the table.
        st.apply(Command::SetNodeState {
            id: "n2".into(),
            state: NodeState::Down,
            message: String::new(),
            at: Millis(2),
        })
        .unwrap();
        let v2 = node_view(&st, &table(&st), "n1");
        let delta = v1.diff(&v2);
        assert_eq!(
            delta.tasks_removed,
            [("net1".to_string(), "tb".to_string())]
        );
        let mut agent = v1.clone();
        agent.apply(&delta).unwrap();
        assert_eq!(agent, v2);
        assert!(
            agent.apply(&delta).is_err(),
            "a delta applies to its own base version only"
        );
        let mut fresh = EndpointView::default();
        fresh
            .apply(&EndpointView::default().diff(&v2))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(fresh.networks, v2.networks);
    }
}
