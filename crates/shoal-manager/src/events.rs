//! Cluster events from the difference between two applied states, as dockerd derives its
//! swarm events from swarmkit's store watch: `service create|update|remove` (with
//! `replicas.old/new`, `image.old/new`, `updatestate.old/new`), `node create|update|remove`
//! (`state.old/new` for up and down, `availability`, `role`, `leader`), `network
//! create|remove`, and `task create|update|remove` (`state.old/new`, `desiredstate`).
//!
//! A manager sees the states it applies, not every command: changes committed together are
//! one difference, so a task may go from `assigned` to `running` in one event.
//! [`Ring`] keeps the last events for `--since`. Pure: the caller gives the time.

use std::collections::{BTreeMap, VecDeque};

use shoal_types::diff::changes;
use shoal_types::event::{Action, Actor, Event, EventType};
use shoal_types::state::Service;
use shoal_types::{ClusterState, Millis, Network, Node, Task, TaskState, UpdateState};

/// The events that take `before` to `after`, observed at `now`: creations and updates of
/// nodes, networks, services and tasks in that order (what a later object needs comes
/// first), then removals in the reverse order.
pub fn between(before: &ClusterState, after: &ClusterState, now: Millis) -> Vec<Event> {
    let mut made = Vec::new();
    let mut gone = Vec::new();
    for (id, old, new) in changes(&before.nodes, &after.nodes) {
        match (old, new) {
            (None, Some(n)) => made.push(event(
                EventType::Node,
                Action::Create,
                id,
                node_attrs(n),
                now,
            )),
            (Some(o), Some(n)) => {
                if let Some(attrs) = node_update(o, n) {
                    made.push(event(EventType::Node, Action::Update, id, attrs, now));
                }
            }
            (Some(o), None) => gone.push(event(
                EventType::Node,
                Action::Remove,
                id,
                node_attrs(o),
                now,
            )),
            (None, None) => {}
        }
    }
    for (id, old, new) in changes(&before.networks, &after.networks) {
        match (old, new) {
            (None, Some(n)) => made.push(event(
                EventType::Network,
                Action::Create,
                id,
                network_attrs(n),
                now,
            )),
            (Some(o), None) => gone.push(event(
                EventType::Network,
                Action::Remove,
                id,
                network_attrs(o),
                now,
            )),
            // Address bookkeeping (`next_host`) changes a network at every allocation.
            _ => {}
        }
    }
    for (id, old, new) in changes(&before.services, &after.services) {
        match (old, new) {
            (None, Some(s)) => made.push(event(
                EventType::Service,
                Action::Create,
                id,
                service_attrs(s),
                now,
            )),
            (Some(o), Some(s)) => made.push(event(
                EventType::Service,
                Action::Update,
                id,
                service_update(o, s),
                now,
            )),
            (Some(o), None) => gone.push(event(
                EventType::Service,
                Action::Remove,
                id,
                service_attrs(o),
                now,
            )),
            (None, None) => {}
        }
    }
    for (id, old, new) in changes(&before.tasks, &after.tasks) {
        match (old, new) {
            (None, Some(t)) => {
                let mut a = task_attrs(after, t);
                a.insert("state.new".into(), state_name(t.status.state));
                made.push(event(EventType::Task, Action::Create, id, a, now));
            }
            (Some(o), Some(t)) => {
                if let Some(a) = task_update(after, o, t) {
                    made.push(event(EventType::Task, Action::Update, id, a, now));
                }
            }
            (Some(o), None) => gone.push(event(
                EventType::Task,
                Action::Remove,
                id,
                task_attrs(before, o),
                now,
            )),
            (None, None) => {}
        }
    }
    gone.sort_by_key(|e| match e.kind {
        EventType::Task => 0,
        EventType::Service => 1,
        EventType::Network => 2,
        EventType::Node => 3,
    });
    made.extend(gone);
    made
}

/// `node update` events for a change of leader: `leader.old/new` on the node that lost it
/// and on the one that took it (managers' Raft ids, looked up in `state`).
pub fn leader_changed(
    state: &ClusterState,
    old: Option<u64>,
    new: Option<u64>,
    now: Millis,
) -> Vec<Event> {
    if old == new {
        return Vec::new();
    }
    let node_of = |raft: Option<u64>| {
        raft.and_then(|r| {
            state
                .nodes
                .values()
                .find(|n| n.manager_status.as_ref().is_some_and(|m| m.raft_id == r))
        })
    };
    let mut out = Vec::new();
    for (node, was, is) in [
        (node_of(old), "true", "false"),
        (node_of(new), "false", "true"),
    ] {
        if let Some(n) = node {
            let mut a = node_attrs(n);
            a.insert("leader.old".into(), was.into());
            a.insert("leader.new".into(), is.into());
            out.push(event(EventType::Node, Action::Update, &n.id, a, now));
        }
    }
    out
}

fn event(kind: EventType, action: Action, id: &str, attributes: Attrs, time: Millis) -> Event {
    Event {
        kind,
        action,
        actor: Actor {
            id: id.to_string(),
            attributes,
        },
        time,
    }
}

type Attrs = BTreeMap<String, String>;

fn attrs(pairs: &[(&str, String)]) -> Attrs {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn changed(a: &mut Attrs, key: &str, old: String, new: String) {
    if old != new {
        a.insert(format!("{key}.old"), old);
        a.insert(format!("{key}.new"), new);
    }
}

fn node_attrs(n: &Node) -> Attrs {
    attrs(&[("name", n.hostname().to_string())])
}

/// Only what a user would call a change of the node (docker's attributes); the agent's
/// reports of its resources and data plane are not events.
fn node_update(o: &Node, n: &Node) -> Option<Attrs> {
    let mut a = node_attrs(n);
    changed(
        &mut a,
        "availability",
        o.spec.availability.to_string(),
        n.spec.availability.to_string(),
    );
    changed(
        &mut a,
        "role",
        o.spec.role.to_string(),
        n.spec.role.to_string(),
    );
    changed(
        &mut a,
        "state",
        o.status.state.to_string(),
        n.status.state.to_string(),
    );
    changed(
        &mut a,
        "name",
        o.hostname().to_string(),
        n.hostname().to_string(),
    );
    let labels = o.spec.labels != n.spec.labels;
    (a.len() > 1 || labels).then_some(a)
}

fn network_attrs(n: &Network) -> Attrs {
    attrs(&[("name", n.name.clone()), ("driver", n.driver.clone())])
}

fn service_attrs(s: &Service) -> Attrs {
    attrs(&[("name", s.spec.name.clone())])
}

fn service_update(o: &Service, s: &Service) -> Attrs {
    let mut a = service_attrs(s);
    let image = |s: &Service| {
        s.spec
            .task_template
            .container_spec
            .image
            .clone()
            .unwrap_or_default()
    };
    changed(&mut a, "image", image(o), image(s));
    let replicas = |s: &Service| s.spec.replicas().map(|r| r.to_string()).unwrap_or_default();
    changed(&mut a, "replicas", replicas(o), replicas(s));
    changed(&mut a, "name", o.spec.name.clone(), s.spec.name.clone());
    let state = |s: &Service| {
        s.update_status
            .as_ref()
            .map(|u| update_state(u.state).to_string())
            .unwrap_or_default()
    };
    match (state(o), state(s)) {
        (old, new) if old == new => {}
        (old, new) if old.is_empty() => {
            a.insert("updatestate.new".into(), new);
        }
        (old, new) => changed(&mut a, "updatestate", old, new),
    }
    a
}

/// docker's words (`rollback_started`), as `UpdateStatus.State` is serialised.
fn update_state(s: UpdateState) -> &'static str {
    match s {
        UpdateState::Updating => "updating",
        UpdateState::Paused => "paused",
        UpdateState::Completed => "completed",
        UpdateState::RollbackStarted => "rollback_started",
        UpdateState::RollbackPaused => "rollback_paused",
        UpdateState::RollbackCompleted => "rollback_completed",
    }
}

fn state_name(s: TaskState) -> String {
    format!("{s:?}").to_lowercase()
}

fn task_attrs(state: &ClusterState, t: &Task) -> Attrs {
    let mut a = attrs(&[
        ("name", t.slot_name()),
        ("service.id", t.service_id.clone()),
        ("service.name", t.service_name.clone()),
    ]);
    if let Some(node) = &t.node_id {
        a.insert("node.id".into(), node.clone());
        if let Some(n) = state.nodes.get(node) {
            a.insert("node.name".into(), n.hostname().to_string());
        }
    }
    a
}

/// A change of the task's state or desired state (its status messages, such as a pull's
/// progress, are not events).
fn task_update(state: &ClusterState, o: &Task, t: &Task) -> Option<Attrs> {
    let mut a = task_attrs(state, t);
    let before = a.len();
    changed(
        &mut a,
        "state",
        state_name(o.status.state),
        state_name(t.status.state),
    );
    changed(
        &mut a,
        "desiredstate",
        state_name(o.desired_state),
        state_name(t.desired_state),
    );
    changed(
        &mut a,
        "node.id",
        o.node_id.clone().unwrap_or_default(),
        t.node_id.clone().unwrap_or_default(),
    );
    if a.len() == before {
        return None;
    }
    if !t.status.err.is_empty() && t.status.err != o.status.err {
        a.insert("error".into(), t.status.err.clone());
    }
    Some(a)
}

/// The last events a manager saw, for `events --since`: at most `cap`, oldest dropped first.
/// Times never go back within the ring (a wall clock stepped back is held at the last time),
/// so a time range is a contiguous run of it.
#[derive(Debug)]
pub struct Ring {
    events: VecDeque<Event>,
    cap: usize,
}

/// How many events a manager keeps (docker keeps 256 in memory; a swarm's task events are
/// many more than a single engine's).
pub const RING_CAPACITY: usize = 4096;

impl Default for Ring {
    fn default() -> Ring {
        Ring::new(RING_CAPACITY)
    }
}

impl Ring {
    pub fn new(cap: usize) -> Ring {
        Ring {
            events: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// Adds `e` (its time raised to the last one's if the clock went back) and returns it as
    /// kept.
    pub fn push(&mut self, mut e: Event) -> Event {
        if let Some(last) = self.events.back() {
            e.time = e.time.max(last.time);
        }
        if self.events.len() == self.cap {
            self.events.pop_front();
        }
        self.events.push_back(e.clone());
        e
    }

    /// The kept events with `since <= time <= until`, oldest first.
    pub fn range(&self, since: Millis, until: Option<Millis>) -> Vec<Event> {
        let start = self.events.partition_point(|e| e.time < since);
        self.events
            .range(start..)
            .take_while(|e| until.is_none_or(|u| e.time <= u))
            .cloned()
            .collect()
    }

    /// The oldest time still kept: a `--since` before it may have lost events.
    pub fn oldest(&self) -> Option<Millis> {
        self.events.front().map(|e| e.time)
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

#[cfg(test)]
mod tests;
