//! Lab tier: the server bound at 127.0.0.11:53 inside a namespace we create, asked by the
//! real `dig` from inside it (as root; needs iproute2 and dnsutils).

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::{
    EXAMPLE_ADDR, Netns, TestUpstream, VOTE2, dig, dig_short_sorted, seed_networks, seed_zone,
    status, words,
};
use shoal_dns::{DnsError, DnsServer, NodeZones, Upstream};
use tokio::net::UdpSocket;
use tokio::sync::watch;

/// A namespace with a server in it. Fields drop in order: server first, then the namespace.
struct Lab {
    server: Option<DnsServer>,
    zone: watch::Sender<Arc<NodeZones>>,
    netns: Netns,
}

async fn lab(zone: NodeZones, upstream: Upstream) -> Lab {
    let netns = Netns::new();
    let (tx, rx) = watch::channel(Arc::new(zone));
    let server = DnsServer::start(&common::RUNTIME, &netns.name, rx, seed_networks(), upstream)
        .await
        .expect("start the DNS server in the test namespace");
    Lab {
        server: Some(server),
        zone: tx,
        netns,
    }
}

fn no_upstream() -> Upstream {
    Upstream {
        servers: vec![],
        timeout: Duration::from_secs(1),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dnsrr_service_resolves_to_every_task_in_random_order() {
    let lab = lab(seed_zone(0), no_upstream()).await;
    assert_eq!(
        dig_short_sorted(&lab.netns, &["vote"]).await,
        ["10.0.0.5", "10.0.0.6"]
    );
    let mut firsts = HashSet::new();
    for _ in 0..30 {
        let out = dig(&lab.netns, &["+short", "vote"]).await;
        firsts.insert(out.lines().next().unwrap_or_default().to_string());
    }
    assert_eq!(
        firsts.len(),
        2,
        "both tasks should come first at times: {firsts:?}"
    );
    let full = dig(&lab.netns, &["+noall", "+answer", "vote"]).await;
    assert!(
        full.lines()
            .all(|l| words(l).starts_with("vote. 600 IN A ")),
        "TTL 600:\n{full}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vip_service_and_tasks_names_resolve_over_udp_and_tcp() {
    let lab = lab(seed_zone(0), no_upstream()).await;
    for transport in ["+notcp", "+tcp"] {
        assert_eq!(
            dig_short_sorted(&lab.netns, &[transport, "client"]).await,
            ["10.0.0.7"]
        );
        assert_eq!(
            dig_short_sorted(&lab.netns, &[transport, "TASKS.vote."]).await,
            ["10.0.0.5", "10.0.0.6"]
        );
        let task = format!("vote.2.{VOTE2}.overlay1");
        assert_eq!(
            dig_short_sorted(&lab.netns, &[transport, &task]).await,
            ["10.0.0.6"]
        );
        assert_eq!(
            dig_short_sorted(&lab.netns, &[transport, &VOTE2[..12]]).await,
            ["10.0.0.6"]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_lookup_names_the_task_and_network() {
    let lab = lab(seed_zone(0), no_upstream()).await;
    let out = dig_short_sorted(&lab.netns, &["-x", "10.0.0.6"]).await;
    assert_eq!(out, [format!("vote.2.{VOTE2}.overlay1.")]);
    assert_eq!(
        dig_short_sorted(&lab.netns, &["-x", "10.0.0.7"]).await,
        ["client.overlay1."]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_lists_the_tasks_and_their_addresses() {
    let lab = lab(seed_zone(0), no_upstream()).await;
    let out = dig(
        &lab.netns,
        &["+noall", "+answer", "+additional", "_http._tcp.vote", "SRV"],
    )
    .await;
    let mut lines: Vec<String> = out.lines().map(words).collect();
    lines.sort();
    let vote1 = format!("vote.1.{}.overlay1.", common::VOTE1);
    let vote2 = format!("vote.2.{VOTE2}.overlay1.");
    assert_eq!(
        lines,
        [
            format!("_http._tcp.vote. 600 IN SRV 0 0 80 {vote1}"),
            format!("_http._tcp.vote. 600 IN SRV 0 0 80 {vote2}"),
            format!("{vote1} 600 IN A 10.0.0.5"),
            format!("{vote2} 600 IN A 10.0.0.6"),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_names_of_other_types_are_nodata_and_unknown_ours_nxdomain() {
    let lab = lab(seed_zone(0), no_upstream()).await;
    let out = dig(&lab.netns, &["vote", "AAAA"]).await;
    assert_eq!(status(&out), "NOERROR", "{out}");
    assert!(out.contains("ANSWER: 0,"), "{out}");
    assert!(out.contains(" aa "), "authoritative expected: {out}");
    let out = dig(&lab.netns, &["tasks.nope"]).await;
    assert_eq!(status(&out), "NXDOMAIN", "{out}");
    let out = dig(&lab.netns, &["nope.overlay1"]).await;
    assert_eq!(status(&out), "NXDOMAIN", "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_answers_truncate_over_udp_and_come_whole_over_tcp() {
    let lab = lab(seed_zone(100), no_upstream()).await;
    // As a client that does not retry: TC set, no records, within 512 bytes.
    let out = dig(&lab.netns, &["+ignore", "+bufsize=512", "big"]).await;
    assert!(out.contains(" tc "), "TC expected:\n{out}");
    assert!(out.contains("ANSWER: 0,"), "{out}");
    // dig's normal behaviour retries over TCP and gets all 100, with or without EDNS.
    for args in [
        &["+bufsize=512", "+short", "big"][..],
        &["+noedns", "+short", "big"][..],
    ] {
        let lines = dig(&lab.netns, args).await;
        assert_eq!(lines.lines().count(), 100, "{args:?}:\n{lines}");
    }
    // A client that can take 4096 bytes gets all 100 over UDP without TC.
    let out = dig(&lab.netns, &["+ignore", "+bufsize=4096", "big"]).await;
    assert!(!out.contains(" tc "), "{out}");
    assert!(out.contains("ANSWER: 100,"), "{out}");
    assert!(
        out.contains("; EDNS: version: 0"),
        "OPT expected in the reply:\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_updates_apply_to_the_next_query() {
    let lab = lab(seed_zone(0), no_upstream()).await;
    assert_eq!(
        dig_short_sorted(&lab.netns, &["big"]).await,
        Vec::<String>::new()
    );
    lab.zone.send_replace(Arc::new(seed_zone(3)));
    assert_eq!(
        dig_short_sorted(&lab.netns, &["big"]).await,
        ["10.0.1.0", "10.0.1.1", "10.0.1.2"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_names_are_forwarded_to_upstream_over_the_clients_transport() {
    let upstream = TestUpstream::start().await;
    let lab = lab(
        seed_zone(0),
        Upstream {
            servers: vec![upstream.addr],
            timeout: Duration::from_secs(2),
        },
    )
    .await;
    for transport in ["+notcp", "+tcp"] {
        let out = dig(
            &lab.netns,
            &[transport, "+noall", "+answer", "example.test"],
        )
        .await;
        assert_eq!(
            words(&out),
            format!("example.test. 42 IN A {EXAMPLE_ADDR}"),
            "{transport}"
        );
        let out = dig(&lab.netns, &[transport, "nothing.test"]).await;
        assert_eq!(status(&out), "NXDOMAIN", "{transport}: {out}");
    }
    assert_eq!(
        upstream.queries.load(std::sync::atomic::Ordering::Relaxed),
        4
    );
    // Cluster names never reach upstream.
    dig(&lab.netns, &["vote"]).await;
    assert_eq!(
        upstream.queries.load(std::sync::atomic::Ordering::Relaxed),
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_servfail_within_the_timeout() {
    // Nobody listens on `closed` (port unreachable at once); `silent` reads and never answers.
    let closed = {
        let s = UdpSocket::bind("127.0.0.53:0").await.expect("bind");
        s.local_addr().expect("addr")
    };
    let silent = UdpSocket::bind("127.0.0.53:0").await.expect("bind");
    let timeout = Duration::from_millis(800);
    let lab = lab(
        seed_zone(0),
        Upstream {
            servers: vec![closed, silent.local_addr().expect("addr")],
            timeout,
        },
    )
    .await;
    // dig gives up after 2 s of its own: a SERVFAIL at all means the server answered once
    // its upstream timeout (0.8 s) ran out, not after the silent upstream or never.
    let out = dig(&lab.netns, &["+time=2", "example.test"]).await;
    assert_eq!(status(&out), "SERVFAIL", "{out}");
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_frees_the_address_for_a_new_server() {
    let mut lab = lab(seed_zone(0), no_upstream()).await;
    lab.server.take().expect("running").stop().await;
    let out = dig(&lab.netns, &["vote"]).await;
    assert!(
        out.contains("connection refused") || out.contains("timed out"),
        "{out}"
    );
    let (_, rx) = watch::channel(Arc::new(seed_zone(0)));
    let again = DnsServer::start(
        &common::RUNTIME,
        &lab.netns.name,
        rx,
        seed_networks(),
        no_upstream(),
    )
    .await
    .expect("restart");
    assert_eq!(
        dig_short_sorted(&lab.netns, &["client"]).await,
        ["10.0.0.7"]
    );
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_in_a_missing_namespace_says_so() {
    let (_, rx) = watch::channel(Arc::new(NodeZones::new()));
    let name = format!("shoaltest-dns-{}-missing", std::process::id());
    let err = DnsServer::start(
        &common::RUNTIME,
        &name,
        rx.clone(),
        seed_networks(),
        no_upstream(),
    )
    .await
    .expect_err("no such netns");
    assert!(matches!(err, DnsError::OpenNetns { .. }), "{err}");
    assert!(err.to_string().contains("/run/netns/"), "{err}");
    let err = DnsServer::start(
        &common::RUNTIME,
        "../etc",
        rx,
        seed_networks(),
        no_upstream(),
    )
    .await
    .expect_err("bad name");
    assert!(matches!(err, DnsError::InvalidNetns(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxes_share_one_view_and_each_sees_only_its_networks() {
    use shoal_dns::{NetworkView, ServiceView};
    let other = |vip: [u8; 4]| NetworkView {
        name: "other".to_string(),
        services: vec![ServiceView {
            name: "secret".to_string(),
            vip: Some(vip.into()),
            ttl: 600,
            task_ttl: 600,
            ..Default::default()
        }],
    };
    let zones = |vip| {
        let mut zones = seed_zone(0);
        zones.insert(
            "net-other",
            Arc::new(shoal_dns::NetworkZone::new(&other(vip))),
        );
        zones
    };
    // One sender for the node; each server gets a receiver and its own networks.
    let (tx, rx) = watch::channel(Arc::new(zones([10, 9, 0, 1])));
    let (a, b) = (Netns::new(), Netns::new());
    let on_seed = DnsServer::start(
        &common::RUNTIME,
        &a.name,
        rx.clone(),
        seed_networks(),
        no_upstream(),
    )
    .await
    .expect("start on the seed's network");
    let on_other = DnsServer::start(
        &common::RUNTIME,
        &b.name,
        rx,
        vec!["net-other".to_string()],
        no_upstream(),
    )
    .await
    .expect("start on the other network");

    assert_eq!(dig_short_sorted(&a, &["client"]).await, ["10.0.0.7"]);
    assert_eq!(dig_short_sorted(&b, &["secret"]).await, ["10.9.0.1"]);
    // Not ours on that sandbox: forwarded, and with no upstream that is SERVFAIL.
    for name in ["secret", "secret.other"] {
        assert_eq!(status(&dig(&a, &[name]).await), "SERVFAIL", "{name}");
    }
    for name in ["client", "vote.overlay1"] {
        assert_eq!(status(&dig(&b, &[name]).await), "SERVFAIL", "{name}");
    }

    // One send reaches both sandboxes.
    tx.send_replace(Arc::new(zones([10, 9, 0, 2])));
    assert_eq!(dig_short_sorted(&b, &["secret"]).await, ["10.9.0.2"]);
    assert_eq!(
        status(&dig(&a, &["secret"]).await),
        "SERVFAIL",
        "still not a's"
    );
    on_seed.stop().await;
    on_other.stop().await;
}
