//! What one session tells its agent: the node's tasks, followed change by change, and
//! what it was last told of each.

use std::collections::HashMap;
use std::sync::Arc;

use shoal_types::endpoint::{EndpointDelta, EndpointView};
use shoal_types::state::CaTrust;
use shoal_types::{ClusterState, NodeRole, Task, TaskDelta, TaskState};

use super::by_node::{ChangedByNode, changed_by_node};
use super::node_tasks::NodeTasks;
use crate::endpoints::{self, EndpointTable};

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

/// Cluster addresses of the managers, from the state.
pub fn manager_addrs(state: &ClusterState) -> Vec<String> {
    state
        .nodes
        .values()
        .filter_map(|n| n.manager_status.as_ref().map(|m| m.addr.clone()))
        .collect()
}

/// Whether a task is one that may be held running while its removal propagates (drain
/// before stop): to stop, still running, with an address.
pub fn may_drain(t: &Task) -> bool {
    t.desired_state == TaskState::Shutdown
        && t.status.state == TaskState::Running
        && !t.networks.is_empty()
}

/// Everything one session has told its agent, and what to tell it next. Owned by the
/// session's task, not by the shared [`super::Dispatcher`]: a node's view is cut and
/// diffed here without holding a lock every other session waits on.
///
/// Each state change costs the session the size of the change, not of the cluster: its
/// node's tasks follow the difference between successive states ([`NodeTasks`]), the view
/// is cut from the shared table by reference, and the delta walks only what differs.
#[derive(Debug)]
pub struct NodeSession {
    node_id: String,
    /// What the agent has been told of its tasks; `None` until the whole list is sent.
    told: Option<Told>,
    /// The state the node's tasks and networks were last followed to.
    prev: Option<Arc<ClusterState>>,
    mine: NodeTasks,
    /// Whether the node's tasks or the networks changed at the last `follow`, and which
    /// of its tasks did.
    mine_changed: bool,
    changed_ids: Vec<String>,
    networks: Vec<String>,
    /// Those held at the last message.
    last_held: Vec<String>,
    /// The view as the agent has it (the base of the next delta), and the table it was
    /// cut from.
    sent: EndpointView,
    sent_table: Option<Arc<EndpointTable>>,
    /// The root CAs the agent was told to trust (`None`: nothing yet this session).
    sent_ca: Option<CaTrust>,
    /// The role the agent was told (`node promote|demote`).
    sent_role: Option<NodeRole>,
    /// Whether the nodes changed at the last `follow`.
    nodes_changed: bool,
    /// The managers the agent was told of: it needs them to find the next leader when this
    /// one goes (a promotion or demotion elsewhere changes them without touching this node).
    sent_managers: Vec<String>,
}

/// What to send the agent, each part `None` when unchanged.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Update {
    pub version: u64,
    /// The whole task list (the first message of a session).
    pub tasks: Option<Vec<Task>>,
    pub task_delta: Option<TaskDelta>,
    pub endpoints: Option<EndpointDelta>,
    pub ca: Option<CaTrust>,
    pub role: Option<NodeRole>,
    /// The managers' cluster addresses, changed or not (every message carries them).
    pub managers: Vec<String>,
}

impl Update {
    /// Whether the agent's tasks change with this message (registry logins go with it).
    pub fn tasks_changed(&self) -> bool {
        self.tasks.is_some() || self.task_delta.is_some()
    }
}

/// What a step did with the node's endpoint view, for the dispatcher's convergence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewProgress {
    /// A delta up to this version was sent; the node is synced once it acks it.
    Sent(u64),
    /// The node's view did not change at this version.
    Unchanged(u64),
}

impl NodeSession {
    pub fn new(node_id: &str) -> NodeSession {
        NodeSession {
            node_id: node_id.to_string(),
            told: None,
            prev: None,
            mine: NodeTasks::default(),
            mine_changed: false,
            changed_ids: Vec::new(),
            networks: Vec::new(),
            last_held: Vec::new(),
            sent: EndpointView::default(),
            sent_table: None,
            sent_ca: None,
            sent_role: None,
            nodes_changed: false,
            sent_managers: Vec::new(),
        }
    }

    /// Follows the node's tasks to `state`; returns the tasks that may be held for draining
    /// (ask [`super::Dispatcher::drain`] which are held now).
    pub fn follow(&mut self, state: &Arc<ClusterState>) -> impl Iterator<Item = &Task> {
        self.follow_with(state, |old, new| Arc::new(changed_by_node(old, new)))
    }

    /// Like [`NodeSession::follow`], with the state's changes by node from `by_node` (the
    /// leader's sessions share a [`super::ChangeCache`]).
    pub fn follow_with(
        &mut self,
        state: &Arc<ClusterState>,
        by_node: impl FnOnce(&ClusterState, &ClusterState) -> Arc<ChangedByNode>,
    ) -> impl Iterator<Item = &Task> {
        let (mine_changed, changed_ids) = match &self.prev {
            Some(p) if p.version <= state.version => {
                let ids = self.mine.follow_changed(&by_node(p, state), state);
                (!ids.is_empty() || !p.networks.ptr_eq(&state.networks), ids)
            }
            // The first state of the session (or an older one: a new leader's log): the
            // whole list again.
            _ => {
                self.mine = NodeTasks::new(&self.node_id, state);
                self.told = None;
                (true, Vec::new())
            }
        };
        self.nodes_changed = self
            .prev
            .as_ref()
            .is_none_or(|p| !p.nodes.ptr_eq(&state.nodes));
        self.prev = Some(Arc::clone(state));
        self.mine_changed = mine_changed;
        self.changed_ids = changed_ids;
        if mine_changed {
            self.networks = self.mine.networks(state);
        }
        self.mine.draining().filter_map(|id| self.mine.get(id))
    }

    /// The node's tasks as followed.
    pub fn tasks(&self) -> &NodeTasks {
        &self.mine
    }

    /// What to tell the agent at `state` (after [`NodeSession::follow`] to it), with the
    /// endpoint table of that state and the tasks held running for draining. It is
    /// recorded as told: a session whose message cannot be sent ends, and the next one
    /// starts from nothing.
    pub fn next(
        &mut self,
        state: &ClusterState,
        table: &Arc<EndpointTable>,
        held: Vec<String>,
    ) -> (Option<Update>, ViewProgress) {
        let mut changed_ids = std::mem::take(&mut self.changed_ids);
        // A task held or let go since last time is told again.
        changed_ids.extend(
            held.iter()
                .filter(|id| !self.last_held.contains(id))
                .chain(self.last_held.iter().filter(|id| !held.contains(id)))
                .cloned(),
        );
        let told_as = |t: &Task| {
            if held.contains(&t.id) {
                TaskState::Running
            } else {
                t.desired_state
            }
        };
        // The whole list once per session, then only what changed.
        let (tasks, task_delta) = match self.told.as_mut() {
            None => {
                let (t, list) = Told::full(self.mine.assigned().map(|t| (t, told_as(t))));
                self.told = Some(t);
                (Some(list), None)
            }
            Some(t) if !changed_ids.is_empty() => {
                let mine = &self.mine;
                let now = changed_ids.iter().map(|id| {
                    let task = mine
                        .get(id)
                        .filter(|t| t.status.state >= TaskState::Assigned);
                    (id.as_str(), task.map(|t| (t, told_as(t))))
                });
                let d = t.delta(now);
                (None, (!d.is_empty()).then_some(d))
            }
            Some(_) => (None, None),
        };
        self.last_held = held;
        // The node's view depends on the table and on the networks of its tasks: with
        // neither changed there is nothing to compute (most state changes are elsewhere).
        let unchanged_table = self
            .sent_table
            .as_ref()
            .is_some_and(|t| Arc::ptr_eq(t, table));
        self.sent_table = Some(Arc::clone(table));
        let first = self.sent.version == 0;
        let endpoints = if unchanged_table && !self.mine_changed && !first {
            None
        } else {
            let view = endpoints::node_view(state.version, table, &self.networks);
            let delta = self.sent.diff(&view);
            (first || !delta.is_empty()).then(|| {
                self.sent = view;
                delta
            })
        };
        let ca = state.ca_trust();
        let ca = (self.sent_ca.as_ref() != Some(&ca)).then(|| {
            self.sent_ca = Some(ca.clone());
            ca
        });
        let role = state.nodes.get(&self.node_id).map(|n| n.spec.role);
        let role = (role != self.sent_role).then(|| {
            self.sent_role = role;
            role
        });
        let managers = if self.nodes_changed {
            manager_addrs(state)
        } else {
            self.sent_managers.clone()
        };
        let managers_changed = managers != self.sent_managers;
        self.sent_managers.clone_from(&managers);
        let progress = match &endpoints {
            Some(_) => ViewProgress::Sent(state.version),
            None => ViewProgress::Unchanged(state.version),
        };
        let update = Update {
            version: state.version,
            tasks,
            task_delta,
            endpoints,
            ca,
            role: role.flatten(),
            managers,
        };
        let any = update.tasks_changed()
            || update.endpoints.is_some()
            || update.ca.is_some()
            || role.is_some()
            || managers_changed;
        (any.then_some(update), progress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_types::fixtures::*;
    use shoal_types::{Command, Millis};

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

    /// A session's messages: everything first, then only what changed; a task held for
    /// draining is told as still running until it is let go.
    #[test]
    fn a_session_sends_everything_once_then_changes() {
        let mut st = cluster(&[("n1", "node1"), ("n2", "node2")]);
        st.apply(Command::CreateNetwork {
            network: network("net1", "overlay1", "10.0.0.0/24", 4096),
        })
        .unwrap();
        st.apply(Command::CreateService {
            service: service("s1", spec_on("vote", 1, &["net1"])),
        })
        .unwrap();
        st.apply(Command::CreateTasks {
            tasks: vec![task("ta", "s1", "vote")],
        })
        .unwrap();
        for c in crate::allocator::allocate(&st, Millis(0)) {
            st.apply(c).unwrap();
        }
        st.apply(Command::AssignTasks {
            assignments: vec![("ta".into(), "n2".into())],
            at: Millis(0),
        })
        .unwrap();
        st.apply(Command::UpdateTaskStatus {
            id: "ta".into(),
            node_id: "n2".into(),
            status: shoal_types::TaskStatus::new(TaskState::Running, Millis(1), ""),
        })
        .unwrap();
        let mut st = Arc::new(st);
        let table = |st: &ClusterState| Arc::new(crate::endpoints::table(st));
        let mut s = NodeSession::new("n2");
        assert_eq!(s.follow(&st).count(), 0, "nothing to drain");
        let t1 = table(&st);
        let (first, progress) = s.next(&st, &t1, vec![]);
        let first = first.expect("the first message");
        assert_eq!(first.tasks.as_ref().map(Vec::len), Some(1));
        assert!(first.endpoints.as_ref().is_some_and(|d| d.from == 0));
        assert!(first.ca.is_some());
        assert_eq!(first.role, Some(NodeRole::Worker));
        assert_eq!(progress, ViewProgress::Sent(st.version));
        // The same state again: nothing to send.
        s.follow(&st).count();
        assert_eq!(
            s.next(&st, &t1, vec![]),
            (None, ViewProgress::Unchanged(st.version))
        );

        // Told to stop while its removal propagates: held, so told nothing new; its
        // endpoint entry (now not ready) changes.
        Arc::make_mut(&mut st)
            .apply(Command::SetDesiredState {
                tasks: vec!["ta".into()],
                state: TaskState::Shutdown,
                at: Millis(2),
            })
            .unwrap();
        let draining: Vec<String> = s.follow(&st).map(|t| t.id.clone()).collect();
        assert_eq!(draining, ["ta"]);
        let t2 = table(&st);
        let (held, _) = s.next(&st, &t2, vec!["ta".into()]);
        let held = held.expect("the endpoint change");
        assert_eq!(held.task_delta, None, "still told to run");
        assert!(held.endpoints.is_some());
        assert!(held.ca.is_none() && held.role.is_none(), "unchanged");
        // Let go: now told to stop.
        s.follow(&st).count();
        let (released, progress) = s.next(&st, &t2, vec![]);
        let delta = released.and_then(|u| u.task_delta).expect("a task delta");
        assert_eq!(delta.upsert.len(), 1);
        assert_eq!(delta.upsert[0].desired_state, TaskState::Shutdown);
        assert_eq!(progress, ViewProgress::Unchanged(st.version));

        // A manager joins elsewhere: nothing of this node changes, yet it is told, so that
        // its agent can find the next leader.
        Arc::make_mut(&mut st)
            .apply(Command::AddNode {
                node: shoal_types::Node {
                    manager_status: Some(shoal_types::node::ManagerStatus {
                        raft_id: 3,
                        addr: "10.0.0.3:2377".into(),
                        leader: false,
                        reachability: String::new(),
                    }),
                    ..node("n3", "node3")
                },
                at: Millis(3),
            })
            .unwrap();
        s.follow(&st).count();
        let (told, _) = s.next(&st, &t2, vec![]);
        let told = told.expect("the managers");
        assert_eq!(told.managers, ["10.0.0.3:2377"]);
        assert!(!told.tasks_changed() && told.endpoints.is_none());
        s.follow(&st).count();
        assert_eq!(s.next(&st, &t2, vec![]).0, None);
    }
}
