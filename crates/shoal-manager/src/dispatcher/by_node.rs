//! Which tasks changed between two states, by node: what every session of the leader asks
//! at each state change, worked out once per pair of states for all of them.
//!
//! Why: each session used to walk the difference of the whole task map itself. The walk
//! skips what two versions share, but a batch of task changes spread over the map's leaves
//! (task ids are random) unshares most of them, so each walk compared nearly every task;
//! 300 sessions made that 300 walks per state change, and the leader fell behind far enough
//! for Raft's own calls to time out (bench/control-plane). Sessions woken by the same state
//! change ask for the same pair, so a few recent pairs are kept.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use shoal_types::ClusterState;
use shoal_types::diff::changes;

/// Task ids that changed, came or went between two states, under each node they named
/// before or after (a task moved from one node to another is under both).
pub type ChangedByNode = HashMap<String, Vec<String>>;

/// How many pairs of versions are kept: the sessions of one wakeup share one; a few lag.
const KEPT: usize = 8;

/// The difference between `old` and `new`'s tasks, by node.
pub fn changed_by_node(old: &ClusterState, new: &ClusterState) -> ChangedByNode {
    let mut by: ChangedByNode = HashMap::new();
    for (id, was, now) in changes(&old.tasks, &new.tasks) {
        let before = was.and_then(|t| t.node_id.as_deref());
        let after = now.and_then(|t| t.node_id.as_deref());
        if let Some(n) = before {
            by.entry(n.to_string()).or_default().push(id.clone());
        }
        if let Some(n) = after.filter(|n| Some(*n) != before) {
            by.entry(n.to_string()).or_default().push(id.clone());
        }
    }
    by
}

/// The last few [`changed_by_node`] results, by the versions of the two states. Versions
/// name states of one Raft log, and a dispatcher lives as long as one manager role.
#[derive(Debug, Default)]
pub struct ChangeCache {
    kept: VecDeque<((u64, u64), Arc<ChangedByNode>)>,
}

impl ChangeCache {
    pub fn between(&mut self, old: &ClusterState, new: &ClusterState) -> Arc<ChangedByNode> {
        let key = (old.version, new.version);
        // A session woken by its timer, not by a change: nothing to walk or to keep.
        if key.0 == key.1 {
            return Arc::default();
        }
        if let Some((_, by)) = self.kept.iter().find(|(k, _)| *k == key) {
            return Arc::clone(by);
        }
        let by = Arc::new(changed_by_node(old, new));
        if self.kept.len() == KEPT {
            self.kept.pop_front();
        }
        self.kept.push_back((key, Arc::clone(&by)));
        by
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_types::fixtures::*;
    use shoal_types::{Command, Millis, TaskState, TaskStatus};

    fn pending(id: &str) -> shoal_types::Task {
        let mut t = task(id, "s1", "vote");
        t.status = TaskStatus::new(TaskState::Pending, Millis(0), "");
        t.slot = id.len() as u64;
        t
    }

    fn with_tasks() -> ClusterState {
        let mut st = cluster(&[("n1", "node1"), ("n2", "node2")]);
        st.apply(Command::CreateService {
            service: service("s1", spec("vote", 3)),
        })
        .unwrap();
        st.apply(Command::CreateTasks {
            tasks: vec![pending("ta"), pending("tbb"), pending("tccc")],
        })
        .unwrap();
        st
    }

    #[test]
    fn a_change_is_listed_under_the_nodes_the_task_named_before_and_after() {
        let mut st = with_tasks();
        st.apply(Command::AssignTasks {
            assignments: vec![("tbb".into(), "n2".into()), ("tccc".into(), "n2".into())],
            at: Millis(1),
        })
        .unwrap();
        let old = st.clone();
        st.apply(Command::Batch(vec![
            Command::AssignTasks {
                assignments: vec![("ta".into(), "n1".into())],
                at: Millis(2),
            },
            Command::DeleteTasks {
                tasks: vec!["tbb".into()],
            },
        ]))
        .unwrap();
        let by = changed_by_node(&old, &st);
        assert_eq!(by.get("n1").cloned(), Some(vec!["ta".to_string()]));
        assert_eq!(
            by.get("n2").cloned(),
            Some(vec!["tbb".to_string()]),
            "tccc did not change"
        );
        assert_eq!(by.len(), 2, "{by:?}");
        assert!(changed_by_node(&st, &st.clone()).is_empty());
    }

    #[test]
    fn sessions_asking_for_the_same_pair_share_one_walk() {
        let old = with_tasks();
        let mut st = old.clone();
        st.apply(Command::AssignTasks {
            assignments: vec![("ta".into(), "n1".into())],
            at: Millis(1),
        })
        .unwrap();
        let mut cache = ChangeCache::default();
        let first = cache.between(&old, &st);
        assert!(Arc::ptr_eq(&first, &cache.between(&old, &st)));
        for v in 0..KEPT as u64 {
            let mut later = st.clone();
            later.version += v + 1;
            cache.between(&st, &later);
        }
        assert!(
            !Arc::ptr_eq(&first, &cache.between(&old, &st)),
            "the oldest pair was dropped and walked again"
        );
    }
}
