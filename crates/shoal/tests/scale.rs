//! Hundreds of tasks per lab: the cluster must hold where it used to collapse (~100 tasks
//! per node: every node marked Down, tasks rescheduled in a loop, 0 running after a
//! minute). Bounded: 300 tasks on one network across 3 nodes, a few minutes at most.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;

/// Services of 2 replicas each: 150 × 2 = 300 tasks, ~100 per node.
const SERVICES: usize = 150;

#[test]
fn three_hundred_tasks_on_one_network_hold() {
    let lab = Arc::new(Lab::up("scale", 3, 1));
    // Every node balances VIPs with the node-wide eBPF balancer (this kernel has it), and
    // says so.
    for node in ["node1", "node2", "node3"] {
        let format = "{{.Description.DataPlane.VIPBalancer}}";
        wait_for(
            &format!("{node} reporting ebpf"),
            Duration::from_secs(10),
            || {
                // Until a node's first session reports it, its description has no DataPlane
                // and the template says so (an error): wait through that too.
                let out = lab.shoal(1, &["node", "inspect", "--format", format, node]);
                let kind = text(&out.stdout);
                if out.status.success() && kind.trim() == "ebpf" {
                    Ok(())
                } else {
                    Err(kind + &text(&out.stderr))
                }
            },
        );
    }
    lab.ok(1, &["network", "create", "--subnet", "10.10.0.0/16", "ovl"]);

    // Watch every node's state for the whole test, once a second.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (lab, stop) = (Arc::clone(&lab), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut downs = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let out = lab.shoal(1, &["node", "ls", "--format", "{{.Hostname}} {{.Status}}"]);
                for l in text(&out.stdout).lines() {
                    if !l.ends_with(" Ready") {
                        downs.push(l.to_string());
                    }
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            downs
        })
    };

    // One web service that answers, the rest idle processes: all get a VIP, DNS names and
    // endpoints on every node all the same.
    lab.create("-d --name web --network ovl --replicas 2 SHOAL demo vote");
    for i in 1..SERVICES {
        lab.create(&format!(
            "-d --name s{i} --network ovl --replicas 2 /bin/sleep infinity"
        ));
    }
    let total = SERVICES * 2;
    wait_for(
        &format!("{total} running tasks"),
        Duration::from_secs(240),
        || {
            let out = lab.ok(1, &["service", "ls", "--format", "{{.Name}} {{.Replicas}}"]);
            let full = out.lines().filter(|l| l.ends_with(" 2/2")).count();
            if full == SERVICES {
                Ok(())
            } else {
                Err(format!("{full} of {SERVICES} services at 2/2"))
            }
        },
    );

    // A client on every node, created last: it must resolve and reach the VIP at once.
    lab.create("--name client --mode global --network ovl SHOAL demo client");
    let clients = lab.wait_running("client", 3);
    let vip = lab
        .ok(
            1,
            &[
                "service",
                "inspect",
                "--format",
                "{{json .Endpoint.VirtualIPs}}",
                "web",
            ],
        )
        .trim()
        .to_string();
    for (node, id) in &clients {
        let short = &id[..12];
        let answer = lab.dig(*node, short, &["web"]);
        assert_eq!(answer.len(), 1, "node{node}: {answer:?}");
        assert!(
            vip.contains(&answer[0]),
            "node{node}: {answer:?} not in {vip}"
        );
        let tasks = lab.dig(*node, short, &["tasks.s77"]);
        assert_eq!(tasks.len(), 2, "node{node}: tasks.s77 {tasks:?}");
        let page = text(
            &lab.in_task(*node, short, &["curl", "-s", "--max-time", "5", "web"])
                .stdout,
        );
        assert!(
            page.contains("Processed by container ID"),
            "node{node}: curl web answered {page:?}"
        );
    }

    // A scale-down leaves DNS on every node.
    lab.ok(1, &["service", "scale", "s77=1"]);
    for (node, id) in &clients {
        let short = &id[..12];
        wait_for(
            &format!("tasks.s77 with one address on node{node}"),
            Duration::from_secs(20),
            || {
                let a = lab.dig(*node, short, &["tasks.s77"]);
                if a.len() == 1 {
                    Ok(())
                } else {
                    Err(format!("{a:?}"))
                }
            },
        );
    }

    stop.store(true, Ordering::Relaxed);
    let downs = watcher.join().expect("the node watcher");
    assert!(
        downs.is_empty(),
        "nodes left Ready during the test: {downs:?}"
    );
    let out = lab.ok(1, &["service", "ls", "--format", "{{.Replicas}}"]);
    let running: usize = out
        .lines()
        .filter_map(|l| l.split('/').next()?.parse::<usize>().ok())
        .sum();
    assert_eq!(running, total - 1 + 3, "every task still runs:\n{out}");
}

#[test]
fn a_full_network_says_so() {
    let lab = Lab::up("full", 1, 1);
    // A /29: 5 addresses for tasks and VIPs. The VIP takes one, 4 replicas get the rest.
    lab.ok(
        1,
        &["network", "create", "--subnet", "10.20.0.0/29", "small"],
    );
    lab.create("-d --name web --network small --replicas 6 /bin/sleep infinity");
    let why = "no available IPv4 address in network small (10.20.0.0/29): 5 of 5 in use";
    wait_for(
        "two tasks saying why they wait",
        Duration::from_secs(30),
        || {
            let out = lab.ok(
                1,
                &[
                    "service",
                    "ps",
                    "--no-trunc",
                    "--format",
                    "{{.CurrentState}}|{{.Error}}",
                    "web",
                ],
            );
            let waiting = out.lines().filter(|l| l.contains(why)).count();
            let running = out.lines().filter(|l| l.starts_with("Running")).count();
            if waiting == 2 && running == 4 {
                Ok(())
            } else {
                Err(out)
            }
        },
    );
    let usage = lab.ok(
        1,
        &[
            "network",
            "inspect",
            "--format",
            "{{json .IPAMUsage}}",
            "small",
        ],
    );
    assert_eq!(usage.trim(), r#"{"InUse":5,"Capacity":5}"#);
    // Scaled to what fits, nothing waits any more and the service converges.
    lab.ok(1, &["service", "scale", "web=4"]);
    let out = lab.ok(1, &["service", "ls", "--format", "{{.Name}} {{.Replicas}}"]);
    assert_eq!(out.trim(), "web 4/4");
}
