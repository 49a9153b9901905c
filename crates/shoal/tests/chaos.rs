//! Chaos (issue 12): a lab of 3 managers and a worker carries load through a VIP and takes
//! service creations while, one after another at random (seeded: `CHAOS_SEED` replays a
//! run; the seed is printed), the leader's daemon is killed with SIGKILL and started again,
//! the worker's daemon likewise, and a node's lab link goes down and up. Then, once every
//! node is back: every acknowledged write is there on every manager, every service runs
//! as many tasks as specified and no task runs twice (counted in the API and as processes
//! in the lab's cgroup), no task namespace is left beside the running tasks, every node's
//! DNS names the running tasks, and the VIP answers from every node.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::load::{Kind, Load, Path, lookup_in};
use common::rollout::{addr, netns_of};
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SLOW: Duration = Duration::from_secs(90);
/// How long faults are made (then the cluster settles and is checked).
const CHAOS: Duration = Duration::from_secs(60);
const WEB: usize = 3;
/// Services the writer creates at most (each runs one task).
const WRITES: usize = 16;
/// What the writer's services run: counted as processes at the end.
const SLEEP: &str = "6001";

/// `node ls` rows (hostname, status, manager status) as any manager that answers sees them.
fn nodes(lab: &Lab) -> Vec<(String, String, String)> {
    for node in 1..=3 {
        let out = lab.shoal(
            node,
            &[
                "node",
                "ls",
                "--format",
                "{{.Hostname}} {{.Status}} {{.ManagerStatus}}",
            ],
        );
        if out.status.success() {
            return text(&out.stdout)
                .lines()
                .map(|l| {
                    let mut f = l.split(' ');
                    let mut next = || f.next().unwrap_or("").to_string();
                    (next(), next(), next())
                })
                .collect();
        }
    }
    Vec::new()
}

fn leader(lab: &Lab) -> Option<u32> {
    nodes(lab)
        .iter()
        .find(|(_, _, m)| m == "Leader")
        .and_then(|(h, _, _)| h.trim_start_matches("node").parse().ok())
}

fn link(lab: &Lab, node: u32, state: &str) {
    let st = Command::new("ip")
        .args(["-n", &lab.netns(node), "link", "set", "eth0", state])
        .status()
        .unwrap();
    assert!(st.success(), "ip link set eth0 {state} on node{node}");
}

/// Creates services through a random manager until `stop` or `WRITES` acknowledged;
/// returns the names acknowledged.
fn writer(lab: Arc<Lab>, seed: u64, stop: Arc<AtomicBool>) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut acked = Vec::new();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) && acked.len() < WRITES {
        let node = rng.random_range(1..=3);
        let name = format!("w{i}");
        i += 1;
        let out = lab.shoal(
            node,
            &[
                "service",
                "create",
                "-d",
                "--runtime",
                "host",
                "--name",
                &name,
                "sleep",
                SLEEP,
            ],
        );
        if out.status.success() {
            acked.push(name);
        } else {
            eprintln!(
                "write {name} through node{node} failed: {}",
                text(&out.stderr).trim()
            );
        }
        std::thread::sleep(Duration::from_millis(1500));
    }
    acked
}

/// The processes of this lab (its cgroup) whose command line has `words` in a row.
fn processes(lab: &Lab, words: &[&str]) -> Vec<u32> {
    let cgroup = format!("shoal-lab-{}", lab.name);
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        if !cg.contains(&cgroup) {
            continue;
        }
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(text)
            .collect();
        if args.windows(words.len()).any(|w| w == words) {
            out.push(pid);
        }
    }
    out
}

/// Task namespaces this lab's daemons made that still exist.
fn task_namespaces(lab: &Lab) -> BTreeSet<String> {
    std::fs::read_dir(lab.dir().join("netns.d"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("shoal-task-"))
                .filter(|n| std::path::Path::new(&format!("/run/netns/{n}")).exists())
                .collect()
        })
        .unwrap_or_default()
}

/// Every service's running tasks as `service ps` shows them: name -> [(slot name, id)].
fn running(lab: &Lab, services: &[String]) -> BTreeMap<String, Vec<(String, String)>> {
    services
        .iter()
        .map(|s| {
            let out = lab.ok(
                1,
                &[
                    "service",
                    "ps",
                    "--no-trunc",
                    "--format",
                    "{{.Name}}|{{.ID}}|{{.DesiredState}}|{{.CurrentState}}|{{.Node}}",
                    s,
                ],
            );
            let tasks = out
                .lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split('|').collect();
                    (f.len() == 5 && f[2] == "Running" && f[3].starts_with("Running"))
                        .then(|| (format!("{}@{}", f[0], f[4]), f[1].to_string()))
                })
                .collect();
            (s.clone(), tasks)
        })
        .collect()
}

#[test]
fn chaos_leader_worker_and_link_killed_at_random_invariants_hold() {
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("chaos seed {seed} (CHAOS_SEED={seed} replays these faults)");
    let mut rng = StdRng::seed_from_u64(seed);
    let began = Instant::now();
    let lab = Arc::new(Lab::up("chaos", 4, 3));
    wait_for("node1 to lead and every node to be ready", SLOW, || {
        let rows = nodes(&lab);
        let ready = rows.iter().filter(|(_, s, _)| s == "Ready").count();
        if leader(&lab) == Some(1) && ready == 4 {
            Ok(())
        } else {
            Err(format!("{rows:?}"))
        }
    });
    lab.ok(1, &["network", "create", "ovl"]);
    lab.create("-d --name probe --mode global --network ovl SHOAL demo client");
    lab.create(&format!(
        "-d --name web --replicas {WEB} --network ovl SHOAL demo vote --port 8000"
    ));
    lab.wait_running("probe", 4);
    lab.wait_running("web", WEB);
    let probe_netns = |n: u32| {
        let (_, id) = lab
            .tasks_by_node("probe")
            .into_iter()
            .find(|(node, _)| *node == n)
            .unwrap_or_else(|| panic!("no probe task on node{n}"));
        netns_of(&lab, &id)
    };
    let vip = wait_for("web's VIP from node1", SLOW, || {
        lookup_in(&probe_netns(1), "web").and_then(|a| a.first().copied().ok_or("none".into()))
    });
    let load_from = |nodes: &[u32]| {
        nodes
            .iter()
            .map(|n| {
                (
                    probe_netns(*n),
                    vec![Path::new(
                        &format!("vip-from-node{n}"),
                        Kind::TcpNew,
                        addr(vip, 8000),
                    )],
                )
            })
            .collect::<Vec<_>>()
    };
    let load = Load::start(
        load_from(&[1, 2, 3, 4]),
        Duration::from_millis(50),
        Duration::from_secs(240),
        10_000,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let writes = {
        let (lab, stop) = (Arc::clone(&lab), Arc::clone(&stop));
        std::thread::spawn(move || writer(lab, seed, stop))
    };

    // Faults, one at a time, until CHAOS has passed.
    let chaos = Instant::now();
    let mut restarted = Vec::new();
    let mut n = 0;
    while chaos.elapsed() < CHAOS {
        n += 1;
        let hold = Duration::from_millis(rng.random_range(1000..7000));
        let at = chaos.elapsed();
        match rng.random_range(0..3) {
            0 => {
                let Some(l) = leader(&lab) else {
                    eprintln!("{at:?}: no leader to kill; waiting");
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                };
                eprintln!("{at:?}: SIGKILL the leader's daemon (node{l}), back after {hold:?}");
                let args = lab.stop_daemon(l, "-KILL");
                std::thread::sleep(hold);
                let log = format!("chaos{n}.log");
                restarted.push(lab.start_daemon(l, &args, &log));
            }
            1 => {
                eprintln!("{at:?}: SIGKILL the worker's daemon (node4), back after {hold:?}");
                let args = lab.stop_daemon(4, "-KILL");
                std::thread::sleep(hold);
                let log = format!("chaos{n}.log");
                restarted.push(lab.start_daemon(4, &args, &log));
            }
            _ => {
                let node = rng.random_range(1..=4);
                let hold = hold * 2;
                eprintln!("{at:?}: node{node}'s link down, up after {hold:?}");
                link(&lab, node, "down");
                std::thread::sleep(hold);
                link(&lab, node, "up");
            }
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(1000..4000)));
    }
    stop.store(true, Ordering::Relaxed);
    let acked = writes.join().expect("the writer");
    let during = load.stop();
    eprintln!(
        "{n} faults in {:?}; {} writes acknowledged; the VIP during them: {}",
        chaos.elapsed(),
        acked.len(),
        during.summary(0.0, f64::MAX)
    );
    assert!(during.sent(0.0, f64::MAX) > 0, "the load sent nothing");

    // Settled: every node Ready, and every manager lists every acknowledged service.
    wait_for("every node ready again", SLOW, || {
        let rows = nodes(&lab);
        let ready = rows.iter().filter(|(_, s, _)| s == "Ready").count();
        if ready == 4 && leader(&lab).is_some() {
            Ok(())
        } else {
            Err(format!("{rows:?}"))
        }
    });
    for node in 1..=3 {
        wait_for(
            &format!("node{node} to list every acknowledged service"),
            SLOW,
            || {
                let out = lab.shoal(node, &["service", "ls", "--format", "{{.Name}}"]);
                let listed = text(&out.stdout);
                let listed: BTreeSet<&str> = listed.lines().collect();
                let lost: Vec<&String> = acked
                    .iter()
                    .filter(|a| !listed.contains(a.as_str()))
                    .collect();
                if out.status.success() && lost.is_empty() {
                    Ok(())
                } else {
                    Err(format!("it lacks {lost:?} {}", text(&out.stderr)))
                }
            },
        );
    }
    // Services made by writes that failed may exist too (a write may apply and its answer
    // be lost): each is checked like the others.
    let listed = lab.ok(1, &["service", "ls", "--format", "{{.Name}}"]);
    let writes: Vec<String> = listed
        .lines()
        .filter(|l| l.starts_with('w') && *l != "web")
        .map(str::to_string)
        .collect();
    let mut services = vec!["web".to_string(), "probe".to_string()];
    services.extend(writes.iter().cloned());
    let want = |s: &str| match s {
        "web" => WEB,
        "probe" => 4,
        _ => 1,
    };

    // Replicas as specified, each slot (or node, for the global probe) once, and as many
    // processes as running tasks: none twice.
    let tasks = wait_for("every service to run as specified", SLOW, || {
        let r = running(&lab, &services);
        let wrong: Vec<String> = r
            .iter()
            .filter(|(s, t)| {
                let slots: BTreeSet<&String> = t.iter().map(|(slot, _)| slot).collect();
                t.len() != want(s) || slots.len() != t.len()
            })
            .map(|(s, t)| format!("{s}: {t:?}"))
            .collect();
        let counts = (
            processes(&lab, &["demo", "vote"]).len(),
            processes(&lab, &["demo", "client"]).len(),
            processes(&lab, &["sleep", SLEEP]).len(),
        );
        if wrong.is_empty() && counts == (WEB, 4, writes.len()) {
            Ok(r)
        } else {
            Err(format!(
                "{wrong:?}; processes (vote, client, sleep): {counts:?}, want ({WEB}, 4, {})",
                writes.len()
            ))
        }
    });

    // No task namespace beside the running tasks'.
    let expected: BTreeSet<String> = tasks
        .values()
        .flatten()
        .map(|(_, id)| format!("shoal-task-{}", &id[..12]))
        .collect();
    wait_for(
        "no task namespace left but the running tasks'",
        SLOW,
        || {
            let left = task_namespaces(&lab);
            if left == expected {
                Ok(())
            } else {
                Err(format!(
                    "extra {:?}, missing {:?}",
                    left.difference(&expected).collect::<Vec<_>>(),
                    expected.difference(&left).collect::<Vec<_>>()
                ))
            }
        },
    );

    // Every node's DNS names the running web tasks, and its VIP answers from them.
    let mut addrs: Vec<String> = tasks["web"]
        .iter()
        .map(|(_, id)| lab.task_addr(id))
        .collect();
    addrs.sort();
    let ids: BTreeSet<String> = tasks["web"]
        .iter()
        .map(|(_, id)| id[..12].to_string())
        .collect();
    let probes = lab.tasks_by_node("probe");
    for (node, probe) in &probes {
        wait_for(
            &format!("node{node}'s DNS to name the running web tasks"),
            SLOW,
            || {
                let mut got = lab.dig(*node, probe, &["tasks.web"]);
                got.sort();
                if got == addrs {
                    Ok(())
                } else {
                    Err(format!("{got:?}, want {addrs:?}"))
                }
            },
        );
    }
    let after = Load::start(
        load_from(&[1, 2, 3, 4]),
        Duration::from_millis(50),
        Duration::from_secs(3),
        60,
    );
    std::thread::sleep(Duration::from_secs(3));
    let after = after.stop();
    let failed = after.failures(0.0, f64::MAX);
    assert!(
        failed.is_empty(),
        "the VIP failed after the faults: {failed:?}"
    );
    for p in &after.paths {
        assert!(!p.requests.is_empty(), "{}: no request", p.name);
        for r in &p.requests {
            let by = r.by.as_deref().unwrap_or("");
            assert!(
                ids.contains(by),
                "{}: answered by {by}, not one of {ids:?}",
                p.name
            );
        }
    }
    drop(restarted);
    eprintln!("chaos test took {:?} (seed {seed})", began.elapsed());
}
