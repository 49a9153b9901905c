//! Heartbeat bookkeeping on the leader: which node to mark Down, and when.

use std::collections::{HashMap, HashSet};

use shoal_types::{ClusterState, NodeState};

/// Heartbeat bookkeeping on the leader. Times are milliseconds from any monotonic origin.
///
/// Declaring a node Down reschedules all its tasks, which loads every other node; on a
/// cluster that is merely busy that load makes more nodes miss heartbeats (the storm that
/// took a 3-node lab to 0 running tasks). So the leader never judges its own node, and it
/// marks at most one node Down per grace period: a node that is really gone is still
/// caught within two grace periods, a flapping one cannot cascade.
#[derive(Debug, Default)]
pub struct Heartbeats {
    last_seen: HashMap<String, u64>,
    /// When the last node was marked Down.
    last_down: Option<u64>,
    /// Nodes not heard from since this leader took over. Their agents must first notice
    /// that the old leader is gone (up to a few seconds when it vanished without a word)
    /// and then find this one, so they get [`TAKEOVER_GRACE`] times the grace, as
    /// swarmkit's dispatcher gives nodes of unknown state twice the normal grace.
    unseen: HashSet<String>,
}

/// How many grace periods a node has to find a new leader.
pub const TAKEOVER_GRACE: u64 = 2;

impl Heartbeats {
    pub fn seen(&mut self, node_id: &str, now: u64) {
        self.last_seen.insert(node_id.to_string(), now);
        self.unseen.remove(node_id);
    }

    /// Forget everything, e.g. on becoming leader: every node gets a full grace period
    /// from `now` instead of being judged on another leader's silence, and more until it
    /// is first heard from (`TAKEOVER_GRACE`).
    pub fn reset(&mut self, state: &ClusterState, now: u64) {
        self.last_seen = state.nodes.keys().map(|id| (id.clone(), now)).collect();
        self.unseen = state.nodes.keys().cloned().collect();
        self.last_down = None;
    }

    /// The node to mark Down now, if any: the Ready node silent the longest, once it has
    /// been silent for more than `grace_ms`, never `own` (the leader's node: its agent
    /// talks to this very process, so its silence says the leader is busy, not that the
    /// node is gone), and not within `grace_ms` of the previous one.
    /// (A Down node becomes Ready again when its next heartbeat arrives, not here.)
    pub fn expired(
        &mut self,
        state: &ClusterState,
        now: u64,
        grace_ms: u64,
        own: &str,
    ) -> Option<String> {
        if self
            .last_down
            .is_some_and(|at| now.saturating_sub(at) <= grace_ms)
        {
            return None;
        }
        let victim = state
            .nodes
            .values()
            .filter(|node| node.status.state == NodeState::Ready && node.id != own)
            .map(|node| {
                let seen = *self.last_seen.entry(node.id.clone()).or_insert(now);
                (now.saturating_sub(seen), node.id.clone())
            })
            .filter(|(silent, id)| {
                let grace = if self.unseen.contains(id) {
                    grace_ms.saturating_mul(TAKEOVER_GRACE)
                } else {
                    grace_ms
                };
                *silent > grace
            })
            .max()
            .map(|(_, id)| id)?;
        self.last_down = Some(now);
        Some(victim)
    }
}

/// The rest is tested through the `Dispatcher`, with a fake clock (`super::tests`).
#[cfg(test)]
mod tests {
    use super::*;
    use shoal_types::fixtures::*;

    #[test]
    fn a_new_leader_gives_nodes_twice_the_grace_to_find_it() {
        let st = cluster(&[("n1", "node1"), ("n2", "node2")]);
        // n2 has not found the new leader yet: past one grace it stays, past two it goes.
        let mut hb = Heartbeats::default();
        hb.reset(&st, 0);
        assert_eq!(hb.expired(&st, 4_000, 3_000, "n1"), None);
        assert_eq!(hb.expired(&st, 6_500, 3_000, "n1"), Some("n2".into()));
        // Heard from once, a node is judged on the normal grace.
        let mut hb = Heartbeats::default();
        hb.reset(&st, 0);
        hb.seen("n2", 100);
        assert_eq!(hb.expired(&st, 3_000, 3_000, "n1"), None);
        assert_eq!(hb.expired(&st, 3_200, 3_000, "n1"), Some("n2".into()));
    }
}
