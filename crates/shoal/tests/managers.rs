//! Managers come and go (issue 12) on a 3-manager lab, through the real CLI: a manager that
//! leaves with --force and a dead one removed with `node rm --force` are taken out of the
//! Raft group, so the others keep a quorum; a live manager cannot be removed from outside;
//! with the quorum lost, changes are refused at once saying how many managers answer,
//! while reads still answer.

mod common;

use std::time::{Duration, Instant};

use common::*;

const SLOW: Duration = Duration::from_secs(40);

/// `node ls` on `node` as (hostname, status, manager status) rows.
fn nodes(lab: &Lab, node: u32) -> Vec<(String, String, String)> {
    let out = lab.ok(
        node,
        &[
            "node",
            "ls",
            "--format",
            "{{.Hostname}} {{.Status}} {{.ManagerStatus}}",
        ],
    );
    out.lines()
        .map(|l| {
            let mut f = l.split(' ');
            let mut next = || f.next().unwrap_or("").to_string();
            (next(), next(), next())
        })
        .collect()
}

/// Waits until `node ls` on node1 shows exactly `managers` (by hostname) as managers and no
/// row for `gone`.
fn wait_managers(lab: &Lab, managers: &[&str], gone: &str) {
    wait_for(
        &format!("managers {managers:?} and no {gone} in node ls"),
        SLOW,
        || {
            let rows = nodes(lab, 1);
            let mut m: Vec<&str> = rows
                .iter()
                .filter(|(_, _, ms)| !ms.is_empty())
                .map(|(h, _, _)| h.as_str())
                .collect();
            m.sort();
            if m == managers && !rows.iter().any(|(h, _, _)| h == gone) {
                Ok(())
            } else {
                Err(format!("{rows:?}"))
            }
        },
    );
}

fn kill9(lab: &Lab, node: u32) {
    let pid = lab.daemon_pid(node).expect("the node's shoald");
    let st = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn managers_leave_are_removed_and_a_lost_quorum_refuses_changes_at_once() {
    let lab = Lab::up("mgr", 3, 3);
    lab.create("--name web --replicas 2 SHOAL demo client");
    lab.wait_running("web", 2);

    // A manager that is up is not removed from outside.
    let err = lab.fails(1, &["node", "rm", "--force", "node3"]);
    assert!(
        err.contains(
            "node node3 is a manager: one that is up leaves with `shoal leave --force` run on it"
        ),
        "{err}"
    );

    // node3 leaves: it is out of the node list and of the Raft group, and the two managers
    // left still commit changes (with 3 voters and one gone they would too, but with node3
    // still a voter the next step would lose the quorum).
    lab.ok(3, &["leave", "--force"]);
    wait_managers(&lab, &["node1", "node2"], "node3");

    // It joins again as a manager (a new node id), then its daemon dies: `node rm
    // --force` takes the dead manager out, so node1 and node2 are a quorum of their own.
    let (token, m1) = lab.join_args("manager");
    lab.ok(3, &["join", "--token", &token, &m1]);
    wait_for("three managers again", SLOW, || {
        let rows = nodes(&lab, 1);
        let n = rows
            .iter()
            .filter(|(_, _, ms)| ms == "Leader" || ms == "Reachable")
            .count();
        if n == 3 {
            Ok(())
        } else {
            Err(format!("{rows:?}"))
        }
    });
    kill9(&lab, 3);
    wait_for("node3 down", SLOW, || {
        let rows = nodes(&lab, 1);
        if rows.iter().any(|(h, s, _)| h == "node3" && s == "Down") {
            Ok(())
        } else {
            Err(format!("{rows:?}"))
        }
    });
    lab.ok(1, &["node", "rm", "--force", "node3"]);
    wait_managers(&lab, &["node1", "node2"], "node3");
    lab.ok(1, &["service", "scale", "web=3"]);

    // node2 dies too: one manager of two answers. Once the survivor sees it (as the leader,
    // node2 Unreachable; as a follower, no leader), a change is refused at once with the
    // count, and reads still answer.
    kill9(&lab, 2);
    wait_for("node1 to notice node2 is gone", SLOW, || {
        let rows = nodes(&lab, 1);
        if rows
            .iter()
            .any(|(h, _, ms)| h == "node2" && ms == "Unreachable")
        {
            Ok(())
        } else {
            Err(format!("{rows:?}"))
        }
    });
    let started = Instant::now();
    let err = lab.fails(1, &["service", "scale", "web=4"]);
    let took = started.elapsed();
    assert!(
        err.contains("quorum lost: 1 of 2 managers are reachable and a change needs 2")
            || err.contains(
                "no manager leads: this manager hears from 1 of 2 managers and a change needs 2"
            ),
        "{err}"
    );
    eprintln!("a change with the quorum lost was refused after {took:?}");
    let ls = lab.ok(1, &["service", "ls", "--format", "{{.Name}} {{.Replicas}}"]);
    assert!(ls.contains("web "), "{ls}");
}
