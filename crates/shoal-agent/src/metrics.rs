//! The agent's own Prometheus series (`prometheus-client`), registered on shoald's
//! `/metrics`: how long a task's image took to be ready. The data plane's per-backend counts
//! are read at scrape time instead (`crate::counts`). No clock is read here; the worker
//! passes durations.

use std::time::Duration;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A pull takes from milliseconds (the store has the image) to minutes.
const PULL_BUCKETS: [f64; 11] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0];

type Labels = Vec<(&'static str, &'static str)>;

#[derive(Debug)]
pub struct AgentMetrics {
    pulls: Family<Labels, Histogram, fn() -> Histogram>,
}

impl Default for AgentMetrics {
    fn default() -> AgentMetrics {
        AgentMetrics {
            pulls: Family::new_with_constructor(|| Histogram::new(PULL_BUCKETS)),
        }
    }
}

impl AgentMetrics {
    /// A task's image was made ready (`ok`) or failed to be after `took`: a pull from its
    /// registry, or a look in the node's store when it was already there.
    pub fn image_pulled(&self, ok: bool, took: Duration) {
        let outcome = if ok { "ok" } else { "error" };
        self.pulls
            .get_or_create(&vec![("outcome", outcome)])
            .observe(took.as_secs_f64());
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "shoal_image_pull_duration_seconds",
            "Time this node took to make a task's image ready (a pull from its registry, or the store's copy), by outcome",
            self.pulls.clone(),
        );
    }
}
