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

    /// The node's view did not change at `version`: it is as current as its last ack.
    pub fn unchanged(&mut self, node: &str, version: u64) {
        if !self.outstanding.contains_key(node) {
            self.synced.insert(node.to_string(), version);
        }
    }

    /// The node tried to apply its view and could not: not an ack.
    pub fn failed(&mut self, node: &str) {
        self.failed.insert(node.to_string());
    }

    pub fn acked(&mut self, node: &str, version: u64) {
        self.failed.remove(node);
        if self.outstanding.get(node).is_some_and(|v| *v <= version) {
            self.outstanding.remove(node);
        }
        let s = self.synced.entry(node.to_string()).or_default();
        *s = (*s).max(version);
    }

    /// A node that lost its session starts from a full table next time.
    pub fn disconnected(&mut self, node: &str) {
        self.outstanding.remove(node);
        self.failed.remove(node);
        self.synced.remove(node);
    }

    fn has(&self, node: &str, version: u64) -> bool {
        !self.failed.contains(node) && self.synced.get(node).is_some_and(|v| *v >= version)
    }

    fn synced_everywhere(&self, version: u64, ready: &[String]) -> bool {
        ready.iter().all(|n| self.has(n, version))
    }

    /// Records the latency of every change that has now reached all `ready` nodes, and
    /// returns those latencies (ms), oldest change first.
    pub fn settle(&mut self, now: u64, ready: &[String]) -> Vec<u64> {
        let mut settled = Vec::new();
        while let Some(&(version, at)) = self.pending.front() {
            if !self.synced_everywhere(version, ready) {
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
    fn a_change_settles_when_every_ready_node_has_it() {
        let ready = vec!["a".to_string(), "b".to_string()];
        let mut c = Convergence::default();
        c.table_changed(5, 1_000, ["svc".to_string()]);
        c.sent("a", 5);
        c.unchanged("b", 5);
        assert_eq!(c.settle(1_010, &ready), Vec::<u64>::new());
        assert_eq!(c.stats().count, 0, "a has not acked");
        assert_eq!(c.service_progress("svc", &ready), (1, 2));
        c.acked("a", 5);
        assert_eq!(c.settle(1_030, &ready), [30]);
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
        c.settle(10, &ready);
        assert_eq!(c.stats().count, 0);
    }
}
