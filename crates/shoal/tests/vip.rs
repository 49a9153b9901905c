//! The node's VIP balancer on lab clusters: eBPF by default (one instance per node, several
//! nodes sharing this kernel), nftables when forced. Asserted with real `curl` and `bash`
//! inside tasks.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::*;

/// The container id a `demo vote` page names, and the client address it shows.
fn page_facts(page: &str) -> (String, String) {
    let field = |label: &str| {
        page.split(label)
            .nth(1)
            .and_then(|r| r.split('<').next())
            .unwrap_or_else(|| panic!("no {label:?} in {page:?}"))
            .to_string()
    };
    (
        field("Processed by container ID "),
        field("Client address "),
    )
}

fn log(lab: &Lab, node: u32) -> String {
    std::fs::read_to_string(lab.dir().join(format!("node{node}/shoald.log"))).unwrap_or_default()
}

/// The ids of the VIP balancer's eBPF programs a process holds, from its fds (`prog_id` in
/// the fdinfo of its program and link fds): the cgroup socket-address programs (prog_type
/// 18) and their cgroup links, and the cgroup link of the sock_release program. The routing mesh's tc programs (prog_type 3, tcx links) are
/// the daemon's too, and not counted here.
fn programs_of(pid: u32) -> BTreeSet<u64> {
    let dir = format!("/proc/{pid}/fd");
    let mut ids = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let target = std::fs::read_link(entry.path()).unwrap_or_default();
        if !target.to_string_lossy().contains("bpf") {
            continue;
        }
        let fd = entry.file_name().to_string_lossy().into_owned();
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap_or_default();
        let balancer = info.lines().any(|l| {
            let l = l.replace(char::is_whitespace, "");
            l == "prog_type:18" || l == "link_type:cgroup"
        });
        if !balancer {
            continue;
        }
        ids.extend(
            info.lines()
                .filter_map(|l| l.strip_prefix("prog_id:"))
                .filter_map(|v| v.trim().parse::<u64>().ok()),
        );
    }
    ids
}

fn attached_at_cgroup_root() -> String {
    let root = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .find(|p| std::path::Path::new(p).join("cgroup.procs").exists())
        .expect("a cgroup v2 root");
    text(
        &Command::new("bpftool")
            .args(["-j", "cgroup", "show", root])
            .output()
            .expect("run bpftool")
            .stdout,
    )
}

#[test]
fn ebpf_balancer_one_per_node_across_the_cluster() {
    let lab = Lab::up("vipbpf", 3, 1);
    let pids: Vec<u32> = (1..=3)
        .map(|n| lab.daemon_pid(n).expect("daemon pid"))
        .collect();
    for (n, pid) in (1..=3).zip(&pids) {
        assert!(
            log(&lab, n).contains("VIP balancer: eBPF"),
            "node{n}: {}",
            log(&lab, n)
        );
        assert_eq!(
            programs_of(*pid).len(),
            5,
            "node{n}'s own five programs (four socket-address ones and sock_release)"
        );
    }
    let held: Vec<u64> = pids.iter().flat_map(|p| programs_of(*p)).collect();

    lab.ok(1, &["network", "create", "overlay1"]);
    lab.ok(1, &["network", "create", "overlay2"]);
    lab.create("--name vote --network overlay1 --replicas 2 SHOAL demo vote");
    lab.create("--name client --network overlay1 --replicas 3 SHOAL demo client");
    lab.create("--name outsider --network overlay2 SHOAL demo client");
    let votes: BTreeSet<String> = lab
        .wait_running("vote", 2)
        .iter()
        .map(|(_, id)| id[..12].to_string())
        .collect();

    let clients = lab.wait_running("client", 3);
    let vip = lab.dig(clients[0].0, &clients[0].1, &["vote"]).join("");
    // From a client on every node it runs on: both tasks, in turn, each seeing the client's
    // own address (no NAT on the VIP path).
    for (node, client) in clients {
        let addr = lab.task_addr(&client);
        let mut seen = Vec::new();
        for _ in 0..4 {
            let out = lab.in_task(node, &client, &["curl", "-s", "--max-time", "5", "vote"]);
            let (id, saw) = page_facts(&text(&out.stdout));
            assert_eq!(saw, addr, "node{node}: the task sees the client's address");
            seen.push(id);
        }
        assert_eq!(
            seen.iter().cloned().collect::<BTreeSet<_>>(),
            votes,
            "node{node}"
        );
        assert!(
            seen.windows(2).all(|w| w[0] != w[1]),
            "round robin: {seen:?}"
        );
    }

    // A task on overlay2 only cannot reach overlay1's VIP: refused at once, not a timeout.
    let (node, outsider) = lab.wait_running("outsider", 1)[0].clone();
    let out = lab.in_task(
        node,
        &outsider,
        &["bash", "-c", &format!("echo > /dev/tcp/{vip}/80")],
    );
    assert!(
        text(&out.stderr).contains("Network is unreachable"),
        "{}",
        text(&out.stderr)
    );

    // Every node's programs go with its daemon (`lab down` kills them with SIGKILL).
    let root = attached_at_cgroup_root();
    assert!(
        held.iter()
            .all(|id| root.contains(&format!("\"id\":{id},")))
    );
    drop(lab);
    let root = attached_at_cgroup_root();
    for id in held {
        assert!(
            !root.contains(&format!("\"id\":{id},")),
            "program {id} still attached"
        );
    }
}

#[test]
fn nftables_when_forced() {
    let lab = Lab::up_with("vipnft", 2, 1, &["--vip-balancer", "nftables"]);
    assert!(
        log(&lab, 1).contains("VIP balancer: nftables"),
        "{}",
        log(&lab, 1)
    );
    lab.ok(1, &["network", "create", "overlay1"]);
    lab.create(
        "--name client --network overlay1 --constraint node.hostname==node1 SHOAL demo client",
    );
    lab.create("--name vote --network overlay1 --replicas 2 SHOAL demo vote");
    let votes: BTreeSet<String> = lab
        .wait_running("vote", 2)
        .iter()
        .map(|(_, id)| id[..12].to_string())
        .collect();
    let seen: BTreeSet<String> = (0..4)
        .map(|_| {
            let out = lab.in_task(1, "client.1", &["curl", "-s", "--max-time", "5", "vote"]);
            page_facts(&text(&out.stdout)).0
        })
        .collect();
    assert_eq!(seen, votes);
    // The seed's ipvsadm view: nftables in the client's sandbox maps the VIP.
    let nft = text(
        &lab.in_task(1, "client.1", &["nft", "list", "table", "ip", "shoal"])
            .stdout,
    );
    assert!(nft.contains(": goto svc_"), "{nft}");
}
