//! The dispatcher's decisions over time, with a fake clock: heartbeat expiry and its grace,
//! leadership changes, drains and endpoint convergence.

use super::*;
use crate::allocator::allocate;
use crate::clock::{Clock, FakeClock};
use shoal_types::fixtures::*;
use shoal_types::{Millis, TaskState, TaskStatus};

/// The fixtures' cluster settings: a heartbeat a second, three missed ones.
const GRACE: u64 = 3_000;
const START: Millis = Millis(1_700_000_000_000);

fn apply(st: &mut Arc<ClusterState>, cmd: Command) {
    Arc::make_mut(st).apply(cmd).unwrap();
}

fn set_node(st: &mut Arc<ClusterState>, id: &str, state: NodeState) {
    apply(
        st,
        Command::SetNodeState {
            id: id.into(),
            state,
            message: String::new(),
            at: START,
        },
    );
}

/// Three nodes; the leader runs on n1.
fn three() -> (Arc<ClusterState>, Dispatcher, FakeClock) {
    let st = cluster(&[("n1", "node1"), ("n2", "node2"), ("n3", "node3")]);
    (Arc::new(st), Dispatcher::new("n1"), FakeClock::at(START))
}

fn down(id: &str, at: Millis) -> Option<Command> {
    Some(Command::SetNodeState {
        id: id.into(),
        state: NodeState::Down,
        message: "heartbeat failure".into(),
        at,
    })
}

#[test]
fn a_silent_node_goes_down_after_the_grace_and_comes_back_on_its_next_heartbeat() {
    let (mut st, mut d, clock) = three();
    assert_eq!(d.on_state(&st, clock.now()), None);
    assert_eq!(
        d.on_heartbeat("n2", &st, clock.now()),
        None,
        "Ready already"
    );
    assert_eq!(d.on_heartbeat("n3", &st, clock.now()), None);
    clock.advance(2_000);
    d.on_heartbeat("n2", &st, clock.now());
    clock.advance(1_000);
    // n3 has been silent for exactly the grace: not yet.
    assert_eq!(d.on_state(&st, clock.now()), None);
    clock.advance(1);
    assert_eq!(d.on_state(&st, clock.now()), down("n3", clock.now().wall));
    set_node(&mut st, "n3", NodeState::Down);
    // Down: not reported again, however long it stays silent.
    clock.advance(60_000);
    d.on_heartbeat("n2", &st, clock.now());
    assert_eq!(d.on_state(&st, clock.now()), None);
    // It speaks again: Ready.
    assert_eq!(
        d.on_heartbeat("n3", &st, clock.now()),
        Some(Command::SetNodeState {
            id: "n3".into(),
            state: NodeState::Ready,
            message: String::new(),
            at: clock.now().wall,
        })
    );
}

#[test]
fn the_leader_never_marks_its_own_node_down() {
    let (st, mut d, clock) = three();
    d.on_state(&st, clock.now());
    // n1's agent talks to this very process: a minute of its silence says the leader is
    // starved, not that the node is gone.
    for _ in 0..60 {
        clock.advance(1_000);
        d.on_heartbeat("n2", &st, clock.now());
        d.on_heartbeat("n3", &st, clock.now());
        assert_eq!(d.on_state(&st, clock.now()), None);
    }
}

#[test]
fn nodes_go_down_one_per_grace_period() {
    let (mut st, mut d, clock) = three();
    d.on_state(&st, clock.now());
    d.on_heartbeat("n2", &st, clock.now());
    clock.advance(1_000);
    d.on_heartbeat("n3", &st, clock.now());
    // Both silent past the grace: the longer silent goes first, the other waits a grace
    // period from then, so a busy cluster cannot cascade into rescheduling everything.
    clock.advance(4_000);
    assert_eq!(d.on_state(&st, clock.now()), down("n2", clock.now().wall));
    set_node(&mut st, "n2", NodeState::Down);
    clock.advance(GRACE);
    assert_eq!(d.on_state(&st, clock.now()), None);
    clock.advance(1);
    assert_eq!(d.on_state(&st, clock.now()), down("n3", clock.now().wall));
}

#[test]
fn a_new_leader_gives_every_node_a_fresh_grace_and_more_to_find_it() {
    let (st, mut d, clock) = three();
    d.on_state(&st, clock.now());
    d.on_heartbeat("n2", &st, clock.now());
    d.on_heartbeat("n3", &st, clock.now());
    // Another manager leads for a minute; nothing is heard here meanwhile.
    d.on_follower();
    clock.advance(60_000);
    // Leader again: the minute of silence is not held against anyone, and a node not yet
    // heard from has twice the grace (its agent first has to notice the old leader went).
    assert_eq!(d.on_state(&st, clock.now()), None);
    d.on_heartbeat("n2", &st, clock.now());
    clock.advance(GRACE + 1);
    d.on_heartbeat("n2", &st, clock.now());
    assert_eq!(d.on_state(&st, clock.now()), None, "n3 has twice the grace");
    clock.advance(GRACE);
    assert_eq!(d.on_state(&st, clock.now()), down("n3", clock.now().wall));
}

fn ready(id: &str, at: Millis) -> Option<Command> {
    Some(Command::SetNodeState {
        id: id.into(),
        state: NodeState::Ready,
        message: String::new(),
        at,
    })
}

#[test]
fn a_node_that_is_not_ready_gets_one_ready_proposal_in_flight_not_one_per_beat() {
    let (mut st, mut d, clock) = three();
    d.on_state(&st, clock.now());
    set_node(&mut st, "n2", NodeState::Down);
    // It beats again: one proposal, then none while it is in flight, beat after beat.
    let first = clock.now();
    assert_eq!(d.on_heartbeat("n2", &st, first), ready("n2", first.wall));
    for _ in 0..10 {
        clock.advance(1_000);
        assert_eq!(d.on_heartbeat("n2", &st, clock.now()), None);
        d.on_heartbeat("n3", &st, clock.now());
        assert_eq!(d.on_state(&st, clock.now()), None);
    }
    // Another node's proposal is its own.
    set_node(&mut st, "n3", NodeState::Down);
    assert_eq!(
        d.on_heartbeat("n3", &st, clock.now()),
        ready("n3", clock.now().wall)
    );
    // Committed: the state shows n2 Ready, and nothing more is asked.
    set_node(&mut st, "n2", NodeState::Ready);
    d.on_state(&st, clock.now());
    d.on_mark_ready_ended("n2", first);
    clock.advance(1_000);
    assert_eq!(d.on_heartbeat("n2", &st, clock.now()), None);
    // Down again later: its next beat asks again at once.
    set_node(&mut st, "n2", NodeState::Down);
    clock.advance(1_000);
    assert_eq!(
        d.on_heartbeat("n2", &st, clock.now()),
        ready("n2", clock.now().wall)
    );
}

#[test]
fn a_ready_proposal_that_failed_or_got_no_answer_is_asked_again() {
    let (mut st, mut d, clock) = three();
    d.on_state(&st, clock.now());
    set_node(&mut st, "n2", NodeState::Down);
    let first = clock.now();
    assert_eq!(d.on_heartbeat("n2", &st, first), ready("n2", first.wall));
    // It failed (no quorum, say): the next beat asks again.
    clock.advance(1_000);
    d.on_mark_ready_ended("n2", first);
    let second = clock.now();
    assert_eq!(d.on_heartbeat("n2", &st, second), ready("n2", second.wall));
    // The end of an older proposal does not free the newer one still in flight.
    d.on_mark_ready_ended("n2", first);
    clock.advance(1_000);
    assert_eq!(d.on_heartbeat("n2", &st, clock.now()), None);
    // No end reported for the retry period: asked again, once.
    clock.advance(MARK_READY_RETRY_MS - 1_000 - 1);
    assert_eq!(d.on_heartbeat("n2", &st, clock.now()), None);
    clock.advance(1);
    assert_eq!(
        d.on_heartbeat("n2", &st, clock.now()),
        ready("n2", clock.now().wall)
    );
    assert_eq!(d.on_heartbeat("n2", &st, clock.now()), None);
}

#[test]
fn a_ready_proposal_of_a_past_leadership_does_not_hold_back_the_next() {
    let (mut st, mut d, clock) = three();
    d.on_state(&st, clock.now());
    set_node(&mut st, "n2", NodeState::Down);
    assert_eq!(
        d.on_heartbeat("n2", &st, clock.now()),
        ready("n2", clock.now().wall)
    );
    // Another manager leads for a while, then this one again: what it proposed before may
    // have been lost with its term, so the node's next beat asks afresh.
    d.on_follower();
    clock.advance(5_000);
    d.on_state(&st, clock.now());
    assert_eq!(
        d.on_heartbeat("n2", &st, clock.now()),
        ready("n2", clock.now().wall)
    );
}

/// A service `s1` on overlay `net1` with one running task, `ta`, on n2.
fn with_running_task(st: &mut Arc<ClusterState>) {
    apply(
        st,
        Command::CreateNetwork {
            network: network("net1", "overlay1", "10.0.0.0/24", 4096),
        },
    );
    apply(
        st,
        Command::CreateService {
            service: service("s1", spec_on("vote", 1, &["net1"])),
        },
    );
    apply(
        st,
        Command::CreateTasks {
            tasks: vec![task("ta", "s1", "vote")],
        },
    );
    for c in allocate(st, START) {
        apply(st, c);
    }
    apply(
        st,
        Command::AssignTasks {
            assignments: vec![("ta".into(), "n2".into())],
            at: START,
        },
    );
    let mut status = TaskStatus::new(TaskState::Running, START, "");
    status.ready = true;
    apply(
        st,
        Command::UpdateTaskStatus {
            id: "ta".into(),
            node_id: "n2".into(),
            status,
        },
    );
}

/// Every node's session sends `st`'s view and its agent acks it.
fn all_synced(d: &mut Dispatcher, st: &Arc<ClusterState>, clock: &FakeClock) {
    d.table(st, clock.now());
    for n in ["n1", "n2", "n3"] {
        d.on_view(n, ViewProgress::Sent(st.version), st, clock.now());
        assert_eq!(d.on_ack(n, st.version, "", st, clock.now()), None);
    }
    // The first table's arrival is not what the tests measure.
    d.reset_stats();
}

fn stop_ta(st: &mut Arc<ClusterState>, clock: &FakeClock) -> Task {
    apply(
        st,
        Command::SetDesiredState {
            tasks: vec!["ta".into()],
            state: TaskState::Shutdown,
            at: clock.now().wall,
        },
    );
    (*st.tasks["ta"]).clone()
}

#[test]
fn a_drain_holds_the_task_until_every_ready_node_has_acked_its_removal() {
    let (mut st, mut d, clock) = three();
    with_running_task(&mut st);
    all_synced(&mut d, &st, &clock);
    clock.advance(100);
    let ta = stop_ta(&mut st, &clock);
    assert!(may_drain(&ta));
    d.table(&st, clock.now());
    assert_eq!(
        d.drain(&st, [&ta], clock.now()),
        ["ta"],
        "nobody has it yet"
    );
    for n in ["n1", "n2", "n3"] {
        d.on_view(n, ViewProgress::Sent(st.version), &st, clock.now());
    }
    clock.advance(50);
    d.on_ack("n1", st.version, "", &st, clock.now());
    d.on_ack("n2", st.version, "", &st, clock.now());
    assert_eq!(d.drain(&st, [&ta], clock.now()), ["ta"], "n3 has not acked");
    // A node that is not Ready is not waited for.
    let mut without_n3 = st.clone();
    set_node(&mut without_n3, "n3", NodeState::Down);
    assert!(d.drain(&without_n3, [&ta], clock.now()).is_empty());
    clock.advance(50);
    d.on_ack("n3", st.version, "", &st, clock.now());
    assert!(d.drain(&st, [&ta], clock.now()).is_empty());
    assert_eq!(
        d.stats(),
        ConvergenceStats {
            count: 1,
            p50_ms: 100,
            p99_ms: 100,
            max_ms: 100
        },
        "the change took 100 ms to reach the last node"
    );
}

#[test]
fn a_drain_ends_at_its_limit_even_if_a_node_never_acks() {
    let (mut st, mut d, clock) = three();
    with_running_task(&mut st);
    all_synced(&mut d, &st, &clock);
    let ta = stop_ta(&mut st, &clock);
    d.table(&st, clock.now());
    clock.advance(DRAIN_LIMIT_MS - 1);
    assert_eq!(d.drain(&st, [&ta], clock.now()), ["ta"]);
    clock.advance(1);
    assert!(d.drain(&st, [&ta], clock.now()).is_empty());
}

#[test]
fn a_failed_apply_is_not_converged_is_reported_and_its_retry_settles_it() {
    let (mut st, mut d, clock) = three();
    with_running_task(&mut st);
    all_synced(&mut d, &st, &clock);
    let ta = stop_ta(&mut st, &clock);
    d.table(&st, clock.now());
    let v = st.version;
    for n in ["n1", "n2", "n3"] {
        d.on_view(n, ViewProgress::Sent(v), &st, clock.now());
    }
    d.on_ack("n1", v, "", &st, clock.now());
    d.on_ack("n2", v, "", &st, clock.now());
    clock.advance(200);
    // n3's agent could not apply the table: not an ack, and its status says why.
    let report = d.on_ack(
        "n3",
        v,
        "failed to set up overlay network overlay1",
        &st,
        clock.now(),
    );
    let said = "endpoint table not applied: failed to set up overlay network overlay1";
    assert_eq!(
        report,
        Some(Command::SetNodeState {
            id: "n3".into(),
            state: NodeState::Ready,
            message: said.into(),
            at: clock.now().wall,
        })
    );
    apply(&mut st, report.unwrap());
    assert_eq!(d.services_progress(&st, ["s1"]), [(2, 3)]);
    assert_eq!(d.stats().count, 0, "not settled");
    assert_eq!(d.drain(&st, [&ta], clock.now()), ["ta"]);
    // A later state that leaves n3's view alone does not hide the failed one.
    d.table(&st, clock.now());
    d.on_view("n3", ViewProgress::Unchanged(st.version), &st, clock.now());
    assert_eq!(d.services_progress(&st, ["s1"]), [(2, 3)]);
    // The same failure again: the status already says it.
    assert_eq!(
        d.on_ack(
            "n3",
            v,
            "failed to set up overlay network overlay1",
            &st,
            clock.now()
        ),
        None
    );
    // The agent's retry applies it: converged at once; the status says it failed until
    // the hold has passed since the failure.
    clock.advance(2_000);
    assert_eq!(d.on_ack("n3", v, "", &st, clock.now()), None);
    assert_eq!(d.services_progress(&st, ["s1"]), [(3, 3)]);
    assert!(d.drain(&st, [&ta], clock.now()).is_empty());
    assert_eq!(d.stats().max_ms, 2_200);
    assert!(d.apply_failures_cleared(&st, clock.now()).is_empty());
    clock.advance(APPLY_FAILED_HOLD_MS - 2_000 - 1);
    assert!(d.apply_failures_cleared(&st, clock.now()).is_empty());
    clock.advance(1);
    assert_eq!(
        d.apply_failures_cleared(&st, clock.now()),
        [Command::SetNodeState {
            id: "n3".into(),
            state: NodeState::Ready,
            message: String::new(),
            at: clock.now().wall,
        }]
    );
    assert!(
        d.apply_failures_cleared(&st, clock.now()).is_empty(),
        "once"
    );
}

#[test]
fn a_failure_that_recurs_between_applies_stays_on_the_status() {
    let (mut st, mut d, clock) = three();
    let v = st.version;
    let error = "failed to set up overlay network overlay1";
    let said = format!("{APPLY_FAILED}{error}");
    // A task restarts into the network every 5 s; between, the node's table applies.
    for round in 0..4 {
        let report = d.on_ack("n3", v, error, &st, clock.now());
        if round == 0 {
            apply(&mut st, report.expect("the first failure is reported"));
        } else {
            assert_eq!(report, None, "round {round}: the status already says it");
        }
        clock.advance(20);
        assert_eq!(d.on_ack("n3", v, "", &st, clock.now()), None);
        clock.advance(4_980);
        assert!(d.apply_failures_cleared(&st, clock.now()).is_empty());
        assert_eq!(st.nodes["n3"].status.message, said);
    }
    // It stops failing: cleared once the hold has passed since the last failure.
    clock.advance(APPLY_FAILED_HOLD_MS - 5_000);
    assert_eq!(d.apply_failures_cleared(&st, clock.now()).len(), 1);
    // Still failing when the hold runs out (no apply since): nothing cleared.
    d.on_ack("n3", v, error, &st, clock.now());
    clock.advance(APPLY_FAILED_HOLD_MS * 2);
    assert!(d.apply_failures_cleared(&st, clock.now()).is_empty());
    // An apply after the hold clears at once.
    assert!(d.on_ack("n3", v, "", &st, clock.now()).is_some());
}

#[test]
fn a_status_message_not_of_the_dispatcher_is_left_alone() {
    let (mut st, mut d, clock) = three();
    apply(
        &mut st,
        Command::SetNodeState {
            id: "n2".into(),
            state: NodeState::Ready,
            message: "drained by the operator".into(),
            at: START,
        },
    );
    assert_eq!(d.on_ack("n2", st.version, "", &st, clock.now()), None);
}

#[test]
fn reading_progress_records_nothing_and_never_reads_a_fresh_change_as_synced() {
    let (mut st, mut d, clock) = three();
    with_running_task(&mut st);
    all_synced(&mut d, &st, &clock);
    assert_eq!(d.services_progress(&st, ["s1"]), [(3, 3)]);
    stop_ta(&mut st, &clock);
    // No session has reached this version yet: the read sees the change without
    // recording it.
    assert_eq!(d.services_progress(&st, ["s1", "other"]), [(0, 3), (3, 3)]);
    assert_eq!(d.services_progress(&st, ["s1"]), [(0, 3)]);
    assert_eq!(d.stats().count, 0);
    // The sessions record it when they reach it, with the time they did.
    d.table(&st, clock.now());
    clock.advance(30);
    for n in ["n1", "n2", "n3"] {
        d.on_view(n, ViewProgress::Sent(st.version), &st, clock.now());
        d.on_ack(n, st.version, "", &st, clock.now());
    }
    assert_eq!(d.services_progress(&st, ["s1"]), [(3, 3)]);
    assert_eq!(d.stats().p50_ms, 30);
}

#[test]
fn a_session_that_ends_starts_its_node_from_nothing() {
    let (mut st, mut d, clock) = three();
    with_running_task(&mut st);
    all_synced(&mut d, &st, &clock);
    d.on_disconnect("n3", &st, clock.now());
    assert_eq!(d.services_progress(&st, ["s1"]), [(2, 3)]);
}

/// A node newly taking part in a network gets the network's entries without the table
/// changing (its task is not running yet); if it cannot apply them, the network's services
/// do not read synced on it.
#[test]
fn a_node_that_fails_to_apply_counts_as_synced_for_no_service() {
    let (mut st, mut d, clock) = three();
    with_running_task(&mut st);
    all_synced(&mut d, &st, &clock);
    let mut tb = task("tb", "s1", "vote");
    tb.slot = 2;
    apply(&mut st, Command::CreateTasks { tasks: vec![tb] });
    for c in allocate(&st, START) {
        apply(&mut st, c);
    }
    apply(
        &mut st,
        Command::AssignTasks {
            assignments: vec![("tb".into(), "n3".into())],
            at: START,
        },
    );
    let table = d.table(&st, clock.now());
    assert!(
        Arc::ptr_eq(&table, &d.table(&st, clock.now())),
        "the table is as it was"
    );
    d.on_view("n1", ViewProgress::Unchanged(st.version), &st, clock.now());
    d.on_view("n2", ViewProgress::Unchanged(st.version), &st, clock.now());
    d.on_view("n3", ViewProgress::Sent(st.version), &st, clock.now());
    d.on_ack(
        "n3",
        st.version,
        "failed to set up overlay network overlay1",
        &st,
        clock.now(),
    );
    assert_eq!(d.services_progress(&st, ["s1"]), [(2, 3)]);
    d.on_ack("n3", st.version, "", &st, clock.now());
    assert_eq!(d.services_progress(&st, ["s1"]), [(3, 3)]);
}
