//! Update and rollback policies on a real cluster: two nodes with a real shoald each,
//! driven through the `shoal` binary. Task states are sampled through the API while
//! `service update` runs, as `service ps` would show them.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// Every task of `web`, as `GET /v1/tasks?service=web` returns them.
fn tasks(lab: &Lab) -> Vec<Value> {
    tasks_at(lab.socket(1).trim_start_matches("unix://"))
}

fn tasks_at(sock: &str) -> Vec<Value> {
    let out = Command::new("curl")
        .args([
            "-sf",
            "--unix-socket",
            sock,
            "http://shoal/v1/tasks?service=web",
        ])
        .output()
        .expect("run curl");
    assert!(out.status.success(), "GET /v1/tasks: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("tasks JSON")
}

fn state(t: &Value) -> &str {
    t["Status"]["State"].as_str().unwrap_or("")
}

fn terminal(t: &Value) -> bool {
    matches!(
        state(t),
        "complete" | "shutdown" | "failed" | "rejected" | "remove" | "orphaned"
    )
}

/// Slots whose tasks are not one running task meant to run (being replaced), and the
/// number of tasks not yet ended.
fn changing(tasks: &[Value]) -> (usize, usize) {
    let mut slots: BTreeMap<u64, Vec<&Value>> = BTreeMap::new();
    for t in tasks.iter().filter(|t| !terminal(t)) {
        slots
            .entry(t["Slot"].as_u64().unwrap())
            .or_default()
            .push(t);
    }
    let changing = slots
        .values()
        .filter(|ts| {
            ts.len() != 1 || state(ts[0]) != "running" || ts[0]["DesiredState"] != "running"
        })
        .count();
    (changing, slots.values().map(Vec::len).sum())
}

/// The commands of the tasks that run and are meant to.
fn running_commands(lab: &Lab) -> Vec<String> {
    let mut v: Vec<String> = tasks(lab)
        .iter()
        .filter(|t| state(t) == "running" && t["DesiredState"] == "running")
        .map(|t| {
            t["Spec"]["Command"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    v.sort();
    v
}

fn update_state(lab: &Lab) -> String {
    lab.ok(
        1,
        &[
            "service",
            "inspect",
            "--format",
            "{{.UpdateStatus.State}}",
            "web",
        ],
    )
    .trim()
    .to_string()
}

/// Runs `shoal ARGS` while a thread samples the tasks every 50 ms; returns the command's
/// output, the most slots seen changing at once and the most tasks seen not ended.
fn sampled(lab: &Lab, args: &[&str]) -> (std::process::Output, usize, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = Arc::clone(&stop);
        let sock = lab.socket(1).trim_start_matches("unix://").to_string();
        std::thread::spawn(move || {
            let (mut most, mut most_tasks, mut samples) = (0, 0, 0);
            while !stop.load(Ordering::Relaxed) {
                let (c, n) = changing(&tasks_at(&sock));
                most = most.max(c);
                most_tasks = most_tasks.max(n);
                samples += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            (most, most_tasks, samples)
        })
    };
    let out = lab.shoal(1, args);
    stop.store(true, Ordering::Relaxed);
    let (most, most_tasks, samples) = sampler.join().unwrap();
    assert!(samples >= 10, "only {samples} samples");
    (out, most, most_tasks)
}

fn ids_running(lab: &Lab) -> BTreeSet<String> {
    tasks(lab)
        .iter()
        .filter(|t| state(t) == "running" && t["DesiredState"] == "running")
        .map(|t| t["ID"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn rolling_updates_rollbacks_and_force() {
    let lab = Lab::up("roll", 2, 1);
    lab.ok(
        1,
        &[
            "service",
            "create",
            "--runtime",
            "host",
            "--name",
            "web",
            "--replicas",
            "4",
            "--restart-delay",
            "1s",
            "--update-monitor",
            "2s",
            "--rollback-monitor",
            "1s",
            "sleep",
            "100000",
        ],
    );
    assert_eq!(running_commands(&lab), vec!["sleep 100000"; 4]);

    // Start-first (shoal's default), two slots at a time.
    let (out, most, _) = sampled(
        &lab,
        &[
            "service",
            "update",
            "--update-parallelism",
            "2",
            "--args",
            "100001",
            "web",
        ],
    );
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("verify: Service converged"),
        "{}",
        text(&out.stdout)
    );
    assert!(most <= 2, "{most} slots changed at once");
    assert_eq!(update_state(&lab), "completed");
    assert_eq!(running_commands(&lab), vec!["sleep 100001"; 4]);
    // The first two new tasks were made in one pass: two slots went together.
    let mut made: Vec<u64> = tasks(&lab)
        .iter()
        .filter(|t| t["Spec"]["Command"][1] == "100001")
        .map(|t| t["CreatedAt"].as_u64().unwrap())
        .collect();
    made.sort();
    assert_eq!(made.len(), 4, "{made:?}");
    assert_eq!(made[0], made[1], "slots 1 and 2 together: {made:?}");

    // Stop-first: an old task stops before its successor exists, so never a fifth task.
    let (out, most, most_tasks) = sampled(
        &lab,
        &[
            "service",
            "update",
            "--update-order",
            "stop-first",
            "--args",
            "100002",
            "web",
        ],
    );
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(most <= 2, "{most} slots changed at once");
    assert!(most >= 1, "the sampler saw the update");
    assert!(
        most_tasks <= 4,
        "{most_tasks} tasks at once with stop-first"
    );
    assert_eq!(update_state(&lab), "completed");
    assert_eq!(running_commands(&lab), vec!["sleep 100002"; 4]);

    // A command that exits 1 at once: rolled back by itself, and the update says so.
    let out = lab.shoal(
        1,
        &[
            "service",
            "update",
            "--update-failure-action",
            "rollback",
            "--command",
            "false",
            "web",
        ],
    );
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success(),
        "the update must fail: {}",
        text(&out.stdout)
    );
    assert!(
        stderr.contains(
            "service rolled back: update rolled back due to failure or early termination of task "
        ),
        "{stderr}"
    );
    assert!(
        text(&out.stdout).contains("rollback: update rolled back"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(update_state(&lab), "rollback_completed");
    assert_eq!(running_commands(&lab), vec!["sleep 100002"; 4]);
    let spec = lab.ok(
        1,
        &[
            "service",
            "inspect",
            "--format",
            "{{.Spec.TaskTemplate.ContainerSpec.Command}}",
            "web",
        ],
    );
    assert_eq!(spec.trim(), "[sleep 100002]");
    // As Swarm, an automatic rollback leaves no previous spec to go back to.
    let err = lab.fails(1, &["service", "rollback", "web"]);
    assert!(
        err.contains("service web does not have a previous spec"),
        "{err}"
    );

    // `service rollback` after a good update restores the spec before it.
    lab.ok(1, &["service", "update", "--args", "100003", "web"]);
    assert_eq!(running_commands(&lab), vec!["sleep 100003"; 4]);
    let out = lab.ok(1, &["service", "rollback", "web"]);
    assert!(
        out.contains("rollback: manually requested rollback"),
        "{out}"
    );
    assert!(out.contains("rolling back update: "), "{out}");
    assert_eq!(update_state(&lab), "rollback_completed");
    assert_eq!(running_commands(&lab), vec!["sleep 100002"; 4]);
    let previous = lab.ok(
        1,
        &[
            "service",
            "inspect",
            "--format",
            "{{.PreviousSpec.TaskTemplate.ContainerSpec.Command}}",
            "web",
        ],
    );
    assert_eq!(previous.trim(), "[sleep 100003]");

    // --force replaces every task of an unchanged spec.
    let before = ids_running(&lab);
    assert_eq!(before.len(), 4);
    lab.ok(1, &["service", "update", "--force", "web"]);
    let after = ids_running(&lab);
    assert_eq!(after.len(), 4);
    assert!(before.is_disjoint(&after), "{before:?} {after:?}");
    assert_eq!(update_state(&lab), "completed");
    assert_eq!(running_commands(&lab), vec!["sleep 100002"; 4]);

    // Pause, then resume with another update, one slot at a time. The slot the update
    // reached may have given its old task up (a `false` that ran for a moment counts as
    // started, as in Swarm), and so may a second one if the old task's stop is reported
    // before the new one's failure; the other two keep theirs.
    let out = lab.shoal(
        1,
        &[
            "service",
            "update",
            "--update-failure-action",
            "pause",
            "--update-parallelism",
            "1",
            "--update-order",
            "start-first",
            "--command",
            "false",
            "web",
        ],
    );
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success(),
        "the update must fail: {}",
        text(&out.stdout)
    );
    assert!(
        stderr.contains(
            "service update paused: update paused due to failure or early termination of task "
        ),
        "{stderr}"
    );
    assert_eq!(update_state(&lab), "paused");
    let kept = running_commands(&lab)
        .iter()
        .filter(|c| *c == "sleep 100002")
        .count();
    assert!(kept >= 2, "{:?}", running_commands(&lab));
    lab.ok(
        1,
        &["service", "update", "--command", "sleep 100004", "web"],
    );
    assert_eq!(update_state(&lab), "completed");
    assert_eq!(running_commands(&lab), vec!["sleep 100004"; 4]);
    let err = lab.fails(
        1,
        &["service", "update", "--rollback", "--replicas", "3", "web"],
    );
    assert!(
        err.contains("other flags may not be combined with --rollback"),
        "{err}"
    );
}
