//! What the dispatcher tells each agent, and which nodes it stops hearing from.

use std::collections::HashMap;

use shoal_types::{ClusterState, NodeState, Task, TaskState};

/// The tasks an agent is responsible for: every task assigned to it that still exists.
/// The agent starts those desired Running and stops the others.
pub fn assignments(state: &ClusterState, node_id: &str) -> Vec<Task> {
    // A global task names its node from birth, but is the agent's only once the allocator
    // has given it its addresses and the scheduler has confirmed it (Assigned).
    state
        .tasks
        .values()
        .filter(|t| t.node_id.as_deref() == Some(node_id) && t.status.state >= TaskState::Assigned)
        .cloned()
        .collect()
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
        st.apply(Command::SetNodeState {
            id: "n2".into(),
            state: NodeState::Down,
            message: String::new(),
            at: Millis(0),
        })
        .unwrap();
        // Already Down: not reported again.
        assert!(hb.expired(&st, 9_000, 1_000).iter().all(|n| n != "n2"));
    }
}

/// How far the endpoint table has reached: which version each node has applied, whether a
/// service's last change is on every Ready node, and how long changes took to get there.
/// Times are milliseconds from any monotonic origin.
#[derive(Debug, Default)]
pub struct Convergence {
    /// The newest version whose view each node has applied (acked, or had nothing to apply).
    synced: HashMap<String, u64>,
    /// A delta sent and not yet acked, per node.
    outstanding: HashMap<String, u64>,
    /// Table changes not yet on every node: (version, when).
    pending: std::collections::VecDeque<(u64, u64)>,
    /// The version of each service's last endpoint change.
    service_changed: HashMap<String, u64>,
    /// Change-to-last-ack latencies, newest last, bounded.
    samples: std::collections::VecDeque<u64>,
}

const MAX_SAMPLES: usize = 10_000;

/// Latency figures of endpoint propagation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConvergenceStats {
    pub count: usize,
    pub p50_ms: u64,
    pub p99_ms: u64,
    pub max_ms: u64,
}

impl Convergence {
    /// The table changed at `version`, touching these services.
    pub fn table_changed(
        &mut self,
        version: u64,
        now: u64,
        services: impl IntoIterator<Item = String>,
    ) {
        self.pending.push_back((version, now));
        for s in services {
            let v = self.service_changed.entry(s).or_default();
            *v = (*v).max(version);
        }
    }

    pub fn sent(&mut self, node: &str, version: u64) {
        self.outstanding.insert(node.to_string(), version);
    }

    /// The node's view did not change at `version`: it is as current as its last ack.
    pub fn unchanged(&mut self, node: &str, version: u64) {
        if !self.outstanding.contains_key(node) {
            self.synced.insert(node.to_string(), version);
        }
    }

    pub fn acked(&mut self, node: &str, version: u64) {
        if self.outstanding.get(node).is_some_and(|v| *v <= version) {
            self.outstanding.remove(node);
        }
        let s = self.synced.entry(node.to_string()).or_default();
        *s = (*s).max(version);
    }

    /// A node that lost its session starts from a full table next time.
    pub fn disconnected(&mut self, node: &str) {
        self.outstanding.remove(node);
        self.synced.remove(node);
    }

    fn synced_everywhere(&self, version: u64, ready: &[String]) -> bool {
        ready
            .iter()
            .all(|n| self.synced.get(n).is_some_and(|v| *v >= version))
    }

    /// Records the latency of every change that has now reached all `ready` nodes.
    pub fn settle(&mut self, now: u64, ready: &[String]) {
        while let Some(&(version, at)) = self.pending.front() {
            if !self.synced_everywhere(version, ready) {
                break;
            }
            self.pending.pop_front();
            self.samples.push_back(now.saturating_sub(at));
            if self.samples.len() > MAX_SAMPLES {
                self.samples.pop_front();
            }
        }
    }

    /// (nodes that have the service's last change, Ready nodes).
    pub fn service_progress(&self, service_id: &str, ready: &[String]) -> (usize, usize) {
        let v = self.service_changed.get(service_id).copied().unwrap_or(0);
        let done = ready
            .iter()
            .filter(|n| self.synced.get(*n).is_some_and(|s| *s >= v))
            .count();
        (done, ready.len())
    }

    pub fn stats(&self) -> ConvergenceStats {
        let mut v: Vec<u64> = self.samples.iter().copied().collect();
        if v.is_empty() {
            return ConvergenceStats::default();
        }
        v.sort_unstable();
        let pct = |p: usize| {
            v[((v.len() * p).div_ceil(100))
                .saturating_sub(1)
                .min(v.len() - 1)]
        };
        ConvergenceStats {
            count: v.len(),
            p50_ms: pct(50),
            p99_ms: pct(99),
            max_ms: v[v.len() - 1],
        }
    }

    pub fn reset_samples(&mut self) {
        self.samples.clear();
    }
}

#[cfg(test)]
mod convergence_tests {
    use super::*;

    #[test]
    fn a_change_settles_when_every_ready_node_has_it() {
        let ready = vec!["a".to_string(), "b".to_string()];
        let mut c = Convergence::default();
        c.table_changed(5, 1_000, ["svc".to_string()]);
        c.sent("a", 5);
        c.unchanged("b", 5);
        c.settle(1_010, &ready);
        assert_eq!(c.stats().count, 0, "a has not acked");
        assert_eq!(c.service_progress("svc", &ready), (1, 2));
        c.acked("a", 5);
        c.settle(1_030, &ready);
        assert_eq!(
            c.stats(),
            ConvergenceStats {
                count: 1,
                p50_ms: 30,
                p99_ms: 30,
                max_ms: 30
            }
        );
        assert_eq!(c.service_progress("svc", &ready), (2, 2));
    }

    #[test]
    fn an_outstanding_delta_is_not_hidden_by_a_quiet_version() {
        let ready = vec!["a".to_string()];
        let mut c = Convergence::default();
        c.table_changed(5, 0, []);
        c.sent("a", 5);
        c.unchanged("a", 6);
        c.settle(10, &ready);
        assert_eq!(c.stats().count, 0);
    }
}
