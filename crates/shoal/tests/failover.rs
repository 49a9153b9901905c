//! What production brings (issue 12), on lab clusters through the real CLI: the leader's
//! daemon killed with SIGKILL while clients create services (the API answers again within
//! 5 s, no acknowledged write is lost), and a worker cut off from the network (its tasks
//! are replaced and leave DNS and the VIP everywhere else; when it comes back it stops them,
//! so the replicas are right again).

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;

const SLOW: Duration = Duration::from_secs(60);

/// How soon after the leader dies the API must take writes again.
const FAILOVER: Duration = Duration::from_secs(5);

fn kill9(lab: &Lab, node: u32) {
    let pid = lab.daemon_pid(node).expect("the node's shoald");
    let st = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// `node ls` on `node`: (hostname, status, manager status) rows.
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

/// One `service create` a client made: when it began and ended, and whether it succeeded.
#[derive(Debug)]
struct Write {
    name: String,
    began: Instant,
    ended: Instant,
    ok: bool,
    said: String,
}

/// Creates services through `node`'s API one after another until `stop`.
fn client(lab: Arc<Lab>, node: u32, stop: Arc<AtomicBool>) -> Vec<Write> {
    let mut done = Vec::new();
    for i in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let name = format!("c{node}x{i}");
        let began = Instant::now();
        let out = lab.shoal(
            node,
            &[
                "service",
                "create",
                "-d",
                "--runtime",
                "host",
                "--replicas",
                "0",
                "--name",
                &name,
                "sleep",
                "600",
            ],
        );
        done.push(Write {
            name,
            began,
            ended: Instant::now(),
            ok: out.status.success(),
            said: text(&out.stderr),
        });
    }
    done
}

/// `managers` managers; node1 (the leader) is killed while every other manager's API takes
/// service creations in a loop.
fn leader_killed_while_clients_write(test: &str, managers: u32) {
    let lab = Arc::new(Lab::up(test, managers, managers));
    wait_for(
        "node1 to lead and every manager to be reachable",
        SLOW,
        || {
            let rows = nodes(&lab, 1);
            let leader = rows.iter().any(|(h, _, m)| h == "node1" && m == "Leader");
            let reachable = rows.iter().filter(|(_, _, m)| m == "Reachable").count();
            if leader && reachable == managers as usize - 1 {
                Ok(())
            } else {
                Err(format!("{rows:?}"))
            }
        },
    );

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (2..=managers)
        .map(|n| {
            let (lab, stop) = (Arc::clone(&lab), Arc::clone(&stop));
            std::thread::spawn(move || client(lab, n, stop))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    kill9(&lab, 1);
    let killed = Instant::now();
    std::thread::sleep(FAILOVER + Duration::from_secs(5));
    stop.store(true, Ordering::Relaxed);
    let writes: Vec<Write> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("a client thread"))
        .collect();

    let since = |t: Instant| t.saturating_duration_since(killed);
    for w in &writes {
        let at = |t: Instant| {
            if t >= killed {
                format!("+{:?}", since(t))
            } else {
                format!("-{:?}", killed - t)
            }
        };
        eprintln!(
            "{} {}..{} {}{}",
            w.name,
            at(w.began),
            at(w.ended),
            if w.ok { "ok" } else { "FAILED " },
            w.said.trim()
        );
    }
    assert!(
        writes.iter().any(|w| w.ok && w.ended < killed),
        "the clients wrote nothing before the kill"
    );
    // Answers again within FAILOVER: a create begun after the kill has succeeded by then...
    let first = writes
        .iter()
        .filter(|w| w.ok && w.began >= killed)
        .map(|w| since(w.ended))
        .min()
        .expect("a create that began after the kill succeeded");
    eprintln!("the first create begun after the kill succeeded {first:?} after it");
    assert!(
        first <= FAILOVER,
        "the API took {first:?} to take writes again"
    );
    // ...and none begun after the kill failed: a manager whose leader is gone waits for
    // the next one rather than refusing (one in flight at the kill may fail: it may have
    // reached the old leader, and only the client can tell whether to try again).
    let failed: Vec<&Write> = writes
        .iter()
        .filter(|w| !w.ok && w.began >= killed)
        .collect();
    assert!(
        failed.is_empty(),
        "creates failed after the kill: {failed:?}"
    );

    // Every acknowledged write is there, on every manager left.
    let acked: BTreeSet<&str> = writes
        .iter()
        .filter(|w| w.ok)
        .map(|w| w.name.as_str())
        .collect();
    // A manager reads its own copy: the last writes may take a moment to be applied there.
    for node in 2..=managers {
        wait_for(
            &format!("node{node} to list every acknowledged service"),
            Duration::from_secs(20),
            || {
                let listed = lab.ok(node, &["service", "ls", "--format", "{{.Name}}"]);
                let listed: BTreeSet<&str> = listed.lines().collect();
                let lost: Vec<&&str> = acked.difference(&listed).collect();
                if lost.is_empty() {
                    Ok(())
                } else {
                    Err(format!("it lacks {lost:?}"))
                }
            },
        );
    }
    // A new leader among the survivors, node1 unreachable.
    let rows = nodes(&lab, 2);
    assert!(
        rows.iter().any(|(h, _, m)| h != "node1" && m == "Leader"),
        "{rows:?}"
    );
}

#[test]
fn leader_killed_3_managers_api_answers_within_5s_and_no_acked_write_is_lost() {
    leader_killed_while_clients_write("kill3", 3);
}

#[test]
fn leader_killed_5_managers_api_answers_within_5s_and_no_acked_write_is_lost() {
    leader_killed_while_clients_write("kill5", 5);
}

/// The addresses `dig tasks.web` answers from task `probe` on `node`, sorted.
fn dns_of_web(lab: &Lab, node: u32, probe: &str) -> Vec<String> {
    let mut a = lab.dig(node, probe, &["tasks.web"]);
    a.sort();
    a
}

#[test]
fn a_worker_cut_off_has_its_tasks_replaced_and_stops_them_when_it_returns() {
    let lab = Lab::up("cut", 3, 1);
    lab.ok(1, &["network", "create", "ovl"]);
    lab.create("--name probe --mode global --network ovl SHOAL demo client");
    lab.create("--name web --replicas 3 --network ovl SHOAL demo vote");
    let probes: Vec<(u32, String)> = lab.wait_running("probe", 3);
    let probe_on = |n: u32| {
        probes
            .iter()
            .find(|(node, _)| *node == n)
            .map(|(_, id)| id.clone())
            .expect("a probe on every node")
    };
    let web = lab.wait_running("web", 3);
    let cut: Vec<String> = web
        .iter()
        .filter(|(n, _)| *n == 2)
        .map(|(_, id)| id.clone())
        .collect();
    assert!(!cut.is_empty(), "a web task on node2: {web:?}");
    let cut_pids: Vec<u64> = cut
        .iter()
        .map(|id| lab.task_json(id)["Status"]["PID"].as_u64().expect("a PID"))
        .collect();

    // node2's only link goes down: it hears nothing and says nothing.
    let netns = lab.netns(2);
    let link = |state: &str| {
        let st = Command::new("ip")
            .args(["-n", &netns, "link", "set", "eth0", state])
            .status()
            .unwrap();
        assert!(st.success(), "ip link set eth0 {state} in {netns}");
    };
    link("down");
    let down = Instant::now();

    // After the grace (5 periods of 1 s in the lab) node2 is Down and its tasks run
    // elsewhere; DNS on node1 and node3 names the running tasks only, and the VIP answers
    // from them.
    wait_for("node2 down", SLOW, || {
        let rows = nodes(&lab, 1);
        if rows.iter().any(|(h, s, _)| h == "node2" && s == "Down") {
            Ok(())
        } else {
            Err(format!("{rows:?}"))
        }
    });
    eprintln!(
        "node2 was marked Down {:?} after its link went down",
        down.elapsed()
    );
    let elsewhere = wait_for("3 web tasks off node2", SLOW, || {
        let mut t = lab.tasks_by_node("web");
        t.sort();
        if t.len() == 3 && t.iter().all(|(n, _)| *n != 2) {
            Ok(t)
        } else {
            Err(format!("{t:?}"))
        }
    });
    let mut addrs: Vec<String> = elsewhere.iter().map(|(_, id)| lab.task_addr(id)).collect();
    addrs.sort();
    let ids: BTreeSet<String> = elsewhere
        .iter()
        .map(|(_, id)| id[..12].to_string())
        .collect();
    for node in [1, 3] {
        let probe = probe_on(node);
        wait_for(
            &format!("node{node}'s DNS to name the tasks left"),
            SLOW,
            || {
                let got = dns_of_web(&lab, node, &probe);
                if got == addrs {
                    Ok(())
                } else {
                    Err(format!("{got:?}, want {addrs:?}"))
                }
            },
        );
        for _ in 0..6 {
            let out = lab.in_task(node, &probe, &["curl", "-s", "--max-time", "3", "web"]);
            let page = text(&out.stdout);
            let by = page
                .split("Processed by container ID ")
                .nth(1)
                .and_then(|r| r.split('<').next())
                .unwrap_or_else(|| panic!("node{node}: no answer through the VIP: {page:?}"));
            assert!(
                ids.contains(by),
                "node{node}: answered by {by}, not one of {ids:?}"
            );
        }
    }
    // The cut-off node's tasks still run there meanwhile (nothing told it otherwise).
    assert!(
        cut_pids
            .iter()
            .all(|p| std::path::Path::new(&format!("/proc/{p}")).exists()),
        "node2's tasks kept running while it was cut off"
    );

    // Long enough that node2's connections are dead on both sides (pings, keepalives,
    // TCP_USER_TIMEOUT), so it comes back through a new session.
    std::thread::sleep(Duration::from_secs(15).saturating_sub(down.elapsed()));
    // Back: node2 is Ready again and stops the tasks that were replaced; three run, and
    // node2's own DNS names them.
    link("up");
    let back = Instant::now();
    wait_for("node2 ready", SLOW, || {
        let rows = nodes(&lab, 1);
        if rows.iter().any(|(h, s, _)| h == "node2" && s == "Ready") {
            Ok(())
        } else {
            Err(format!("{rows:?}"))
        }
    });
    wait_for("node2 to stop the tasks that were replaced", SLOW, || {
        let alive: Vec<&u64> = cut_pids
            .iter()
            .filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
            .collect();
        if alive.is_empty() {
            Ok(())
        } else {
            Err(format!("still running: {alive:?}"))
        }
    });
    eprintln!(
        "node2 stopped its replaced tasks {:?} after its link came back",
        back.elapsed()
    );
    let mut now = lab.tasks_by_node("web");
    now.sort();
    assert_eq!(now, elsewhere, "the same three tasks run, none twice");
    // node2's probe was replaced too (a global task on a Down node): its new one asks.
    let probe = wait_for("a new probe on node2", SLOW, || {
        let p = lab.tasks_by_node("probe");
        p.iter()
            .find(|(n, id)| *n == 2 && *id != probe_on(2))
            .map(|(_, id)| id.clone())
            .ok_or(format!("{p:?}"))
    });
    wait_for("node2's DNS to name the running tasks", SLOW, || {
        let got = dns_of_web(&lab, 2, &probe);
        if got == addrs {
            Ok(())
        } else {
            Err(format!("{got:?}, want {addrs:?}"))
        }
    });
}

/// The leader's host vanishes without a word (its link cut: no FIN, no RST). The other
/// managers elect a new one, the worker's agent notices through its pings and follows it
/// (it is not marked Down), and a service placed on the worker runs; the old leader, back,
/// follows the new one.
#[test]
fn leader_cut_off_agents_follow_the_new_one() {
    let lab = Lab::up("lcut", 4, 3);
    wait_for("node1 to lead and every node to be ready", SLOW, || {
        let rows = nodes(&lab, 1);
        let leader = rows.iter().any(|(h, _, m)| h == "node1" && m == "Leader");
        let ready = rows.iter().filter(|(_, s, _)| s == "Ready").count();
        if leader && ready == 4 {
            Ok(())
        } else {
            Err(format!("{rows:?}"))
        }
    });
    let link = |state: &str| {
        let netns = lab.netns(1);
        let st = Command::new("ip")
            .args(["-n", &netns, "link", "set", "eth0", state])
            .status()
            .unwrap();
        assert!(st.success(), "ip link set eth0 {state} in {netns}");
    };
    link("down");
    let cut = Instant::now();

    // node2 takes writes again (it waits for the new leader, so this is the failover).
    lab.ok(
        2,
        &[
            "service",
            "create",
            "-d",
            "--runtime",
            "host",
            "--name",
            "w",
            "--constraint",
            "node.hostname==node4",
            "sleep",
            "600",
        ],
    );
    eprintln!(
        "node2 took a write {:?} after the leader was cut off",
        cut.elapsed()
    );
    // The worker's agent followed the new leader: its task is told to it and runs.
    wait_for("w's task running on node4", SLOW, || {
        // Asked of node2: node1 is cut off.
        let ps = lab.ok(
            2,
            &[
                "service",
                "ps",
                "--format",
                "{{.Node}} {{.CurrentState}}",
                "w",
            ],
        );
        let t: Vec<&str> = ps.lines().collect();
        if t.iter().any(|l| l.starts_with("node4 Running")) {
            Ok(())
        } else {
            Err(format!("{t:?}"))
        }
    });
    let followed = cut.elapsed();
    // Its first task, not a replacement: node4 was never taken for dead.
    let ps = lab.ok(
        2,
        &[
            "service",
            "ps",
            "--format",
            "{{.Node}} {{.CurrentState}} {{.Error}}",
            "w",
        ],
    );
    assert_eq!(ps.lines().count(), 1, "{ps}");
    eprintln!("node4 ran a task from the new leader {followed:?} after the cut");
    assert!(
        followed <= Duration::from_secs(12),
        "node4 took {followed:?} to follow the new leader"
    );
    let rows = nodes(&lab, 2);
    assert!(
        rows.iter().any(|(h, s, _)| h == "node4" && s == "Ready"),
        "{rows:?}"
    );

    // The old leader comes back and follows: one leader, node1 reachable and ready.
    link("up");
    wait_for("node1 back as a follower", SLOW, || {
        let rows = nodes(&lab, 2);
        let leaders = rows.iter().filter(|(_, _, m)| m == "Leader").count();
        let node1 = rows
            .iter()
            .any(|(h, s, m)| h == "node1" && s == "Ready" && m == "Reachable");
        if leaders == 1 && node1 {
            Ok(())
        } else {
            Err(format!("{rows:?}"))
        }
    });
}
