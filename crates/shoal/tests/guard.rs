//! The node guard (`inet shoal_guard`, shoal-agent's `guard`) on lab clusters: loopback from
//! outside, VXLAN from a host that is not a node and task-to-task through the gateway are
//! dropped and counted, while the host's own clients, overlay traffic between nodes and the
//! routing mesh (also a task reaching a published port on its own node) work. The stranger
//! is a namespace of the test's own on the lab bridge, as a host on the nodes' LAN would be.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::*;

const PAGE: &str = "Processed by container ID";

/// `curl -sS --max-time 3 URL` run by `prefix` (a command that enters some namespace).
fn curl(prefix: &[&str], url: &str) -> Output {
    Command::new(prefix[0])
        .args(&prefix[1..])
        .args(["curl", "-sS", "--max-time", "3", url])
        .output()
        .expect("run curl")
}

fn lab_exec<'a>(lab: &'a Lab, node: &'a str) -> Vec<&'a str> {
    vec![SHOAL, "lab", "exec", "--name", &lab.name, node, "--"]
}

fn ip_in(netns: &str, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", netns])
        .args(args)
        .output()
        .expect("run ip netns exec")
}

/// A packet counter of the node's guard table.
fn counter(lab: &Lab, node: u32, name: &str) -> u64 {
    let out = ip_in(
        &lab.netns(node),
        &["nft", "list", "counter", "inet", "shoal_guard", name],
    );
    let s = text(&out.stdout);
    s.split("packets ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter {name} on node{node}: {s}{}", text(&out.stderr)))
}

/// A task's address on the gateway (its `gw0`).
fn gateway_addr(lab: &Lab, node: u32, task: &str) -> String {
    let out = lab.in_task(
        node,
        task,
        &["ip", "-4", "-o", "addr", "show", "dev", "gw0"],
    );
    let s = text(&out.stdout);
    s.split("inet ")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("no gw0 address in {task}: {s}{}", text(&out.stderr)))
        .to_string()
}

/// A host on the lab's LAN that is not a node: namespace `shoal-<lab>-out`, plugged into the
/// lab bridge at .200, removed on drop (before the lab, as it is declared after it).
struct Stranger {
    netns: String,
    addr: String,
}

impl Stranger {
    fn new(lab: &Lab, node1: &str) -> Stranger {
        let netns = format!("shoal-{}-out", lab.name);
        let addr = format!("{}.200", node1.rsplit_once('.').unwrap().0);
        let s = Stranger {
            netns: netns.clone(),
            addr: addr.clone(),
        };
        let bridge = format!("shoal-{}-net", lab.name);
        let addr24 = format!("{addr}/24");
        // `lo` stays down, so the stranger has no local 127.0.0.0/8 of its own and sends
        // 127.0.0.1 to node1 (with route_localnet, as the CVE's exploit does).
        for cmd in [
            vec!["netns", "add", &netns],
            vec![
                "-n", &netns, "link", "add", "eth0", "type", "veth", "peer", "name", "out0",
                "netns", &bridge,
            ],
            vec!["-n", &bridge, "link", "set", "out0", "master", "br0", "up"],
            vec!["-n", &netns, "addr", "add", &addr24, "dev", "eth0"],
            vec!["-n", &netns, "link", "set", "eth0", "up"],
            vec!["-n", &netns, "route", "add", "127.0.0.1/32", "via", node1],
        ] {
            let out = Command::new("ip").args(&cmd).output().expect("run ip");
            assert!(out.status.success(), "ip {cmd:?}: {}", text(&out.stderr));
        }
        let out = ip_in(
            &netns,
            &["sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1"],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        s
    }

    fn exec(&self) -> Vec<&str> {
        vec!["ip", "netns", "exec", &self.netns]
    }
}

impl Drop for Stranger {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
    }
}

/// (c) on either mesh path: the client (network neta) cannot reach web's task (network
/// netb, same node) at its gateway address, and reaches it through the published port on
/// its node's address. A task's gateway subnet is on-link, so without a route neither
/// would get through anyway (ARP for the other goes unanswered): both tasks route the
/// other's address through the gateway, as a task with NET_ADMIN can (or NET_RAW, sending
/// frames to the gateway's MAC); without the guard the connection succeeds then.
fn tasks_isolated_but_the_mesh_delivers(lab: &Lab, node1: &str) {
    let web = gateway_addr(lab, 1, "web.1");
    let client = gateway_addr(lab, 1, "client.1");
    let route = text(
        &lab.in_task(1, "client.1", &["ip", "-4", "route", "show", "default"])
            .stdout,
    );
    let gw = route
        .split("via ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no default route in client.1: {route}"))
        .to_string();
    for (task, to) in [("client.1", &web), ("web.1", &client)] {
        let to = format!("{to}/32");
        let out = lab.in_task(
            1,
            task,
            &["ip", "route", "add", &to, "via", &gw, "dev", "gw0"],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let before = counter(lab, 1, "task_to_task");
    let out = lab.in_task(
        1,
        "client.1",
        &[
            "curl",
            "-sS",
            "--max-time",
            "3",
            &format!("http://{web}:80"),
        ],
    );
    // curl's 28: timed out (the SYN is dropped, nothing answers).
    assert_eq!(
        out.status.code(),
        Some(28),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("timed out"),
        "{}",
        text(&out.stderr)
    );
    assert!(counter(lab, 1, "task_to_task") > before);
    let out = lab.in_task(
        1,
        "client.1",
        &[
            "curl",
            "-sS",
            "--max-time",
            "5",
            &format!("http://{node1}:8090"),
        ],
    );
    assert!(
        text(&out.stdout).contains(PAGE),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn services(lab: &Lab) {
    lab.ok(1, &["network", "create", "neta"]);
    lab.ok(1, &["network", "create", "netb"]);
    lab.create(
        "--name web --network netb --constraint node.hostname==node1 -p 8090:80 SHOAL demo vote",
    );
    lab.create("--name client --network neta --constraint node.hostname==node1 SHOAL demo client");
    lab.wait_running("web", 1);
    lab.wait_running("client", 1);
}

#[test]
fn loopback_from_outside_vxlan_from_strangers_and_task_to_task_are_dropped() {
    let lab = Lab::up("guard", 2, 1);
    services(&lab);
    lab.create("--name peer --network netb --constraint node.hostname==node2 SHOAL demo client");
    lab.wait_running("peer", 1);
    let (node1, node2) = (lab.node_addr(1), lab.node_addr(2));
    let stranger = Stranger::new(&lab, &node1);

    // (a) The stranger reaches the published port on node1's address (it is published to
    // the LAN), but not through 127.0.0.1, which only the host itself may use.
    let out = curl(&stranger.exec(), &format!("http://{node1}:8090"));
    assert!(text(&out.stdout).contains(PAGE), "{}", text(&out.stderr));
    let before = counter(&lab, 1, "loopback_from_outside");
    let out = curl(&stranger.exec(), "http://127.0.0.1:8090");
    assert_eq!(
        out.status.code(),
        Some(28),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(counter(&lab, 1, "loopback_from_outside") > before);
    let out = curl(&lab_exec(&lab, "node1"), "http://127.0.0.1:8090");
    assert!(text(&out.stdout).contains(PAGE), "{}", text(&out.stderr));

    // (b) Five VXLAN datagrams from the stranger: five drops, counted.
    let vxlan_before = counter(&lab, 1, "vxlan_from_non_members");
    let send = format!("for i in 1 2 3 4 5; do echo x >/dev/udp/{node1}/4789; done");
    let out = ip_in(&stranger.netns, &["bash", "-c", &send]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(counter(&lab, 1, "vxlan_from_non_members"), vxlan_before + 5);
    // The nodes are members: overlay traffic from node2's task to node1's goes on, and none
    // of it is counted.
    let out = lab.in_task(
        2,
        "peer.1",
        &["curl", "-sS", "--max-time", "5", "http://web"],
    );
    assert!(text(&out.stdout).contains(PAGE), "{}", text(&out.stderr));
    assert_eq!(counter(&lab, 1, "vxlan_from_non_members"), vxlan_before + 5);
    let set = text(
        &ip_in(
            &lab.netns(1),
            &["nft", "list", "set", "inet", "shoal_guard", "nodes"],
        )
        .stdout,
    );
    assert!(set.contains(&node2), "{set}");
    assert!(!set.contains(&stranger.addr), "{set}");

    // A host on the LAN that routes the gateway subnet through node1 does not reach web's
    // task at its gateway address either (only through the published port, above).
    let web = gateway_addr(&lab, 1, "web.1");
    let subnet = format!(
        "{}.0.0/16",
        web.splitn(3, '.').take(2).collect::<Vec<_>>().join(".")
    );
    let out = Command::new("ip")
        .args([
            "-n",
            &stranger.netns,
            "route",
            "add",
            &subnet,
            "via",
            &node1,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let before = counter(&lab, 1, "task_to_task");
    let out = curl(&stranger.exec(), &format!("http://{web}:80"));
    assert_eq!(
        out.status.code(),
        Some(28),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(counter(&lab, 1, "task_to_task") > before);

    // (c) On the tc path (the lab's default).
    tasks_isolated_but_the_mesh_delivers(&lab, &node1);

    // node2 leaves: its guard goes with its data plane (route_localnet off first), and
    // node1 stops taking VXLAN from it once the cluster sees it gone.
    lab.ok(2, &["leave"]);
    let tables = text(&ip_in(&lab.netns(2), &["nft", "list", "tables"]).stdout);
    assert!(!tables.contains("shoal_guard"), "{tables}");
    let localnet = ip_in(
        &lab.netns(2),
        &["sysctl", "-n", "net.ipv4.conf.all.route_localnet"],
    );
    assert_eq!(text(&localnet.stdout).trim(), "0");
    wait_for(
        "node1 to drop node2 from its members",
        Duration::from_secs(40),
        || {
            let set = text(
                &ip_in(
                    &lab.netns(1),
                    &["nft", "list", "set", "inet", "shoal_guard", "nodes"],
                )
                .stdout,
            );
            if set.contains(&node2) {
                Err(set)
            } else {
                Ok(())
            }
        },
    );
    drop(stranger);
}

#[test]
fn tasks_are_isolated_on_the_nftables_mesh_path_too() {
    let lab = Lab::up_with("guardnft", 1, 1, &["--mesh-path", "nftables"]);
    services(&lab);
    tasks_isolated_but_the_mesh_delivers(&lab, &lab.node_addr(1));
}
