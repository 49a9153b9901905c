//! How far endpoint changes have reached each node.

use std::collections::{HashMap, HashSet};

/// How far the endpoint table has reached: which version each node has applied, whether a
/// service's last change is on every Ready node, and how long changes took to get there.
/// Times are milliseconds from any monotonic origin.
#[derive(Debug, Default)]
pub struct Convergence {
    /// The newest version whose view each node has applied (acked, or had nothing to apply).
    synced: HashMap<String, u64>,
    /// A delta sent and not yet acked, per node.
    outstanding: HashMap<String, u64>,
    /// The newest version a node's view was found unchanged at while a delta was
    /// outstanding: the node has it once that delta is acked.
    unchanged_since: HashMap<String, u64>,
    /// Nodes whose last apply failed: synced with no service, whatever version they had
    /// (their tables are partial, and a node that just took part in a network may have had
    /// nothing of it), until an apply succeeds.
    failed: HashSet<String>,
    /// Table changes not yet on every node: (version, when).
    pending: std::collections::VecDeque<(u64, u64)>,
    /// The version of each service's last endpoint change.
    service_changed: HashMap<String, u64>,
    /// Change-to-last-ack latencies, newest last, bounded.
    samples: std::collections::VecDeque<u64>,
    /// How far `settle` got through the Ready nodes: (list generation, the oldest pending
    /// version, the first node that lacked it).
    cursor: (u64, u64, usize),
    /// The last [`RECENT`] changes settled, with their versions.
    recent: std::collections::VecDeque<Settled>,
}

const MAX_SAMPLES: usize = 10_000;
const RECENT: usize = 20;

/// An endpoint-table change (the state version it came with) and how long it took to reach
/// every Ready node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    pub version: u64,
    pub took_ms: u64,
}

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

    /// The node's view did not change at `version`: it is as current as its last ack. While
    /// a delta is outstanding, it will be once that delta is acked: remembered for `acked`
    /// (sessions are not woken by acks, so none reports it again after the ack).
    pub fn unchanged(&mut self, node: &str, version: u64) {
        if self.outstanding.contains_key(node) {
            let v = self.unchanged_since.entry(node.to_string()).or_default();
            *v = (*v).max(version);
        } else {
            self.synced.insert(node.to_string(), version);
        }
    }

    /// The node tried to apply its view and could not: not an ack.
    pub fn failed(&mut self, node: &str) {
        self.failed.insert(node.to_string());
    }

    pub fn acked(&mut self, node: &str, version: u64) {
        self.failed.remove(node);
        let mut now_at = version;
        if self.outstanding.get(node).is_some_and(|v| *v <= version) {
            self.outstanding.remove(node);
            if let Some(v) = self.unchanged_since.remove(node) {
                now_at = now_at.max(v);
            }
        }
        let s = self.synced.entry(node.to_string()).or_default();
        *s = (*s).max(now_at);
    }

    /// A node that lost its session starts from a full table next time.
    pub fn disconnected(&mut self, node: &str) {
        self.outstanding.remove(node);
        self.unchanged_since.remove(node);
        self.failed.remove(node);
        self.synced.remove(node);
    }

    fn has(&self, node: &str, version: u64) -> bool {
        !self.failed.contains(node) && self.synced.get(node).is_some_and(|v| *v >= version)
    }

    /// Whether a table change has not reached every Ready node yet.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Records the latency of every change that has now reached all `ready` nodes, and
    /// returns those latencies (ms), oldest change first. `ready_gen` names the list: while
    /// the same is passed, the nodes already seen to have the oldest pending change are not
    /// looked at again (called at every session's step and every ack, a full look made a
    /// change cost nodes² on a thousand nodes). Only these figures use it: a node whose
    /// apply fails after it was passed is not looked at again for that change.
    pub fn settle(&mut self, now: u64, ready: &[String], ready_gen: u64) -> Vec<u64> {
        let mut settled = Vec::new();
        while let Some(&(version, at)) = self.pending.front() {
            let start = match self.cursor {
                (g, v, i) if g == ready_gen && v == version => i,
                _ => 0,
            };
            let behind = ready[start.min(ready.len())..]
                .iter()
                .position(|n| !self.has(n, version));
            if let Some(i) = behind {
                self.cursor = (ready_gen, version, start + i);
                break;
            }
            self.pending.pop_front();
            let took = now.saturating_sub(at);
            settled.push(took);
            self.samples.push_back(took);
            if self.samples.len() > MAX_SAMPLES {
                self.samples.pop_front();
            }
            self.recent.push_back(Settled {
                version,
                took_ms: took,
            });
            if self.recent.len() > RECENT {
                self.recent.pop_front();
            }
        }
        settled
    }

    /// The last changes that reached every Ready node, newest last (the dashboard).
    pub fn recent(&self) -> Vec<Settled> {
        self.recent.iter().copied().collect()
    }

    /// (nodes that have the service's last change, Ready nodes).
    pub fn service_progress(&self, service_id: &str, ready: &[String]) -> (usize, usize) {
        let v = self.service_changed.get(service_id).copied().unwrap_or(0);
        self.nodes_at(v, ready)
    }

    /// (Ready nodes that have applied `version` or a later one, Ready nodes).
    pub fn nodes_at(&self, version: u64, ready: &[String]) -> (usize, usize) {
        let done = ready.iter().filter(|n| self.has(n, version)).count();
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
    fn a_view_unchanged_while_a_delta_is_outstanding_is_had_once_the_delta_is_acked() {
        let mut c = Convergence::default();
        let ready = ["n1".to_string()];
        c.sent("n1", 5);
        c.unchanged("n1", 7);
        assert_eq!(
            c.nodes_at(7, &ready),
            (0, 1),
            "the delta of 5 is not acked yet"
        );
        c.acked("n1", 4);
        assert_eq!(
            c.nodes_at(7, &ready),
            (0, 1),
            "an older ack leaves it outstanding"
        );
        c.acked("n1", 5);
        assert_eq!(c.nodes_at(7, &ready), (1, 1));
    }

    #[test]
    fn a_change_settles_when_every_ready_node_has_it() {
        let ready = vec!["a".to_string(), "b".to_string()];
        let mut c = Convergence::default();
        c.table_changed(5, 1_000, ["svc".to_string()]);
        c.sent("a", 5);
        c.unchanged("b", 5);
        assert_eq!(c.settle(1_010, &ready, 0), Vec::<u64>::new());
        assert_eq!(c.stats().count, 0, "a has not acked");
        assert_eq!(c.service_progress("svc", &ready), (1, 2));
        c.acked("a", 5);
        assert_eq!(c.settle(1_030, &ready, 0), [30]);
        assert_eq!(
            c.recent(),
            [Settled {
                version: 5,
                took_ms: 30
            }]
        );
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
        c.settle(10, &ready, 0);
        assert_eq!(c.stats().count, 0);
    }
}
