//! Conntrack entries of a removed backend are deleted over netlink, with no `conntrack`
//! process: the test body runs in a child of this test binary whose PATH holds only `ip` and
//! `nft`, so spawning `conntrack` would fail the flush.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use shoal_lb::{Balancer, StaleFlows, flush_conntrack};

/// The backend name in an answer `<name> <peer>`.
fn backend(answer: &str) -> &str {
    answer.split_once(' ').map_or(answer, |(name, _)| name)
}

fn find_program(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{name} is not installed"))
}

#[test]
fn removed_backend_flows_go_over_netlink_without_a_conntrack_binary() {
    let bin = std::env::temp_dir().join(format!("shoaltest-ct-path-{}", std::process::id()));
    std::fs::create_dir_all(&bin).unwrap();
    struct Cleanup<'a>(&'a Path);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.0);
        }
    }
    let _cleanup = Cleanup(&bin);
    for program in ["ip", "nft"] {
        std::os::unix::fs::symlink(find_program(program), bin.join(program)).unwrap();
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "flush_body", "--ignored", "--nocapture"])
        .env("PATH", &bin)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}\n{stderr}"
    );
}

/// Run by the test above with a PATH that has no `conntrack`.
#[tokio::test]
#[ignore = "run by removed_backend_flows_go_over_netlink_without_a_conntrack_binary"]
async fn flush_body() {
    assert!(
        std::process::Command::new("conntrack").output().is_err(),
        "conntrack must not be on PATH here"
    );
    let lab = Lab::named("shoaltest-ct");
    let mut lb = Balancer::create(&lab.client.name, &config(&[B1, B2], &[]))
        .await
        .expect("create");
    let mut to_b1 = Conn::open(&lab.client, VIP, TCP_PORT);
    assert_eq!(backend(&to_b1.request().expect("first request")), "b1");
    // Round robin: of two UDP flows (one socket each), one goes to each backend.
    let (a, b) = (
        udp_socket(&lab.client, VIP, UDP_PORT),
        udp_socket(&lab.client, VIP, UDP_PORT),
    );
    let (udp_b1, udp_b2) = match backend(&udp_request(&a).expect("udp")) {
        "b1" => (a, b),
        _ => (b, a),
    };
    assert_eq!(backend(&udp_request(&udp_b1).expect("udp")), "b1");
    assert_eq!(backend(&udp_request(&udp_b2).expect("udp")), "b2");

    let stale = lb.update(config(&[B1], &[])).await.expect("update");
    assert_eq!(
        stale,
        [StaleFlows {
            vip: VIP,
            backend: B2
        }]
    );
    // The rules changed, conntrack did not: the flow still reaches the removed backend.
    assert_eq!(backend(&udp_request(&udp_b2).expect("udp")), "b2");
    let deleted = flush_conntrack(&lab.client.name, &stale)
        .await
        .expect("flush over netlink");
    assert_eq!(deleted, 1, "the UDP flow to b2, nothing else");
    // The next datagram of that flow is balanced again, to the live backend.
    assert_eq!(backend(&udp_request(&udp_b2).expect("udp moved")), "b1");
    // Flows to the live backend are untouched: the established connection goes on.
    assert_eq!(
        backend(&to_b1.request().expect("established TCP to b1 survives")),
        "b1"
    );
    assert_eq!(backend(&udp_request(&udp_b1).expect("udp to b1")), "b1");
    // Nothing left to delete.
    assert_eq!(flush_conntrack(&lab.client.name, &stale).await.unwrap(), 0);
}

/// A UDP server in `ns` on `port` that answers its first datagram only when told to, and
/// says when that datagram has arrived.
fn delayed_udp_server(
    ns: &Netns,
    port: u16,
) -> (
    std::sync::mpsc::Receiver<()>,
    std::sync::mpsc::Sender<&'static str>,
) {
    let socket = ns.run(move || std::net::UdpSocket::bind(("0.0.0.0", port)).expect("bind"));
    let (arrived_tx, arrived) = std::sync::mpsc::channel();
    let (answer, answer_rx) = std::sync::mpsc::channel::<&'static str>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        let (_, peer) = socket.recv_from(&mut buf).expect("recv");
        let _ = arrived_tx.send(());
        if let Ok(text) = answer_rx.recv() {
            let _ = socket.send_to(text.as_bytes(), peer);
        }
    });
    (arrived, answer)
}

/// The flush deletes a UDP flow's entry, and with it its reverse NAT; a reply of the removed
/// backend still on its way must reach the socket connected to the VIP (which discards
/// datagrams from any other address), and the flow's next datagram goes to a live backend.
#[tokio::test]
async fn a_late_reply_of_a_removed_backend_still_comes_from_the_vip() {
    use shoal_lb::Transport;
    const PORT: u16 = 7070;
    for transport in [Transport::Netlink, Transport::Nft] {
        let lab = Lab::named("shoaltest-late");
        // `any` balances every port of VIP_ANY; b2 answers late on PORT, b1 at once.
        let mut lb = Balancer::create_with(&lab.client.name, &config(&[], &[B2]), transport)
            .await
            .expect("create");
        let (arrived, answer) = delayed_udp_server(&lab.b2, PORT);
        serve_udp(&lab.b1, "b1", PORT);
        let socket = udp_socket(&lab.client, VIP_ANY, PORT);
        socket.send(b"hello").unwrap();
        arrived.recv_timeout(TIMEOUT).expect("b2 got the datagram");
        let stale = lb.update(config(&[], &[B1])).await.expect("update");
        assert_eq!(
            stale,
            [StaleFlows {
                vip: VIP_ANY,
                backend: B2
            }]
        );
        let listing = lab
            .client
            .cmd("nft", &["list", "map", "ip", "shoal", "orphans"]);
        assert!(
            listing.contains("10.77.0.12 timeout 10s expires") && listing.contains(": 10.77.0.101"),
            "{transport:?}: {listing}"
        );
        assert_eq!(
            flush_conntrack(&lab.client.name, &stale).await.unwrap(),
            1,
            "{transport:?}: the flow to b2"
        );
        answer.send("late b2").unwrap();
        let mut buf = [0u8; 1500];
        let (n, from) = socket
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("{transport:?}: the late reply was lost: {e}"));
        assert_eq!(&buf[..n], b"late b2", "{transport:?}");
        assert_eq!(
            from,
            std::net::SocketAddr::from((VIP_ANY, PORT)),
            "{transport:?}"
        );
        // The flow's next datagram is balanced again, to the live backend.
        assert_eq!(
            backend(&udp_request(&socket).expect("udp moved")),
            "b1",
            "{transport:?}"
        );
    }
}
