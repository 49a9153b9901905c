//! Places pending tasks on nodes: Ready/Active nodes that satisfy the service's
//! constraints and have room for the task's reservations, fewest tasks of this service
//! first, then fewest tasks overall.
//!
//! The counts come from the state's indexes (`ClusterState::node_load`, `live_tasks_on`,
//! `waiting`), so a pass costs the pending tasks times the log of the nodes (plus the nodes
//! once per run of one service's tasks), not a walk of every task.

use std::collections::{BTreeMap, BTreeSet};

use shoal_types::node::Resources;
use shoal_types::service::Limits;
use shoal_types::state::NodeLoad;
use shoal_types::{ClusterState, Node, Task, TaskState};

/// One decision per pending task that can be placed. Tasks that fit nowhere stay pending
/// and are returned in `unplaced` with the reason, for the task's status message.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub assignments: Vec<(String, String)>,
    pub unplaced: Vec<(String, String)>,
}

pub fn schedule(state: &ClusterState) -> Plan {
    let mut plan = Plan::default();
    // What this pass places, on top of the state's counts of live tasks per node and per
    // (service, node) and of what they reserve (`--reserve-cpu`, `--reserve-memory`).
    let mut placed_on: BTreeMap<&str, NodeLoad> = BTreeMap::new();
    let mut placed_of: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let load = |placed: &BTreeMap<&str, NodeLoad>, n: &str| {
        let mut l = state.node_load(n);
        if let Some(p) = placed.get(n) {
            l.tasks += p.tasks;
            l.nano_cpus += p.nano_cpus;
            l.memory_bytes += p.memory_bytes;
        }
        l
    };
    let pending = state.waiting(TaskState::Pending);
    // Global tasks are made for one node: they only need to be confirmed.
    let (preset, pending): (Vec<&Task>, Vec<&Task>) = pending.partition(|t| t.node_id.is_some());
    for t in preset {
        if let Some(n) = &t.node_id {
            plan.assignments.push((t.id.clone(), n.clone()));
        }
    }
    // Oldest first, then by slot, so placement is stable.
    let mut pending = pending;
    pending.sort_by_key(|t| (t.created_at, t.service_id.clone(), t.slot));
    let ready: Vec<&Node> = state.nodes.values().filter(|n| n.schedulable()).collect();
    // Consecutive tasks of one service share its constraints and node order: the allowed
    // nodes are ranked once per run, in a set ordered as the choice is made (fewest of
    // this service, then fewest tasks, then by hostname), and each task takes the first
    // that has room. Ranking every node for every task made a pass over 1,000 new tasks on
    // 1,000 nodes a million lookups (bench/control-plane).
    for group in pending.chunk_by(|a, b| a.service_id == b.service_id) {
        let Some(service) = state.services.get(&group[0].service_id) else {
            continue;
        };
        let sid = service.id.as_str();
        let constraints = &service.spec.task_template.placement.constraints;
        let allowed: Vec<&Node> = ready
            .iter()
            .copied()
            .filter(|n| constraints.iter().all(|c| c.matches(n)))
            .collect();
        let rank = |placed_on: &BTreeMap<&str, NodeLoad>,
                    placed_of: &BTreeMap<(&str, &str), u64>,
                    n: &'_ Node| {
            let of_service = state.live_tasks_on(sid, &n.id)
                + placed_of.get(&(sid, n.id.as_str())).copied().unwrap_or(0);
            (of_service, load(placed_on, &n.id).tasks)
        };
        let by_id: BTreeMap<&str, &Node> = allowed.iter().map(|n| (n.id.as_str(), *n)).collect();
        let mut order: BTreeSet<((u64, u64), &str, &str)> = allowed
            .iter()
            .map(|n| (rank(&placed_on, &placed_of, n), n.hostname(), n.id.as_str()))
            .collect();
        for task in group {
            let want = &task.spec.reservations;
            let short =
                |n: &Node| short_of(&load(&placed_on, &n.id), want, &n.description.resources);
            // The first in order with room; those without are put back for the next task
            // (a task of another spec version may want less).
            let mut full = Vec::new();
            let mut best = None;
            while let Some(entry) = order.pop_first() {
                let n = by_id[entry.2];
                if short(n).is_none() {
                    best = Some(n);
                    break;
                }
                full.push(entry);
            }
            order.extend(full);
            match best {
                Some(node) => {
                    let p = placed_on.entry(node.id.as_str()).or_default();
                    p.tasks += 1;
                    p.nano_cpus += want.nano_cpus.unwrap_or(0);
                    p.memory_bytes += want.memory_bytes.unwrap_or(0);
                    *placed_of.entry((sid, node.id.as_str())).or_default() += 1;
                    order.insert((
                        rank(&placed_on, &placed_of, node),
                        node.hostname(),
                        node.id.as_str(),
                    ));
                    plan.assignments.push((task.id.clone(), node.id.clone()));
                }
                None => {
                    let plural = |n: usize| if n == 1 { "" } else { "s" };
                    let shortages: Vec<&str> = allowed.iter().filter_map(|n| short(n)).collect();
                    let why = if ready.is_empty() {
                        "no suitable node (no node is ready and active)".to_string()
                    } else if !allowed.is_empty() {
                        // Every node the constraints allow lacks room: name what, as Swarm does.
                        let what = if shortages.iter().all(|s| *s == shortages[0]) {
                            shortages[0]
                        } else {
                            "resources"
                        };
                        let n = shortages.len();
                        format!(
                            "no suitable node (insufficient {what} on {n} node{})",
                            plural(n)
                        )
                    } else {
                        format!(
                            "no suitable node (scheduling constraints not satisfied on {} node{})",
                            ready.len(),
                            plural(ready.len())
                        )
                    };
                    plan.unplaced.push((task.id.clone(), why));
                }
            }
        }
    }
    plan
}

/// What a node whose live tasks reserve `have` lacks for one more task reserving `want`
/// ("memory", "CPU"); nothing is checked against a node that reported no resources.
fn short_of(have: &NodeLoad, want: &Limits, node: &Resources) -> Option<&'static str> {
    if node.is_unknown() {
        return None;
    }
    if let Some(m) = want.memory_bytes
        && have.memory_bytes + m > node.memory_bytes
    {
        return Some("memory");
    }
    if let Some(c) = want.nano_cpus
        && have.nano_cpus + c > node.nano_cpus
    {
        return Some("CPU");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_types::fixtures::*;
    use shoal_types::{Availability, Command, Constraint, Millis, TaskStatus};

    fn pending(id: &str, service: &str, slot: u64) -> Task {
        Task {
            id: id.into(),
            service_id: service.into(),
            service_name: service.into(),
            slot,
            node_id: None,
            desired_state: TaskState::Running,
            status: TaskStatus::new(TaskState::Pending, Millis(slot), "pending"),
            spec_version: 1,
            spec: spec(service, 1).task_template.container_spec,
            networks: vec![],
            ports: vec![],
            restarts: 0,
            started_at: None,
            ready_at: None,
            created_at: Millis(slot),
            updated_at: Millis(slot),
        }
    }

    fn with_service(st: &mut ClusterState, id: &str, spec: shoal_types::ServiceSpec, n: u64) {
        st.apply(Command::CreateService {
            service: service(id, spec),
        })
        .unwrap();
        let tasks = (1..=n)
            .map(|i| pending(&format!("{id}-t{i}"), id, i))
            .collect();
        st.apply(Command::CreateTasks { tasks }).unwrap();
    }

    fn placed_on(st: &ClusterState, plan: &Plan) -> Vec<String> {
        let mut hosts: Vec<String> = plan
            .assignments
            .iter()
            .map(|(_, n)| st.nodes[n].hostname().to_string())
            .collect();
        hosts.sort();
        hosts
    }

    #[test]
    fn spreads_replicas_over_nodes() {
        let mut st = cluster(&[("n1", "node1"), ("n2", "node2"), ("n3", "node3")]);
        with_service(&mut st, "web", spec("web", 6), 6);
        let plan = schedule(&st);
        assert_eq!(
            placed_on(&st, &plan),
            ["node1", "node1", "node2", "node2", "node3", "node3"]
        );
    }

    #[test]
    fn skips_drained_and_down_nodes() {
        let mut st = cluster(&[("n1", "node1"), ("n2", "node2"), ("n3", "node3")]);
        st.apply(Command::UpdateNodeSpec {
            id: "n2".into(),
            availability: Some(Availability::Drain),
            labels: None,
            at: Millis(0),
        })
        .unwrap();
        st.apply(Command::SetNodeState {
            id: "n3".into(),
            state: shoal_types::NodeState::Down,
            message: String::new(),
            at: Millis(0),
        })
        .unwrap();
        with_service(&mut st, "web", spec("web", 2), 2);
        assert_eq!(placed_on(&st, &schedule(&st)), ["node1", "node1"]);
    }

    #[test]
    fn honours_constraints_and_explains_when_nothing_fits() {
        let mut st = cluster(&[("n1", "node1"), ("n2", "node2")]);
        let mut s = spec("web", 2);
        s.task_template.placement.constraints =
            vec![Constraint::parse("node.hostname==node2").unwrap()];
        with_service(&mut st, "web", s, 2);
        assert_eq!(placed_on(&st, &schedule(&st)), ["node2", "node2"]);

        let mut st = cluster(&[("n1", "node1"), ("n2", "node2")]);
        let mut s = spec("db", 1);
        s.task_template.placement.constraints =
            vec![Constraint::parse("node.labels.disk==ssd").unwrap()];
        with_service(&mut st, "db", s, 1);
        let plan = schedule(&st);
        assert!(plan.assignments.is_empty());
        assert_eq!(
            plan.unplaced,
            [(
                "db-t1".to_string(),
                "no suitable node (scheduling constraints not satisfied on 2 nodes)".to_string()
            )]
        );
    }

    #[test]
    fn prefers_nodes_without_this_service() {
        let mut st = cluster(&[("n1", "node1"), ("n2", "node2")]);
        with_service(&mut st, "a", spec("a", 1), 1);
        st.apply(Command::AssignTasks {
            assignments: vec![("a-t1".into(), "n1".into())],
            at: Millis(0),
        })
        .unwrap();
        with_service(&mut st, "b", spec("b", 1), 1);
        // node1 has a task of another service, so node2 is emptier overall.
        assert_eq!(placed_on(&st, &schedule(&st)), ["node2"]);
    }

    #[test]
    fn reservations_fit_what_nodes_have_and_say_what_is_short() {
        let mut st = cluster(&[("n1", "node1"), ("n2", "node2")]);
        for id in ["n1", "n2"] {
            let mut n = st.nodes[id].clone();
            n.description.resources = Resources {
                nano_cpus: 2_000_000_000,
                memory_bytes: 1 << 30,
            };
            st.nodes.insert(id.into(), n);
        }
        let mut spec = shoal_types::fixtures::spec("big", 3);
        spec.task_template.container_spec.reservations.memory_bytes = Some(600 << 20);
        st.apply(Command::CreateService {
            service: service("big", spec.clone()),
        })
        .unwrap();
        let tasks = (1..=3)
            .map(|i| {
                let mut t = pending(&format!("big-t{i}"), "big", i);
                t.spec = spec.task_template.container_spec.clone();
                t
            })
            .collect();
        st.apply(Command::CreateTasks { tasks }).unwrap();
        let plan = schedule(&st);
        // One 600 MiB task per 1 GiB node; the third waits, saying why.
        assert_eq!(plan.assignments.len(), 2, "{plan:?}");
        assert_eq!(plan.unplaced.len(), 1);
        assert_eq!(
            plan.unplaced[0].1,
            "no suitable node (insufficient memory on 2 nodes)"
        );
    }
}
