//! What the dispatcher tells each agent, and which nodes it stops hearing from.

use std::collections::HashMap;

use shoal_types::{ClusterState, NodeState, Task};

/// The tasks an agent is responsible for: every task assigned to it that still exists.
/// The agent starts those desired Running and stops the others.
pub fn assignments(state: &ClusterState, node_id: &str) -> Vec<Task> {
    state.tasks.values().filter(|t| t.node_id.as_deref() == Some(node_id)).cloned().collect()
}

/// Heartbeat bookkeeping on the leader. Times are milliseconds from any monotonic origin.
#[derive(Debug, Default)]
pub struct Heartbeats {
    last_seen: HashMap<String, u64>,
}

/// Missed periods after which a node is declared Down.
pub const MISSED_HEARTBEATS: u64 = 3;

impl Heartbeats {
    pub fn seen(&mut self, node_id: &str, now: u64) {
        self.last_seen.insert(node_id.to_string(), now);
    }

    /// Forget everything, e.g. on becoming leader: every node gets a full grace period
    /// from `now` instead of being judged on another leader's silence.
    pub fn reset(&mut self, state: &ClusterState, now: u64) {
        self.last_seen = state.nodes.keys().map(|id| (id.clone(), now)).collect();
    }

    /// Nodes marked Ready whose last heartbeat is older than `MISSED_HEARTBEATS` periods.
    /// (A Down node becomes Ready again when its next heartbeat arrives, not here.)
    pub fn expired(&mut self, state: &ClusterState, now: u64, period_ms: u64) -> Vec<String> {
        state
            .nodes
            .values()
            .filter(|node| node.status.state == NodeState::Ready)
            .filter(|node| {
                let seen = *self.last_seen.entry(node.id.clone()).or_insert(now);
                now.saturating_sub(seen) > MISSED_HEARTBEATS * period_ms
            })
            .map(|node| node.id.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_types::fixtures::*;
    use shoal_types::{Command, Millis};

    #[test]
    fn silent_node_goes_down_once() {
        let mut st = cluster(&[("n1", "node1"), ("n2", "node2")]);
        let mut hb = Heartbeats::default();
        hb.reset(&st, 1_000);
        hb.seen("n1", 3_000);
        assert!(hb.expired(&st, 3_000, 1_000).is_empty());
        hb.seen("n1", 4_500);
        assert_eq!(hb.expired(&st, 4_500, 1_000), ["n2"]);
        st.apply(Command::SetNodeState { id: "n2".into(), state: NodeState::Down, message: String::new(), at: Millis(0) })
            .unwrap();
        // Already Down: not reported again.
        assert!(hb.expired(&st, 9_000, 1_000).iter().all(|n| n != "n2"));
    }
}
