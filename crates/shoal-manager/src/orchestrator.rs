//! Decides which tasks should exist: one per replica slot (replicated) or per eligible node
//! (global); replaces tasks that ended, whose node is down or drained, or whose spec is
//! outdated; applies the restart policy; trims history.
//!
//! A task that ended on its own (Complete, Failed, Rejected) is replaced per the restart
//! policy, after its delay. A task the cluster took away (scale down, node down) is replaced
//! at once, wherever the scheduler finds room; one on a drained node is replaced at once too,
//! and stops only once its replacement is ready (start-first, as in an update). Tasks of an older spec are replaced
//! by the rollout's policy (`rollout`: parallelism, delay, order, failures).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use shoal_types::{
    ClusterState, Command, Millis, Node, NodeState, RestartCondition, Service, Task, TaskState,
    TaskStatus,
};

use crate::TASK_HISTORY_LIMIT;

/// The most tasks one pass creates. A pass is one Raft entry, and a task is about a
/// kilobyte: `--replicas 100000` in one entry would be over 64 MiB, more than a follower
/// takes, and would stall the log. Larger changes take several passes, each a moment after
/// the last commits. 5,000 (an entry of about 5 MiB, sent alone: shoal-store's AppendEntries
/// budget is 1 MiB but at least one entry) placed 100,000 tasks on 1,000 nodes in 22.5 s,
/// 2,500 in 30.4 s and 1,000 in 51.6 s, with no Raft call out of time (bench/control-plane).
pub const MAX_CREATE_PER_PASS: usize = 5000;

/// Returns the commands that move the state towards what the services ask for.
/// `new_id` makes ids for new tasks (random in the daemon, predictable in tests).
pub fn reconcile(
    state: &ClusterState,
    now: Millis,
    new_id: &mut dyn FnMut() -> String,
) -> Vec<Command> {
    reconcile_services(state, now, new_id, None)
}

/// [`reconcile`] for the services in `scope` only (all of them with `None`): the leader
/// passes the services whose spec or tasks changed since its last pass, so that a change
/// of one service does not re-examine every other one. What depends on the nodes is caught
/// by a full pass; what depends on time, by [`reconcile_pass`]'s due times.
pub fn reconcile_services(
    state: &ClusterState,
    now: Millis,
    new_id: &mut dyn FnMut() -> String,
    scope: Option<&BTreeSet<String>>,
) -> Vec<Command> {
    reconcile_pass(state, now, new_id, scope).commands
}

/// What one pass decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pass {
    /// What moves the state towards what the services ask for.
    pub commands: Vec<Command>,
    /// For each service of the scope that time alone will give something to do (a restart
    /// delay that runs out), the earliest such time. A service not listed needs no look
    /// until its spec, its tasks or the nodes change.
    pub due: BTreeMap<String, Millis>,
}

/// [`reconcile_services`], with when the services it looked at are due again.
pub fn reconcile_pass(
    state: &ClusterState,
    now: Millis,
    new_id: &mut dyn FnMut() -> String,
    scope: Option<&BTreeSet<String>>,
) -> Pass {
    let mut out = Changes::default();
    // The tasks of the services in scope: from the state's index, or one pass over every
    // task for a full pass.
    let mut by_service: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
    match scope {
        Some(ids) => {
            for id in ids {
                let mut tasks = Vec::with_capacity(state.task_count_of(id));
                tasks.extend(state.tasks_of(id));
                by_service.insert(id, tasks);
            }
        }
        None => {
            for t in state.tasks.values() {
                by_service.entry(t.service_id.as_str()).or_default().push(t);
            }
        }
    }
    let services: Box<dyn Iterator<Item = &Service>> = match scope {
        Some(ids) => Box::new(ids.iter().filter_map(|id| state.services.get(id))),
        None => Box::new(state.services.values()),
    };
    for service in services {
        let tasks = by_service.remove(service.id.as_str()).unwrap_or_default();
        match service.spec.replicas() {
            Some(replicas) => replicated(state, service, replicas, &tasks, now, new_id, &mut out),
            None => global(state, service, &tasks, now, new_id, &mut out),
        }
    }
    match scope {
        Some(ids) => collect_garbage(
            state,
            &mut out,
            ids.iter().flat_map(|id| state.tasks_of(id)),
        ),
        None => collect_garbage(state, &mut out, state.tasks.values().map(Arc::as_ref)),
    }
    out.limit_creations(now);
    let due = std::mem::take(&mut out.due);
    Pass {
        commands: out.into_commands(now),
        due,
    }
}

#[derive(Default)]
struct Changes {
    shutdown: BTreeSet<String>,
    create: Vec<Task>,
    /// Services with a task this pass did not make: it had made [`MAX_CREATE_PER_PASS`].
    later: BTreeSet<String>,
    delete: Vec<String>,
    due: BTreeMap<String, Millis>,
    /// Rollout status changes (`SetUpdateStatus`, `RollbackService`).
    rollouts: Vec<Command>,
}

impl Changes {
    /// `service` has a restart that waits until `at`.
    fn due(&mut self, service: &Service, at: Millis) {
        let earliest = self.due.entry(service.id.clone()).or_insert(at);
        *earliest = (*earliest).min(at);
    }

    /// Adds the task `make` makes for `service`, unless this pass has made
    /// [`MAX_CREATE_PER_PASS`] already: then the task is not made (`limit_creations` puts
    /// the service off to the next pass). Making every missing task and keeping the first
    /// 5,000 made 100,000 tasks in the first pass of `--replicas 100000`, 95,000 in the
    /// second, and so on.
    fn create(&mut self, service: &Service, make: impl FnOnce() -> Task) {
        if self.create.len() < MAX_CREATE_PER_PASS {
            self.create.push(make());
        } else if !self.later.contains(&service.id) {
            self.later.insert(service.id.clone());
        }
    }

    /// The services whose tasks were left out are due at once, so the next pass (right
    /// after this one commits) makes them. A rollout of such a service does not complete
    /// in this pass.
    fn limit_creations(&mut self, now: Millis) {
        let later = std::mem::take(&mut self.later);
        if later.is_empty() {
            return;
        }
        self.rollouts
            .retain(|c| !matches!(c, Command::SetUpdateStatus { id, .. } if later.contains(id)));
        for id in later {
            self.due.insert(id, now);
        }
    }

    fn into_commands(self, now: Millis) -> Vec<Command> {
        let mut cmds = Vec::new();
        if !self.shutdown.is_empty() {
            cmds.push(Command::SetDesiredState {
                tasks: self.shutdown.into_iter().collect(),
                state: TaskState::Shutdown,
                at: now,
            });
        }
        if !self.create.is_empty() {
            cmds.push(Command::CreateTasks { tasks: self.create });
        }
        if !self.delete.is_empty() {
            cmds.push(Command::DeleteTasks { tasks: self.delete });
        }
        cmds.extend(self.rollouts);
        cmds
    }
}

/// Whether a running-desired task must give way. Returns why, for logs and tests.
fn must_replace(state: &ClusterState, service: &Service, t: &Task) -> Option<&'static str> {
    if t.status.state.is_terminal() {
        return Some("task ended");
    }
    if let Some(node_id) = &t.node_id {
        let Some(node) = state.nodes.get(node_id) else {
            return Some("node removed");
        };
        if node.status.state == NodeState::Down {
            return Some("node down");
        }
        if !keeps_tasks(service, node) {
            return Some(DRAINED);
        }
    }
    if outdated(service, t) {
        return Some(UPDATED);
    }
    None
}

const UPDATED: &str = "service updated";
/// A replicated task on such a node moves start-first (`rollout::Slot::drained_may_stop`).
const DRAINED: &str = "node drained or no longer satisfies constraints";

/// Made from an older spec that differs in what the task runs or publishes, or before a
/// `--force`.
fn outdated(service: &Service, t: &Task) -> bool {
    t.spec_version < service.force_version
        || t.spec_version < service.version
            && (t.spec != service.spec.task_template.container_spec
                || t.ports != service.spec.endpoint_spec.ports)
}

/// The task's process is gone or will never be heard of again (its node is down or gone).
fn gone(state: &ClusterState, t: &Task) -> bool {
    t.status.state.is_terminal()
        || t.node_id.as_deref().is_some_and(|n| {
            state
                .nodes
                .get(n)
                .is_none_or(|n| n.status.state == NodeState::Down)
        })
}

/// A node may keep running this service's tasks (not drained, constraints hold).
fn keeps_tasks(service: &Service, node: &Node) -> bool {
    node.spec.availability != shoal_types::Availability::Drain
        && service
            .spec
            .task_template
            .placement
            .constraints
            .iter()
            .all(|c| c.matches(node))
}

/// From when a new task may replace `last` (the newest task of a slot), per the restart
/// policy: `None` never, `Millis(0)` at once.
fn restart_at(service: &Service, last: Option<&Task>) -> Option<Millis> {
    let Some(last) = last else {
        return Some(Millis(0));
    };
    if !ended_on_its_own(last) {
        return Some(Millis(0));
    }
    let policy = &service.spec.task_template.restart_policy;
    match policy.condition {
        RestartCondition::None => return None,
        RestartCondition::OnFailure if last.status.state == TaskState::Complete => return None,
        _ => {}
    }
    if policy.max_attempts > 0 && last.restarts >= policy.max_attempts && !outdated(service, last) {
        return None;
    }
    if policy.delay_ms == 0 {
        // Also when the timestamp is ahead of this clock (another node's).
        return Some(Millis(0));
    }
    Some(Millis(
        last.status.timestamp.0.saturating_add(policy.delay_ms),
    ))
}

/// The restart count of a task that follows `last` in its slot: one more when `last` ended on
/// its own, the same when the cluster took it away, none under a changed spec (as docker).
fn restarts_after(service: &Service, last: Option<&Task>) -> u64 {
    match last {
        Some(t) if outdated(service, t) => 0,
        Some(t) if ended_on_its_own(t) => t.restarts + 1,
        Some(t) => t.restarts,
        None => 0,
    }
}

fn new_task(
    service: &Service,
    slot: u64,
    node_id: Option<&str>,
    now: Millis,
    id: String,
    restarts: u64,
) -> Task {
    // New: the allocator gives it addresses next (Pending), then the scheduler a node.
    let status = TaskStatus::new(TaskState::New, now, "created");
    Task {
        id,
        service_id: service.id.clone(),
        service_name: service.spec.name.clone(),
        slot,
        node_id: node_id.map(str::to_string),
        desired_state: TaskState::Running,
        status,
        spec_version: service.version,
        spec: service.spec.task_template.container_spec.clone(),
        networks: vec![],
        ports: service.spec.endpoint_spec.ports.clone(),
        restarts,
        started_at: None,
        ready_at: None,
        created_at: now,
        updated_at: now,
    }
}

fn ended_on_its_own(t: &Task) -> bool {
    matches!(
        t.status.state,
        TaskState::Complete | TaskState::Failed | TaskState::Rejected
    )
}

fn replicated(
    state: &ClusterState,
    service: &Service,
    replicas: u64,
    tasks: &[&Task],
    now: Millis,
    new_id: &mut dyn FnMut() -> String,
    out: &mut Changes,
) {
    // The tasks by slot: sorted, then taken a run at a time as the slots are walked (a
    // map of 100,000 slots was most of a pass's time at that scale).
    let mut by_slot: Vec<&Task> = tasks.to_vec();
    by_slot.sort_by_key(|t| t.slot);
    let top = replicas.max(by_slot.last().map_or(0, |t| t.slot));
    let mut rest = by_slot.as_slice();
    let mut slots = Vec::with_capacity(replicas as usize);
    for n in 1..=top {
        // Slot 0 (none) and any below `n` were seen already; they belong to no slot here.
        while rest.first().is_some_and(|t| t.slot < n) {
            rest = &rest[1..];
        }
        let len = rest.iter().take_while(|t| t.slot == n).count();
        let (slot_tasks, after) = rest.split_at(len);
        rest = after;
        if n > replicas {
            out.shutdown.extend(
                slot_tasks
                    .iter()
                    .filter(|t| t.desired_state <= TaskState::Running)
                    .map(|t| t.id.clone()),
            );
            continue;
        }
        slots.push((n, Slot::classify(state, service, slot_tasks, out)));
    }
    let mut rollout = Rollout::begin(service, slots.iter().map(|(_, s)| s), now, out);
    for (n, slot) in &slots {
        rollout.step(service, slot, out, &mut |restarts| {
            new_task(service, *n, None, now, new_id(), restarts)
        });
    }
    rollout.finish(service, out);
}

fn global(
    state: &ClusterState,
    service: &Service,
    tasks: &[&Task],
    now: Millis,
    new_id: &mut dyn FnMut() -> String,
    out: &mut Changes,
) {
    let eligible = |n: &Node| n.schedulable() && keeps_tasks(service, n);
    let mut by_node: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
    for t in tasks {
        let node = t.node_id.as_deref().and_then(|n| state.nodes.get(n));
        match node {
            Some(n) if eligible(n) => by_node.entry(n.id.as_str()).or_default().push(t),
            _ => {
                if t.desired_state <= TaskState::Running
                    && (t.node_id.is_none() || must_replace(state, service, t).is_some())
                {
                    out.shutdown.insert(t.id.clone());
                }
            }
        }
    }
    let mut slots = Vec::new();
    for node in state.nodes.values().filter(|n| eligible(n)) {
        let node_tasks = by_node
            .get(node.id.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        slots.push((
            node.id.as_str(),
            Slot::classify(state, service, node_tasks, out),
        ));
    }
    let mut rollout = Rollout::begin(service, slots.iter().map(|(_, s)| s), now, out);
    for (node, slot) in &slots {
        rollout.step(service, slot, out, &mut |restarts| {
            new_task(service, 0, Some(node), now, new_id(), restarts)
        });
    }
    rollout.finish(service, out);
}

/// Deletes tasks nobody will report on again, keeping `TASK_HISTORY_LIMIT` per slot.
fn collect_garbage<'a>(
    state: &'a ClusterState,
    out: &mut Changes,
    tasks: impl Iterator<Item = &'a Task>,
) {
    let node_gone = |t: &Task| match t.node_id.as_deref() {
        None => true,
        Some(n) => state
            .nodes
            .get(n)
            .is_none_or(|n| n.status.state == NodeState::Down),
    };
    let mut history: BTreeMap<(&str, u64, &str), Vec<&Task>> = BTreeMap::new();
    for t in tasks {
        let stopped = t.desired_state > TaskState::Running || out.shutdown.contains(&t.id);
        if !stopped || !(t.status.state.is_terminal() || node_gone(t)) {
            continue;
        }
        if !state.services.contains_key(&t.service_id) || t.node_id.is_none() {
            out.delete.push(t.id.clone());
            continue;
        }
        let node = if t.slot == 0 {
            t.node_id.as_deref().unwrap_or("")
        } else {
            ""
        };
        history
            .entry((t.service_id.as_str(), t.slot, node))
            .or_default()
            .push(t);
    }
    for mut old in history.into_values() {
        if old.len() > TASK_HISTORY_LIMIT {
            old.sort_by_key(|t| std::cmp::Reverse(t.created_at));
            out.delete
                .extend(old[TASK_HISTORY_LIMIT..].iter().map(|t| t.id.clone()));
        }
    }
}

mod rollout;
use rollout::{Rollout, Slot};

#[cfg(test)]
mod rollout_tests;
#[cfg(test)]
mod tests;
