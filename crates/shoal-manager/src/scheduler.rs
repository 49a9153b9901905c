//! Places pending tasks on nodes: Ready/Active nodes that satisfy the service's
//! constraints, fewest tasks of this service first, then fewest tasks overall.

use std::collections::BTreeMap;

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
    // Live task counts per (node) and per (service, node), updated as we place.
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    let mut per_service: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for t in state.tasks.values().filter(|t| t.is_live()) {
        if let Some(n) = t.node_id.as_deref() {
            *per_node.entry(n).or_default() += 1;
            *per_service.entry((t.service_id.as_str(), n)).or_default() += 1;
        }
    }
    let pending = state
        .tasks
        .values()
        .filter(|t| t.desired_state == TaskState::Running && t.status.state == TaskState::Pending);
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
    for task in pending {
        let Some(service) = state.services.get(&task.service_id) else {
            continue;
        };
        let constraints = &service.spec.task_template.placement.constraints;
        let ready: Vec<&Node> = state.nodes.values().filter(|n| n.schedulable()).collect();
        let fits: Vec<&Node> = ready
            .iter()
            .copied()
            .filter(|n| constraints.iter().all(|c| c.matches(n)))
            .collect();
        let best = fits.iter().min_by_key(|n| {
            (
                per_service
                    .get(&(task.service_id.as_str(), n.id.as_str()))
                    .copied()
                    .unwrap_or(0),
                per_node.get(n.id.as_str()).copied().unwrap_or(0),
                n.hostname().to_string(),
            )
        });
        match best {
            Some(node) => {
                *per_node.entry(node.id.as_str()).or_default() += 1;
                *per_service
                    .entry((task.service_id.as_str(), node.id.as_str()))
                    .or_default() += 1;
                plan.assignments.push((task.id.clone(), node.id.clone()));
            }
            None => {
                let why = if ready.is_empty() {
                    "no suitable node (no node is ready and active)".to_string()
                } else {
                    format!(
                        "no suitable node (scheduling constraints not satisfied on {} node{})",
                        ready.len(),
                        if ready.len() == 1 { "" } else { "s" }
                    )
                };
                plan.unplaced.push((task.id.clone(), why));
            }
        }
    }
    plan
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
}
