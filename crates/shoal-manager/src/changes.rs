//! What changed between two states, as the leader's passes need to know it: the state's
//! maps are persistent, so the difference costs the size of the change, and a change of
//! one service re-examines that service, not the cluster.

use std::collections::BTreeSet;

use shoal_types::diff::changes;
use shoal_types::{ClusterState, TaskState};

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
        self.all || self.new_tasks || !self.specs.is_empty()
    }

    /// Whether the scheduler has anything to do.
    pub fn schedule(&self) -> bool {
        self.all || self.pending_tasks
    }

    /// The services the orchestrator looks at; `None`: all of them.
    pub fn scope(&self) -> Option<&BTreeSet<String>> {
        (!self.all).then_some(&self.services)
    }
}

pub fn between(old: &ClusterState, new: &ClusterState) -> Changes {
    let mut c = Changes {
        all: old.cluster != new.cluster
            || !old.nodes.ptr_eq(&new.nodes) && old.nodes != new.nodes
            || !old.networks.ptr_eq(&new.networks) && old.networks != new.networks,
        ..Changes::default()
    };
    if c.all {
        return c;
    }
    for (id, _, _) in changes(&old.services, &new.services) {
        c.specs.insert(id.clone());
        c.services.insert(id.clone());
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
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocator::allocate;
    use shoal_types::fixtures::*;
    use shoal_types::{Command, Millis, NodeState};

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

        // A spec change: that service, and the allocator (its VIPs may change).
        let old = st.clone();
        st.apply(Command::UpdateService {
            id: "s2".into(),
            spec: spec("web", 3),
            at: Millis(3),
        })
        .unwrap();
        let c = between(&old, &st);
        assert_eq!(c.specs, BTreeSet::from(["s2".to_string()]));
        assert!(c.allocate() && !c.schedule());

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
}
