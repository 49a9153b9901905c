//! Every Prometheus series shoald serves on `--metrics-addr`'s `/metrics` (`crate::web`),
//! defined here: names, help, labels, buckets (`prometheus-client`).
//!
//! Two kinds:
//! - counted as things happen: DNS (shoal-dns's own `DnsMetrics`) and image pulls
//!   (shoal-agent's `AgentMetrics`), both defined in their crates and registered here; Raft
//!   proposal latency, endpoint convergence latency, heartbeats missed, leader changes;
//! - read at scrape time ([`Scrape`]): the data plane's per-backend connection counters (the
//!   eBPF programs' maps: counted by the kernel, not sampled), Raft's term and log indexes
//!   (openraft's metrics watch) and, on the leader, tasks per service by state, restarts and
//!   nodes by state from the cluster state.
//!
//! Leader-only series (everything drawn from the state, convergence, heartbeats, proposals)
//! are in a registry of their own, encoded only while this manager leads, so that summing a
//! series over the cluster's managers counts each task once.
//!
//! Architecture invariant: no clock is read here; callers pass durations.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use shoal_agent::counts::DataplaneCounts;
use shoal_types::ClusterState;

/// Label sets: name/value pairs (one type for every family).
type Labels = Vec<(&'static str, String)>;

/// Endpoint changes reach every node in milliseconds (bench/endpoints: p99 8 ms); a slow
/// node shows in the upper buckets.
const CONVERGENCE_BUCKETS: [f64; 12] = [
    0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
/// A Raft commit takes ~1-20 ms here (one redb commit per entry plus a round trip).
const PROPOSAL_BUCKETS: [f64; 12] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// The node's metrics: what is counted as it happens, and the registries that encode them.
#[derive(Debug)]
pub struct Metrics {
    node: Registry,
    leader: Registry,
    /// Counted by every sandbox's DNS server (handed to the agent).
    pub dns: Arc<shoal_dns::DnsMetrics>,
    proposal: Histogram,
    convergence: Histogram,
    heartbeats_missed: Family<Labels, Counter>,
    leader_changes: Counter,
    /// The agent's series (image pulls), handed to every activation of the agent.
    pub agent: Arc<shoal_agent::metrics::AgentMetrics>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let dns = Arc::new(shoal_dns::DnsMetrics::default());
        let proposal = Histogram::new(PROPOSAL_BUCKETS);
        let convergence = Histogram::new(CONVERGENCE_BUCKETS);
        let heartbeats_missed = Family::<Labels, Counter>::default();
        let leader_changes = Counter::default();
        let agent = Arc::new(shoal_agent::metrics::AgentMetrics::default());
        let mut node = Registry::default();
        dns.register(&mut node);
        node.register(
            "shoal_raft_leader_changes",
            "Times this manager saw the Raft group's leader change (a new leader elected or learned)",
            leader_changes.clone(),
        );
        agent.register(&mut node);
        let mut leader = Registry::default();
        leader.register(
            "shoal_raft_proposal_duration_seconds",
            "Time from proposing a change on the leader until it was committed and applied",
            proposal.clone(),
        );
        leader.register(
            "shoal_endpoint_convergence_duration_seconds",
            "Time from an endpoint-table change (a task in or out of DNS, a VIP, the mesh) until every Ready node applied it",
            convergence.clone(),
        );
        leader.register(
            "shoal_heartbeats_missed",
            "Times a node missed its heartbeats for the grace period and was marked Down",
            heartbeats_missed.clone(),
        );
        Metrics {
            node,
            leader,
            dns,
            proposal,
            convergence,
            heartbeats_missed,
            leader_changes,
            agent,
        }
    }
}

impl Metrics {
    pub fn proposal_committed(&self, took: Duration) {
        self.proposal.observe(took.as_secs_f64());
    }

    pub fn endpoints_converged(&self, took_ms: u64) {
        self.convergence.observe(took_ms as f64 / 1000.0);
    }

    pub fn heartbeats_missed(&self, node: &str) {
        self.heartbeats_missed
            .get_or_create(&vec![("node", node.to_string())])
            .inc();
    }

    pub fn leader_changed(&self) {
        self.leader_changes.inc();
    }

    /// The text of one scrape: OpenMetrics (`openmetrics`, what Prometheus asks for first)
    /// or Prometheus' text format 0.0.4 (`promtool check metrics`, curl).
    pub fn encode(&self, scrape: &Scrape, openmetrics: bool) -> String {
        let now = scrape.registry();
        let mut registries = vec![&self.node, &now];
        if scrape.leader.is_some() {
            registries.push(&self.leader);
        }
        let mut out = String::new();
        for r in registries {
            // Writing into a String cannot fail.
            let _ = if openmetrics {
                text::encode_registry(&mut out, r)
            } else {
                prometheus_text::encode(&mut out, r)
            };
        }
        if openmetrics {
            let _ = text::encode_eof(&mut out);
        }
        out
    }
}

/// Raft as this manager sees it (openraft's metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RaftStatus {
    pub term: u64,
    pub last_log_index: u64,
    pub applied_index: u64,
    pub is_leader: bool,
}

/// What is read at scrape time.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    pub dataplane: DataplaneCounts,
    /// On a manager.
    pub raft: Option<RaftStatus>,
    /// On the leader: the state its series are drawn from.
    pub leader: Option<Arc<ClusterState>>,
}

impl Scrape {
    /// The scrape-time series, as a registry of their own.
    fn registry(&self) -> Registry {
        let mut r = Registry::default();
        let info = Family::<Labels, Gauge>::default();
        info.get_or_create(&vec![
            ("vip_balancer", self.dataplane.vip_balancer.to_string()),
            ("mesh_path", self.dataplane.mesh_path.to_string()),
        ])
        .set(1);
        r.register(
            "shoal_dataplane_info",
            "The data-plane paths this node uses (per-backend connection counts come from the eBPF ones: vip_balancer=ebpf, mesh_path=tc)",
            info,
        );
        let vip = Family::<Labels, Counter>::default();
        for c in &self.dataplane.vip {
            vip.get_or_create(&vec![
                ("service", c.service.clone()),
                ("network", c.network.clone()),
                ("vip", c.vip.to_string()),
                ("task", c.task.clone()),
                ("backend", c.backend.to_string()),
            ])
            .inc_by(c.count);
        }
        r.register(
            "shoal_vip_backend_connections",
            "New connections (and UDP flows) this node's eBPF VIP balancer sent to each task of each VIP, from the kernel's counters",
            vip,
        );
        let mesh = Family::<Labels, Counter>::default();
        for c in &self.dataplane.mesh {
            mesh.get_or_create(&vec![
                ("port", c.port.to_string()),
                ("protocol", c.protocol.to_string()),
                ("backend", c.backend.clone()),
            ])
            .inc_by(c.count);
        }
        r.register(
            "shoal_mesh_backend_connections",
            "New connections (and UDP flows) to a published port that this node's routing mesh (tc eBPF) sent to each backend: a local task, or node:<address> when forwarded",
            mesh,
        );
        if let Some(raft) = &self.raft {
            for (name, help, value) in [
                (
                    "shoal_raft_term",
                    "The Raft term this manager is in",
                    raft.term,
                ),
                (
                    "shoal_raft_last_log_index",
                    "The index of the last entry in this manager's Raft log",
                    raft.last_log_index,
                ),
                (
                    "shoal_raft_applied_index",
                    "The index of the last committed entry this manager applied to its state",
                    raft.applied_index,
                ),
                (
                    "shoal_raft_leader",
                    "1 while this manager is the Raft leader",
                    u64::from(raft.is_leader),
                ),
            ] {
                let g = Gauge::<i64>::default();
                g.set(i64::try_from(value).unwrap_or(i64::MAX));
                r.register(name, help, g);
            }
        }
        if let Some(state) = &self.leader {
            let tasks = Family::<Labels, Gauge>::default();
            for ((service, st), n) in tasks_by_state(state) {
                tasks
                    .get_or_create(&vec![("service", service), ("state", st)])
                    .set(n);
            }
            r.register(
                "shoal_service_tasks",
                "Tasks of each service the cluster knows (history included, as `service ps` lists them), by current state",
                tasks,
            );
            let restarts = Family::<Labels, Gauge>::default();
            for (service, n) in restarts_by_service(state) {
                restarts.get_or_create(&vec![("service", service)]).set(n);
            }
            r.register(
                "shoal_service_task_restarts",
                "Restarts the restart policy made in each service's current slots (each slot's newest restart count, summed)",
                restarts,
            );
            let nodes = Family::<Labels, Gauge>::default();
            for n in state.nodes.values() {
                let st = format!("{:?}", n.status.state).to_lowercase();
                nodes.get_or_create(&vec![("state", st)]).inc();
            }
            r.register("shoal_nodes", "Nodes of the cluster by state", nodes);
        }
        r
    }
}

/// (service name, task state) → tasks. Pure.
pub fn tasks_by_state(state: &ClusterState) -> BTreeMap<(String, String), i64> {
    let mut out = BTreeMap::new();
    for t in state.tasks.values() {
        let st = format!("{:?}", t.status.state).to_lowercase();
        *out.entry((t.service_name.clone(), st)).or_default() += 1;
    }
    out
}

/// Service name → restarts in its slots (a slot's tasks carry its restart count forward, so
/// the largest is the slot's). Services with no task still show, at 0. Pure.
pub fn restarts_by_service(state: &ClusterState) -> BTreeMap<String, i64> {
    let mut slots: BTreeMap<(&str, u64, &str), u64> = BTreeMap::new();
    for t in state.tasks.values() {
        let node = if t.slot == 0 {
            t.node_id.as_deref().unwrap_or("")
        } else {
            ""
        };
        let r = slots.entry((&t.service_name, t.slot, node)).or_default();
        *r = (*r).max(t.restarts);
    }
    let mut out: BTreeMap<String, i64> = state
        .services
        .values()
        .map(|s| (s.spec.name.clone(), 0))
        .collect();
    for ((service, _, _), r) in slots {
        *out.entry(service.to_string()).or_default() += i64::try_from(r).unwrap_or(i64::MAX);
    }
    out
}

/// Counts the leader changes this manager sees, from openraft's metrics watch, until the
/// manager role stops (the task is aborted with it).
pub async fn count_leader_changes(store: shoal_store::Store, metrics: Arc<Metrics>) {
    let mut watch = store.raft_metrics();
    let mut last = watch.borrow_and_update().current_leader;
    while watch.changed().await.is_ok() {
        let now = watch.borrow_and_update().current_leader;
        if now.is_some() && now != last {
            metrics.leader_changed();
        }
        if now.is_some() {
            last = now;
        }
    }
}

/// Raft's figures now, from openraft's metrics watch.
pub fn raft_status(store: &shoal_store::Store) -> RaftStatus {
    let m = store.raft_metrics();
    let m = m.borrow();
    RaftStatus {
        term: m.current_term,
        last_log_index: m.last_log_index.unwrap_or(0),
        applied_index: m.last_applied.map_or(0, |l| l.index),
        is_leader: store.is_leader(),
    }
}

/// A state with service `web` and tasks (slot, node, state, restarts), for this module's
/// tests and the dashboard's.
#[cfg(test)]
pub(crate) fn state_with_tasks(tasks: &[(u64, &str, shoal_types::TaskState, u64)]) -> ClusterState {
    use shoal_types::{Command, fixtures};
    let mut st = fixtures::cluster(&[("n1", "node1"), ("n2", "node2")]);
    st.apply(Command::CreateService {
        service: fixtures::service("s1", fixtures::spec("web", 3)),
    })
    .expect("create web");
    let tasks = tasks
        .iter()
        .enumerate()
        .map(|(i, (slot, node, state, restarts))| {
            let mut t = fixtures::task(&format!("t{i}"), "s1", "web");
            t.slot = *slot;
            t.node_id = Some(node.to_string());
            t.status.state = *state;
            t.restarts = *restarts;
            t.created_at = shoal_types::time::Millis(i as u64);
            if state.is_terminal() {
                t.desired_state = shoal_types::TaskState::Shutdown;
            }
            t
        })
        .collect();
    st.apply(Command::CreateTasks { tasks }).expect("tasks");
    st
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_agent::counts::VipCount;
    use shoal_types::TaskState::{Failed, Running};

    #[test]
    fn tasks_are_counted_by_state_and_restarts_by_slot() {
        // Slot 1 failed twice (its third task runs with restarts 2), slot 2 never did.
        let st = state_with_tasks(&[
            (1, "n1", Failed, 0),
            (1, "n1", Failed, 1),
            (1, "n2", Running, 2),
            (2, "n2", Running, 0),
        ]);
        let by_state = tasks_by_state(&st);
        assert_eq!(by_state[&("web".to_string(), "running".to_string())], 2);
        assert_eq!(by_state[&("web".to_string(), "failed".to_string())], 2);
        assert_eq!(restarts_by_service(&st)["web"], 2);
        // A service with no task yet shows 0 restarts rather than nothing.
        assert_eq!(restarts_by_service(&state_with_tasks(&[]))["web"], 0);
    }

    fn scrape() -> Scrape {
        Scrape {
            dataplane: DataplaneCounts {
                vip_balancer: "ebpf",
                mesh_path: "tc",
                vip: vec![VipCount {
                    service: "web".into(),
                    network: "ovl".into(),
                    vip: "10.0.1.2".parse().unwrap(),
                    backend: "10.0.1.3".parse().unwrap(),
                    task: "web.1.t1".into(),
                    count: 4,
                }],
                mesh: vec![],
            },
            raft: Some(RaftStatus {
                term: 3,
                last_log_index: 40,
                applied_index: 39,
                is_leader: false,
            }),
            leader: None,
        }
    }

    #[test]
    fn both_formats_name_counters_with_total_and_leader_series_only_on_the_leader() {
        let m = Metrics::default();
        m.proposal_committed(Duration::from_millis(3));
        m.leader_changed();
        let follower = m.encode(&scrape(), false);
        for want in [
            "# TYPE shoal_vip_backend_connections_total counter",
            "shoal_vip_backend_connections_total{service=\"web\",network=\"ovl\",vip=\"10.0.1.2\",task=\"web.1.t1\",backend=\"10.0.1.3\"} 4",
            "shoal_raft_term 3",
            "shoal_raft_leader_changes_total 1",
            "shoal_dataplane_info{vip_balancer=\"ebpf\",mesh_path=\"tc\"} 1",
        ] {
            assert!(follower.contains(want), "{want} missing from:\n{follower}");
        }
        assert!(!follower.contains("shoal_raft_proposal_duration_seconds"));
        assert!(!follower.contains("# EOF"));

        let mut s = scrape();
        s.leader = Some(Arc::new(ClusterState::default()));
        let leader = m.encode(&s, true);
        assert!(leader.contains("shoal_raft_proposal_duration_seconds_count 1"));
        assert!(leader.ends_with("# EOF\n"), "{leader}");
    }
}
