//! What changed between two states, as the leader's passes need to know it: the state's
//! maps are persistent, so the difference costs the size of the change, and a change of
//! one service re-examines that service, not the cluster. [`Wakeups`] adds what time alone
//! changes (a restart delay that runs out), so that no pass looks at every service just
//! in case.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use shoal_types::diff::changes;
use shoal_types::{ClusterState, Command, Millis, Network, TaskState};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Nodes, networks or the cluster changed: every pass looks at everything.
    pub all: bool,
    /// Services whose spec or endpoint changed, or that were added or removed.
    pub specs: BTreeSet<String>,
    /// Services with a task that was added, changed or deleted (`specs` included).
    pub services: BTreeSet<String>,
    /// A task that changed now waits for addresses (New, desired Running).
    pub new_tasks: bool,
    /// A task that changed now waits for a node (Pending, desired Running).
    pub pending_tasks: bool,
    /// A task that held addresses ended or was removed: one waiting for an address (or a
    /// service for its VIP) may get it now.
    pub freed: bool,
    /// A service's placement constraints changed: a task of it waiting for a node may fit.
    pub placement: bool,
}

impl Changes {
    /// Look at everything (the first pass of a leader, a periodic pass, after a failure).
    pub fn everything() -> Changes {
        Changes {
            all: true,
            ..Changes::default()
        }
    }

    /// Whether the allocator has anything to do.
    pub fn allocate(&self) -> bool {
        self.all || self.new_tasks || self.freed || !self.specs.is_empty()
    }

    /// Whether the scheduler has anything to do.
    pub fn schedule(&self) -> bool {
        self.all || self.pending_tasks || self.placement
    }

    /// The services the orchestrator looks at; `None`: all of them.
    pub fn scope(&self) -> Option<&BTreeSet<String>> {
        (!self.all).then_some(&self.services)
    }

    /// The state the leader's allocation and scheduling read after an orchestrator pass
    /// that creates tasks: `state` with `commands` applied to a copy (persistent maps: it
    /// shares all but the change), what that changed merged into `self`. Tasks a pass
    /// creates then get addresses and a node in the same Raft entry; before, each batch of
    /// new tasks took three entries, each waited for before the next step. What the real
    /// apply refuses (another entry committed first), it refuses per command. A pass that
    /// creates nothing reads `state` as it is.
    pub fn with_pass(
        &mut self,
        state: Arc<ClusterState>,
        commands: &[Command],
    ) -> Arc<ClusterState> {
        if !commands
            .iter()
            .any(|c| matches!(c, Command::CreateTasks { .. }))
        {
            return state;
        }
        let mut next = (*state).clone();
        let _ = next.apply(Command::Batch(commands.to_vec()));
        self.merge(between(&state, &next));
        Arc::new(next)
    }

    /// Adds what changed next (from the state `self` ends at to a later one).
    pub fn merge(&mut self, next: Changes) {
        self.all |= next.all;
        self.specs.extend(next.specs);
        self.services.extend(next.services);
        self.new_tasks |= next.new_tasks;
        self.pending_tasks |= next.pending_tasks;
        self.freed |= next.freed;
        self.placement |= next.placement;
    }
}

pub fn between(old: &ClusterState, new: &ClusterState) -> Changes {
    // A network's allocation cursor (`next_host`) moves with every address handed out; it
    // is not a change any pass must look at everything for. Counting it made every
    // allocation a full pass over every service (200 ms per pass at 100,000 tasks, at each
    // endpoint change: bench/control-plane).
    let shape = |n: &Network| Network {
        next_host: 0,
        ..n.clone()
    };
    let mut c = Changes {
        all: old.cluster != new.cluster
            || changes(&old.nodes, &new.nodes).next().is_some()
            || changes(&old.networks, &new.networks).any(|(_, a, b)| a.map(shape) != b.map(shape)),
        ..Changes::default()
    };
    if c.all {
        return c;
    }
    for (id, was, now) in changes(&old.services, &new.services) {
        c.specs.insert(id.clone());
        c.services.insert(id.clone());
        c.placement |= was.map(|s| &s.spec.task_template.placement)
            != now.map(|s| &s.spec.task_template.placement);
    }
    let waits = |t: &shoal_types::Task, s: TaskState| {
        t.desired_state == TaskState::Running && t.status.state == s
    };
    for (_, was, now) in changes(&old.tasks, &new.tasks) {
        for t in was.iter().chain(now.iter()) {
            c.services.insert(t.service_id.clone());
        }
        if let Some(t) = now {
            c.new_tasks |= waits(t, TaskState::New);
            c.pending_tasks |= waits(t, TaskState::Pending);
        }
        // Addresses count as used while a task is not terminal (`addresses_in_use`).
        let held = |t: &shoal_types::Task| !t.networks.is_empty() && !t.status.state.is_terminal();
        c.freed |= was.is_some_and(|t| held(t)) && !now.is_some_and(|t| held(t));
    }
    c
}

/// Services that want a VIP on a network and have none there (it was full): the ones a freed
/// address may serve, so that the allocator looks at them, not at every service. Only a
/// change of the service (its spec or its VIPs) or of the networks changes whether it waits.
#[derive(Debug, Default)]
pub struct VipWaiters {
    ids: BTreeSet<String>,
}

impl VipWaiters {
    /// Follows a pass's changes: every service after a full one, the changed ones otherwise.
    pub fn update(&mut self, state: &ClusterState, changed: &Changes) {
        if changed.all {
            self.ids = state
                .services
                .values()
                .filter(|s| lacks_vip(state, s))
                .map(|s| s.id.clone())
                .collect();
            return;
        }
        for id in &changed.specs {
            match state.services.get(id) {
                Some(s) if lacks_vip(state, s) => self.ids.insert(id.clone()),
                _ => self.ids.remove(id),
            };
        }
    }

    /// The services waiting for a VIP.
    pub fn ids(&self) -> &BTreeSet<String> {
        &self.ids
    }
}

fn lacks_vip(state: &ClusterState, s: &shoal_types::Service) -> bool {
    s.spec.endpoint_spec.mode == shoal_types::EndpointMode::Vip
        && crate::allocator::service_networks(state, s)
            .iter()
            .any(|(net, _)| !s.endpoint.virtual_ips.iter().any(|v| &v.network_id == net))
}

/// When services must be looked at again for what time alone decides (a restart delay that
/// runs out): the leader's loop sleeps until the earliest and then looks at those services
/// only, instead of at every service once a second.
#[derive(Debug, Default)]
pub struct Wakeups {
    at: BTreeMap<String, Millis>,
}

impl Wakeups {
    /// Records a pass over `looked_at` (`None`: every service) that found `due` (the
    /// orchestrator's `Pass::due`): the services it looked at keep only their new times.
    pub fn record(&mut self, looked_at: Option<&BTreeSet<String>>, due: BTreeMap<String, Millis>) {
        match looked_at {
            None => self.at = due,
            Some(ids) => {
                for id in ids {
                    self.at.remove(id);
                }
                self.at.extend(due);
            }
        }
    }

    /// The earliest time a service is due, if any.
    pub fn next(&self) -> Option<Millis> {
        self.at.values().min().copied()
    }

    /// The services due at `now` (the pass that looks at them records their next times).
    pub fn due(&self, now: Millis) -> impl Iterator<Item = &String> {
        self.at
            .iter()
            .filter(move |(_, at)| **at <= now)
            .map(|(id, _)| id)
    }

    /// Forgets everything (this manager stopped leading).
    pub fn clear(&mut self) {
        self.at.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocator::allocate;
    use shoal_types::fixtures::*;
    use shoal_types::{Command, Millis, NodeState};

    #[test]
    fn allocation_and_scheduling_read_the_state_a_creating_pass_leaves() {
        let mut st = cluster(&[("n1", "node1")]);
        st.apply(Command::CreateService {
            service: service("s1", spec("vote", 2)),
        })
        .unwrap();
        let st = Arc::new(st);
        let mut ids = ["t2", "t1"].into_iter().map(String::from);
        let pass = crate::orchestrator::reconcile_pass(
            &st,
            Millis(1),
            &mut || ids.next().unwrap(),
            Some(&["s1".to_string()].into()),
        );
        let mut changed = Changes::default();
        let next = changed.with_pass(Arc::clone(&st), &pass.commands);
        assert_eq!(next.tasks_of("s1").count(), 2, "the pass's tasks are there");
        assert!(
            st.tasks.is_empty(),
            "the state it started from is left alone"
        );
        assert!(changed.new_tasks && changed.allocate());
        // A pass that creates nothing reads the state as it is.
        let mut unchanged = Changes::default();
        let same = unchanged.with_pass(Arc::clone(&next), &[]);
        assert!(Arc::ptr_eq(&same, &next) && !unchanged.new_tasks);
    }

    #[test]
    fn a_change_names_what_the_passes_must_look_at() {
        let mut st = cluster(&[("n1", "node1"), ("n2", "node2")]);
        st.apply(Command::CreateService {
            service: service("s1", spec("vote", 1)),
        })
        .unwrap();
        st.apply(Command::CreateService {
            service: service("s2", spec("web", 1)),
        })
        .unwrap();

        // The orchestrator makes s1's task: s1 is looked at, and the allocator has work.
        let old = st.clone();
        let create = crate::orchestrator::reconcile_services(
            &st,
            Millis(1),
            &mut || "t1".to_string(),
            Some(&["s1".to_string()].into()),
        );
        for cmd in create {
            st.apply(cmd).unwrap();
        }
        let c = between(&old, &st);
        assert_eq!(c.services, BTreeSet::from(["s1".to_string()]));
        assert!(c.specs.is_empty() && c.new_tasks && !c.pending_tasks && !c.all);
        assert!(c.allocate() && !c.schedule());
        assert_eq!(c.scope(), Some(&BTreeSet::from(["s1".to_string()])));

        // Allocated: now the scheduler has work, not the allocator.
        let old = st.clone();
        for cmd in allocate(&st, Millis(2)) {
            st.apply(cmd).unwrap();
        }
        let c = between(&old, &st);
        assert!(!c.new_tasks && c.pending_tasks && c.schedule() && !c.allocate());

        // A spec change: that service, and the allocator (its VIPs may change); not the
        // scheduler, as the constraints are the same.
        let old = st.clone();
        st.apply(Command::UpdateService {
            id: "s2".into(),
            spec: spec("web", 3),
            at: Millis(3),
            expected_version: None,
        })
        .unwrap();
        let c = between(&old, &st);
        assert_eq!(c.specs, BTreeSet::from(["s2".to_string()]));
        assert!(c.allocate() && !c.schedule());

        // New constraints: the scheduler looks again (a waiting task may fit now).
        let old = st.clone();
        let mut constrained = spec("web", 3);
        constrained.task_template.placement.constraints =
            vec![shoal_types::Constraint::parse("node.hostname==node1").unwrap()];
        st.apply(Command::UpdateService {
            id: "s2".into(),
            spec: constrained,
            at: Millis(4),
            expected_version: None,
        })
        .unwrap();
        let c = between(&old, &st);
        assert!(c.placement && c.schedule() && !c.all);

        // A node changes: everything.
        let old = st.clone();
        st.apply(Command::SetNodeState {
            id: "n2".into(),
            state: NodeState::Down,
            message: String::new(),
            at: Millis(4),
        })
        .unwrap();
        let c = between(&old, &st);
        assert!(c.all && c.scope().is_none() && c.allocate() && c.schedule());

        // Nothing changed: nothing to do.
        let c = between(&st, &st.clone());
        assert_eq!(c, Changes::default());
        assert!(!c.allocate() && !c.schedule());
    }

    /// One node, network net1 of `subnet`, service s1 (web, 2 replicas on net1) and the
    /// `more` services, with the tasks the orchestrator makes for them.
    fn tasks_on_net1(subnet: &str, more: Vec<shoal_types::Service>) -> ClusterState {
        let mut st = cluster(&[("n1", "node1")]);
        st.apply(Command::CreateNetwork {
            network: network("net1", "small", subnet, 4096),
        })
        .unwrap();
        for service in std::iter::once(service("s1", spec_on("web", 2, &["net1"]))).chain(more) {
            st.apply(Command::CreateService { service }).unwrap();
        }
        let mut n = 0;
        for cmd in crate::orchestrator::reconcile(&st, Millis(1), &mut || {
            n += 1;
            format!("t{n}")
        }) {
            st.apply(cmd).unwrap();
        }
        st
    }

    #[test]
    fn handing_out_addresses_looks_at_the_service_not_at_everything() {
        let mut st = tasks_on_net1("10.0.9.0/24", vec![]);
        let old = st.clone();
        for cmd in allocate(&st, Millis(2)) {
            st.apply(cmd).unwrap();
        }
        assert_ne!(
            old.networks["net1"].next_host, st.networks["net1"].next_host,
            "the allocation moved the network's cursor"
        );
        let c = between(&old, &st);
        assert!(!c.all, "{c:?}");
        assert!(c.services.contains("s1") && c.pending_tasks, "{c:?}");
    }

    #[test]
    fn an_ended_task_frees_its_addresses_for_the_allocator() {
        let mut st = tasks_on_net1("10.0.9.0/29", vec![service("s2", spec("job", 1))]);
        for cmd in allocate(&st, Millis(2)) {
            st.apply(cmd).unwrap();
        }
        let plan = crate::scheduler::schedule(&st);
        st.apply(Command::AssignTasks {
            assignments: plan.assignments,
            at: Millis(3),
        })
        .unwrap();
        let end = |st: &mut ClusterState, service: &str| {
            let id = st.tasks_of(service).next().unwrap().id.clone();
            let old = st.clone();
            st.apply(Command::UpdateTaskStatus {
                id,
                node_id: "n1".into(),
                status: shoal_types::TaskStatus::new(TaskState::Failed, Millis(4), "exit"),
            })
            .unwrap();
            between(&old, st)
        };
        // A task without addresses ends: nothing for the allocator.
        let c = end(&mut st, "s2");
        assert!(!c.freed && !c.allocate(), "{c:?}");
        // A task with an address on net1 ends: the allocator looks again.
        let c = end(&mut st, "s1");
        assert!(c.freed && c.allocate() && !c.all, "{c:?}");
    }

    #[test]
    fn a_service_without_its_vip_waits_until_it_has_one() {
        let mut st = cluster(&[("n1", "node1")]);
        // A /30: one address for tasks and VIPs, taken by s1's VIP.
        st.apply(Command::CreateNetwork {
            network: network("net1", "tiny", "10.0.9.0/30", 4096),
        })
        .unwrap();
        let mut w = VipWaiters::default();
        let mut prev = st.clone();
        // One leader pass: what changed since the last, then the allocator over `scope`.
        let mut pass = |st: &mut ClusterState, scope: Option<&BTreeSet<String>>| {
            w.update(st, &between(&prev, st));
            prev = st.clone();
            let scope = scope.cloned().unwrap_or_else(|| w.ids().clone());
            for cmd in crate::allocator::allocate_for(st, Millis(1), Some(&scope)) {
                st.apply(cmd).unwrap();
            }
            w.ids().clone()
        };
        for id in ["s1", "s2"] {
            st.apply(Command::CreateService {
                service: service(id, spec_on(id, 0, &["net1"])),
            })
            .unwrap();
            pass(&mut st, Some(&BTreeSet::from([id.to_string()])));
        }
        // The pass that sees s1's VIP applied.
        let waiting = pass(&mut st, Some(&BTreeSet::new()));
        assert_eq!(st.services["s1"].endpoint.virtual_ips.len(), 1);
        assert!(st.services["s2"].endpoint.virtual_ips.is_empty());
        assert_eq!(waiting, BTreeSet::from(["s2".to_string()]));
        // s1 goes, its VIP is free: the allocator, over the waiting services only, gives
        // it to s2, and the next pass sees nothing waiting.
        st.apply(Command::RemoveService { id: "s1".into() })
            .unwrap();
        pass(&mut st, None);
        assert_eq!(st.services["s2"].endpoint.virtual_ips.len(), 1);
        assert!(pass(&mut st, Some(&BTreeSet::new())).is_empty());
    }

    #[test]
    fn wakeups_follow_the_passes_that_looked_at_each_service() {
        let mut w = Wakeups::default();
        assert_eq!(w.next(), None);
        // A full pass: s1 waits until 6 s, s2 until 9 s.
        w.record(
            None,
            BTreeMap::from([("s1".into(), Millis(6_000)), ("s2".into(), Millis(9_000))]),
        );
        assert_eq!(w.next(), Some(Millis(6_000)));
        assert_eq!(w.due(Millis(5_999)).count(), 0);
        assert_eq!(w.due(Millis(6_000)).collect::<Vec<_>>(), ["s1"]);
        // A pass over s3 alone keeps the others' times.
        w.record(Some(&BTreeSet::from(["s3".to_string()])), BTreeMap::new());
        assert_eq!(w.next(), Some(Millis(6_000)));
        // A pass over s1 that found nothing due forgets it; s2 is next.
        w.record(Some(&BTreeSet::from(["s1".to_string()])), BTreeMap::new());
        assert_eq!(w.next(), Some(Millis(9_000)));
        // A pass over s2 that found an earlier time replaces the later one.
        w.record(
            Some(&BTreeSet::from(["s2".to_string()])),
            BTreeMap::from([("s2".into(), Millis(7_000))]),
        );
        assert_eq!(w.next(), Some(Millis(7_000)));
        assert_eq!(w.due(Millis(10_000)).collect::<Vec<_>>(), ["s2"]);
        // A full pass that found nothing replaces everything.
        w.record(None, BTreeMap::new());
        assert_eq!(w.next(), None);
    }

    /// The loop the leader runs, with a fake clock: a failed task's restart is found by the
    /// pass its due time asks for, although passes over other services came in between.
    #[test]
    fn a_restart_delay_is_caught_without_a_periodic_full_pass() {
        let mut st = cluster(&[("n1", "node1")]);
        for (id, name) in [("s1", "vote"), ("s2", "web")] {
            st.apply(Command::CreateService {
                service: service(id, spec(name, 1)),
            })
            .unwrap();
        }
        let mut n = 0;
        let mut ids = || {
            n += 1;
            format!("t{n}")
        };
        let mut w = Wakeups::default();
        let mut pass =
            |st: &mut ClusterState, w: &mut Wakeups, scope: Option<&BTreeSet<String>>, now: u64| {
                let p = crate::orchestrator::reconcile_pass(st, Millis(now), &mut ids, scope);
                w.record(scope, p.due);
                for cmd in p.commands {
                    st.apply(cmd).unwrap();
                }
                for cmd in allocate(st, Millis(now)) {
                    st.apply(cmd).unwrap();
                }
                let plan = crate::scheduler::schedule(st);
                st.apply(Command::AssignTasks {
                    assignments: plan.assignments,
                    at: Millis(now),
                })
                .unwrap();
                w.next()
            };
        assert_eq!(pass(&mut st, &mut w, None, 0), None);
        let s1_task = st.tasks_of("s1").next().unwrap().id.clone();
        st.apply(Command::UpdateTaskStatus {
            id: s1_task.clone(),
            node_id: "n1".into(),
            status: shoal_types::TaskStatus::new(TaskState::Failed, Millis(1_000), "exit"),
        })
        .unwrap();
        // The pass over what changed (s1) finds the restart due at 6 s.
        let only = |id: &str| BTreeSet::from([id.to_string()]);
        assert_eq!(
            pass(&mut st, &mut w, Some(&only("s1")), 1_000),
            Some(Millis(6_000))
        );
        // s2 changes meanwhile; its pass leaves s1's time alone.
        assert_eq!(
            pass(&mut st, &mut w, Some(&only("s2")), 3_000),
            Some(Millis(6_000))
        );
        let live = |st: &ClusterState| {
            st.tasks_of("s1")
                .filter(|t| t.desired_state == TaskState::Running)
                .count()
        };
        assert_eq!(live(&st), 0);
        // At 6 s the loop looks at the services due, and s1 gets its new task.
        let due: BTreeSet<String> = w.due(Millis(6_000)).cloned().collect();
        assert_eq!(due, only("s1"));
        assert_eq!(pass(&mut st, &mut w, Some(&due), 6_000), None);
        assert_eq!(live(&st), 1);
    }
}
