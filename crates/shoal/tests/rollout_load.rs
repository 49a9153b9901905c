//! Rollouts under load (issue 11), on the lab of tests/common/rollout.rs: the load client
//! (tests/common/load.rs) sends sequential requests on every path at once, each recorded
//! with its time and error: through the VIP, to the dnsrr name (resolved before every request
//! or connection) and to node1's published ports (node1 runs no task: the mesh forwards to
//! another node), with a new connection per request and with kept connections, over TCP and
//! UDP. The test checks from the timestamps that every path's load ran through every event
//! (scale down and up, `update --force` start-first and stop-first by 2, an update whose
//! health check fails rolled back by itself; a node drain, on a lab of its own), then that
//! nothing failed and that connections kept through the scale-down ended only on their
//! task's SIGTERM.

mod common;

use std::time::Duration;

use common::load::{Load, Report};
use common::rollout::*;
use common::*;

/// One lab with its load at a time: two at once on the machine's cores would slow both
/// (the test runner runs a file's tests two at a time).
static ONE_LAB: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_lab() -> std::sync::MutexGuard<'static, ()> {
    ONE_LAB.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn scale_updates_and_rollback_under_load_lose_nothing() {
    let _one = one_lab();
    let s = setup("rload");
    let lab = &s.lab;
    // Connections kept from the start, a request every 100 ms on each: through the VIP, to
    // the dnsrr name and through the mesh, 8 of each.
    let kept = Load::start(s.kept_connections(), Duration::from_millis(100), MOST, MAX);
    let load = Load::start(s.every_path(), PACE, MOST, MAX);
    std::thread::sleep(Duration::from_secs(1));
    let mut events = Events::default();
    let before = running_short_ids(lab);
    events.run("scale down 4 -> 2", || {
        both(|svc| change(lab, &["service", "scale", &format!("{svc}=2")], svc, 2));
    });
    let after = running_short_ids(lab);
    let removed: Vec<String> = before.into_iter().filter(|t| !after.contains(t)).collect();
    events.run("scale up 2 -> 4", || {
        both(|svc| change(lab, &["service", "scale", &format!("{svc}=4")], svc, 4));
    });
    for order in ["start-first", "stop-first"] {
        events.run(&format!("update --force {order}, parallelism 2"), || {
            both(|svc| {
                let args = [
                    "service",
                    "update",
                    "--force",
                    "--update-parallelism",
                    "2",
                    "--update-order",
                    order,
                    svc,
                ];
                change(lab, &args, svc, 4);
            })
        });
    }
    events.run("update to a failing health check, rolled back", || {
        both(|svc| {
            let before = running_checks(lab, svc);
            let out = lab.shoal(
                1,
                &[
                    "service",
                    "update",
                    "--update-parallelism",
                    "2",
                    "--update-failure-action",
                    "rollback",
                    "--health-cmd",
                    "false",
                    "--health-interval",
                    "500ms",
                    "--health-retries",
                    "1",
                    svc,
                ],
            );
            let err = text(&out.stderr);
            assert!(
                !out.status.success()
                    && err.contains("service rolled back: update rolled back due to failure"),
                "{svc}: the update must roll back by itself: {}{err}",
                text(&out.stdout)
            );
            settle(lab, svc, 4);
            let state = lab.ok(
                1,
                &[
                    "service",
                    "inspect",
                    "--format",
                    "{{.UpdateStatus.State}}",
                    svc,
                ],
            );
            assert_eq!(state.trim(), "rollback_completed", "{svc}");
            assert_eq!(
                running_checks(lab, svc),
                before,
                "{svc}: the tasks run the old spec"
            );
        })
    });
    std::thread::sleep(Duration::from_secs(1));
    let report = load.stop();
    let kept = kept.stop();
    let (from, to) = (events.0[0].1, events.0[0].2);
    assert_kept_until_sigterm(lab, &kept, &removed, from, to);
    events.assert_nothing_failed(&report);
}

#[test]
fn a_node_drain_under_load_loses_nothing() {
    let _one = one_lab();
    let s = setup("rdrain");
    let lab = &s.lab;
    let load = Load::start(s.every_path(), PACE, MOST, MAX);
    std::thread::sleep(Duration::from_secs(1));
    let mut events = Events::default();
    // node2's tasks move to node3, each replacement ready before its task stops. (The
    // load comes from node1 only: node2's probe task goes too.)
    let on_node2 = |svc: &str| {
        lab.tasks_by_node(svc)
            .iter()
            .filter(|(n, _)| *n == 2)
            .count()
    };
    assert!(
        on_node2("web") > 0 && on_node2("webrr") > 0,
        "tasks on node2 to drain: web {:?}, webrr {:?}",
        lab.tasks_by_node("web"),
        lab.tasks_by_node("webrr")
    );
    events.run("node update --availability drain node2", || {
        lab.ok(1, &["node", "update", "--availability", "drain", "node2"]);
        both(|svc| {
            wait_for(
                &format!("{svc} off node2"),
                Duration::from_secs(90),
                || match on_node2(svc) {
                    0 => Ok(()),
                    n => Err(format!("{n} on node2")),
                },
            );
            settle(lab, svc, 4);
        })
    });
    std::thread::sleep(Duration::from_secs(1));
    events.assert_nothing_failed(&load.stop());
}

/// Connections opened before a scale-down [from, to]: each answered every request until its
/// task's own SIGTERM handling closed it (an orderly close, after the scale-down began, from a
/// task whose log says it stopped on SIGTERM); those to tasks that stayed were not closed by
/// it. Later events replace every task, so each connection ends closed.
fn assert_kept_until_sigterm(lab: &Lab, kept: &Report, removed: &[String], from: f64, to: f64) {
    let logs = format!(
        "{}{}",
        lab.ok(1, &["service", "logs", "--no-trunc", "web"]),
        lab.ok(1, &["service", "logs", "--no-trunc", "webrr"])
    );
    let mut cut = std::collections::BTreeSet::new();
    for run in &kept.paths {
        let failed = run.failures(0.0, f64::MAX);
        assert!(
            failed.is_empty(),
            "{}: a kept connection failed: {failed:?}; its last answers: {:?}",
            run.name,
            &run.requests[run.requests.len().saturating_sub(3)..]
        );
        let first = run.requests.first().expect("requests on the connection");
        assert!(
            first.start < from,
            "{}: opened after the scale-down",
            run.name
        );
        let task = first.by.clone().expect("an answer");
        let close = run
            .closes
            .first()
            .unwrap_or_else(|| panic!("{}: the connection to {task} was never closed", run.name));
        assert!(
            logs.lines()
                .any(|l| l.contains(&task) && l.contains("vote: stopped")),
            "{}: {task} did not stop on its SIGTERM:\n{logs}",
            run.name
        );
        if removed.contains(&task) {
            assert!(
                close.at > from && close.at < to + 1.0,
                "{}: {task} went in the scale-down ({from:.3}-{to:.3}) but its connection was closed at {:.3}",
                run.name,
                close.at
            );
            cut.insert(run.name.rsplit_once(' ').unwrap().0.to_string());
        } else {
            assert!(
                close.at > to,
                "{}: {task} stayed through the scale-down but its connection was closed at {:.3}",
                run.name,
                close.at
            );
        }
    }
    assert_eq!(
        cut.into_iter().collect::<Vec<_>>(),
        ["kept dnsrr", "kept mesh", "kept vip"],
        "paths with a kept connection to a task the scale-down stopped ({removed:?})"
    );
}
