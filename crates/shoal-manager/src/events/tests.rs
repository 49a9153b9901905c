use shoal_types::fixtures;
use shoal_types::node::ManagerStatus;
use shoal_types::{NodeState, UpdateStatus};

use super::*;

/// Events as `docker events` prints them, the time left out.
fn lines(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| e.line("").trim_start().to_string())
        .collect()
}

fn base() -> ClusterState {
    fixtures::cluster(&[("n1", "node1"), ("n2", "node2")])
}

#[test]
fn service_create_scale_and_remove_in_order() {
    let s0 = base();
    let mut s1 = s0.clone();
    s1.networks.insert(
        "net1".into(),
        fixtures::network("net1", "front", "10.0.1.0/24", 4097),
    );
    s1.services.insert(
        "s1".into(),
        fixtures::service("s1", fixtures::spec("web", 1)),
    );
    let mut t = fixtures::task("t1", "s1", "web");
    t.node_id = Some("n1".into());
    s1.tasks.insert("t1".into(), std::sync::Arc::new(t.clone()));
    assert_eq!(
        lines(&between(&s0, &s1, Millis(5))),
        [
            "network create net1 (driver=overlay, name=front)",
            "service create s1 (name=web)",
            "task create t1 (name=web.1, node.id=n1, node.name=node1, service.id=s1, service.name=web, state.new=new)",
        ]
    );
    assert!(
        between(&s0, &s1, Millis(5))
            .iter()
            .all(|e| e.time == Millis(5))
    );

    // Scaled to 3; the first task runs.
    let mut s2 = s1.clone();
    let mut svc = s2.services["s1"].clone();
    svc.spec.mode = shoal_types::ServiceMode::Replicated { replicas: 3 };
    s2.services.insert("s1".into(), svc);
    t.status.state = TaskState::Running;
    s2.tasks.insert("t1".into(), std::sync::Arc::new(t.clone()));
    assert_eq!(
        lines(&between(&s1, &s2, Millis(6))),
        [
            "service update s1 (name=web, replicas.new=3, replicas.old=1)",
            "task update t1 (name=web.1, node.id=n1, node.name=node1, service.id=s1, service.name=web, state.new=running, state.old=new)",
        ]
    );

    // A status message alone (a pull's progress) is no event.
    let mut s3 = s2.clone();
    t.status.message = "pulling image: 1MB of 2MB".into();
    s3.tasks.insert("t1".into(), std::sync::Arc::new(t.clone()));
    assert!(between(&s2, &s3, Millis(7)).is_empty());

    // Removed: the task goes with its service, task first.
    let mut s4 = s3.clone();
    s4.services.remove("s1");
    s4.tasks.remove("t1");
    s4.networks.remove("net1");
    assert_eq!(
        lines(&between(&s3, &s4, Millis(8))),
        [
            "task remove t1 (name=web.1, node.id=n1, node.name=node1, service.id=s1, service.name=web)",
            "service remove s1 (name=web)",
            "network remove net1 (driver=overlay, name=front)",
        ]
    );
}

#[test]
fn task_failure_says_why_and_desired_state_moves() {
    let mut s0 = base();
    s0.services.insert(
        "s1".into(),
        fixtures::service("s1", fixtures::spec("web", 1)),
    );
    let mut t = fixtures::task("t1", "s1", "web");
    s0.tasks.insert("t1".into(), std::sync::Arc::new(t.clone()));
    let mut s1 = s0.clone();
    t.status.state = TaskState::Failed;
    t.status.err = "exit code 3".into();
    t.desired_state = TaskState::Shutdown;
    s1.tasks.insert("t1".into(), std::sync::Arc::new(t));
    assert_eq!(
        lines(&between(&s0, &s1, Millis(1))),
        [
            "task update t1 (desiredstate.new=shutdown, desiredstate.old=running, error=exit code 3, name=web.1, service.id=s1, service.name=web, state.new=failed, state.old=new)"
        ]
    );
}

#[test]
fn node_down_and_up_drain_and_update_state() {
    let s0 = base();
    let mut s1 = s0.clone();
    let mut n = s1.nodes["n2"].clone();
    n.status.state = NodeState::Down;
    n.status.message = "heartbeat failure".into();
    s1.nodes.insert("n2".into(), n.clone());
    assert_eq!(
        lines(&between(&s0, &s1, Millis(1))),
        ["node update n2 (name=node2, state.new=down, state.old=ready)"]
    );
    let mut s2 = s1.clone();
    n.status.state = NodeState::Ready;
    n.spec.availability = shoal_types::Availability::Drain;
    s2.nodes.insert("n2".into(), n.clone());
    assert_eq!(
        lines(&between(&s1, &s2, Millis(2))),
        [
            "node update n2 (availability.new=drain, availability.old=active, name=node2, state.new=ready, state.old=down)"
        ]
    );
    // What the agent reports of itself is not an event.
    let mut s3 = s2.clone();
    n.description.resources = Default::default();
    n.status.addr = "172.29.0.9".into();
    s3.nodes.insert("n2".into(), n);
    assert!(between(&s2, &s3, Millis(3)).is_empty());

    let mut s4 = s3.clone();
    let mut svc = fixtures::service("s1", fixtures::spec("web", 1));
    s4.services.insert("s1".into(), svc.clone());
    let mut s5 = s4.clone();
    svc.update_status = Some(UpdateStatus {
        state: UpdateState::RollbackStarted,
        started_at: None,
        completed_at: None,
        message: String::new(),
        version: 1,
    });
    s5.services.insert("s1".into(), svc);
    assert_eq!(
        lines(&between(&s4, &s5, Millis(4))),
        ["service update s1 (name=web, updatestate.new=rollback_started)"]
    );
}

#[test]
fn leader_change_names_both_nodes() {
    let mut s = base();
    for (id, raft) in [("n1", 11), ("n2", 12)] {
        let mut n = s.nodes[id].clone();
        n.manager_status = Some(ManagerStatus {
            raft_id: raft,
            addr: String::new(),
            leader: false,
            reachability: String::new(),
        });
        s.nodes.insert(id.into(), n);
    }
    assert_eq!(
        lines(&leader_changed(&s, Some(11), Some(12), Millis(1))),
        [
            "node update n1 (leader.new=false, leader.old=true, name=node1)",
            "node update n2 (leader.new=true, leader.old=false, name=node2)",
        ]
    );
    assert_eq!(
        lines(&leader_changed(&s, None, Some(11), Millis(1))),
        ["node update n1 (leader.new=true, leader.old=false, name=node1)"]
    );
    assert!(leader_changed(&s, Some(11), Some(11), Millis(1)).is_empty());
}

fn at(t: u64, id: &str) -> Event {
    event(
        EventType::Service,
        Action::Update,
        id,
        Attrs::new(),
        Millis(t),
    )
}

#[test]
fn ring_keeps_the_newest_and_answers_time_ranges() {
    let mut r = Ring::new(3);
    for (t, id) in [(10, "a"), (20, "b"), (30, "c"), (40, "d")] {
        r.push(at(t, id));
    }
    let ids = |v: Vec<Event>| v.into_iter().map(|e| e.actor.id).collect::<Vec<_>>();
    assert_eq!(r.len(), 3);
    assert_eq!(r.oldest(), Some(Millis(20)));
    assert_eq!(ids(r.range(Millis(0), None)), ["b", "c", "d"]);
    assert_eq!(ids(r.range(Millis(25), None)), ["c", "d"]);
    assert_eq!(ids(r.range(Millis(20), Some(Millis(30)))), ["b", "c"]);
    assert!(r.range(Millis(41), None).is_empty());
    // A clock that went back is held at the last time: ranges stay contiguous.
    let kept = r.push(at(5, "e"));
    assert_eq!(kept.time, Millis(40));
    assert_eq!(ids(r.range(Millis(40), None)), ["d", "e"]);
}
