//! The endpoint table each agent needs: the networks it takes part in, their services
//! (VIPs, ports, aliases) and their running tasks, with the underlay address of each task's
//! node. A task is in the table while it runs, is meant to run, and its node is Ready.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use imbl::OrdMap;

use shoal_types::diff::changes;
use shoal_types::endpoint::{
    EndpointView, NetworkEndpoints, NetworkInfo, NodeEndpoint, ServiceEndpoint, TaskEndpoint,
};
use shoal_types::{ClusterState, Network, Node, NodeState, Service, Task, TaskState};

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

/// Every network's endpoints, keyed by network id.
pub type EndpointTable = OrdMap<String, NetworkEndpoints>;

/// Every network with its services and running tasks, built from scratch.
pub fn table(state: &ClusterState) -> EndpointTable {
    let mut nets: EndpointTable = state
        .networks
        .values()
        .map(|n| (n.id.clone(), NetworkEndpoints::empty(info(n))))
        .collect();
    for s in state.services.values() {
        for (net, e) in service_entries(state, s) {
            if let Some(entry) = nets.get_mut(&net) {
                entry.services.insert(e.id.clone(), e);
            }
        }
    }
    // Every Ready node's own ingress endpoint.
    if let Some(ingress) = state.ingress().and_then(|n| nets.get_mut(&n.id)) {
        for node in state.nodes.values() {
            if let Some(e) = node_entry(node) {
                ingress.nodes.insert(node.id.clone(), e);
            }
        }
    }
    for t in state.tasks.values() {
        for (net, e) in task_entries(state, t) {
            if let Some(entry) = nets.get_mut(&net) {
                entry.tasks.insert(e.id.clone(), e);
            }
        }
    }
    nets
}

/// The table of `new` made from the table of `old` by applying only what changed between
/// the two states: the state's maps are persistent, so walking their difference costs the
/// size of the change. A change to the networks, or to what the table reads of a node (its
/// state and addresses), rebuilds the table (both are rare); anything else touches only
/// the entries of the services and tasks that changed. Equal to `table(new)`.
pub fn update_table(
    table: &EndpointTable,
    old: &ClusterState,
    new: &ClusterState,
) -> EndpointTable {
    let networks_changed =
        changes(&old.networks, &new.networks).any(|(_, a, b)| a.map(info) != b.map(info));
    let nodes_changed =
        changes(&old.nodes, &new.nodes).any(|(_, a, b)| a.map(node_key) != b.map(node_key));
    if networks_changed || nodes_changed {
        return self::table(new);
    }
    let mut out = table.clone();
    for (_, was, now) in changes(&old.services, &new.services) {
        if let Some(s) = was {
            for (net, _) in service_networks(old, s) {
                if let Some(entry) = out.get_mut(&net) {
                    entry.services.remove(&s.id);
                }
            }
        }
        if let Some(s) = now {
            for (net, e) in service_entries(new, s) {
                if let Some(entry) = out.get_mut(&net) {
                    entry.services.insert(e.id.clone(), e);
                }
            }
        }
    }
    for (_, was, now) in changes(&old.tasks, &new.tasks) {
        let (before, after) = (
            was.map(|t| task_entries(old, t)).unwrap_or_default(),
            now.map(|t| task_entries(new, t)).unwrap_or_default(),
        );
        // Most task changes (scheduled, starting, a status message) leave its entries as
        // they were: touching nothing keeps the table shared with the previous one.
        if before == after {
            continue;
        }
        for (net, e) in before {
            if let Some(entry) = out.get_mut(&net) {
                entry.tasks.remove(&e.id);
            }
        }
        for (net, e) in after {
            if let Some(entry) = out.get_mut(&net) {
                entry.tasks.insert(e.id.clone(), e);
            }
        }
    }
    out
}

/// What the table reads of a node.
fn node_key(n: &Node) -> (NodeState, Option<ipnet::Ipv4Net>, &str) {
    (n.status.state, n.ingress_addr, &n.status.addr)
}

/// A Ready node's own endpoint on ingress.
fn node_entry(node: &Node) -> Option<NodeEndpoint> {
    if node.status.state != NodeState::Ready {
        return None;
    }
    let (Some(addr), Ok(vtep)) = (node.ingress_addr, node.status.addr.parse::<Ipv4Addr>()) else {
        return None;
    };
    Some(NodeEndpoint {
        node_id: node.id.clone(),
        addr,
        vtep,
    })
}

/// A service's entry on each of its networks.
fn service_entries(state: &ClusterState, s: &Service) -> Vec<(String, ServiceEndpoint)> {
    service_networks(state, s)
        .into_iter()
        .map(|(net, aliases)| {
            let vip = s
                .endpoint
                .virtual_ips
                .iter()
                .find(|v| v.network_id == net)
                .map(|v| v.addr);
            let e = ServiceEndpoint {
                id: s.id.clone(),
                name: s.spec.name.clone(),
                mode: s.spec.endpoint_spec.mode,
                vip,
                ports: s.spec.endpoint_spec.ports.clone(),
                aliases,
                dns_ttl: s.spec.endpoint_spec.dns_ttl,
                publish_not_ready: s.spec.endpoint_spec.publish_not_ready,
            };
            (net, e)
        })
        .collect()
}

/// A task's entry on each of its networks: only while it runs and its node is Ready;
/// marked ready when its agent said so (the data plane gates on that) and it is meant to
/// run. A task told to stop leaves every name, VIP and published port (the change its stop
/// waits for) but keeps its forwarding entries until it has ended: connections already open
/// to it from other nodes go on until the application closes them on its SIGTERM.
fn task_entries(state: &ClusterState, t: &Task) -> Vec<(String, TaskEndpoint)> {
    if t.status.state != TaskState::Running {
        return Vec::new();
    }
    let Some(node) = t.node_id.as_ref().and_then(|n| state.nodes.get(n)) else {
        return Vec::new();
    };
    if node.status.state != NodeState::Ready {
        return Vec::new();
    }
    let Ok(vtep) = node.status.addr.parse::<Ipv4Addr>() else {
        return Vec::new();
    };
    t.networks
        .iter()
        .map(|a| {
            let e = TaskEndpoint {
                id: t.id.clone(),
                name: t.name(),
                service_id: t.service_id.clone(),
                addr: a.addr,
                node_id: node.id.clone(),
                vtep,
                ready: t.status.ready && t.desired_state == TaskState::Running,
            };
            (a.network_id.clone(), e)
        })
        .collect()
}

/// The networks a node takes part in: those of the tasks it should run or still runs, and
/// ingress. A task told to stop (a drain) still answers the connections open to it until it
/// ends, and its replies go through the node's forwarding entries for that network.
pub fn node_networks<'a>(
    state: &ClusterState,
    mine: impl IntoIterator<Item = &'a Task>,
) -> Vec<String> {
    // Borrowed while collecting: a node's hundreds of tasks share a few networks.
    let ids: BTreeSet<&str> = mine
        .into_iter()
        .filter(|t| takes_part(t))
        .flat_map(|t| t.networks.iter().map(|a| a.network_id.as_str()))
        .chain(state.ingress().map(|n| n.id.as_str()))
        .collect();
    ids.into_iter().map(str::to_string).collect()
}

/// Whether a task's networks are among its node's ([`node_networks`]): it should run, or
/// still runs.
pub fn takes_part(t: &Task) -> bool {
    t.desired_state <= TaskState::Running || t.status.state == TaskState::Running
}

/// One node's view, cut from the full table: the networks it takes part in (a copy of a
/// network's entry shares its maps with the table).
pub fn node_view(version: u64, full: &EndpointTable, networks: &[String]) -> EndpointView {
    let networks = networks
        .iter()
        .filter_map(|id| full.get(id).map(|n| (id.clone(), n.clone())))
        .collect();
    EndpointView { version, networks }
}

/// Services whose endpoints differ between two tables (their VIP, ports, or tasks).
pub fn changed_services(old: &EndpointTable, new: &EndpointTable) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (_, o, n) in changes(old, new) {
        let blank = |x: &NetworkEndpoints| NetworkEndpoints::empty(x.info.clone());
        let o = o.cloned().unwrap_or_else(|| blank(n.expect("one side")));
        let n = n.cloned().unwrap_or_else(|| blank(&o));
        out.extend(o.changed_services(&n).into_iter().map(str::to_string));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocator::allocate;
    use shoal_types::fixtures::*;
    use shoal_types::{Command, Millis, TaskStatus};

    fn running_task(st: &mut ClusterState, id: &str, node: &str) {
        starting_task(st, id, node, true);
    }

    /// A task that runs, ready or not (its agent's word).
    fn starting_task(st: &mut ClusterState, id: &str, node: &str, ready: bool) {
        let mut t = task(id, "s1", "vote");
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
        let mut status = TaskStatus::new(TaskState::Running, Millis(1), "");
        status.ready = ready;
        st.apply(Command::UpdateTaskStatus {
            id: id.into(),
            node_id: node.into(),
            status,
        })
        .unwrap();
    }

    /// The table updated from the previous state's table and the difference between the
    /// states is the table built from scratch, over a run of commands that touch it and
    /// commands that do not; and the services it says changed are the ones that did.
    #[test]
    fn the_updated_table_equals_a_full_build() {
        let mut st = cluster(&[("n1", "node1"), ("n2", "node2")]);
        let mut last = (st.clone(), table(&st));
        let mut step = |st: &mut ClusterState, cmd: Option<Command>, what: &str| {
            if let Some(cmd) = cmd {
                st.apply(cmd).unwrap();
            }
            let updated = update_table(&last.1, &last.0, st);
            let full = table(st);
            assert_eq!(
                updated, full,
                "{what}: the updated table differs from a full build"
            );
            let changed = changed_services(&last.1, &updated);
            let expect: BTreeSet<String> = full
                .values()
                .flat_map(|n| {
                    let old = last.1.get(&n.info.id);
                    let svc = n.services.keys().filter(move |k| {
                        old.and_then(|o| o.services.get(*k)) != n.services.get(*k)
                    });
                    let tasks = n
                        .tasks
                        .values()
                        .filter(move |t| old.and_then(|o| o.tasks.get(&t.id)) != Some(*t));
                    svc.cloned()
                        .chain(tasks.map(|t| t.service_id.clone()))
                        .collect::<Vec<_>>()
                })
                .chain(last.1.values().flat_map(|o| {
                    let now = full.get(&o.info.id);
                    o.tasks
                        .values()
                        .filter(move |t| now.is_none_or(|n| !n.tasks.contains_key(&t.id)))
                        .map(|t| t.service_id.clone())
                        .collect::<Vec<_>>()
                }))
                .collect();
            assert_eq!(changed, expect, "{what}: changed services");
            last = (st.clone(), full);
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
                expected_version: None,
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
        assert!(
            !table(&st)["net1"].tasks["ta"].ready,
            "told to stop and still running: in the table (its overlay entries), not ready"
        );
        step(
            &mut st,
            Some(Command::UpdateTaskStatus {
                id: "ta".into(),
                node_id: "n1".into(),
                status: TaskStatus::new(TaskState::Shutdown, Millis(3), ""),
            }),
            "it has stopped",
        );
        assert!(
            !table(&st)["net1"].tasks.contains_key("ta"),
            "gone once ended"
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
        starting_task(&mut st, "tc", "n1", false);
        step(&mut st, None, "a third task runs, not ready");
        assert!(
            !table(&st)["net1"].tasks["tc"].ready,
            "in the table (its overlay entries), marked not ready"
        );
        let mut ready = TaskStatus::new(TaskState::Running, Millis(5), "");
        ready.ready = true;
        step(
            &mut st,
            Some(Command::UpdateTaskStatus {
                id: "tc".into(),
                node_id: "n1".into(),
                status: ready,
            }),
            "it is ready",
        );
        assert!(table(&st)["net1"].tasks["tc"].ready);
        step(
            &mut st,
            Some(Command::RemoveService { id: "s1".into() }),
            "the service goes",
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
        let view = |st: &ClusterState, full: &EndpointTable, node: &str| {
            let mine = st
                .tasks
                .values()
                .filter(|t| t.node_id.as_deref() == Some(node))
                .map(|t| &**t);
            node_view(st.version, full, &node_networks(st, mine))
        };
        let v1 = view(&st, &full, "n1");
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
            view(&st, &full, "n3").networks.is_empty(),
            "node3 runs nothing on overlay1"
        );

        // Told to stop (a drain), node2's only task still runs: node2 keeps the network
        // (the task's replies go through it), and everyone sees the task, not ready.
        st.apply(Command::SetDesiredState {
            tasks: vec!["tb".into()],
            state: TaskState::Shutdown,
            at: Millis(1),
        })
        .unwrap();
        let stopping = table(&st);
        let v2 = view(&st, &stopping, "n2");
        assert!(!v2.networks["net1"].tasks["tb"].ready);
        assert_eq!(v2.networks["net1"].tasks.len(), 2, "node2 keeps overlay1");
        assert_eq!(view(&st, &stopping, "n1").networks["net1"].tasks.len(), 2);

        // A task on a node that goes down leaves the table.
        st.apply(Command::SetNodeState {
            id: "n2".into(),
            state: NodeState::Down,
            message: String::new(),
            at: Millis(2),
        })
        .unwrap();
        let v2 = view(&st, &table(&st), "n1");
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
