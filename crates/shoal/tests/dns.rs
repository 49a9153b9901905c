//! Overlay networks and the embedded DNS server on lab clusters, asserted with the real
//! `dig` and `curl` inside tasks (scenario 1 of the seed, and what Swarm users miss).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::upstream::{ANSWER, Upstream};
use common::*;

const SLOW: Duration = Duration::from_secs(30);

#[test]
fn scenario_1_dnsrr_across_two_nodes() {
    let lab = Lab::up("dnsrr", 2, 1);
    lab.ok(1, &["network", "create", "--driver", "overlay", "overlay1"]);
    lab.create(
        "--name client --network overlay1 --constraint node.hostname==node1 SHOAL demo client",
    );
    lab.create("--endpoint-mode dnsrr --name vote --network overlay1 --replicas 2 SHOAL demo vote");
    let votes = lab.wait_running("vote", 2);
    lab.wait_running("client", 1);
    let nodes: BTreeSet<u32> = votes.iter().map(|v| v.0).collect();
    assert_eq!(nodes.len(), 2, "one vote task per node: {votes:?}");
    let addrs: BTreeSet<String> = votes.iter().map(|(_, id)| lab.task_addr(id)).collect();

    // dig vote: both task addresses, in an order that varies from query to query.
    let mut firsts = BTreeSet::new();
    for _ in 0..12 {
        let answer = lab.dig(1, "client.1", &["vote"]);
        assert_eq!(
            answer.iter().cloned().collect::<BTreeSet<_>>(),
            addrs,
            "{answer:?}"
        );
        firsts.insert(answer[0].clone());
    }
    assert_eq!(firsts.len(), 2, "the order is shuffled per query");

    // The task on the other node is reachable over the overlay: its page names it.
    let (_, remote) = votes.iter().find(|(n, _)| *n == 2).unwrap();
    let page = text(
        &lab.in_task(
            1,
            "client.1",
            &["curl", "-s", "--max-time", "5", &lab.task_addr(remote)],
        )
        .stdout,
    );
    assert!(
        page.contains(&format!("Processed by container ID {}", &remote[..12])),
        "{page}"
    );

    // ping's reverse lookup names the task and its network, as in the seed.
    let ping = text(
        &lab.in_task(1, "client.1", &["ping", "-c1", "-W2", "vote"])
            .stdout,
    );
    assert!(ping.contains(".overlay1 ("), "{ping}");

    // The TTL is short (Swarm's is fixed at 600 s).
    let full = text(
        &lab.in_task(1, "client.1", &["dig", "+noall", "+answer", "vote"])
            .stdout,
    );
    assert!(
        full.lines()
            .all(|l| l.split_whitespace().nth(1) == Some("5")),
        "{full}"
    );
}

#[test]
fn names_vip_ptr_srv_and_forwarding() {
    let lab = Lab::up_with("names", 2, 1, &["--dns-upstream", "127.0.0.1:5300"]);
    let _upstream = Upstream::start(&lab.netns(1), "127.0.0.1:5300");
    lab.ok(1, &["network", "create", "overlay1"]);
    lab.create(
        "--name client --network overlay1 --constraint node.hostname==node1 SHOAL demo client",
    );
    lab.create(
        "--name vote --network name=overlay1,alias=ballot --replicas 2 -p 8080:80 SHOAL demo vote",
    );
    let votes = lab.wait_running("vote", 2);
    lab.wait_running("client", 1);

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
    let net_id = lab
        .ok(
            1,
            &["network", "inspect", "--format", "{{.ID}}", "overlay1"],
        )
        .trim()
        .to_string();
    let vip = vips
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split("} {")
        .map(|v| v.trim_matches(|c| c == '{' || c == '}'))
        .find_map(|v| v.strip_prefix(&format!("{net_id} ")))
        .unwrap_or_else(|| panic!("no VIP on overlay1 in {vips}"))
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(
        lab.dig(1, "client.1", &["vote"]),
        [vip.as_str()],
        "vip mode answers the VIP only"
    );
    assert_eq!(
        lab.dig(1, "client.1", &["ballot"]),
        [vip.as_str()],
        "a network alias resolves like the name"
    );
    assert_eq!(lab.dig(1, "client.1", &["vote.overlay1"]), [vip.as_str()]);

    let addrs: BTreeSet<String> = votes.iter().map(|(_, id)| lab.task_addr(id)).collect();
    let tasks: BTreeSet<String> = lab
        .dig(1, "client.1", &["tasks.vote"])
        .into_iter()
        .collect();
    assert_eq!(tasks, addrs);
    let (_, id) = &votes[0];
    let name = lab.task_json(id)["Slot"]
        .as_u64()
        .map(|s| format!("vote.{s}.{id}"))
        .unwrap();
    let addr = lab.task_addr(id);
    assert_eq!(
        lab.dig(1, "client.1", &[&name]),
        [addr.as_str()],
        "task name"
    );
    assert_eq!(
        lab.dig(1, "client.1", &[&id[..12]]),
        [addr.as_str()],
        "short task id"
    );
    assert_eq!(
        lab.dig(1, "client.1", &["-x", &addr]),
        [format!("{name}.overlay1.")],
        "PTR"
    );
    let srv = lab.dig(1, "client.1", &["SRV", "_80._tcp.vote"]);
    assert_eq!(srv.len(), 1, "{srv:?}");
    assert!(
        srv[0].ends_with(" 80 vote.overlay1."),
        "SRV to the service on its target port: {srv:?}"
    );
    assert_eq!(
        lab.dig(1, "client.1", &["AAAA", "vote"]),
        Vec::<String>::new(),
        "NODATA for a known name"
    );
    assert_eq!(lab.dig_status(1, "client.1", "AAAA vote"), "NOERROR");
    assert_eq!(lab.dig_status(1, "client.1", "nosuch.overlay1"), "NXDOMAIN");
    assert_eq!(lab.dig_status(1, "client.1", "tasks.nosuch"), "NXDOMAIN");

    // Names that are not the cluster's go to the upstream (the test's own server).
    assert_eq!(
        lab.dig(1, "client.1", &["example.test"]),
        [ANSWER.to_string()]
    );
    assert_eq!(lab.dig_status(1, "client.1", "unknown.test"), "NXDOMAIN");

    // TTLs: a VIP is stable (60 s), task addresses are not (5 s), also in vip mode;
    // `--dns-ttl` sets every record of its service.
    lab.create("--name timed --network overlay1 --dns-ttl 30 SHOAL demo vote --port 81");
    lab.wait_running("timed", 1);
    let ttl = |name: &str| {
        let out = lab.in_task(1, "client.1", &["dig", "+noall", "+answer", name]);
        let answer = text(&out.stdout);
        let ttls: Vec<String> = answer
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
            .collect();
        assert_eq!(ttls.len(), 1, "dig {name}: {answer}");
        ttls[0].clone()
    };
    assert_eq!(ttl("vote"), "60");
    assert_eq!(ttl("tasks.client"), "5");
    assert_eq!(ttl("timed"), "30");
    assert_eq!(ttl("tasks.timed"), "30");

    // Scaled to zero, a vip service still resolves (Swarm's stops resolving).
    lab.ok(1, &["service", "scale", "vote=0"]);
    assert_eq!(lab.dig(1, "client.1", &["vote"]), [vip]);
    assert_eq!(
        lab.dig(1, "client.1", &["tasks.vote"]),
        Vec::<String>::new()
    );
}

#[test]
fn a_killed_task_leaves_dns_on_every_node_and_networks_are_isolated() {
    // The test's own upstream on every node: a name that is not the cluster's gets its
    // NXDOMAIN, whatever the host's resolvers would say.
    let lab = Lab::up_with("kill", 3, 1, &["--dns-upstream", "127.0.0.1:5300"]);
    let _upstreams: Vec<Upstream> = (1..=3)
        .map(|n| Upstream::start(&lab.netns(n), "127.0.0.1:5300"))
        .collect();
    lab.ok(1, &["network", "create", "overlay1"]);
    lab.ok(1, &["network", "create", "overlay2"]);
    lab.create("--name client --mode global --network overlay1 SHOAL demo client");
    lab.create("--endpoint-mode dnsrr --name vote --network overlay1 --replicas 3 --restart-condition none SHOAL demo vote");
    lab.create("--name other --network overlay2 SHOAL demo client");
    let votes = lab.wait_running("vote", 3);
    let clients = lab.wait_running("client", 3);
    let others = lab.wait_running("other", 1);
    let victim = &votes[0].1;
    let victim_addr = lab.task_addr(victim);
    for (node, client) in &clients {
        let answer = lab.dig(*node, client, &["vote"]);
        assert!(
            answer.contains(&victim_addr),
            "node{node} sees all three before the kill: {answer:?}"
        );
    }

    let pid = lab.task_json(victim)["Status"]["PID"]
        .as_u64()
        .unwrap()
        .to_string();
    std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap();
    for (node, client) in &clients {
        wait_for(
            &format!("the killed task to leave DNS on node{node}"),
            SLOW,
            || {
                let answer = lab.dig(*node, client, &["vote"]);
                if answer.len() == 2 && !answer.contains(&victim_addr) {
                    Ok(())
                } else {
                    Err(format!("{answer:?}"))
                }
            },
        );
    }

    // A task on another network neither resolves nor reaches vote: the name is not its
    // network's, so it goes upstream (NXDOMAIN), and the address is not routed.
    let (onode, other) = &others[0];
    assert_eq!(lab.dig_status(*onode, other, "vote"), "NXDOMAIN");
    let alive = &votes[1].1;
    let out = lab.in_task(
        *onode,
        other,
        &["curl", "-sS", "--max-time", "2", &lab.task_addr(alive)],
    );
    assert_eq!(
        out.status.code(),
        Some(7),
        "overlay2 must not reach overlay1: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}
