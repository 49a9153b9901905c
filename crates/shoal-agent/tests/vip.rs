//! The node's VIP balancer through the agent's interface, on the real kernel (root), with each
//! implementation: what a task sees is the same (round robin, its own address kept, a change
//! applied), except that eBPF also refuses a VIP of another network at once.
//!
//! Namespaces are the test's own (`shoaltest-vip-<pid>-<n>-*`), deleted on drop even when a
//! test fails; the eBPF programs are detached when the balancer is dropped.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use shoal_agent::vip::{VipBalancer, VipChoice};
use shoal_types::endpoint::EndpointView;

const A: Ipv4Addr = Ipv4Addr::new(10, 79, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 79, 0, 2);
const VIP: &str = "10.79.0.100";
const VIP2: &str = "10.79.0.102";
const PORT: u16 = 8080;

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// a (10.79.0.1), b (.2), b1 (.11), b2 (.12) on one bridge; b1 and b2 answer
/// `<name> <peer>` on TCP 8080. Fields drop in order: the bridge namespace last.
struct Lab {
    a: Netns,
    b: Netns,
    _backends: Vec<Netns>,
    _br: Netns,
}

fn lab() -> Lab {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let prefix = format!(
        "shoaltest-vip-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let make = |suffix: &str| {
        let ns = Netns(format!("{prefix}-{suffix}"));
        let _ = Command::new("ip").args(["netns", "del", &ns.0]).output();
        ip(&["netns", "add", &ns.0]);
        ip(&["-n", &ns.0, "link", "set", "lo", "up"]);
        ns
    };
    let br = make("br");
    ip(&["-n", &br.0, "link", "add", "br0", "type", "bridge"]);
    ip(&["-n", &br.0, "link", "set", "br0", "up"]);
    let attach = |suffix: &str, last: u8| {
        let ns = make(suffix);
        let port = format!("p-{suffix}");
        ip(&[
            "-n", &br.0, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
            &ns.0,
        ]);
        ip(&["-n", &br.0, "link", "set", &port, "master", "br0", "up"]);
        let cidr = format!("10.79.0.{last}/24");
        ip(&["-n", &ns.0, "addr", "add", &cidr, "dev", "eth0"]);
        ip(&["-n", &ns.0, "link", "set", "eth0", "up"]);
        ns
    };
    let a = attach("a", 1);
    let b = attach("b", 2);
    let b1 = attach("b1", 11);
    let b2 = attach("b2", 12);
    for (ns, name) in [(&b1, "b1"), (&b2, "b2")] {
        let listener = shoal_net::run_in_netns(&ns.0, || TcpListener::bind(("0.0.0.0", PORT)))
            .expect("enter")
            .expect("bind");
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let peer = stream.peer_addr().map(|p| p.ip().to_string());
                    let mut w = stream.try_clone().expect("clone");
                    for _ in BufReader::new(stream).lines().map_while(Result::ok) {
                        let _ = writeln!(w, "{name} {}", peer.as_deref().unwrap_or("?"));
                    }
                });
            }
        });
    }
    Lab {
        a,
        b,
        _backends: vec![b1, b2],
        _br: br,
    }
}

/// `web` on net1 (VIP) and `api` on net2 (VIP2), with the given backends (last octets).
fn view(web: &[u8], api: &[u8]) -> EndpointView {
    let net = |id: &str, vip: &str, backends: &[u8]| {
        let tasks: serde_json::Map<String, serde_json::Value> = backends
            .iter()
            .map(|b| {
                (
                    format!("t{b}"),
                    serde_json::json!({"id": format!("t{b}"), "name": "t", "service_id": "svc",
                        "addr": format!("10.79.0.{b}/24"), "node_id": "n1", "vtep": "192.168.0.1"}),
                )
            })
            .collect();
        serde_json::json!({"info": {"id": id, "name": id, "vni": 4097, "subnet": "10.79.0.0/24",
                "gateway": "10.79.0.254", "ingress": false},
            "services": {"svc": {"id": "svc", "name": id, "mode": "vip",
                "vip": format!("{vip}/24"), "ports": [], "aliases": [], "dns_ttl": null}},
            "tasks": tasks})
    };
    serde_json::from_value(serde_json::json!({"version": 1, "networks": {
        "net1": net("net1", VIP, web), "net2": net("net2", VIP2, api)}}))
    .expect("a valid view")
}

/// One request on a new connection from `ns`: (backend name, the address it saw).
async fn request(ns: &Netns, to: &str, timeout: Duration) -> std::io::Result<(String, String)> {
    let to: Ipv4Addr = to.parse().expect("ip");
    let name = ns.0.clone();
    tokio::task::spawn_blocking(move || {
        let conn = shoal_net::run_in_netns(&name, move || {
            TcpStream::connect_timeout(&SocketAddr::from((to, PORT)), timeout)
        })
        .expect("enter")?;
        conn.set_read_timeout(Some(Duration::from_secs(3)))?;
        (&conn).write_all(b"hi\n")?;
        let mut line = String::new();
        BufReader::new(&conn).read_line(&mut line)?;
        let (n, p) = line.trim().split_once(' ').unwrap_or(("", ""));
        Ok((n.to_string(), p.to_string()))
    })
    .await
    .expect("join")
}

async fn same_behaviour(lb: &VipBalancer, lab: &Lab) {
    let v = view(&[11, 12], &[12]);
    lb.apply(&std::sync::Arc::new(v.clone())).await;
    lb.attach_sandbox("task-a", &lab.a.0, &["net1".into()], &v)
        .await
        .expect("attach a");
    lb.attach_sandbox("task-b", &lab.b.0, &["net2".into()], &v)
        .await
        .expect("attach b");
    let mut seen = Vec::new();
    for _ in 0..4 {
        let (name, peer) = request(&lab.a, VIP, Duration::from_secs(3))
            .await
            .expect("via VIP");
        assert_eq!(
            peer,
            A.to_string(),
            "the backend sees the task's own address"
        );
        seen.push(name);
    }
    seen.sort();
    assert_eq!(seen, ["b1", "b1", "b2", "b2"], "{}", lb.kind());
    let (name, peer) = request(&lab.b, VIP2, Duration::from_secs(3))
        .await
        .expect("b's own VIP");
    assert_eq!((name.as_str(), peer), ("b2", B.to_string()));

    // An endpoint change reaches the sandbox.
    lb.apply(&std::sync::Arc::new(view(&[12], &[12]))).await;
    for _ in 0..3 {
        let (name, _) = request(&lab.a, VIP, Duration::from_secs(3))
            .await
            .expect("via VIP");
        assert_eq!(name, "b2", "{}", lb.kind());
    }
}

#[tokio::test]
async fn ebpf_balances_and_keeps_networks_apart() {
    let lab = lab();
    let lb = VipBalancer::select(VipChoice::Ebpf).expect("eBPF loads here (root, 6.x)");
    assert_eq!(lb.kind(), "ebpf");
    assert_eq!(lb.info().fallback_reason, None);
    same_behaviour(&lb, &lab).await;
    let err = request(&lab.b, VIP, Duration::from_secs(3))
        .await
        .expect_err("net1's VIP from a task on net2");
    assert_eq!(err.kind(), ErrorKind::NetworkUnreachable, "{err:?}");
    lb.release_sandbox("task-a").await;
    // Released: its sockets are no longer this node's business.
    let err = request(&lab.a, VIP, Duration::from_millis(300))
        .await
        .expect_err("released");
    assert!(
        matches!(err.kind(), ErrorKind::TimedOut | ErrorKind::HostUnreachable),
        "{err:?}"
    );
}

#[tokio::test]
async fn nftables_fallback_balances_the_same() {
    let lab = lab();
    let lb = VipBalancer::select(VipChoice::Nftables).expect("nftables");
    assert_eq!(lb.kind(), "nftables");
    same_behaviour(&lb, &lab).await;
    // A VIP of another network is simply not in the sandbox's table.
    let err = request(&lab.b, VIP, Duration::from_millis(300))
        .await
        .expect_err("net1's VIP from a task on net2");
    assert!(
        matches!(err.kind(), ErrorKind::TimedOut | ErrorKind::HostUnreachable),
        "{err:?}"
    );
}

#[tokio::test]
async fn auto_picks_ebpf_where_it_loads() {
    let lb = VipBalancer::select(VipChoice::Auto).expect("auto");
    assert_eq!(lb.kind(), "ebpf", "{:?}", lb.info().fallback_reason);
}
