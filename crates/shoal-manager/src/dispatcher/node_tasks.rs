//! The tasks that name one node, followed change by change, with what a session derives
//! from them on every change (the node's networks, the tasks it may hold for draining)
//! kept up to date as tasks come, change and go: a change costs the session the size of
//! the change, not a walk of the node's hundreds of tasks (bench/scale's leader profile).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use imbl::OrdMap;
use shoal_types::{ClusterState, Task, TaskState};

use super::by_node::{ChangedByNode, changed_by_node};
use super::session::may_drain;
use crate::endpoints;

/// The tasks that name one node, kept up to date from the difference between successive
/// states (the state's maps are persistent, so that difference costs the size of the
/// change): a session follows its node without reading every task of the cluster at each
/// state change.
#[derive(Debug, Clone, Default)]
pub struct NodeTasks {
    node_id: String,
    mine: OrdMap<String, Arc<Task>>,
    /// How many of the tasks take part in each network (`endpoints::takes_part`).
    networks: BTreeMap<String, usize>,
    /// The tasks that may be held running while their removal propagates (`may_drain`).
    draining: BTreeSet<String>,
}

impl NodeTasks {
    pub fn new(node_id: &str, state: &ClusterState) -> NodeTasks {
        let mut tasks = NodeTasks {
            node_id: node_id.to_string(),
            ..NodeTasks::default()
        };
        for t in state.tasks.values() {
            if t.node_id.as_deref() == Some(node_id) {
                tasks.insert(t);
            }
        }
        tasks
    }

    /// Follows the state from `old` to `new`; returns the ids of this node's tasks that
    /// changed, came or went.
    pub fn follow(&mut self, old: &ClusterState, new: &ClusterState) -> Vec<String> {
        let by = changed_by_node(old, new);
        self.follow_changed(&by, new)
    }

    /// Like [`NodeTasks::follow`], given the state's changes by node (worked out once for
    /// every session: [`super::ChangeCache`]).
    pub fn follow_changed(&mut self, by: &ChangedByNode, new: &ClusterState) -> Vec<String> {
        let mut changed = Vec::new();
        for id in by.get(&self.node_id).into_iter().flatten() {
            match new
                .tasks
                .get(id)
                .filter(|t| t.node_id.as_deref() == Some(self.node_id.as_str()))
            {
                Some(t) => {
                    self.insert(t);
                    changed.push(id.clone());
                }
                None => {
                    if self.remove(id) {
                        changed.push(id.clone());
                    }
                }
            }
        }
        changed
    }

    fn insert(&mut self, t: &Arc<Task>) {
        if let Some(old) = self.mine.insert(t.id.clone(), Arc::clone(t)) {
            self.forget(&old);
        }
        if endpoints::takes_part(t) {
            for a in &t.networks {
                *self.networks.entry(a.network_id.clone()).or_default() += 1;
            }
        }
        if may_drain(t) {
            self.draining.insert(t.id.clone());
        }
    }

    fn remove(&mut self, id: &str) -> bool {
        match self.mine.remove(id) {
            Some(old) => {
                self.forget(&old);
                true
            }
            None => false,
        }
    }

    /// Takes a task's part out of the counts (before it is replaced or removed).
    fn forget(&mut self, old: &Task) {
        if endpoints::takes_part(old) {
            for a in &old.networks {
                if let Some(n) = self.networks.get_mut(&a.network_id) {
                    *n -= 1;
                    if *n == 0 {
                        self.networks.remove(&a.network_id);
                    }
                }
            }
        }
        self.draining.remove(&old.id);
    }

    /// Every task that names this node, whatever its state.
    pub fn all(&self) -> impl Iterator<Item = &Task> {
        self.mine.values().map(Arc::as_ref)
    }

    /// The tasks the agent is responsible for: every task assigned to it that still
    /// exists. The agent starts those desired Running and stops the others. (A global task
    /// names its node from birth, but is the agent's only once the allocator has given it
    /// its addresses and the scheduler has confirmed it: Assigned.)
    pub fn assigned(&self) -> impl Iterator<Item = &Task> {
        self.mine
            .values()
            .filter(|t| t.status.state >= TaskState::Assigned)
            .map(Arc::as_ref)
    }

    pub fn get(&self, id: &str) -> Option<&Task> {
        self.mine.get(id).map(Arc::as_ref)
    }

    /// The networks the node takes part in at `state`, as `endpoints::node_networks` works
    /// them out from all its tasks: theirs and ingress, sorted.
    pub fn networks(&self, state: &ClusterState) -> Vec<String> {
        let mut ids: Vec<String> = self.networks.keys().cloned().collect();
        if let Some(ingress) = state.ingress()
            && !self.networks.contains_key(&ingress.id)
        {
            let at = ids.partition_point(|id| *id < ingress.id);
            ids.insert(at, ingress.id.clone());
        }
        ids
    }

    /// The ids of the tasks that may be held for draining (`may_drain`), sorted.
    pub fn draining(&self) -> impl Iterator<Item = &String> {
        self.draining.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_types::fixtures::*;
    use shoal_types::{Command, Millis};

    #[test]
    fn node_tasks_follow_the_state() {
        let mut st = cluster(&[("n1", "node1"), ("n2", "node2")]);
        st.apply(Command::CreateService {
            service: service("s1", spec("vote", 2)),
        })
        .unwrap();
        let mut mine = NodeTasks::new("n1", &st);
        let ids = |m: &NodeTasks| m.all().map(|t| t.id.clone()).collect::<Vec<_>>();
        let task = |id: &str| {
            let mut t = task(id, "s1", "vote");
            t.status = shoal_types::TaskStatus::new(TaskState::Pending, Millis(0), "");
            t.slot = id.len() as u64;
            t
        };
        let steps = vec![
            Command::CreateTasks {
                tasks: vec![task("ta"), task("tb"), task("tc")],
            },
            Command::AssignTasks {
                assignments: vec![("ta".into(), "n1".into()), ("tb".into(), "n2".into())],
                at: Millis(1),
            },
            Command::AssignTasks {
                assignments: vec![("tc".into(), "n1".into())],
                at: Millis(2),
            },
            Command::SetDesiredState {
                tasks: vec!["tb".into()],
                state: TaskState::Shutdown,
                at: Millis(3),
            },
            Command::DeleteTasks {
                tasks: vec!["ta".into()],
            },
        ];
        let expect_changed = [false, true, true, false, true];
        for (cmd, want) in steps.into_iter().zip(expect_changed) {
            let old = st.clone();
            let what = format!("{cmd:?}");
            st.apply(cmd).unwrap();
            assert_eq!(!mine.follow(&old, &st).is_empty(), want, "{what}");
            assert_eq!(ids(&mine), ids(&NodeTasks::new("n1", &st)), "{what}");
        }
        assert_eq!(ids(&mine), ["tc"]);
        assert_eq!(mine.assigned().count(), 1);
    }

    /// The networks and the tasks to drain, kept up to date change by change, are what a
    /// walk of all the node's tasks finds, through tasks that come, join networks, stop
    /// (draining, then gone), move to another node and are deleted.
    #[test]
    fn networks_and_draining_follow_the_tasks() {
        let mut st = cluster(&[("n1", "node1"), ("n2", "node2")]);
        for (id, subnet, vni) in [
            ("net1", "10.1.0.0/24", 4097),
            ("net2", "10.2.0.0/24", 4098),
            ("net3", "10.3.0.0/24", 4099),
        ] {
            st.networks.insert(id.into(), network(id, id, subnet, vni));
        }
        let mut ingress = network("ing", "ingress", "10.255.0.0/16", 4096);
        ingress.ingress = true;
        st.networks.insert("ing".into(), ingress);
        let on = |id: &str, node: &str, nets: &[&str], desired, state| {
            let mut t = task(id, "s1", "vote");
            t.node_id = Some(node.into());
            t.desired_state = desired;
            t.status = shoal_types::TaskStatus::new(state, Millis(0), "");
            t.networks = nets
                .iter()
                .map(|n| shoal_types::network::Attachment {
                    network_id: n.to_string(),
                    addr: "10.1.0.2/24".parse().unwrap(),
                    aliases: vec![],
                })
                .collect();
            Arc::new(t)
        };
        use TaskState::{Complete, Running, Shutdown};
        let steps: Vec<(&str, Option<Arc<Task>>)> = vec![
            ("ta", Some(on("ta", "n1", &["net1"], Running, Running))),
            (
                "tb",
                Some(on("tb", "n1", &["net1", "net2"], Running, Running)),
            ),
            ("tc", Some(on("tc", "n2", &["net3"], Running, Running))),
            // Told to stop while running: still on its networks, and may be drained.
            (
                "tb",
                Some(on("tb", "n1", &["net1", "net2"], Shutdown, Running)),
            ),
            // Ended: off its networks, nothing to drain.
            (
                "tb",
                Some(on("tb", "n1", &["net1", "net2"], Shutdown, Complete)),
            ),
            (
                "tc",
                Some(on("tc", "n1", &["net3", "ing"], Running, Running)),
            ),
            ("ta", None),
            (
                "tc",
                Some(on("tc", "n2", &["net3", "ing"], Running, Running)),
            ),
            ("tb", None),
        ];
        let mut mine = NodeTasks::new("n1", &st);
        for (i, (id, task)) in steps.into_iter().enumerate() {
            let old = st.clone();
            match task {
                Some(t) => st.tasks.insert(id.into(), t),
                None => st.tasks.remove(id),
            };
            mine.follow(&old, &st);
            let walked = NodeTasks::new("n1", &st);
            assert_eq!(
                mine.networks(&st),
                endpoints::node_networks(&st, walked.all()),
                "networks after step {i}"
            );
            let draining: Vec<&str> = walked
                .all()
                .filter(|t| may_drain(t))
                .map(|t| t.id.as_str())
                .collect();
            assert_eq!(
                mine.draining().map(String::as_str).collect::<Vec<_>>(),
                draining,
                "draining after step {i}"
            );
            if i == 3 {
                assert_eq!(draining, ["tb"], "a task told to stop while running drains");
                assert_eq!(mine.networks(&st), ["ing", "net1", "net2"]);
            }
        }
        assert_eq!(mine.networks(&st), ["ing"], "no task left: ingress only");
    }
}
