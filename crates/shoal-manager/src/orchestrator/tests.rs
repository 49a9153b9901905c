use super::*;
use crate::allocator::allocate;
use crate::scheduler::schedule;
use shoal_types::fixtures::*;
use shoal_types::{Availability, ServiceMode};

/// One manager pass: orchestrate, then schedule, applying both.
fn step(st: &mut ClusterState, now: u64) {
    let mut n = st.tasks.len();
    let mut ids = || {
        n += 1;
        format!("t{n:03}")
    };
    for cmd in reconcile(st, Millis(now), &mut ids) {
        st.apply(cmd).unwrap();
    }
    for cmd in allocate(st, Millis(now)) {
        st.apply(cmd).unwrap();
    }
    let plan = schedule(st);
    st.apply(Command::AssignTasks {
        assignments: plan.assignments,
        at: Millis(now),
    })
    .unwrap();
}

/// What an agent would report: the task's process reached `state`.
fn report(st: &mut ClusterState, task: &str, state: TaskState, now: u64) {
    let node = st.tasks[task].node_id.clone().unwrap();
    let status = TaskStatus::new(state, Millis(now), "");
    st.apply(Command::UpdateTaskStatus {
        id: task.into(),
        node_id: node,
        status,
    })
    .unwrap();
}

fn run_all(st: &mut ClusterState, now: u64) {
    let ids: Vec<String> = st
        .tasks
        .values()
        .filter(|t| {
            t.node_id.is_some()
                && t.desired_state == TaskState::Running
                && t.status.state < TaskState::Running
        })
        .map(|t| t.id.clone())
        .collect();
    for id in ids {
        report(st, &id, TaskState::Running, now);
    }
}

/// `slot@hostname` of every task meant to run, sorted.
fn live(st: &ClusterState) -> Vec<String> {
    let mut v: Vec<String> = st
        .tasks
        .values()
        .filter(|t| t.desired_state == TaskState::Running)
        .map(|t| {
            let host = t
                .node_id
                .as_ref()
                .map(|n| st.nodes[n].hostname().to_string())
                .unwrap_or_default();
            format!("{}.{}@{}", t.service_name, t.slot, host)
        })
        .collect();
    v.sort();
    v
}

fn three_nodes_with(spec: shoal_types::ServiceSpec) -> ClusterState {
    let mut st = cluster(&[("n1", "node1"), ("n2", "node2"), ("n3", "node3")]);
    st.apply(Command::CreateService {
        service: service("s1", spec),
    })
    .unwrap();
    step(&mut st, 0);
    run_all(&mut st, 0);
    st
}

#[test]
fn creates_one_task_per_replica_spread_over_nodes() {
    let st = three_nodes_with(spec("web", 3));
    assert_eq!(live(&st), ["web.1@node1", "web.2@node2", "web.3@node3"]);
}

#[test]
fn scale_up_and_down() {
    let mut st = three_nodes_with(spec("web", 3));
    let mut s = st.services["s1"].spec.clone();
    s.mode = ServiceMode::Replicated { replicas: 1 };
    st.apply(Command::UpdateService {
        id: "s1".into(),
        spec: s.clone(),
        at: Millis(1),
        expected_version: None,
    })
    .unwrap();
    step(&mut st, 1);
    assert_eq!(live(&st), ["web.1@node1"]);
    s.mode = ServiceMode::Replicated { replicas: 4 };
    st.apply(Command::UpdateService {
        id: "s1".into(),
        spec: s,
        at: Millis(2),
        expected_version: None,
    })
    .unwrap();
    step(&mut st, 2);
    assert_eq!(live(&st).len(), 4);
}

#[test]
fn failed_task_restarts_after_the_delay() {
    let mut st = three_nodes_with(spec("web", 1));
    let first = st.tasks.keys().next().unwrap().clone();
    report(&mut st, &first, TaskState::Failed, 1_000);
    step(&mut st, 2_000);
    assert!(
        live(&st).is_empty(),
        "restarted before the 5 s delay: {:?}",
        live(&st)
    );
    step(&mut st, 6_000);
    assert_eq!(live(&st).len(), 1);
    assert_eq!(st.tasks[&first].desired_state, TaskState::Shutdown);
}

#[test]
fn a_pass_says_when_a_restart_delay_runs_out() {
    let mut st = three_nodes_with(spec("web", 1));
    let first = st.tasks.keys().next().unwrap().clone();
    report(&mut st, &first, TaskState::Failed, 1_000);
    let mut ids = || "t900".to_string();
    let pass = reconcile_pass(&st, Millis(2_000), &mut ids, None);
    assert_eq!(
        pass.due,
        BTreeMap::from([("s1".to_string(), Millis(6_000))])
    );
    assert!(
        !pass
            .commands
            .iter()
            .any(|c| matches!(c, Command::CreateTasks { .. })),
        "{:?}",
        pass.commands
    );
    // Looked at by name, the same; a millisecond early, still waiting.
    let scope = BTreeSet::from(["s1".to_string()]);
    let early = reconcile_pass(&st, Millis(5_999), &mut ids, Some(&scope));
    assert_eq!(early.due, pass.due);
    // When it runs out: the new task, and nothing due any more.
    let due = reconcile_pass(&st, Millis(6_000), &mut ids, Some(&scope));
    assert!(due.due.is_empty());
    assert!(
        due.commands
            .iter()
            .any(|c| matches!(c, Command::CreateTasks { tasks } if tasks.len() == 1)),
        "{:?}",
        due.commands
    );
}

#[test]
fn nothing_is_due_for_a_policy_that_never_restarts_or_a_global_task_in_its_delay() {
    let mut s = spec("job", 1);
    s.task_template.restart_policy.condition = RestartCondition::None;
    let mut st = three_nodes_with(s);
    let first = st.tasks.keys().next().unwrap().clone();
    report(&mut st, &first, TaskState::Failed, 1_000);
    let pass = reconcile_pass(&st, Millis(2_000), &mut || "t900".to_string(), None);
    assert!(pass.due.is_empty(), "{pass:?}");
    assert!(
        !pass
            .commands
            .iter()
            .any(|c| matches!(c, Command::CreateTasks { .. })),
        "{pass:?}"
    );

    let mut g = spec("agent", 1);
    g.mode = ServiceMode::Global {};
    let mut st = three_nodes_with(g);
    let on_n2 = st
        .tasks
        .values()
        .find(|t| t.node_id.as_deref() == Some("n2"))
        .unwrap()
        .id
        .clone();
    report(&mut st, &on_n2, TaskState::Failed, 1_000);
    let pass = reconcile_pass(&st, Millis(1_500), &mut || "t900".to_string(), None);
    assert_eq!(
        pass.due,
        BTreeMap::from([("s1".to_string(), Millis(6_000))])
    );
}

#[test]
fn restart_condition_none_and_on_failure() {
    let mut s = spec("job", 1);
    s.task_template.restart_policy.condition = RestartCondition::None;
    let mut st = three_nodes_with(s);
    let first = st.tasks.keys().next().unwrap().clone();
    report(&mut st, &first, TaskState::Failed, 1_000);
    step(&mut st, 60_000);
    assert!(live(&st).is_empty());

    let mut s = spec("job", 1);
    s.task_template.restart_policy.condition = RestartCondition::OnFailure;
    let mut st = three_nodes_with(s);
    let first = st.tasks.keys().next().unwrap().clone();
    report(&mut st, &first, TaskState::Complete, 1_000);
    step(&mut st, 60_000);
    assert!(
        live(&st).is_empty(),
        "a clean exit is not restarted with on-failure"
    );
}

#[test]
fn tasks_of_a_down_node_come_back_elsewhere_at_once() {
    let mut st = three_nodes_with(spec("web", 3));
    st.apply(Command::SetNodeState {
        id: "n2".into(),
        state: NodeState::Down,
        message: "heartbeat failure".into(),
        at: Millis(5),
    })
    .unwrap();
    step(&mut st, 5);
    let l = live(&st);
    assert_eq!(l.len(), 3);
    assert!(l.iter().all(|t| !t.ends_with("@node2")), "{l:?}");
}

#[test]
fn drain_moves_tasks_away_start_first() {
    let mut st = three_nodes_with(spec("web", 3));
    run_all(&mut st, 1);
    st.apply(Command::UpdateNodeSpec {
        id: "n1".into(),
        availability: Some(Availability::Drain),
        labels: None,
        at: Millis(5),
    })
    .unwrap();
    let on_node1 = |st: &ClusterState| -> Vec<String> {
        st.tasks
            .values()
            .filter(|t| t.node_id.as_deref() == Some("n1") && t.desired_state == TaskState::Running)
            .map(|t| t.id.clone())
            .collect()
    };
    let drained = on_node1(&st);
    assert_eq!(drained.len(), 1);
    // The replacement is made and placed elsewhere; the drained task keeps serving.
    step(&mut st, 5);
    assert_eq!(live(&st).len(), 4, "{:?}", live(&st));
    assert_eq!(on_node1(&st), drained);
    // Running but not ready yet (its port does not answer): still serving.
    let new = st
        .tasks
        .values()
        .find(|t| t.status.state < TaskState::Running)
        .map(|t| t.id.clone())
        .unwrap();
    let mut status = TaskStatus::new(TaskState::Running, Millis(6), "");
    status.ready = false;
    st.apply(Command::UpdateTaskStatus {
        id: new.clone(),
        node_id: st.tasks[&new].node_id.clone().unwrap(),
        status,
    })
    .unwrap();
    step(&mut st, 6);
    assert_eq!(
        on_node1(&st),
        drained,
        "not before its replacement is ready"
    );
    // Ready: the drained task is told to stop.
    report(&mut st, &new, TaskState::Running, 7);
    step(&mut st, 7);
    assert!(on_node1(&st).is_empty());
    assert_eq!(st.tasks[&drained[0]].desired_state, TaskState::Shutdown);
    let l = live(&st);
    assert_eq!(l.len(), 3);
    assert!(l.iter().all(|t| !t.ends_with("@node1")), "{l:?}");
}

#[test]
fn a_drained_task_with_nowhere_to_go_stops() {
    // One node: the replacement cannot be placed, and the scheduler says why.
    let mut st = cluster(&[("n1", "node1")]);
    st.apply(Command::CreateService {
        service: service("s1", spec("web", 1)),
    })
    .unwrap();
    step(&mut st, 0);
    run_all(&mut st, 1);
    st.apply(Command::UpdateNodeSpec {
        id: "n1".into(),
        availability: Some(Availability::Drain),
        labels: None,
        at: Millis(5),
    })
    .unwrap();
    let old = st.tasks.keys().next().unwrap().clone();
    step(&mut st, 5);
    assert_eq!(st.tasks[&old].desired_state, TaskState::Running);
    let plan = schedule(&st);
    if let Some(cmd) = crate::allocator::task_errors(&st, plan.unplaced) {
        st.apply(cmd).unwrap();
    }
    step(&mut st, 6);
    assert_eq!(st.tasks[&old].desired_state, TaskState::Shutdown);
    assert_eq!(live(&st), ["web.1@"], "the replacement waits for a node");
}

#[test]
fn global_service_runs_once_per_eligible_node() {
    let mut s = spec("agent", 1);
    s.mode = ServiceMode::Global {};
    let mut st = three_nodes_with(s);
    assert_eq!(
        live(&st),
        ["agent.0@node1", "agent.0@node2", "agent.0@node3"]
    );
    st.apply(Command::UpdateNodeSpec {
        id: "n3".into(),
        availability: Some(Availability::Drain),
        labels: None,
        at: Millis(5),
    })
    .unwrap();
    step(&mut st, 5);
    assert_eq!(live(&st), ["agent.0@node1", "agent.0@node2"]);
}

#[test]
fn changed_command_replaces_tasks_one_slot_at_a_time_start_first() {
    let mut st = three_nodes_with(spec("web", 2));
    let old: Vec<String> = st.tasks.keys().cloned().collect();
    let mut s = st.services["s1"].spec.clone();
    s.task_template.container_spec.env = vec!["A=1".into()];
    st.apply(Command::UpdateService {
        id: "s1".into(),
        spec: s,
        at: Millis(1),
        expected_version: None,
    })
    .unwrap();
    let shut = |st: &ClusterState| {
        old.iter()
            .filter(|id| st.tasks[*id].desired_state == TaskState::Shutdown)
            .count()
    };
    // Slot 1 first: its successor starts while both old tasks keep serving.
    step(&mut st, 1);
    assert_eq!((live(&st).len(), shut(&st)), (3, 0));
    step(&mut st, 2);
    assert_eq!(
        (live(&st).len(), shut(&st)),
        (3, 0),
        "nothing more until the successor runs"
    );
    run_all(&mut st, 3);
    step(&mut st, 4);
    assert_eq!(
        shut(&st),
        1,
        "the old slot-1 task stops once its successor runs"
    );
    assert_eq!(
        live(&st).len(),
        2,
        "slot 1 is in flight until it has stopped"
    );
    let stopping = old
        .iter()
        .find(|id| st.tasks[*id].desired_state == TaskState::Shutdown)
        .unwrap()
        .clone();
    report(&mut st, &stopping, TaskState::Shutdown, 5);
    step(&mut st, 6);
    assert_eq!(live(&st).len(), 3, "then slot 2's successor starts");
    run_all(&mut st, 7);
    step(&mut st, 8);
    assert_eq!((live(&st).len(), shut(&st)), (2, 2));
}

#[test]
fn an_update_waits_for_the_successor_to_be_ready_not_only_to_run() {
    let mut st = three_nodes_with(spec("web", 1));
    let old: Vec<String> = st.tasks.keys().cloned().collect();
    let mut s = st.services["s1"].spec.clone();
    s.task_template.container_spec.env = vec!["A=1".into()];
    st.apply(Command::UpdateService {
        id: "s1".into(),
        spec: s,
        at: Millis(1),
        expected_version: None,
    })
    .unwrap();
    step(&mut st, 1);
    let new = st
        .tasks
        .keys()
        .find(|id| !old.contains(id))
        .cloned()
        .unwrap();
    // It runs, its health check has not passed yet.
    let node = st.tasks[&new].node_id.clone().unwrap();
    let mut running = TaskStatus::new(TaskState::Running, Millis(2), "");
    running.ready = false;
    st.apply(Command::UpdateTaskStatus {
        id: new.clone(),
        node_id: node.clone(),
        status: running.clone(),
    })
    .unwrap();
    step(&mut st, 3);
    assert_eq!(
        st.tasks[&old[0]].desired_state,
        TaskState::Running,
        "the old task keeps serving while its successor is not ready"
    );
    running.ready = true;
    running.timestamp = Millis(4);
    st.apply(Command::UpdateTaskStatus {
        id: new,
        node_id: node,
        status: running,
    })
    .unwrap();
    step(&mut st, 5);
    assert_eq!(st.tasks[&old[0]].desired_state, TaskState::Shutdown);
}

#[test]
fn removed_service_tasks_are_deleted_once_stopped() {
    let mut st = three_nodes_with(spec("web", 2));
    st.apply(Command::RemoveService { id: "s1".into() })
        .unwrap();
    step(&mut st, 1);
    assert_eq!(st.tasks.len(), 2, "kept until the agents have stopped them");
    let ids: Vec<String> = st.tasks.keys().cloned().collect();
    for id in &ids {
        report(&mut st, id, TaskState::Shutdown, 2);
    }
    step(&mut st, 3);
    assert!(st.tasks.is_empty());
}

#[test]
fn history_is_bounded() {
    let mut s = spec("flaky", 1);
    s.task_template.restart_policy.delay_ms = 0;
    let mut st = three_nodes_with(s);
    for i in 0..20u64 {
        let id = st
            .tasks
            .values()
            .find(|t| t.desired_state == TaskState::Running)
            .unwrap()
            .id
            .clone();
        report(&mut st, &id, TaskState::Failed, 10 + i * 10);
        step(&mut st, 11 + i * 10);
        run_all(&mut st, 12 + i * 10);
    }
    assert_eq!(live(&st).len(), 1);
    assert!(
        st.tasks.len() <= TASK_HISTORY_LIMIT + 1,
        "{} tasks kept",
        st.tasks.len()
    );
}

/// Fails the slot's running task and lets the manager react, from `t0` on, until nothing
/// runs or `limit`.
/// Returns how many tasks were started after the first (the restarts).
fn fail_until_given_up(st: &mut ClusterState, t0: u64, limit: u64) -> u64 {
    let mut restarts = 0;
    for i in 0..limit {
        let Some(id) = st
            .tasks
            .values()
            .find(|t| t.desired_state == TaskState::Running)
            .map(|t| t.id.clone())
        else {
            break;
        };
        if i > 0 {
            restarts += 1;
        }
        let at = t0 + i * 10;
        report(st, &id, TaskState::Failed, at);
        step(st, at + 1);
        run_all(st, at + 2);
    }
    restarts
}

#[test]
fn max_attempts_above_the_kept_history_is_reached() {
    // 7 > TASK_HISTORY_LIMIT: counting ended tasks in the (trimmed) history never got there.
    let mut s = spec("flaky", 1);
    s.task_template.restart_policy.delay_ms = 0;
    s.task_template.restart_policy.max_attempts = 7;
    let mut st = three_nodes_with(s.clone());
    assert_eq!(fail_until_given_up(&mut st, 10, 30), 7);
    assert!(live(&st).is_empty(), "still running: {:?}", live(&st));
    assert!(st.tasks.len() <= TASK_HISTORY_LIMIT + 1);

    // A changed spec starts the count again, as docker does.
    s.task_template.container_spec.command = vec!["sleep".into(), "2".into()];
    st.apply(Command::UpdateService {
        id: "s1".into(),
        spec: s,
        at: Millis(1_000),
        expected_version: None,
    })
    .unwrap();
    step(&mut st, 1_001);
    run_all(&mut st, 1_002);
    assert_eq!(live(&st), ["flaky.1@node1"]);
    assert_eq!(fail_until_given_up(&mut st, 1_010, 30), 7);
}

#[test]
fn a_task_taken_away_is_no_restart_attempt() {
    let mut s = spec("web", 1);
    s.task_template.restart_policy.delay_ms = 0;
    s.task_template.restart_policy.max_attempts = 1;
    let mut st = three_nodes_with(s);
    // Its node goes down twice: the task moves each time, and that is not the task failing.
    for (n, at) in [("n1", 100), ("n2", 200)] {
        st.apply(Command::SetNodeState {
            id: n.into(),
            state: NodeState::Down,
            message: "gone".into(),
            at: Millis(at),
        })
        .unwrap();
        step(&mut st, at + 1);
        run_all(&mut st, at + 2);
    }
    assert_eq!(live(&st), ["web.1@node3"]);
    // One failure still gets its one restart.
    st.apply(Command::SetNodeState {
        id: "n1".into(),
        state: NodeState::Ready,
        message: String::new(),
        at: Millis(300),
    })
    .unwrap();
    assert_eq!(fail_until_given_up(&mut st, 310, 10), 1);
}

#[test]
fn a_large_service_is_created_in_passes_of_bounded_size() {
    let mut st = cluster(&[("n1", "node1")]);
    st.apply(Command::CreateService {
        service: service("s1", spec("web", 2 * MAX_CREATE_PER_PASS as u64 + 500)),
    })
    .unwrap();
    let mut n = 0;
    let mut ids = || {
        n += 1;
        format!("t{n:05}")
    };
    let mut made = Vec::new();
    for now in 1..=4 {
        let pass = reconcile_pass(&st, Millis(now), &mut ids, None);
        let created: usize = pass
            .commands
            .iter()
            .map(|c| match c {
                Command::CreateTasks { tasks } => tasks.len(),
                _ => 0,
            })
            .sum();
        made.push(created);
        // More to make: the service is due again at once.
        let due = pass.due.get("s1").copied();
        assert_eq!(due, (now < 3).then_some(Millis(now)), "pass {now}");
        for cmd in pass.commands {
            st.apply(cmd).unwrap();
        }
    }
    assert_eq!(made, [MAX_CREATE_PER_PASS, MAX_CREATE_PER_PASS, 500, 0]);
    let mut slots: Vec<u64> = st.tasks.values().map(|t| t.slot).collect();
    slots.sort();
    assert_eq!(
        slots,
        (1..=2 * MAX_CREATE_PER_PASS as u64 + 500).collect::<Vec<u64>>()
    );
}
