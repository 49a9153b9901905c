//! VIP load balancing and the routing mesh on lab clusters (scenarios 2 and 3 of the seed),
//! asserted with the real `curl` inside tasks and on nodes.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;

/// The container ids `curl` reports over `n` requests run by `f`.
fn ids(n: usize, mut f: impl FnMut() -> String) -> Vec<String> {
    (0..n)
        .map(|_| {
            let page = f();
            page.split("Processed by container ID ")
                .nth(1)
                .and_then(|r| r.split('<').next())
                .unwrap_or_else(|| panic!("no container id in {page:?}"))
                .to_string()
        })
        .collect()
}

/// `curl` run in a lab node's namespace.
fn curl_on_node(lab: &Lab, node: u32, url: &str) -> std::process::Output {
    std::process::Command::new(SHOAL)
        .args([
            "lab",
            "exec",
            "--name",
            &lab.name,
            &format!("node{node}"),
            "--",
            "curl",
            "-s",
            "--max-time",
            "5",
            url,
        ])
        .output()
        .unwrap()
}

/// A field of the node's data plane, as `node inspect` shows it, once the node has reported
/// it (until its first session does, its description has no DataPlane and the template
/// says so).
fn data_plane(lab: &Lab, node: u32, field: &str) -> String {
    let format = format!("{{{{.Description.DataPlane.{field}}}}}");
    let node = format!("node{node}");
    wait_for(
        &format!("{node} to report its data plane"),
        Duration::from_secs(10),
        || {
            let out = lab.shoal(1, &["node", "inspect", "--format", &format, &node]);
            match out.status.success() {
                true => Ok(text(&out.stdout).trim().to_string()),
                false => Err(text(&out.stderr)),
            }
        },
    )
}

#[test]
fn scenario_2_vip_balances_refuses_when_empty_and_drops_dead_tasks() {
    let lab = Lab::up("vip", 2, 1);
    lab.ok(1, &["network", "create", "--driver", "overlay", "overlay1"]);
    lab.create(
        "--name client --network overlay1 --constraint node.hostname==node1 SHOAL demo client",
    );
    lab.create("--name vote --network overlay1 --replicas 2 --restart-condition none SHOAL demo vote --udp 5353");
    let votes = lab.wait_running("vote", 2);

    let vips = lab.ok(
        1,
        &[
            "service",
            "inspect",
            "--format",
            "{{.Endpoint.VirtualIPs}}",
            "vote",
        ],
    );
    let vip = vips
        .split_whitespace()
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(lab.dig(1, "client.1", &["vote"]), [vip.as_str()]);

    // curl vote alternates between the two tasks (round robin in the client's sandbox).
    let seen = ids(6, || {
        text(
            &lab.in_task(1, "client.1", &["curl", "-s", "--max-time", "5", "vote"])
                .stdout,
        )
    });
    let expected: BTreeSet<String> = votes.iter().map(|(_, id)| id[..12].to_string()).collect();
    assert_eq!(
        seen.iter().cloned().collect::<BTreeSet<_>>(),
        expected,
        "{seen:?}"
    );
    assert!(
        seen.windows(2).all(|w| w[0] != w[1]),
        "round robin alternates: {seen:?}"
    );
    // The server sees the client's own address: no SNAT on the VIP path.
    let client_addr = lab.task_addr(&lab.tasks_by_node("client")[0].1);
    let page = text(&lab.in_task(1, "client.1", &["curl", "-s", "vote"]).stdout);
    assert!(
        page.contains(&format!("Client address {client_addr}<")),
        "{page}"
    );

    // UDP through the VIP.
    let udp = text(
        &lab.in_task(1, "client.1", &[SHOAL, "demo", "udp-send", "vote:5353"])
            .stdout,
    );
    assert!(udp.contains("Processed by container ID"), "{udp}");

    // One balancer per node (eBPF, the default where it loads): no per-sandbox nftables
    // table. The nftables fallback's table is checked in `vip.rs`.
    let nft = lab.in_task(1, "client.1", &["nft", "list", "table", "ip", "shoal"]);
    assert!(
        !nft.status.success() && text(&nft.stderr).contains("No such file or directory"),
        "no VIP table in the sandbox with eBPF: {}",
        text(&nft.stderr)
    );

    // A killed task gets no new connection once its removal has reached the client's node.
    let (_, victim) = &votes[0];
    let pid = lab.task_json(victim)["Status"]["PID"]
        .as_u64()
        .unwrap()
        .to_string();
    std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap();
    let dead_addr = lab.task_addr(victim);
    wait_for(
        "the killed task to leave tasks.vote",
        Duration::from_secs(20),
        || {
            let t = lab.dig(1, "client.1", &["tasks.vote"]);
            if t.contains(&dead_addr) {
                Err(format!("{t:?}"))
            } else {
                Ok(())
            }
        },
    );
    let seen = ids(6, || {
        text(
            &lab.in_task(1, "client.1", &["curl", "-s", "--max-time", "5", "vote"])
                .stdout,
        )
    });
    assert!(seen.iter().all(|id| id != &victim[..12]), "{seen:?}");

    // Scaled to zero: refused (curl's 7), not a timeout (curl's 28 after --max-time).
    lab.ok(1, &["service", "scale", "vote=0"]);
    let out = lab.in_task(1, "client.1", &["curl", "-sS", "--max-time", "5", "vote"]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
}

#[test]
fn scenario_3_published_port_on_every_node() {
    let lab = Lab::up("mesh", 3, 1);
    lab.ok(1, &["network", "create", "overlay1"]);
    // Two tasks, pinned away from node3: node3 runs none and still serves the port.
    lab.create("--name vote --network overlay1 --replicas 2 --constraint node.hostname!=node3 -p 8080:80 -p 5353:5353/udp SHOAL demo vote --udp 5353");
    let votes = lab.wait_running("vote", 2);
    let expected: BTreeSet<String> = votes.iter().map(|(_, id)| id[..12].to_string()).collect();
    let ls = lab.ok(1, &["service", "ls"]);
    assert!(ls.contains("*:8080->80/tcp"), "{ls}");
    // Every node serves published ports at tc (this kernel has it), and says so.
    for node in 1..=3 {
        assert_eq!(data_plane(&lab, node, "MeshPath"), "tc", "node{node}");
    }

    for from in 1..=3 {
        for to in 1..=3 {
            let url = format!("http://{}:8080", lab.node_addr(to));
            let seen = ids(4, || text(&curl_on_node(&lab, from, &url).stdout));
            assert_eq!(
                seen.iter().cloned().collect::<BTreeSet<_>>(),
                expected,
                "node{from} -> node{to}: {seen:?}"
            );
        }
    }
    let seen = ids(4, || {
        text(&curl_on_node(&lab, 3, "http://localhost:8080").stdout)
    });
    assert_eq!(
        seen.iter().cloned().collect::<BTreeSet<_>>(),
        expected,
        "localhost on node3: {seen:?}"
    );

    // UDP through the published port, from another node.
    let out = std::process::Command::new(SHOAL)
        .args([
            "lab",
            "exec",
            "--name",
            &lab.name,
            "node2",
            "--",
            SHOAL,
            "demo",
            "udp-send",
            &format!("{}:5353", lab.node_addr(3)),
        ])
        .output()
        .unwrap();
    assert!(
        text(&out.stdout).contains("Processed by container ID"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    // A second service cannot take the port; removing the service closes it everywhere.
    let err = lab.fails(
        1,
        &[
            "service",
            "create",
            "--runtime",
            "host",
            "--name",
            "other",
            "-p",
            "8080:80",
            SHOAL,
            "demo",
            "vote",
        ],
    );
    assert!(
        err.contains("port 8080/tcp is already published by service vote"),
        "{err}"
    );
    lab.ok(1, &["service", "rm", "vote"]);
    for node in 1..=3 {
        let url = format!("http://{}:8080", lab.node_addr(node));
        wait_for(
            &format!("port 8080 closed on node{node}"),
            Duration::from_secs(20),
            || {
                let out = curl_on_node(&lab, 1, &url);
                if out.status.success() {
                    Err(text(&out.stdout))
                } else {
                    Ok(())
                }
            },
        );
    }
}

#[test]
fn traffic_local_keeps_the_client_address_and_tasks_reach_out() {
    let lab = Lab::up("local", 2, 1);
    lab.create("--name web --constraint node.hostname==node1 --publish published=8081,target=80,traffic=local SHOAL demo vote");
    lab.create("--name mesh --constraint node.hostname==node1 -p 8082:80 SHOAL demo vote");
    let (node1, node2) = (lab.node_addr(1), lab.node_addr(2));

    // traffic=local: node1 serves from its own task and the task sees node2's address.
    let page = text(&curl_on_node(&lab, 2, &format!("http://{node1}:8081")).stdout);
    assert!(page.contains(&format!("Client address {node2}<")), "{page}");
    // ...and node2, which runs no task of web, does not serve the port.
    assert!(
        !curl_on_node(&lab, 1, &format!("http://{node2}:8081"))
            .status
            .success()
    );
    // The cluster path on the task's node is one DNAT over the gateway bridge: the client's
    // address is kept there too (Swarm's ingress sandbox masquerades it away).
    let page = text(&curl_on_node(&lab, 2, &format!("http://{node1}:8082")).stdout);
    assert!(page.contains(&format!("Client address {node2}<")), "{page}");
    // Through node2, which runs no task, the flow is forwarded to node1 and masqueraded so
    // that replies return through node2: the task sees node2's address, whoever called.
    let page = text(&curl_on_node(&lab, 1, &format!("http://{node2}:8082")).stdout);
    assert!(page.contains(&format!("Client address {node2}<")), "{page}");

    // Egress through the gateway bridge: a task on node2 reaches a server on node1's address.
    lab.create("--name client --constraint node.hostname==node2 SHOAL demo client");
    lab.wait_running("client", 1);
    let out = lab.in_task(
        2,
        "client.1",
        &[
            "curl",
            "-s",
            "--max-time",
            "5",
            &format!("http://{node1}:8082"),
        ],
    );
    assert!(
        text(&out.stdout).contains("Processed by container ID"),
        "{}",
        text(&out.stderr)
    );
}

/// `--mesh-path nftables`, as when the tc program cannot load: the node says so and why, and
/// published ports work through the nftables rules alone, the client's address kept on the
/// task's node, closed once the service goes.
#[test]
fn published_ports_through_nftables_when_forced() {
    let lab = Lab::up_with("meshnft", 2, 1, &["--mesh-path", "nftables"]);
    for node in 1..=2 {
        assert_eq!(data_plane(&lab, node, "MeshPath"), "nftables");
        assert_eq!(
            data_plane(&lab, node, "MeshFallbackReason"),
            "--mesh-path nftables"
        );
    }
    lab.create(
        "--name vote --replicas 2 --constraint node.hostname==node1 -p 8083:80 SHOAL demo vote",
    );
    let votes = lab.wait_running("vote", 2);
    let expected: BTreeSet<String> = votes.iter().map(|(_, id)| id[..12].to_string()).collect();
    let (node1, node2) = (lab.node_addr(1), lab.node_addr(2));
    let pages: Vec<String> = (0..4)
        .map(|_| text(&curl_on_node(&lab, 2, &format!("http://{node1}:8083")).stdout))
        .collect();
    assert!(
        pages
            .iter()
            .all(|p| p.contains(&format!("Client address {node2}<"))),
        "{pages:?}"
    );
    let seen = ids(4, || {
        text(&curl_on_node(&lab, 2, &format!("http://{node1}:8083")).stdout)
    });
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), expected);
    let table = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.netns(1),
            "nft",
            "list",
            "table",
            "ip",
            "shoal_mesh",
        ])
        .output()
        .unwrap();
    let table = text(&table.stdout);
    assert!(table.contains("tcp dport 8083 numgen inc mod 2"), "{table}");
    assert!(!table.contains("meta mark vmap"), "{table}");
    lab.ok(1, &["service", "rm", "vote"]);
    wait_for("port 8083 closed", Duration::from_secs(20), || {
        let out = curl_on_node(&lab, 2, &format!("http://{node1}:8083"));
        // curl's 7: connection refused.
        if out.status.code() == Some(7) {
            Ok(())
        } else {
            Err(format!("{:?} {}", out.status, text(&out.stdout)))
        }
    });
}

#[test]
fn no_request_fails_while_tasks_stop() {
    let lab = Lab::up("drain", 2, 1);
    lab.ok(1, &["network", "create", "overlay1"]);
    lab.create(
        "--name client --network overlay1 --constraint node.hostname==node1 SHOAL demo client",
    );
    lab.create(
        "--name vote --network overlay1 --replicas 5 --stop-grace-period 2s SHOAL demo vote",
    );
    // Back-to-back requests through the VIP (thousands per second) while tasks stop. Only
    // stops: a task that starts is in the VIP as soon as its process runs, which can be a
    // moment before it listens (there are no readiness checks yet).
    let load = std::process::Command::new(SHOAL)
        .args([
            "-H",
            &lab.socket(1),
            "exec",
            "client.1",
            "--",
            SHOAL,
            "demo",
            "load",
            "vote:80",
            "--duration",
            "6s",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    for n in [4, 3, 2, 1] {
        lab.ok(1, &["service", "scale", &format!("vote={n}")]);
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = load.wait_with_output().unwrap();
    let report = text(&out.stdout);
    let requests: u64 = report
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    // That the load ran through the stops (hundreds of requests per stop here; the rate
    // itself is bench/mesh's business, so the floor is low).
    assert!(requests > 100, "the load ran: {report}");
    assert!(
        report.contains(" failed 0"),
        "requests failed while tasks stopped: {report}"
    );
}

/// The container id in a `shoal demo vote` answer (TCP page or UDP datagram).
fn answered_by(out: &std::process::Output) -> Option<String> {
    let page = text(&out.stdout);
    let id = page.split("Processed by container ID ").nth(1)?;
    Some(id.chars().take_while(|c| c.is_ascii_hexdigit()).collect())
}

/// One datagram from `node`'s own namespace, always from `sport`: runs in a row are one flow.
fn udp_from(lab: &Lab, node: u32, to: &str, sport: u16) -> Option<String> {
    let out = std::process::Command::new(SHOAL)
        .args([
            "lab",
            "exec",
            "--name",
            &lab.name,
            &format!("node{node}"),
            "--",
        ])
        .args([SHOAL, "demo", "udp-send", to, "--timeout", "1s"])
        .args(["--source-port", &sport.to_string()])
        .output()
        .unwrap();
    answered_by(&out)
}

#[test]
fn a_removed_task_leaves_the_mesh_udp_flows_too() {
    let lab = Lab::up("meshudp", 2, 1);
    lab.create("--name vote --replicas 2 --restart-condition none -p 5353:5353/udp SHOAL demo vote --udp 5353");
    let votes = lab.wait_running("vote", 2);
    let on = |node: u32| {
        votes
            .iter()
            .find(|(n, _)| *n == node)
            .map(|(_, id)| id[..12].to_string())
            .unwrap_or_else(|| panic!("no task on node{node}: {votes:?}"))
    };
    let (t1, t2) = (on(1), on(2));
    let (node1, node2) = (lab.node_addr(1), lab.node_addr(2));
    // Two flows into each node, each from another node's own namespace (a node as a
    // client is balanced over the cluster): round robin sends each pair to both tasks,
    // one of them through the other node.
    let flows = [
        (2, format!("{node1}:5353"), 40000),
        (2, format!("{node1}:5353"), 40001),
        (1, format!("{node2}:5353"), 40002),
        (1, format!("{node2}:5353"), 40003),
    ];
    let first: Vec<String> = flows
        .iter()
        .map(|(from, to, sport)| udp_from(&lab, *from, to, *sport).expect("udp answer"))
        .collect();
    for pair in first.chunks(2) {
        let seen: BTreeSet<&String> = pair.iter().collect();
        assert_eq!(seen, BTreeSet::from([&t1, &t2]), "{first:?}");
    }
    // Each flow is one conntrack entry: it keeps its task.
    for ((from, to, sport), task) in flows.iter().zip(&first) {
        assert_eq!(udp_from(&lab, *from, to, *sport).as_ref(), Some(task));
    }

    // node2's task dies. On node1 the flow forwarded to node2 goes (node2 has no task left);
    // on node2 the flow delivered to its own task goes. Their next datagrams reach t1.
    let (_, victim) = votes.iter().find(|(n, _)| *n == 2).unwrap();
    let pid = lab.task_json(victim)["Status"]["PID"]
        .as_u64()
        .unwrap()
        .to_string();
    std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap();
    wait_for(
        "every flow to reach the live task",
        Duration::from_secs(20),
        || {
            let now: Vec<Option<String>> = flows
                .iter()
                .map(|(from, to, sport)| udp_from(&lab, *from, to, *sport))
                .collect();
            if now.iter().all(|t| t.as_ref() == Some(&t1)) {
                Ok(())
            } else {
                Err(format!("{now:?}"))
            }
        },
    );
}
