//! The balancer on the real kernel: a client sandbox, two backends on a bridge, VIPs that
//! nobody owns. See `common` for the lab.

mod common;

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use common::*;
use shoal_lb::{Balancer, LbConfig, LbError, StaleFlows, Transport, flush_conntrack};

/// The backend name in a server's answer `<name> <peer>`, after checking that the backend saw
/// the client's own address (no SNAT).
fn backend(answer: &str) -> &str {
    let (name, peer) = answer.split_once(' ').unwrap_or((answer, ""));
    assert_eq!(
        peer,
        CLIENT.to_string(),
        "the backend must see the client's address"
    );
    name
}

#[tokio::test]
async fn tcp_and_udp_round_robin_through_the_vip() {
    let lab = Lab::new();
    let lb = Balancer::create(&lab.client.name, &config(&[B1, B2], &[B1, B2]))
        .await
        .expect("create");

    // TCP: one new connection per request, strictly alternating from slot 0.
    let mut seen = Vec::new();
    for _ in 0..4 {
        let answer = tcp_request(&lab.client, VIP, TCP_PORT).expect("tcp through the VIP");
        seen.push(backend(&answer).to_string());
    }
    assert_eq!(seen, ["b1", "b2", "b1", "b2"]);

    // UDP: a new socket (a new flow) per request alternates too.
    let mut seen = Vec::new();
    for _ in 0..4 {
        let socket = udp_socket(&lab.client, VIP, UDP_PORT);
        seen.push(backend(&udp_request(&socket).expect("udp through the VIP")).to_string());
    }
    assert_eq!(seen, ["b1", "b2", "b1", "b2"]);

    // A service without declared ports balances every port and protocol of its VIP.
    let a = tcp_request(&lab.client, VIP_ANY, 9090).expect("any port, tcp");
    let b = tcp_request(&lab.client, VIP_ANY, TCP_PORT).expect("any port, tcp");
    assert_ne!(backend(&a), backend(&b));
    let socket = udp_socket(&lab.client, VIP_ANY, UDP_PORT);
    udp_request(&socket).expect("any port, udp");

    lb.remove().await.expect("remove");
    let err = tcp_request(&lab.client, VIP, TCP_PORT).expect_err("no table, no VIP");
    assert!(
        matches!(
            err.kind(),
            ErrorKind::TimedOut | ErrorKind::WouldBlock | ErrorKind::HostUnreachable
        ),
        "{err:?}"
    );
}

/// Connecting to a VIP that has no backend, or to a port its service does not balance, fails
/// at once with "connection refused" instead of waiting for an ARP answer.
#[tokio::test]
async fn no_backends_is_refused_at_once() {
    let lab = Lab::new();
    let mut lb = Balancer::create(&lab.client.name, &config(&[B1, B2], &[]))
        .await
        .expect("create");
    let refused = |to, port| {
        let started = Instant::now();
        let err = tcp_request(&lab.client, to, port).expect_err("must be refused");
        assert_eq!(
            err.kind(),
            ErrorKind::ConnectionRefused,
            "{to}:{port}: {err:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{to}:{port} took {:?}",
            started.elapsed()
        );
    };
    refused(VIP_EMPTY, TCP_PORT);
    refused(VIP_ANY, 1234);
    refused(VIP, 9090); // a port `web` does not balance
    // UDP: the reject drops the datagram inside the sender's own send(), which therefore
    // fails with EPERM, and the ICMP port unreachable it generates reaches the socket: the
    // next receive says "connection refused". Both at once, no timeout.
    let socket = udp_socket(&lab.client, VIP_EMPTY, UDP_PORT);
    let started = Instant::now();
    let err = udp_request(&socket).expect_err("udp must be refused");
    assert!(
        matches!(
            err.kind(),
            ErrorKind::PermissionDenied | ErrorKind::ConnectionRefused
        ),
        "{err:?}"
    );
    let err = socket
        .recv(&mut [0u8; 64])
        .expect_err("the ICMP error must be queued");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(1));

    // Scaled to zero and back.
    lb.update(config(&[], &[])).await.expect("to zero");
    refused(VIP, TCP_PORT);
    lb.update(config(&[B2], &[])).await.expect("back to one");
    let answer = tcp_request(&lab.client, VIP, TCP_PORT).expect("tcp after scaling up");
    assert_eq!(backend(&answer), "b2");
}

/// An update that removes b2: b2 gets no new connection, established connections to b1 and to
/// b2 survive the conntrack flush (b2's application closes its own), and a UDP flow that went
/// to b2 moves to b1.
#[tokio::test]
async fn removing_a_backend_keeps_established_connections() {
    let lab = Lab::new();
    let mut lb = Balancer::create(&lab.client.name, &config(&[B1, B2], &[]))
        .await
        .expect("create");
    let mut to_b1 = Conn::open(&lab.client, VIP, TCP_PORT);
    assert_eq!(backend(&to_b1.request().expect("first request")), "b1");
    let mut to_b2 = Conn::open(&lab.client, VIP, TCP_PORT);
    assert_eq!(backend(&to_b2.request().expect("first request")), "b2");
    let udp_b1 = udp_socket(&lab.client, VIP, UDP_PORT);
    assert_eq!(backend(&udp_request(&udp_b1).expect("udp")), "b1");
    let udp_b2 = udp_socket(&lab.client, VIP, UDP_PORT);
    assert_eq!(backend(&udp_request(&udp_b2).expect("udp")), "b2");

    let stale = lb.update(config(&[B1], &[])).await.expect("update");
    assert_eq!(
        stale,
        [StaleFlows {
            vip: VIP,
            backend: B2
        }]
    );
    // The rules changed, conntrack did not: the UDP flow still reaches the removed task.
    assert_eq!(backend(&udp_request(&udp_b2).expect("udp")), "b2");
    let flushed = flush_conntrack(&lab.client.name, &stale)
        .await
        .expect("flush");
    assert_eq!(flushed, 1, "the UDP flow to b2, not the TCP connection");

    assert_eq!(
        backend(&to_b1.request().expect("established survives")),
        "b1"
    );
    assert_eq!(
        backend(&udp_request(&udp_b1).expect("udp flow to b1 survives")),
        "b1"
    );
    assert_eq!(backend(&udp_request(&udp_b2).expect("udp moved")), "b1");
    for _ in 0..3 {
        let answer = tcp_request(&lab.client, VIP, TCP_PORT).expect("new connection");
        assert_eq!(backend(&answer), "b1");
    }
    // The keep-alive connection to the removed b2 keeps its translation: it goes on until b2
    // closes it.
    assert_eq!(
        backend(
            &to_b2
                .request()
                .expect("established to a removed backend survives")
        ),
        "b2"
    );
}

/// What `nft list` shows, and that the netlink fast path writes exactly what nft would.
#[tokio::test]
async fn listing_shows_the_vmap_and_matches_nft() {
    let lab = Lab::new();
    let mut lb = Balancer::create(&lab.client.name, &config(&[B1, B2], &[B1]))
        .await
        .expect("create");
    let listing = lab.client.cmd("nft", &["list", "table", "ip", "shoal"]);
    for needle in [
        "10.77.0.100 . tcp . 8080 : goto svc_web",
        "10.77.0.100 . udp . 5353 : goto svc_web",
        "10.77.0.102 . tcp . 8080 : goto svc_empty",
        "10.77.0.101 : goto svc_any",
        "ip daddr . meta l4proto . th dport vmap @ports",
        "dnat to ip daddr . numgen inc mod 2 map @be_",
        "10.77.0.100 . 1 : 10.77.0.12",
    ] {
        assert!(
            listing.contains(needle),
            "{needle:?} missing from:\n{listing}"
        );
    }

    // Every kind of change through netlink, then the same config through nft on a fresh
    // table elsewhere: the two listings must be the same.
    let steps = [
        config(&[B1, B2], &[B1, B2]),
        config(&[B2, B1], &[B2]),
        config(&[B1], &[]),
        LbConfig::new(
            config(&[B1], &[])
                .services
                .into_values()
                .filter(|s| s.id != "empty"),
        ),
        config(&[B2], &[B1, B2]),
    ];
    let other = Netns::new(format!("{}-other", lab.client.name));
    for cfg in steps {
        lb.update(cfg.clone()).await.expect("update");
        let reference = Balancer::create_with(&other.name, &cfg, Transport::Nft)
            .await
            .expect("create reference");
        // The updated table also keeps the backends it lost (map `orphans`, which
        // tests/conntrack.rs checks); a fresh one has none.
        let mut updated = listing_blocks(&lab.client);
        if let Some(orphans) = updated.get_mut("map orphans {") {
            orphans.retain(|line| !line.starts_with("elements = "));
        }
        assert_eq!(updated, listing_blocks(&other), "{cfg:?}");
        reference.remove().await.expect("remove reference");
    }
    let answer = tcp_request(&lab.client, VIP, TCP_PORT).expect("tcp");
    assert_eq!(backend(&answer), "b2");
}

/// Both transports give the same table through the same updates.
#[tokio::test]
async fn nft_transport_matches_netlink() {
    let lab = Lab::new();
    let other = Netns::new(format!("{}-other", lab.client.name));
    let mut fast = Balancer::create(&lab.client.name, &config(&[B1], &[]))
        .await
        .expect("create");
    let mut slow = Balancer::create_with(&other.name, &config(&[B1], &[]), Transport::Nft)
        .await
        .expect("create");
    for cfg in [
        config(&[B1, B2], &[B2]),
        config(&[B2], &[]),
        config(&[], &[B1]),
    ] {
        fast.update(cfg.clone()).await.expect("netlink update");
        slow.update(cfg).await.expect("nft update");
        assert_eq!(listing_blocks(&lab.client), listing_blocks(&other));
    }
}

/// A transaction the kernel refuses changes nothing, and the error names the command.
#[tokio::test]
async fn a_failed_update_leaves_the_rules() {
    let lab = Lab::new();
    let mut lb = Balancer::create(&lab.client.name, &config(&[B1, B2], &[]))
        .await
        .expect("create");
    // Someone else removes an element the balancer programmed.
    lab.client.cmd(
        "nft",
        &["delete element ip shoal ports { 10.77.0.100 . udp . 5353 }"],
    );
    let before = listing_blocks(&lab.client);
    let programmed = lb.programmed().clone();
    let err = lb
        .update(LbConfig::new(
            config(&[B1], &[])
                .services
                .into_values()
                .filter(|s| s.id != "web"),
        ))
        .await
        .expect_err("the element is gone");
    let text = err.to_string();
    assert!(matches!(err, LbError::Rejected { .. }), "{text}");
    assert!(text.contains("delete element ip shoal ports {"), "{text}");
    assert!(text.contains("10.77.0.100 . udp . 5353"), "{text}");
    assert!(text.contains("recreate it"), "{text}");
    assert_eq!(
        listing_blocks(&lab.client),
        before,
        "nothing may have changed"
    );
    assert_eq!(lb.programmed(), &programmed);
    assert_eq!(
        backend(&tcp_request(&lab.client, VIP, TCP_PORT).expect("still balanced")),
        "b1"
    );

    // create adopts whatever is there.
    let lb = Balancer::create(&lab.client.name, &config(&[B2], &[]))
        .await
        .expect("recreate");
    assert_eq!(
        backend(&tcp_request(&lab.client, VIP, TCP_PORT).expect("tcp")),
        "b2"
    );
    drop(lb);
}

/// Idle established TCP is not dropped after 15 minutes as with Swarm's IPVS: the sandbox's
/// conntrack keeps it at least a day (the kernel default is 5 days), and create raises a
/// lower value.
#[tokio::test]
async fn idle_tcp_lives_at_least_a_day() {
    let lab = Lab::new();
    let secs = shoal_lb::tcp_established_timeout(&lab.client.name)
        .await
        .expect("read");
    assert!(
        secs >= 86_400,
        "nf_conntrack_tcp_timeout_established is {secs}"
    );
    lab.client.cmd(
        "sysctl",
        &[
            "-qw",
            "net.netfilter.nf_conntrack_tcp_timeout_established=900",
        ],
    );
    let _lb = Balancer::create(&lab.client.name, &config(&[B1], &[]))
        .await
        .expect("create");
    let secs = shoal_lb::tcp_established_timeout(&lab.client.name)
        .await
        .expect("read");
    assert_eq!(secs, 432_000);
    // The root namespace's value is its own: untouched.
}

/// Thousands of services in one update: one transaction of several megabytes (element lists
/// split in chunks, the socket's send buffer raised), then all of them removed again.
#[tokio::test]
async fn thousands_of_services_in_one_transaction() {
    let lab = Lab::new();
    let mut lb = Balancer::create(&lab.client.name, &config(&[B1, B2], &[]))
        .await
        .expect("create");
    let mut big = config(&[B1, B2], &[]);
    for i in 0..3000u32 {
        let svc = shoal_lb::VipService {
            id: format!("filler{i}"),
            vip: std::net::Ipv4Addr::from(0x0a50_0000 + i),
            ports: vec![(shoal_lb::Proto::Tcp, 80), (shoal_lb::Proto::Udp, 53)],
            backends: vec![std::net::Ipv4Addr::from(0x0a4f_0000 + i); 3],
        };
        big.services.insert(svc.id.clone(), svc);
    }
    lb.update(big).await.expect("add 3000 services");
    let blocks = listing_blocks(&lab.client);
    let count = |block: &str| {
        blocks[block]
            .iter()
            .find(|l| l.starts_with("elements"))
            .map_or(0, |l| l.matches(',').count() + 1)
    };
    assert_eq!(count("set vips {"), 3003);
    assert_eq!(count("map ports {"), 6004);
    assert_eq!(
        blocks
            .keys()
            .filter(|k| k.starts_with("chain svc_"))
            .count(),
        3003
    );
    assert_eq!(
        backend(&tcp_request(&lab.client, VIP, TCP_PORT).expect("tcp")),
        "b1"
    );
    lb.update(config(&[B2], &[])).await.expect("remove them");
    let blocks = listing_blocks(&lab.client);
    assert_eq!(
        blocks
            .keys()
            .filter(|k| k.starts_with("chain svc_"))
            .count(),
        3
    );
    assert_eq!(
        backend(&tcp_request(&lab.client, VIP, TCP_PORT).expect("tcp")),
        "b2"
    );
}
