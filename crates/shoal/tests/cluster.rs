//! The cluster core on a 3-node lab, through the real `shoal` CLI: init/join, node ls,
//! services spread over nodes, scaling, restarts, exec, logs, node failure, drain, a manager
//! restart, and the errors bad input gets.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;

const SLOW: Duration = Duration::from_secs(30);

#[test]
fn init_join_node_ls_and_bad_input() {
    let lab = Lab::up("nodes", 3, 1);
    let out = lab.ok(1, &["node", "ls"]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("ID"), "{out}");
    assert!(
        lines[0].contains("HOSTNAME") && lines[0].contains("MANAGER STATUS"),
        "{out}"
    );
    for host in ["node1", "node2", "node3"] {
        let line = lines
            .iter()
            .find(|l| l.contains(host))
            .unwrap_or_else(|| panic!("{host} missing:\n{out}"));
        assert!(line.contains("Ready") && line.contains("Active"), "{line}");
    }
    let node1 = lines.iter().find(|l| l.contains("node1")).unwrap();
    assert!(
        node1.contains("Leader") && node1.contains(" *"),
        "node1 is the leader and this node: {node1}"
    );

    let addr = lab.ok(
        1,
        &["node", "inspect", "--format", "{{.Status.Addr}}", "node2"],
    );
    assert!(addr.trim().ends_with(".2"), "node2's address: {addr}");

    let err = lab.fails(2, &["service", "ls"]);
    assert!(
        err.contains("this node is not a manager; run it on a manager"),
        "{err}"
    );
    let err = lab.fails(1, &["node", "inspect", "nosuchnode"]);
    assert!(err.contains("no such node"), "{err}");
    let err = lab.fails(2, &["join", "--token", "SWMTKN-1-bogus", "172.16.0.1:2377"]);
    assert!(
        err.contains("invalid join token: it has 3 parts separated by '-', not 4"),
        "{err}"
    );
    let err = lab.fails(
        1,
        &[
            "service",
            "create",
            "--runtime",
            "host",
            "--mode",
            "global",
            "--replicas",
            "2",
            "sleep",
            "1",
        ],
    );
    assert!(
        err.contains("replicas can only be used with replicated mode"),
        "{err}"
    );
    // A count that would make more tasks than the control plane is sized for.
    let err = lab.fails(
        1,
        &[
            "service",
            "create",
            "--runtime",
            "host",
            "--replicas",
            "200000",
            "sleep",
            "1",
        ],
    );
    assert!(
        err.contains(
            "invalid replicas value 200000: a service runs at most 100000 replicas; split the \
             work over several services"
        ),
        "{err}"
    );
    let out = lab.shoal(1, &["service", "ls", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert!(
        text(&out.stderr).contains("unknown flag: --no-such-flag\nSee 'shoal service ls --help'."),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn services_spread_scale_restart_exec_logs() {
    let lab = Lab::up("svc", 3, 1);
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
            "3",
            "--restart-delay",
            "1s",
            "sleep",
            "100000",
        ],
    );
    let tasks = wait_for("3 running web tasks", SLOW, || {
        let t = lab.running_tasks("web");
        if t.len() == 3 {
            Ok(t)
        } else {
            Err(format!("{t:?}"))
        }
    });
    let nodes: BTreeSet<&str> = tasks.iter().map(|t| t.split(' ').next().unwrap()).collect();
    assert_eq!(
        nodes.len(),
        3,
        "replicas spread over the three nodes: {tasks:?}"
    );
    let ls = lab.ok(1, &["service", "ls"]);
    assert!(
        ls.lines().any(|l| l.contains("web") && l.contains("3/3")),
        "{ls}"
    );

    let err = lab.fails(
        1,
        &[
            "service",
            "create",
            "--runtime",
            "host",
            "--name",
            "web",
            "sleep",
            "1",
        ],
    );
    assert!(err.contains("already in use"), "{err}");

    lab.ok(1, &["service", "scale", "web=5"]);
    wait_for("5 running", SLOW, || match lab.running_tasks("web").len() {
        5 => Ok(()),
        n => Err(n.to_string()),
    });
    lab.ok(1, &["service", "scale", "web=2"]);
    let tasks = wait_for("2 running", SLOW, || {
        let t = lab.running_tasks("web");
        if t.len() == 2 {
            Ok(t)
        } else {
            Err(format!("{t:?}"))
        }
    });

    // exec runs inside the task: its hostname is the task's short id.
    let (node, id) = tasks[0].split_once(' ').unwrap();
    let n: u32 = node.trim_start_matches("node").parse().unwrap();
    let host = lab.ok(n, &["exec", id, "--", "hostname"]);
    assert_eq!(host.trim(), &id[..12]);

    // A killed task process is replaced by a new task.
    let pid = lab.task_json(id)["Status"]["PID"]
        .as_u64()
        .expect("a running task has a PID")
        .to_string();
    std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap();
    wait_for("a replacement for the killed task", SLOW, || {
        let t = lab.running_tasks("web");
        if t.len() == 2 && !t.iter().any(|t| t.ends_with(id)) {
            Ok(())
        } else {
            Err(format!("{t:?}"))
        }
    });
    let ps = lab.ok(1, &["service", "ps", "web"]);
    assert!(
        ps.contains("Failed"),
        "the killed task shows as failed:\n{ps}"
    );

    lab.ok(
        1,
        &[
            "service",
            "create",
            "--runtime",
            "host",
            "--name",
            "hello",
            "--restart-condition",
            "none",
            "-d",
            "sh",
            "-c",
            "echo hello from $(hostname)",
        ],
    );
    let logs = wait_for("hello's log line", SLOW, || {
        let l = lab.ok(1, &["service", "logs", "hello"]);
        if l.contains("hello from") {
            Ok(l)
        } else {
            Err(l)
        }
    });
    assert!(
        logs.contains("hello.1."),
        "lines are prefixed with the task name: {logs}"
    );

    // A host task's log is bounded: 5.1 MB written, the files on disk stay near 2 MiB each
    // (checked every 2 s) and the newest lines are kept.
    lab.ok(
        1,
        &[
            "service",
            "create",
            "--runtime",
            "host",
            "--name",
            "chatty",
            "--constraint",
            "node.hostname==node1",
            "-d",
            "sh",
            "-c",
            "yes 0123456789abcdef | head -c 5100000; echo END; exec sleep 1000",
        ],
    );
    let chatty = lab.wait_running("chatty", 1)[0].1.clone();
    let run_dir = lab.dir().join("node1/data/tasks").join(&chatty);
    let sizes = wait_for("chatty's log to be rotated", SLOW, || {
        let size = |f: &str| std::fs::metadata(run_dir.join(f)).map_or(0, |m| m.len());
        match (size("task.log"), size("task.log.1")) {
            (now, old) if old > 0 && now < 1 << 20 => Ok((now, old)),
            s => Err(format!("task.log, task.log.1: {s:?}")),
        }
    });
    assert!(sizes.1 <= 2 << 20, "task.log.1 is {} bytes", sizes.1);
    let tail = lab.ok(1, &["service", "logs", "--tail", "2", "chatty"]);
    let lines: Vec<&str> = tail.lines().collect();
    assert!(
        lines.len() == 2 && lines[0].ends_with("| 0123456789abcdef") && lines[1].ends_with("| END"),
        "{lines:?}"
    );
    // At most 2 MiB of the task's lines in one answer (each shown after its task's prefix).
    let all = lab.ok(1, &["service", "logs", "chatty"]);
    let bytes: usize = all
        .lines()
        .map(|l| l.split_once("| ").map_or(l, |(_, line)| line).len() + 1)
        .sum();
    assert!(
        bytes <= 2 << 20 && bytes > 1 << 20,
        "{bytes} bytes in {} lines kept",
        all.lines().count()
    );

    lab.ok(1, &["service", "rm", "web", "hello", "chatty"]);
    wait_for("no task processes left", SLOW, || {
        let out = lab.ok(1, &["service", "ls", "-q"]);
        if out.trim().is_empty() {
            Ok(())
        } else {
            Err(out)
        }
    });
}

#[test]
fn drain_node_failure_and_manager_restart() {
    let lab = Lab::up("fail", 3, 1);
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
            "3",
            "-d",
            "sleep",
            "100000",
        ],
    );
    wait_for("3 running", SLOW, || match lab.running_tasks("web").len() {
        3 => Ok(()),
        n => Err(n.to_string()),
    });

    lab.ok(1, &["node", "update", "--availability", "drain", "node2"]);
    wait_for("web moved off the drained node2", SLOW, || {
        let t = lab.running_tasks("web");
        if t.len() == 3 && t.iter().all(|t| !t.starts_with("node2")) {
            Ok(())
        } else {
            Err(format!("{t:?}"))
        }
    });
    lab.ok(1, &["node", "update", "--availability", "active", "node2"]);

    let pid = lab.daemon_pid(3).expect("node3's shoald");
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    wait_for("node3 Down", SLOW, || {
        let out = lab.ok(1, &["node", "ls"]);
        if out
            .lines()
            .any(|l| l.contains("node3") && l.contains("Down"))
        {
            Ok(())
        } else {
            Err(out)
        }
    });
    wait_for("web back to 3 replicas without node3", SLOW, || {
        let t = lab.running_tasks("web");
        if t.len() == 3 && t.iter().all(|t| !t.starts_with("node3")) {
            Ok(())
        } else {
            Err(format!("{t:?}"))
        }
    });

    // Restart the manager's daemon with the same data dir: the service is still there.
    let pid = lab.daemon_pid(1).expect("node1's shoald");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(text)
        .collect();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    wait_for("node1's shoald to exit", SLOW, || {
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            Err("running".into())
        } else {
            Ok(())
        }
    });
    // Started through `lab exec`, so it runs in node1's namespace and the lab's cgroup,
    // and `lab down` ends it and its tasks.
    let log = std::fs::File::create(lab.dir().join("node1/shoald-restart.log")).unwrap();
    let mut restarted = std::process::Command::new(SHOAL)
        .args(["lab", "exec", "--name", &lab.name, "node1", "--"])
        .args(&args)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let ls = wait_for("the restarted manager to serve web", SLOW, || {
        let out = lab.shoal(1, &["service", "ls"]);
        let s = text(&out.stdout);
        if out.status.success() && s.contains("web") {
            Ok(s)
        } else {
            Err(text(&out.stderr))
        }
    });
    assert!(ls.contains("replicated"), "{ls}");
    wait_for("3 running after the restart", SLOW, || {
        match lab.running_tasks("web").len() {
            3 => Ok(()),
            n => Err(n.to_string()),
        }
    });
    drop(lab);
    restarted.wait().unwrap();
}

#[test]
fn three_managers_survive_the_leader_stopping() {
    let lab = Lab::up("ha", 3, 3);
    let ls = lab.ok(1, &["node", "ls"]);
    assert_eq!(
        ls.lines()
            .filter(|l| l.contains("Reachable") || l.contains("Leader"))
            .count(),
        3,
        "{ls}"
    );
    lab.create("--name web --replicas 3 SHOAL demo client");
    lab.wait_running("web", 3);
    // A follower forwards a write to the leader and answers once it has applied it too, so
    // the CLI's wait for convergence (it reads this follower) finds the new service.
    let made = lab.ok(
        2,
        &[
            "service",
            "create",
            "--runtime",
            "host",
            "--name",
            "viafollower",
            SHOAL,
            "demo",
            "client",
        ],
    );
    assert!(made.contains("verify: Service converged"), "{made}");
    let name = lab.ok(
        2,
        &[
            "service",
            "inspect",
            "--format",
            "{{.Spec.Name}}",
            "viafollower",
        ],
    );
    assert_eq!(name.trim(), "viafollower");
    lab.ok(2, &["service", "rm", "viafollower"]);

    // Stop the leader's daemon: the two others elect a leader and keep the service.
    let pid = lab.daemon_pid(1).expect("node1's shoald");
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    wait_for(
        "a new leader among node2 and node3, and node1 unreachable",
        SLOW,
        || {
            let out = lab.shoal(2, &["node", "ls"]);
            let s = text(&out.stdout);
            let leader = s.lines().find(|l| l.contains("Leader")).unwrap_or("");
            let node1_gone = s
                .lines()
                .any(|l| l.contains("node1") && l.contains("Down") && l.contains("Unreachable"));
            if (leader.contains("node2") || leader.contains("node3")) && node1_gone {
                Ok(())
            } else {
                Err(s + &text(&out.stderr))
            }
        },
    );
    // The replicas that ran on node1 come back on the others, decided by the new leader.
    wait_for(
        "web back to 3 running tasks on node2 and node3",
        SLOW,
        || {
            let out = lab.shoal(
                2,
                &[
                    "service",
                    "ps",
                    "--format",
                    "{{.Node}} {{.DesiredState}} {{.CurrentState}}",
                    "web",
                ],
            );
            let s = text(&out.stdout);
            let running: Vec<&str> = s
                .lines()
                .filter(|l| l.contains(" Running Running"))
                .map(|l| l.split(' ').next().unwrap_or(""))
                .collect();
            if running.len() == 3 && running.iter().all(|n| *n != "node1") {
                Ok(())
            } else {
                Err(s)
            }
        },
    );
    // Writes work through any remaining manager.
    lab.ok(3, &["service", "scale", "web=4"]);
}

#[test]
fn overlays_never_cover_a_nodes_own_addresses() {
    let lab = Lab::up("overlap", 2, 1);
    let (token, manager) = lab.join_args("worker");
    let netns = lab.netns(2);
    let ip = |args: &[&str]| {
        let mut cmd = vec!["-n", netns.as_str()];
        cmd.extend_from_slice(args);
        let out = std::process::Command::new("ip")
            .args(&cmd)
            .output()
            .unwrap();
        assert!(out.status.success(), "ip {cmd:?}: {}", text(&out.stderr));
    };

    // A node joining with an address that an overlay covers is told which one.
    lab.ok(1, &["network", "create", "--subnet", "10.78.0.0/24", "n78"]);
    lab.ok(2, &["leave"]);
    ip(&["addr", "add", "10.78.0.5/24", "dev", "lo"]);
    let err = lab.fails(2, &["join", "--token", &token, &manager]);
    assert!(
        err.contains("the host's address 10.78.0.5 (lo) overlaps network n78 (10.78.0.0/24)"),
        "{err}"
    );

    // Without it, the node joins, and reports what it has: a network over a worker's
    // address is refused, naming the worker.
    ip(&["addr", "del", "10.78.0.5/24", "dev", "lo"]);
    ip(&["addr", "add", "10.77.0.1/24", "dev", "lo"]);
    lab.ok(2, &["join", "--token", &token, &manager]);
    let err = lab.fails(1, &["network", "create", "--subnet", "10.77.0.0/16", "n77"]);
    assert!(
        err.contains(
            "subnet 10.77.0.0/16 overlaps the host's address 10.77.0.1 (lo) on node node2"
        ),
        "{err}"
    );
}
