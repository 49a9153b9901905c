use shoal_api::ServiceStatus;
use shoal_types::{Millis, Task, TaskStatus, fixtures};

use super::*;

fn view(replicas: u64) -> ServiceView {
    ServiceView {
        service: fixtures::service("s1", fixtures::spec("vote", replicas)),
        status: ServiceStatus {
            running_tasks: 0,
            desired_tasks: replicas,
            ..Default::default()
        },
    }
}

fn task(id: &str, slot: u64, state: TaskState, at: u64, err: &str) -> TaskView {
    let mut status = TaskStatus::new(state, Millis(at), "");
    status.err = err.into();
    TaskView {
        task: Task {
            id: id.into(),
            service_id: "s1".into(),
            service_name: "vote".into(),
            slot,
            node_id: Some("n1".into()),
            desired_state: TaskState::Running,
            status,
            spec_version: 1,
            networks: Vec::new(),
            ports: Vec::new(),
            restarts: 0,
            started_at: None,
            ready_at: None,
            spec: fixtures::spec("vote", 1).task_template.container_spec,
            created_at: Millis(at),
            updated_at: Millis(at),
        },
        node_hostname: "node1".into(),
    }
}

#[test]
fn counts_running_slots() {
    let tasks = [
        task("a00000000000", 1, TaskState::Running, 10, ""),
        task("b00000000000", 2, TaskState::Starting, 10, ""),
    ];
    let s = snapshot(&view(2), &tasks);
    assert_eq!(s.overall(), "overall progress: 1 out of 2 tasks");
    assert_eq!(
        s.lines.iter().map(Line::text).collect::<Vec<_>>(),
        ["1/2: running", "2/2: starting"]
    );
    assert!(!s.converged());
}

#[test]
fn a_preparing_task_shows_how_far_its_pull_is() {
    let mut pulling = task("f00000000000", 1, TaskState::Preparing, 10, "");
    pulling.task.status.message = "pulling image: 12.3MB of 35.1MB".into();
    let other = task("f10000000000", 2, TaskState::Preparing, 10, "");
    let s = snapshot(&view(2), &[pulling, other]);
    assert_eq!(
        s.lines.iter().map(Line::text).collect::<Vec<_>>(),
        [
            "1/2: preparing: pulling image: 12.3MB of 35.1MB",
            "2/2: preparing"
        ]
    );
}

#[test]
fn failed_task_error_shows_until_replaced() {
    let mut old = task(
        "c00000000000",
        1,
        TaskState::Failed,
        10,
        "task: non-zero exit (1)",
    );
    old.task.desired_state = TaskState::Shutdown;
    let tasks = [old, task("d00000000000", 1, TaskState::Starting, 20, "")];
    let s = snapshot(&view(1), &tasks);
    assert_eq!(s.lines[0].text(), "1/1: starting: task: non-zero exit (1)");
    assert_eq!(s.lines[0].task, "vote.1.c00000000000");
    let tasks = [
        tasks[0].clone(),
        task("d00000000000", 1, TaskState::Running, 20, ""),
    ];
    let s = snapshot(&view(1), &tasks);
    assert_eq!(s.lines[0].text(), "1/1: running");
    assert!(s.converged());
}

#[test]
fn tasks_of_an_old_spec_do_not_count() {
    let mut old = task("e00000000000", 1, TaskState::Running, 10, "");
    old.task.spec.command = vec!["old".into()];
    let s = snapshot(&view(1), &[old]);
    assert_eq!(s.running, 0);
    assert_eq!(s.lines[0].text(), "1/1: new");
}

#[test]
fn waits_for_the_endpoint_change_once_tasks_run() {
    let tasks = [task("a00000000000", 1, TaskState::Running, 10, "")];
    let mut v = view(1);
    assert!(
        snapshot(&v, &tasks).converged(),
        "no endpoint sync reported"
    );
    v.status.endpoint_nodes = 3;
    v.status.endpoint_nodes_synced = 2;
    let s = snapshot(&v, &tasks);
    assert!(s.tasks_converged() && !s.converged());
    assert_eq!(
        s.endpoint_wait().as_deref(),
        Some("verify: waiting for the endpoint change to reach every node (2/3)")
    );
    v.status.endpoint_nodes_synced = 3;
    let s = snapshot(&v, &tasks);
    assert!(s.converged());
    assert_eq!(s.endpoint_wait(), None);
    // While tasks still start, only the tasks are shown.
    v.status.endpoint_nodes_synced = 0;
    let starting = [task("a00000000000", 1, TaskState::Starting, 10, "")];
    let s = snapshot(&v, &starting);
    assert!(!s.converged());
    assert_eq!(s.endpoint_wait(), None);
}

#[test]
fn a_scale_down_waits_until_extra_slots_stop() {
    // Scaled from 2 to 1: slot 2 still meant to run until the manager acts.
    let tasks = [
        task("a00000000000", 1, TaskState::Running, 10, ""),
        task("b00000000000", 2, TaskState::Running, 10, ""),
    ];
    let s = snapshot(&view(1), &tasks);
    assert_eq!(s.excess, 1);
    assert!(!s.converged());
    let mut stopping = tasks[1].clone();
    stopping.task.desired_state = TaskState::Shutdown;
    let s = snapshot(&view(1), &[tasks[0].clone(), stopping]);
    assert!(s.converged());
}
