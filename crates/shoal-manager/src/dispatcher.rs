//! What the dispatcher tells each agent, and which nodes it stops hearing from.

use std::collections::{HashMap, HashSet};

use imbl::OrdMap;
use shoal_types::diff::changes;
use shoal_types::{ClusterState, NodeState, Task, TaskDelta, TaskState};

/// The tasks that name one node, kept up to date from the difference between successive
/// states (the state's maps are persistent, so that difference costs the size of the
/// change): a session follows its node without reading every task of the cluster at each
/// state change.
#[derive(Debug, Clone, Default)]
pub struct NodeTasks {
    node_id: String,
    mine: OrdMap<String, Task>,
}

impl NodeTasks {
    pub fn new(node_id: &str, state: &ClusterState) -> NodeTasks {
        let mine = state
            .tasks
            .values()
            .filter(|t| t.node_id.as_deref() == Some(node_id))
            .map(|t| (t.id.clone(), t.clone()))
            .collect();
        NodeTasks {
            node_id: node_id.to_string(),
            mine,
        }
    }

    /// Follows the state from `old` to `new`; returns the ids of this node's tasks that
    /// changed, came or went.
    pub fn follow(&mut self, old: &ClusterState, new: &ClusterState) -> Vec<String> {
        let mut changed = Vec::new();
        for (id, _, now) in changes(&old.tasks, &new.tasks) {
            match now.filter(|t| t.node_id.as_deref() == Some(self.node_id.as_str())) {
                Some(t) => {
                    self.mine.insert(id.clone(), t.clone());
                    changed.push(id.clone());
                }
                None => {
                    if self.mine.remove(id).is_some() {
                        changed.push(id.clone());
                    }
                }
            }
        }
        changed
    }

    /// Every task that names this node, whatever its state.
    pub fn all(&self) -> impl Iterator<Item = &Task> {
        self.mine.values()
    }

    /// The tasks the agent is responsible for: every task assigned to it that still
    /// exists. The agent starts those desired Running and stops the others. (A global task
    /// names its node from birth, but is the agent's only once the allocator has given it
    /// its addresses and the scheduler has confirmed it: Assigned.)
    pub fn assigned(&self) -> impl Iterator<Item = &Task> {
        self.mine
            .values()
            .filter(|t| t.status.state >= TaskState::Assigned)
    }

    pub fn get(&self, id: &str) -> Option<&Task> {
        self.mine.get(id)
    }
}

/// What a session has told its agent of each task: the desired state as told (drain before
/// stop may hold a task running) and the state the task was in. Only these matter to an
/// agent; a change of anything else (a status message, an error text) is not sent.
#[derive(Debug, Clone, Default)]
pub struct Told {
    tasks: HashMap<String, (TaskState, TaskState)>,
}

impl Told {
    /// The whole list for a new session, and what it tells.
    pub fn full<'a>(tasks: impl IntoIterator<Item = (&'a Task, TaskState)>) -> (Told, Vec<Task>) {
        let mut told = Told::default();
        let list = tasks
            .into_iter()
            .map(|(t, desired)| {
                told.tasks.insert(t.id.clone(), (desired, t.status.state));
                Task {
                    desired_state: desired,
                    ..t.clone()
                }
            })
            .collect();
        (told, list)
    }

    /// The change to tell for the tasks `ids`, each given as it is now (`None`: no longer
    /// the agent's) with the desired state to tell.
    pub fn delta<'a>(
        &mut self,
        now: impl IntoIterator<Item = (&'a str, Option<(&'a Task, TaskState)>)>,
    ) -> TaskDelta {
        let mut delta = TaskDelta::default();
        for (id, task) in now {
            match task {
                Some((t, desired)) => {
                    let key = (desired, t.status.state);
                    if self.tasks.get(id) != Some(&key) {
                        self.tasks.insert(id.to_string(), key);
                        delta.upsert.push(Task {
                            desired_state: desired,
                            ..t.clone()
                        });
                    }
                }
                None => {
                    if self.tasks.remove(id).is_some() {
                        delta.remove.push(id.to_string());
                    }
                }
            }
        }
        delta
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_types::fixtures::*;
    use shoal_types::{Command, Millis};

    fn down(st: &mut ClusterState, id: &str) {
        st.apply(Command::SetNodeState {
            id: id.into(),
            state: NodeState::Down,
            message: String::new(),
            at: Millis(0),
        })
        .unwrap();
    }

    /// Following the state change by change gives the same tasks as reading them all.
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

    /// A task is told again only when what the agent acts on changed.
    #[test]
    fn a_session_tells_only_what_changed() {
        let mut t = task("ta", "s1", "vote");
        t.node_id = Some("n1".into());
        t.status = shoal_types::TaskStatus::new(TaskState::Assigned, Millis(0), "");
        let (mut told, list) = Told::full([(&t, TaskState::Running)]);
        assert_eq!(list.len(), 1);
        // Only a message changed: nothing to tell.
        t.status.message = "preparing the sandbox".into();
        assert!(
            told.delta([("ta", Some((&t, TaskState::Running)))])
                .is_empty()
        );
        // Its state changed: told, whole.
        t.status.state = TaskState::Running;
        let d = told.delta([("ta", Some((&t, TaskState::Running)))]);
        assert_eq!(d.upsert.len(), 1);
        assert_eq!(d.upsert[0].status.state, TaskState::Running);
        // To stop, but held running while its removal propagates: told as desired Running.
        t.desired_state = TaskState::Shutdown;
        assert!(
            told.delta([("ta", Some((&t, TaskState::Running)))])
                .is_empty()
        );
        let d = told.delta([("ta", Some((&t, TaskState::Shutdown)))]);
        assert_eq!(d.upsert[0].desired_state, TaskState::Shutdown);
        // Gone: told once.
        assert_eq!(told.delta([("ta", None)]).remove, ["ta"]);
        assert!(told.delta([("ta", None)]).is_empty());
    }

    #[test]
    fn silent_node_goes_down_once() {
        let mut st = cluster(&[("n1", "node1"), ("n2", "node2")]);
        let mut hb = Heartbeats::default();
        hb.reset(&st, 1_000);
        hb.seen("n2", 1_000);
        hb.seen("n1", 3_000);
        assert_eq!(hb.expired(&st, 3_000, 3_000, "n1"), None);
        hb.seen("n1", 4_500);
        assert_eq!(hb.expired(&st, 4_500, 3_000, "n1"), Some("n2".into()));
        down(&mut st, "n2");
        // Already Down: not reported again.
        assert_eq!(hb.expired(&st, 20_000, 3_000, "n1"), None);
    }

    #[test]
    fn the_leader_never_marks_its_own_node() {
        let st = cluster(&[("n1", "node1"), ("n2", "node2")]);
        let mut hb = Heartbeats::default();
        hb.reset(&st, 0);
        hb.seen("n2", 60_000);
        // n1 (the leader's node) has been silent for a minute: its agent is starved by
        // the same process that judges it.
        assert_eq!(hb.expired(&st, 60_000, 3_000, "n1"), None);
    }

    #[test]
    fn nodes_go_down_one_per_grace_period() {
        let mut st = cluster(&[("n1", "node1"), ("n2", "node2"), ("n3", "node3")]);
        let mut hb = Heartbeats::default();
        hb.reset(&st, 0);
        hb.seen("n2", 0);
        hb.seen("n3", 1_000);
        // Both silent past the grace: the longer silent goes first, the other waits.
        assert_eq!(hb.expired(&st, 5_000, 3_000, "n1"), Some("n2".into()));
        down(&mut st, "n2");
        assert_eq!(hb.expired(&st, 7_000, 3_000, "n1"), None);
        // n3 spoke again in the meantime: it stays.
        hb.seen("n3", 7_500);
        assert_eq!(hb.expired(&st, 8_500, 3_000, "n1"), None);
        // Silent again past another grace period: now it goes.
        assert_eq!(hb.expired(&st, 11_000, 3_000, "n1"), Some("n3".into()));
    }

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
