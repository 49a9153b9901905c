//! Roles change while nodes run (issue 12), through the real CLI on a lab: `node promote`
//! makes a worker a manager and `node demote` a worker again, with its tasks running
//! throughout (same processes); the last manager and a demotion that would lose the quorum
//! are refused; after a quorum loss, `init --force-new-cluster` on the survivor recovers
//! the state, takes changes again, and the old managers are refused.

mod common;

use std::time::Duration;

use common::*;

const SLOW: Duration = Duration::from_secs(60);

/// `node ls` on `node` as (hostname, manager status) rows.
fn managers(lab: &Lab, node: u32) -> Vec<(String, String)> {
    let out = lab.ok(
        node,
        &["node", "ls", "--format", "{{.Hostname}} {{.ManagerStatus}}"],
    );
    out.lines()
        .map(|l| {
            let (h, ms) = l.split_once(' ').unwrap_or((l, ""));
            (h.to_string(), ms.trim().to_string())
        })
        .collect()
}

/// Waits until `node ls` on node `on` shows `host` with manager status `want`.
fn wait_manager_status(lab: &Lab, on: u32, host: &str, want: &str) {
    wait_for(
        &format!("{host} with manager status {want:?} on node{on}"),
        SLOW,
        || {
            let rows = managers(lab, on);
            if rows.iter().any(|(h, ms)| h == host && ms == want) {
                Ok(())
            } else {
                Err(format!("{rows:?}"))
            }
        },
    );
}

/// The pid of each of `node`'s running tasks of `service`, by task id.
fn pids_on(lab: &Lab, service: &str, node: u32) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = lab
        .tasks_by_node(service)
        .into_iter()
        .filter(|(n, _)| *n == node)
        .map(|(_, id)| {
            let pid = lab.task_json(&id)["Status"]["PID"]
                .as_u64()
                .expect("a running task's PID");
            (id, pid)
        })
        .collect();
    v.sort();
    v
}

fn daemon_args(lab: &Lab, node: u32) -> Vec<String> {
    let pid = lab.daemon_pid(node).expect("the node's shoald");
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(text)
        .collect()
}

fn kill9(lab: &Lab, node: u32) {
    let pid = lab.daemon_pid(node).expect("the node's shoald");
    let st = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    wait_for("the daemon to be gone", SLOW, || {
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            Err("running".to_string())
        } else {
            Ok(())
        }
    });
}

#[test]
fn a_worker_promoted_and_demoted_keeps_its_tasks_running() {
    let lab = Lab::up("roles", 3, 1);
    lab.create("--name web --replicas 3 SHOAL demo client");
    lab.wait_running("web", 3);
    let before = pids_on(&lab, "web", 2);
    assert!(!before.is_empty(), "no web task on node2");

    // A worker's API is no manager's.
    let err = lab.fails(2, &["service", "ls"]);
    assert!(err.contains("this node is not a manager"), "{err}");

    let out = lab.ok(1, &["node", "promote", "node2"]);
    assert_eq!(out.trim(), "Node node2 promoted to a manager in the swarm.");
    wait_manager_status(&lab, 1, "node2", "Reachable");
    // node2 answers as a manager now, and its state is the cluster's.
    let ls = wait_for("node2's API to list services", SLOW, || {
        let out = lab.shoal(2, &["service", "ls", "--format", "{{.Name}}"]);
        if out.status.success() {
            Ok(text(&out.stdout))
        } else {
            Err(text(&out.stderr))
        }
    });
    assert_eq!(ls.trim(), "web");
    let out = lab.ok(1, &["node", "promote", "node2"]);
    assert_eq!(out.trim(), "Node node2 is already a manager.");
    // A change through the new manager commits.
    lab.ok(2, &["service", "scale", "web=4"]);
    lab.wait_running("web", 4);

    // The last manager is not demoted... (node1 with node2: two managers; demote node2,
    // then node1 would be the last.)
    let out = lab.ok(1, &["node", "demote", "node2"]);
    assert_eq!(out.trim(), "Manager node2 demoted in the swarm.");
    wait_manager_status(&lab, 1, "node2", "");
    wait_for("node2's API to refuse manager calls", SLOW, || {
        let out = lab.shoal(2, &["service", "ls"]);
        let err = text(&out.stderr);
        if !out.status.success() && err.contains("this node is not a manager") {
            Ok(())
        } else {
            Err(format!("{}{err}", text(&out.stdout)))
        }
    });
    let err = lab.fails(1, &["node", "demote", "node1"]);
    assert!(
        err.contains("attempting to demote the last manager of the swarm (node1)"),
        "{err}"
    );

    // Through both switches node2's tasks ran on: the same processes, still alive.
    let after = pids_on(&lab, "web", 2);
    for (id, pid) in &before {
        assert!(
            after.contains(&(id.clone(), *pid)),
            "task {id} (pid {pid}) on node2 was restarted or stopped: now {after:?}"
        );
        assert!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} is gone"
        );
    }

    // The leader itself is demoted: it takes itself out of the voters and steps down,
    // another manager leads, and its own tasks run on.
    lab.ok(1, &["node", "promote", "node2", "node3"]);
    wait_manager_status(&lab, 1, "node2", "Reachable");
    wait_manager_status(&lab, 1, "node3", "Reachable");
    let on_node1 = pids_on(&lab, "web", 1);
    assert!(!on_node1.is_empty(), "no web task on node1");
    let out = lab.ok(1, &["node", "demote", "node1"]);
    assert_eq!(out.trim(), "Manager node1 demoted in the swarm.");
    wait_for("a new leader without node1", SLOW, || {
        let rows = managers(&lab, 2);
        let leader = rows.iter().find(|(_, ms)| ms == "Leader").map(|(h, _)| h);
        let node1 = rows.iter().find(|(h, _)| h == "node1").map(|(_, ms)| ms);
        match (leader, node1) {
            (Some(l), Some(ms)) if l != "node1" && ms.is_empty() => Ok(()),
            _ => Err(format!("{rows:?}")),
        }
    });
    wait_for("node1's API to refuse manager calls", SLOW, || {
        let out = lab.shoal(1, &["service", "ls"]);
        let err = text(&out.stderr);
        if !out.status.success() && err.contains("this node is not a manager") {
            Ok(())
        } else {
            Err(format!("{}{err}", text(&out.stdout)))
        }
    });
    lab.ok(2, &["service", "scale", "web=5"]);
    let running = wait_for("5 web tasks seen from node2", SLOW, || {
        let out = lab.ok(
            2,
            &[
                "service",
                "ps",
                "--no-trunc",
                "--format",
                "{{.ID}} {{.CurrentState}}",
                "web",
            ],
        );
        let running: Vec<String> = out
            .lines()
            .filter(|l| l.contains(" Running"))
            .map(|l| l.split(' ').next().unwrap_or("").to_string())
            .collect();
        if running.len() == 5 {
            Ok(running)
        } else {
            Err(out)
        }
    });
    for (id, pid) in &on_node1 {
        assert!(
            running.contains(id),
            "node1's task {id} is not running: {running:?}"
        );
        assert!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "node1's task {id} (pid {pid}) is gone"
        );
    }

    // Managers node2 and node3 and node1 again, then node3 dies: demoting a live one would
    // leave 1 of 2 reachable.
    lab.ok(2, &["node", "promote", "node1"]);
    wait_manager_status(&lab, 2, "node1", "Reachable");
    kill9(&lab, 3);
    let leader = wait_for("node3 unreachable from the leader", SLOW, || {
        for on in [1, 2] {
            let rows = managers(&lab, on);
            let me = format!("node{on}");
            if rows.iter().any(|(h, ms)| *h == me && ms == "Leader")
                && rows
                    .iter()
                    .any(|(h, ms)| h == "node3" && ms == "Unreachable")
            {
                return Ok(on);
            }
        }
        Err("not yet".to_string())
    });
    let other = 3 - leader;
    let err = lab.fails(leader, &["node", "demote", &format!("node{other}")]);
    assert!(
        err.contains(
            "can't remove member from the raft: this would result in a loss of quorum (2 of 3 managers are reachable and 1 of 2 would be left"
        ),
        "{err}"
    );
    // The same asked on a follower is checked by the leader.
    let err = lab.fails(other, &["node", "demote", &format!("node{other}")]);
    assert!(
        err.contains("can't remove member from the raft: this would result in a loss of quorum"),
        "{err}"
    );
}

#[test]
fn force_new_cluster_on_the_survivor_recovers_a_lost_quorum() {
    let lab = Lab::up("fnc", 4, 3);
    lab.create("--name web --replicas 2 SHOAL demo client");
    lab.wait_running("web", 2);
    let node1_id = lab
        .ok(1, &["node", "inspect", "--format", "{{.ID}}", "node1"])
        .trim()
        .to_string();

    let node2_id = lab
        .ok(1, &["node", "inspect", "--format", "{{.ID}}", "node2"])
        .trim()
        .to_string();

    // Two of three managers are lost: no change commits.
    let node2_args = daemon_args(&lab, 2);
    kill9(&lab, 2);
    kill9(&lab, 3);
    wait_for("node1 to refuse changes", SLOW, || {
        let out = lab.shoal(1, &["service", "scale", "web=3"]);
        let err = text(&out.stderr);
        if !out.status.success()
            && (err.contains("quorum lost") || err.contains("no manager leads"))
        {
            Ok(())
        } else {
            Err(format!("{}{err}", text(&out.stdout)))
        }
    });

    // A worker cannot start one.
    let err = lab.fails(4, &["init", "--force-new-cluster"]);
    assert!(
        err.contains("this node is a worker: --force-new-cluster runs on a manager"),
        "{err}"
    );

    let res = lab.shoal(1, &["init", "--force-new-cluster"]);
    if !res.status.success() {
        let log = std::fs::read_to_string(lab.dir().join("node1/shoald.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(200)..].join("\n");
        panic!(
            "init --force-new-cluster failed: {}\nnode1's log ends:\n{tail}",
            text(&res.stderr)
        );
    }
    let out = text(&res.stdout);
    assert!(
        out.contains(&format!(
            "Swarm initialized: current node ({node1_id}) is now a manager."
        )),
        "{out}"
    );
    // The state is intact, node1 alone leads, the others are gone.
    let rows = managers(&lab, 1);
    let mut hosts: Vec<&str> = rows.iter().map(|(h, _)| h.as_str()).collect();
    hosts.sort();
    assert_eq!(hosts, ["node1", "node4"], "{rows:?}");
    assert!(
        rows.contains(&("node1".to_string(), "Leader".to_string())),
        "{rows:?}"
    );
    let ls = lab.ok(1, &["service", "ls", "--format", "{{.Name}}"]);
    assert_eq!(ls.trim(), "web");

    // It takes changes again, and the worker follows it: a new service runs.
    lab.create("--name after --replicas 2 --constraint node.role==worker SHOAL demo client");
    let placed = lab.wait_running("after", 2);
    assert!(placed.iter().all(|(n, _)| *n == 4), "{placed:?}");

    // An old manager that comes back with its data cannot lead (one of its old three) and
    // is refused by the new cluster; the new one keeps committing.
    let log = std::fs::File::create(lab.dir().join("node2/shoald-back.log")).unwrap();
    let mut back = std::process::Command::new(SHOAL)
        .args(["lab", "exec", "--name", &lab.name, "node2", "--"])
        .args(&node2_args)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    wait_for("node2's API to answer", SLOW, || {
        let out = lab.shoal(2, &["node", "ls"]);
        if out.status.success() {
            Ok(())
        } else {
            Err(text(&out.stderr))
        }
    });
    std::thread::sleep(Duration::from_secs(5));
    let err = lab.fails(2, &["service", "scale", "web=5"]);
    assert!(
        err.contains("no manager leads") || err.contains("quorum lost"),
        "{err}"
    );
    lab.ok(1, &["service", "scale", "after=3"]);
    lab.wait_running("after", 3);
    let rows = managers(&lab, 1);
    assert!(!rows.iter().any(|(h, _)| h == "node2"), "{rows:?}");
    let log = std::fs::read_to_string(lab.dir().join("node1/shoald.log")).unwrap_or_default();
    assert!(
        log.contains(&format!(
            "refused node {node2_id}: its node id is on the deny list"
        )),
        "node1 refused nothing from node2"
    );
    drop(lab);
    let _ = back.wait();
}

/// A worker that joined through node1 knows of no other manager until told: when node2 is
/// promoted and node1 then demoted, with nothing else changing in between, the worker must
/// still find the new leader, stay Ready and take new tasks (it used to be told the managers
/// only along with a change of its own tasks, so it kept calling node1 and went Down).
#[test]
fn workers_follow_the_leader_when_the_manager_they_joined_through_is_demoted() {
    let lab = Lab::up("follow", 3, 1);
    lab.create("--name web --replicas 3 SHOAL demo client");
    lab.wait_running("web", 3);
    lab.ok(1, &["node", "promote", "node2"]);
    wait_manager_status(&lab, 1, "node2", "Reachable");
    lab.ok(1, &["node", "demote", "node1"]);
    wait_for("node2 leading without node1", SLOW, || {
        let rows = managers(&lab, 2);
        let ok = rows.iter().any(|(h, ms)| h == "node2" && ms == "Leader")
            && rows.iter().any(|(h, ms)| h == "node1" && ms.is_empty());
        if ok { Ok(()) } else { Err(format!("{rows:?}")) }
    });
    // Longer than the heartbeat grace: a node whose agent lost its way would be Down by then.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < until {
        let out = lab.ok(2, &["node", "ls", "--format", "{{.Hostname}} {{.Status}}"]);
        let down: Vec<&str> = out.lines().filter(|l| !l.ends_with(" Ready")).collect();
        assert!(
            down.is_empty(),
            "nodes not Ready after the demotion: {down:?}\n{out}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The CLI waits until the 6 run; the spread shows every node took its share.
    lab.ok(2, &["service", "scale", "web=6"]);
    let ps = lab.ok(
        2,
        &[
            "service",
            "ps",
            "--format",
            "{{.CurrentState}} {{.Node}}",
            "web",
        ],
    );
    let running: Vec<&str> = ps.lines().filter(|l| l.starts_with("Running")).collect();
    assert_eq!(running.len(), 6, "{ps}");
    for node in 1..=3 {
        let node = format!("node{node}");
        assert!(
            running.iter().any(|l| l.ends_with(&node)),
            "no web task running on {node}:\n{ps}"
        );
    }
}
