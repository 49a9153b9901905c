//! The rollout state machine, driven as the leader does: passes at given times, with the
//! agents' reports in between.

use std::collections::BTreeMap;

use super::*;
use crate::allocator::allocate;
use crate::scheduler::schedule;
use shoal_types::fixtures::*;
use shoal_types::update::FailureRatio;
use shoal_types::{
    FailureAction, ServiceSpec, UpdateConfig, UpdateOrder, UpdateState, UpdateStatus,
};

/// One manager pass at `now`: orchestrate, allocate, schedule. Returns the pass's due times.
fn pass(st: &mut ClusterState, now: u64) -> BTreeMap<String, Millis> {
    let mut n = st
        .tasks
        .keys()
        .filter_map(|k| k.trim_start_matches('t').parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    let mut ids = || {
        n += 1;
        format!("t{n:04}")
    };
    let p = reconcile_pass(st, Millis(now), &mut ids, None);
    for cmd in p.commands {
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
    p.due
}

fn report(st: &mut ClusterState, task: &str, state: TaskState, now: u64) {
    let node = st.tasks[task].node_id.clone().unwrap();
    st.apply(Command::UpdateTaskStatus {
        id: task.into(),
        node_id: node,
        status: TaskStatus::new(state, Millis(now), ""),
    })
    .unwrap();
}

/// The agents: placed tasks told to run start (or, with `fails`, fail at once when their
/// command is `fails`), tasks told to stop stop.
fn agents(st: &mut ClusterState, now: u64) {
    let moves: Vec<(String, TaskState)> = st
        .tasks
        .values()
        .filter(|t| t.node_id.is_some() && !t.status.state.is_terminal())
        .filter_map(|t| {
            if t.desired_state > TaskState::Running {
                Some((t.id.clone(), TaskState::Shutdown))
            } else if t.status.state < TaskState::Running {
                let bad = t.spec.command.first().is_some_and(|c| c == "false");
                Some((
                    t.id.clone(),
                    if bad {
                        TaskState::Failed
                    } else {
                        TaskState::Running
                    },
                ))
            } else {
                None
            }
        })
        .collect();
    for (id, state) in moves {
        report(st, &id, state, now);
    }
}

/// Slots (or nodes, for global services) whose tasks are not one running task meant to run.
fn changing(st: &ClusterState) -> usize {
    let mut slots: BTreeMap<(u64, String), Vec<&Task>> = BTreeMap::new();
    for t in st.tasks.values().filter(|t| !t.status.state.is_terminal()) {
        let node = if t.slot == 0 {
            t.node_id.clone().unwrap_or_default()
        } else {
            String::new()
        };
        slots.entry((t.slot, node)).or_default().push(t);
    }
    slots
        .values()
        .filter(|ts| {
            ts.len() != 1
                || ts[0].status.state != TaskState::Running
                || ts[0].desired_state != TaskState::Running
        })
        .count()
}

fn status(st: &ClusterState) -> (UpdateState, String) {
    let s = st.services["s1"].update_status.clone().expect("a status");
    (s.state, s.message)
}

/// Running tasks of the service's current container spec, and of any other.
fn running(st: &ClusterState) -> (usize, usize) {
    let svc = &st.services["s1"];
    let run: Vec<&Task> = st
        .tasks
        .values()
        .filter(|t| t.status.state == TaskState::Running && t.desired_state == TaskState::Running)
        .map(|t| &**t)
        .collect();
    let new = run
        .iter()
        .filter(|t| t.spec == svc.spec.task_template.container_spec)
        .count();
    (new, run.len() - new)
}

fn four_replicas(config: UpdateConfig) -> ClusterState {
    let mut s = spec("web", 4);
    s.update_config = config;
    let mut st = cluster(&[("n1", "node1"), ("n2", "node2"), ("n3", "node3")]);
    st.apply(Command::CreateService {
        service: service("s1", s),
    })
    .unwrap();
    pass(&mut st, 0);
    agents(&mut st, 0);
    st
}

fn update(st: &mut ClusterState, at: u64, change: impl FnOnce(&mut ServiceSpec)) {
    let mut s = st.services["s1"].spec.clone();
    change(&mut s);
    st.apply(Command::UpdateService {
        id: "s1".into(),
        spec: s,
        at: Millis(at),
        expected_version: None,
    })
    .unwrap();
}

fn command(cmd: &str) -> impl FnOnce(&mut ServiceSpec) {
    let cmd = cmd.to_string();
    move |s| s.task_template.container_spec.command = vec![cmd, "2000".into()]
}

/// Passes and agents every `tick` ms from `from` until the status is `until` (or 200 ticks);
/// returns the most slots seen changing at once and the time it got there.
fn drive(st: &mut ClusterState, from: u64, tick: u64, until: UpdateState) -> (usize, u64) {
    let mut most = 0;
    let mut now = from;
    for _ in 0..200 {
        pass(st, now);
        most = most.max(changing(st));
        if status(st).0 == until {
            return (most, now);
        }
        agents(st, now + 1);
        most = most.max(changing(st));
        now += tick;
    }
    panic!("no {until:?} by {now}: {:?}", status(st));
}

fn config(parallelism: u64, order: UpdateOrder) -> UpdateConfig {
    UpdateConfig {
        parallelism,
        order,
        ..UpdateConfig::default()
    }
}

#[test]
fn parallelism_two_start_first_changes_two_slots_at_a_time() {
    let mut st = four_replicas(config(2, UpdateOrder::StartFirst));
    update(&mut st, 10, command("sleep"));
    assert_eq!(
        status(&st),
        (UpdateState::Updating, "update in progress".into())
    );
    pass(&mut st, 10);
    assert_eq!(st.tasks.len(), 6, "two new tasks beside the four old ones");
    assert_eq!(running(&st), (0, 4), "the old ones keep serving");
    let (most, done) = drive(&mut st, 20, 100, UpdateState::Completed);
    assert_eq!(most, 2);
    assert_eq!(running(&st), (4, 0));
    let s = st.services["s1"].update_status.clone().unwrap();
    assert_eq!(s.message, "update completed");
    assert_eq!(s.started_at, Some(Millis(10)));
    assert_eq!(s.completed_at, Some(Millis(done)));
    assert!(done >= 5_000, "not before the monitor has passed: {done}");
}

#[test]
fn parallelism_two_stop_first_stops_before_it_starts() {
    let mut st = four_replicas(config(2, UpdateOrder::StopFirst));
    update(&mut st, 10, command("sleep"));
    pass(&mut st, 10);
    assert_eq!(
        st.tasks.len(),
        4,
        "no new task before an old one has stopped"
    );
    let stopping = st
        .tasks
        .values()
        .filter(|t| t.desired_state == TaskState::Shutdown)
        .count();
    assert_eq!(stopping, 2);
    pass(&mut st, 11);
    assert_eq!(st.tasks.len(), 4, "still stopping");
    let mut most_live = 0;
    let mut now = 20;
    let mut most = 0;
    while status(&st).0 != UpdateState::Completed && now < 20_000 {
        pass(&mut st, now);
        let live = st
            .tasks
            .values()
            .filter(|t| !t.status.state.is_terminal())
            .count();
        most_live = most_live.max(live);
        most = most.max(changing(&st));
        agents(&mut st, now + 1);
        now += 100;
    }
    assert_eq!(status(&st).0, UpdateState::Completed);
    assert_eq!(most_live, 4, "never a fifth task: old ones stop first");
    assert_eq!(most, 2);
    assert_eq!(running(&st), (4, 0));
}

#[test]
fn parallelism_zero_updates_every_slot_at_once() {
    let mut st = four_replicas(config(0, UpdateOrder::StartFirst));
    update(&mut st, 10, command("sleep"));
    pass(&mut st, 10);
    assert_eq!(st.tasks.len(), 8);
    let (most, _) = drive(&mut st, 20, 100, UpdateState::Completed);
    assert_eq!(most, 4);
}

#[test]
fn the_delay_passes_between_slots() {
    let mut st = four_replicas(UpdateConfig {
        delay_ms: 10_000,
        ..config(1, UpdateOrder::StartFirst)
    });
    update(&mut st, 10, command("sleep"));
    pass(&mut st, 10);
    agents(&mut st, 100); // slot 1's new task runs at 100
    pass(&mut st, 200);
    agents(&mut st, 201); // its old task stops
    let due = pass(&mut st, 300);
    assert_eq!(due.get("s1"), Some(&Millis(10_100)), "the delay's end");
    assert_eq!(running(&st), (1, 3));
    assert_eq!(st.tasks.len(), 5, "slot 2 waits for the delay");
    pass(&mut st, 10_099);
    assert_eq!(st.tasks.len(), 5);
    pass(&mut st, 10_100);
    assert_eq!(st.tasks.len(), 6, "slot 2 starts when the delay is over");
}

#[test]
fn a_failure_pauses_the_update_and_the_slot_keeps_its_old_task() {
    let mut st = four_replicas(config(1, UpdateOrder::StartFirst));
    update(&mut st, 10, command("false"));
    pass(&mut st, 10);
    agents(&mut st, 20); // the new task fails at once
    let failed = st
        .tasks
        .values()
        .find(|t| t.status.state == TaskState::Failed)
        .unwrap()
        .id
        .clone();
    pass(&mut st, 30);
    assert_eq!(
        status(&st),
        (
            UpdateState::Paused,
            format!("update paused due to failure or early termination of task {failed}")
        )
    );
    for now in [40, 10_000, 60_000] {
        pass(&mut st, now);
        agents(&mut st, now + 1);
    }
    assert_eq!(running(&st), (0, 4), "every slot still runs the old spec");
    assert_eq!(st.tasks.len(), 5, "no slot started, no retry while paused");

    // Another `service update` resumes it: with a good command it completes.
    update(&mut st, 70_000, command("sleep"));
    assert_eq!(status(&st).0, UpdateState::Updating);
    drive(&mut st, 70_000, 100, UpdateState::Completed);
    assert_eq!(running(&st), (4, 0));
}

#[test]
fn failures_up_to_the_ratio_are_tolerated() {
    let mut st = four_replicas(UpdateConfig {
        max_failure_ratio: FailureRatio(0.25),
        ..config(0, UpdateOrder::StartFirst)
    });
    update(&mut st, 10, command("sleep"));
    pass(&mut st, 10);
    let new: Vec<String> = st
        .tasks
        .values()
        .filter(|t| t.spec_version == 2)
        .map(|t| t.id.clone())
        .collect();
    report(&mut st, &new[0], TaskState::Failed, 20);
    pass(&mut st, 30);
    assert_eq!(
        status(&st).0,
        UpdateState::Updating,
        "1 of 4 is not above 0.25"
    );
    report(&mut st, &new[1], TaskState::Rejected, 40);
    pass(&mut st, 50);
    assert_eq!(status(&st).0, UpdateState::Paused, "2 of 4 is");
    assert!(status(&st).1.ends_with(&new[1]), "{:?}", status(&st));
}

#[test]
fn a_task_that_ends_after_the_monitor_is_no_failure() {
    let mut st = four_replicas(UpdateConfig {
        monitor_ms: 1_000,
        ..config(0, UpdateOrder::StartFirst)
    });
    update(&mut st, 10, command("sleep"));
    pass(&mut st, 10);
    agents(&mut st, 100);
    let first = st
        .tasks
        .values()
        .find(|t| t.spec_version == 2)
        .unwrap()
        .id
        .clone();
    report(&mut st, &first, TaskState::Failed, 1_101);
    pass(&mut st, 1_200);
    assert_eq!(
        status(&st).0,
        UpdateState::Updating,
        "ended 1001 ms after it started"
    );
}

#[test]
fn the_monitor_counts_from_when_the_task_is_ready() {
    let mut st = four_replicas(UpdateConfig {
        monitor_ms: 1_000,
        ..config(1, UpdateOrder::StartFirst)
    });
    update(&mut st, 10, command("sleep"));
    pass(&mut st, 10);
    let new = st
        .tasks
        .values()
        .find(|t| t.spec_version == 2)
        .unwrap()
        .id
        .clone();
    let node = st.tasks[&new].node_id.clone().unwrap();
    let mut running = TaskStatus::new(TaskState::Running, Millis(100), "");
    running.ready = false;
    for (status, at) in [
        (running.clone(), 100),
        (TaskStatus::new(TaskState::Running, Millis(900), ""), 900),
    ] {
        st.apply(Command::UpdateTaskStatus {
            id: new.clone(),
            node_id: node.clone(),
            status,
        })
        .unwrap();
        pass(&mut st, at);
    }
    assert_eq!(
        (st.tasks[&new].started_at, st.tasks[&new].ready_at),
        (Some(Millis(100)), Some(Millis(900)))
    );
    // 1,400 ms after it started, 600 ms after it was ready: within the monitor.
    report(&mut st, &new, TaskState::Failed, 1_500);
    pass(&mut st, 1_600);
    assert_eq!(status(&st).0, UpdateState::Paused);
}

#[test]
fn the_failure_ratio_divides_by_the_slots_the_rollout_changes() {
    let mut st = four_replicas(UpdateConfig {
        delay_ms: 600_000,
        ..config(2, UpdateOrder::StartFirst)
    });
    let first = st.services["s1"]
        .spec
        .task_template
        .container_spec
        .command
        .clone();
    // Two slots get the new command; the delay holds the other two.
    update(&mut st, 10, command("sleep"));
    for now in [10, 20, 30, 40] {
        pass(&mut st, now);
        agents(&mut st, now + 1);
    }
    assert_eq!(running(&st), (2, 2));
    // Back to the first command: the rollout changes those two slots only.
    update(&mut st, 100, |s| {
        s.task_template.container_spec.command = first;
        s.update_config = UpdateConfig {
            max_failure_ratio: FailureRatio(0.4),
            ..config(1, UpdateOrder::StartFirst)
        };
    });
    pass(&mut st, 100);
    let new: Vec<String> = st
        .tasks
        .values()
        .filter(|t| t.spec_version == 3)
        .map(|t| t.id.clone())
        .collect();
    assert_eq!(new.len(), 1, "one slot at a time");
    report(&mut st, &new[0], TaskState::Failed, 110);
    pass(&mut st, 120);
    // 1 of the 2 slots it changes is above 0.4 (1 of the service's 4 would not be).
    assert_eq!(status(&st).0, UpdateState::Paused, "{:?}", status(&st));
}

#[test]
fn continue_goes_on_through_failures() {
    let mut st = four_replicas(UpdateConfig {
        failure_action: FailureAction::Continue,
        ..config(2, UpdateOrder::StartFirst)
    });
    update(&mut st, 10, command("false"));
    let mut now = 10;
    while status(&st).0 == UpdateState::Updating && now < 100_000 {
        pass(&mut st, now);
        agents(&mut st, now + 1);
        now += 500;
    }
    assert_eq!(status(&st).0, UpdateState::Completed);
    assert_eq!(running(&st).1, 0, "no slot kept the old spec");
}

#[test]
fn rollback_goes_back_to_the_previous_spec_with_the_rollback_config() {
    let mut st = four_replicas(UpdateConfig::default());
    let original = st.services["s1"].spec.clone();
    // Every slot at once; the rollback, one at a time.
    update(&mut st, 10, |s| {
        s.task_template.container_spec.command = vec!["false".into()];
        s.update_config = UpdateConfig {
            failure_action: FailureAction::Rollback,
            ..config(0, UpdateOrder::StartFirst)
        };
        s.rollback_config = config(1, UpdateOrder::StartFirst);
    });
    pass(&mut st, 10);
    let bad: Vec<String> = st
        .tasks
        .values()
        .filter(|t| t.spec_version == 2)
        .map(|t| t.id.clone())
        .collect();
    assert_eq!(bad.len(), 4);
    for id in &bad {
        report(&mut st, id, TaskState::Running, 20);
    }
    pass(&mut st, 30);
    stop_all(&mut st, 31);
    assert_eq!(running(&st), (4, 0), "the bad spec runs, for a while");
    report(&mut st, &bad[2], TaskState::Failed, 50);
    pass(&mut st, 60);
    let svc = &st.services["s1"];
    assert_eq!(
        svc.spec.task_template, original.task_template,
        "the spec before"
    );
    assert_eq!(
        svc.previous_spec, None,
        "as Swarm after an automatic rollback"
    );
    assert_eq!(
        status(&st),
        (
            UpdateState::RollbackStarted,
            format!(
                "update rolled back due to failure or early termination of task {}",
                bad[2]
            )
        )
    );
    let (most, _) = drive(&mut st, 70, 100, UpdateState::RollbackCompleted);
    assert_eq!(
        most, 1,
        "the rollback config's parallelism, not the update's"
    );
    assert_eq!(status(&st).1, "rollback completed");
    assert_eq!(running(&st), (4, 0));
    assert!(
        st.tasks
            .values()
            .filter(|t| t.status.state == TaskState::Running)
            .all(|t| t.spec == original.task_template.container_spec)
    );
}

/// Tasks told to stop stop.
fn stop_all(st: &mut ClusterState, now: u64) {
    let ids: Vec<String> = st
        .tasks
        .values()
        .filter(|t| t.desired_state > TaskState::Running && !t.status.state.is_terminal())
        .map(|t| t.id.clone())
        .collect();
    for id in ids {
        report(st, &id, TaskState::Shutdown, now);
    }
}

#[test]
fn a_rollback_that_fails_pauses_instead_of_rolling_back() {
    let mut st = four_replicas(UpdateConfig {
        failure_action: FailureAction::Rollback,
        ..config(1, UpdateOrder::StartFirst)
    });
    update(&mut st, 5, |s| {
        s.task_template.container_spec.command = vec!["false".into()];
        s.update_config.failure_action = FailureAction::Continue;
        s.rollback_config = UpdateConfig {
            failure_action: FailureAction::Rollback,
            ..UpdateConfig::default()
        };
    });
    // The bad spec takes over (continue), then another replaces it; rolled back to by hand,
    // the bad spec fails, and its rollback config says rollback.
    drive_to_end(&mut st, 10);
    assert_eq!(status(&st).0, UpdateState::Completed);
    update(&mut st, 100_000, command("sleep"));
    drive(&mut st, 100_000, 100, UpdateState::Completed);
    assert_eq!(running(&st), (4, 0));
    st.apply(Command::RollbackService {
        id: "s1".into(),
        rollout: None,
        message: String::new(),
        at: Millis(200_000),
    })
    .unwrap();
    assert_eq!(
        status(&st),
        (
            UpdateState::RollbackStarted,
            "manually requested rollback".into()
        )
    );
    drive(&mut st, 200_000, 100, UpdateState::RollbackPaused);
    assert!(
        status(&st)
            .1
            .starts_with("rollback paused due to failure or early termination of task "),
        "{:?}",
        status(&st)
    );
    assert_eq!(
        running(&st),
        (0, 4),
        "every slot keeps the spec rolled back from"
    );
}

/// Runs passes until the rollout is no longer in progress.
fn drive_to_end(st: &mut ClusterState, from: u64) {
    let mut now = from;
    while st.services["s1"]
        .update_status
        .as_ref()
        .is_some_and(|s| s.state.in_progress())
        && now < from + 90_000
    {
        pass(st, now);
        agents(st, now + 1);
        now += 500;
    }
}

#[test]
fn service_rollback_restores_the_previous_spec_and_can_be_undone() {
    let mut st = four_replicas(config(0, UpdateOrder::StartFirst));
    let err = st
        .apply(Command::RollbackService {
            id: "s1".into(),
            rollout: None,
            message: String::new(),
            at: Millis(1),
        })
        .unwrap_err();
    assert_eq!(err.to_string(), "service web does not have a previous spec");
    let original = st.services["s1"].spec.clone();
    update(&mut st, 10, command("sleep"));
    drive(&mut st, 10, 100, UpdateState::Completed);
    let updated = st.services["s1"].spec.clone();
    st.apply(Command::RollbackService {
        id: "s1".into(),
        rollout: None,
        message: String::new(),
        at: Millis(20_000),
    })
    .unwrap();
    assert_eq!(st.services["s1"].spec, original);
    assert_eq!(st.services["s1"].previous_spec.as_deref(), Some(&updated));
    drive(&mut st, 20_000, 100, UpdateState::RollbackCompleted);
    assert_eq!(running(&st), (4, 0));
    assert!(
        st.tasks
            .values()
            .filter(|t| t.status.state == TaskState::Running)
            .all(|t| t.spec == original.task_template.container_spec)
    );
}

#[test]
fn force_replaces_every_task_of_an_unchanged_spec() {
    let mut st = four_replicas(config(2, UpdateOrder::StartFirst));
    let old: Vec<String> = st.tasks.keys().cloned().collect();
    update(&mut st, 10, |s| s.task_template.force_update += 1);
    assert_eq!(status(&st).0, UpdateState::Updating);
    drive(&mut st, 10, 100, UpdateState::Completed);
    let running_now: Vec<&String> = st
        .tasks
        .values()
        .filter(|t| t.status.state == TaskState::Running)
        .map(|t| &t.id)
        .collect();
    assert_eq!(running_now.len(), 4);
    assert!(
        running_now.iter().all(|id| !old.contains(id)),
        "{running_now:?}"
    );
}

#[test]
fn a_scale_starts_no_rollout_and_a_late_status_is_dropped() {
    let mut st = four_replicas(config(1, UpdateOrder::StartFirst));
    update(&mut st, 10, command("sleep"));
    let rollout = st.services["s1"].update_status.clone().unwrap();
    update(&mut st, 20, |s| {
        s.task_template.container_spec.env = vec!["A=1".into()]
    });
    // What the orchestrator decided for the first rollout arrives after the second began.
    st.apply(Command::SetUpdateStatus {
        id: "s1".into(),
        status: UpdateStatus {
            state: UpdateState::Completed,
            ..rollout
        },
    })
    .unwrap();
    assert_eq!(status(&st).0, UpdateState::Updating);
    drive(&mut st, 20, 100, UpdateState::Completed);
    update(&mut st, 30_000, |s| {
        s.mode = shoal_types::ServiceMode::Replicated { replicas: 5 }
    });
    assert_eq!(
        st.services["s1"].update_status, None,
        "as Swarm, reset by any update"
    );
}

#[test]
fn a_global_service_rolls_one_node_at_a_time() {
    let mut s = spec("agent", 0);
    s.mode = shoal_types::ServiceMode::Global {};
    let mut st = cluster(&[("n1", "node1"), ("n2", "node2"), ("n3", "node3")]);
    st.apply(Command::CreateService {
        service: service("s1", s),
    })
    .unwrap();
    pass(&mut st, 0);
    agents(&mut st, 0);
    assert_eq!(running(&st), (3, 0));
    update(&mut st, 10, command("sleep"));
    pass(&mut st, 10);
    assert_eq!(st.tasks.len(), 4, "one node first");
    let (most, _) = drive(&mut st, 20, 100, UpdateState::Completed);
    assert_eq!(most, 1);
    assert_eq!(running(&st), (3, 0));
}
