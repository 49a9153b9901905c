//! Several networks in one node's zones: each sandbox sees only its own networks, and the
//! order of its networks decides which definition of a shared name it gets.

use std::net::Ipv4Addr;
use std::sync::Arc;

use expect_test::{Expect, expect};
use hickory_proto::rr::RecordType;

use super::{Sandbox, request, run, task};
use crate::node::NodeZones;
use crate::zone::{NetworkView, NetworkZone, Protocol, ServiceView, SrvPort};

const FRONT1: &str = "f1f1f1f1f1f1f1f1f1f1f1f1";
const BACK1: &str = "b1b1b1b1b1b1b1b1b1b1b1b1";
const SHARED_BACK: &str = "5b5b5b5b5b5b5b5b5b5b5b5b";

/// Network `front` (id `net-f`): `web` (VIP, one task) and `db` (VIP 10.1.0.2, no task).
/// Network `back` (id `net-b`): `api` (dnsrr, one task, port http) and `db` (VIP 10.2.0.2,
/// one task whose name collides with nothing), plus a task named like `web`'s short id.
fn node() -> NodeZones {
    let front = NetworkView {
        name: "front".to_string(),
        services: vec![
            ServiceView {
                name: "web".to_string(),
                vip: Some(Ipv4Addr::new(10, 1, 0, 1)),
                ttl: 60,
                task_ttl: 60,
                tasks: vec![task("web", 1, FRONT1, [10, 1, 0, 10])],
                ..Default::default()
            },
            ServiceView {
                name: "db".to_string(),
                vip: Some(Ipv4Addr::new(10, 1, 0, 2)),
                ttl: 60,
                task_ttl: 60,
                ..Default::default()
            },
        ],
    };
    let back = NetworkView {
        name: "back".to_string(),
        services: vec![
            ServiceView {
                name: "api".to_string(),
                dnsrr: true,
                ttl: 5,
                task_ttl: 5,
                ports: vec![SrvPort {
                    name: Some("http".to_string()),
                    protocol: Protocol::Tcp,
                    target_port: 80,
                }],
                tasks: vec![task("api", 1, BACK1, [10, 2, 0, 10])],
                ..Default::default()
            },
            ServiceView {
                name: "db".to_string(),
                vip: Some(Ipv4Addr::new(10, 2, 0, 2)),
                ttl: 60,
                task_ttl: 60,
                tasks: vec![task("db", 1, SHARED_BACK, [10, 2, 0, 11])],
                ..Default::default()
            },
            // A service named like a task of `front`: `front` defines the name first.
            ServiceView {
                name: format!("web.1.{FRONT1}"),
                vip: Some(Ipv4Addr::new(10, 2, 0, 3)),
                ttl: 60,
                task_ttl: 60,
                ..Default::default()
            },
        ],
    };
    [("net-f".to_string(), front), ("net-b".to_string(), back)]
        .into_iter()
        .collect()
}

fn on(zones: &NodeZones, networks: &[&str]) -> Sandbox {
    Sandbox {
        zones: zones.clone(),
        networks: networks.iter().map(|n| n.to_string()).collect(),
    }
}

fn check(sandbox: &Sandbox, name: &str, qtype: RecordType, expect: Expect) {
    expect.assert_eq(&run(sandbox, &request(name, qtype), 1));
}

#[test]
fn a_sandbox_sees_no_name_of_a_network_it_is_not_on() {
    let node = node();
    let front = on(&node, &["net-f"]);
    // Every name of `back`, and `back` itself, is somebody else's: forwarded, as for a name
    // the cluster does not have.
    for (name, qtype) in [
        ("api", RecordType::A),
        ("api.back", RecordType::A),
        ("nope.back", RecordType::A),
        (&*format!("api.1.{BACK1}"), RecordType::A),
        (&BACK1[..12], RecordType::A),
        ("_http._tcp.api", RecordType::SRV),
        ("_nope._tcp.api", RecordType::SRV),
        ("10.0.2.10.in-addr.arpa", RecordType::PTR),
        ("2.0.2.10.in-addr.arpa", RecordType::PTR),
    ] {
        assert_eq!(
            run(&front, &request(name, qtype), 1),
            "FORWARD\n",
            "{name} {qtype}"
        );
    }
    // `tasks.<name>` is the cluster's namespace on every sandbox: denied, not leaked.
    check(
        &front,
        "tasks.api",
        RecordType::A,
        expect![[r#"
            NXDomain(3) id=4242 qr aa rd ra
            ? tasks.api. IN A
            ns api. 5 IN SOA api. hostmaster.api. 1 3600 600 86400 5
        "#]],
    );
    // Its own network still answers, from the same shared zones.
    check(
        &front,
        "db",
        RecordType::A,
        expect![[r#"
            NoError(0) id=4242 qr aa rd ra
            ? db. IN A
            an db. 60 IN A 10.1.0.2
        "#]],
    );
    // And the other way round.
    let back = on(&node, &["net-b"]);
    for name in [
        "web",
        "web.front",
        &format!("web.1.{FRONT1}.front"),
        "tasks.web",
    ] {
        let out = run(&back, &request(name, RecordType::A), 1);
        assert!(!out.contains("10.1.0."), "{name} leaked front: {out}");
    }
    check(
        &back,
        "db",
        RecordType::A,
        expect![[r#"
            NoError(0) id=4242 qr aa rd ra
            ? db. IN A
            an db. 60 IN A 10.2.0.2
        "#]],
    );
}

#[test]
fn the_first_of_the_sandboxs_networks_wins_a_shared_name() {
    let node = node();
    let front_first = on(&node, &["net-f", "net-b"]);
    let back_first = on(&node, &["net-b", "net-f"]);
    check(
        &front_first,
        "db",
        RecordType::A,
        expect![[r#"
            NoError(0) id=4242 qr aa rd ra
            ? db. IN A
            an db. 60 IN A 10.1.0.2
        "#]],
    );
    check(
        &back_first,
        "db",
        RecordType::A,
        expect![[r#"
            NoError(0) id=4242 qr aa rd ra
            ? db. IN A
            an db. 60 IN A 10.2.0.2
        "#]],
    );
    // `tasks.db` too: `front`'s db has no task (NODATA), even though `back`'s has one.
    check(
        &front_first,
        "tasks.db",
        RecordType::A,
        expect![[r#"
            NoError(0) id=4242 qr aa rd ra
            ? tasks.db. IN A
            ns db. 5 IN SOA db. hostmaster.db. 1 3600 600 86400 5
        "#]],
    );
    // A task name of the first network beats a service of the second.
    check(
        &front_first,
        &format!("web.1.{FRONT1}"),
        RecordType::A,
        expect![[r#"
            NoError(0) id=4242 qr aa rd ra
            ? web.1.f1f1f1f1f1f1f1f1f1f1f1f1. IN A
            an web.1.f1f1f1f1f1f1f1f1f1f1f1f1. 60 IN A 10.1.0.10
        "#]],
    );
    check(
        &back_first,
        &format!("web.1.{FRONT1}"),
        RecordType::A,
        expect![[r#"
            NoError(0) id=4242 qr aa rd ra
            ? web.1.f1f1f1f1f1f1f1f1f1f1f1f1. IN A
            an web.1.f1f1f1f1f1f1f1f1f1f1f1f1. 60 IN A 10.2.0.3
        "#]],
    );
    // Qualified names are never ambiguous, whatever the order.
    for sandbox in [&front_first, &back_first] {
        check(
            sandbox,
            "db.back",
            RecordType::A,
            expect![[r#"
                NoError(0) id=4242 qr aa rd ra
                ? db.back. IN A
                an db.back. 60 IN A 10.2.0.2
            "#]],
        );
        check(
            sandbox,
            "db.front",
            RecordType::A,
            expect![[r#"
                NoError(0) id=4242 qr aa rd ra
                ? db.front. IN A
                an db.front. 60 IN A 10.1.0.2
            "#]],
        );
        // Names of either network and the rules around them work on a sandbox on both.
        check(
            sandbox,
            "nope.front",
            RecordType::A,
            expect![[r#"
                NXDomain(3) id=4242 qr aa rd ra
                ? nope.front. IN A
                ns front. 5 IN SOA front. hostmaster.front. 1 3600 600 86400 5
            "#]],
        );
        check(
            sandbox,
            "_nope._tcp.api",
            RecordType::SRV,
            expect![[r#"
                NXDomain(3) id=4242 qr aa rd ra
                ? _nope._tcp.api. IN SRV
                ns api. 5 IN SOA api. hostmaster.api. 1 3600 600 86400 5
            "#]],
        );
        check(
            sandbox,
            "10.0.2.10.in-addr.arpa",
            RecordType::PTR,
            expect![[r#"
                NoError(0) id=4242 qr aa rd ra
                ? 10.0.2.10.in-addr.arpa. IN PTR
                an 10.0.2.10.in-addr.arpa. 5 IN PTR api.1.b1b1b1b1b1b1b1b1b1b1b1b1.back.
            "#]],
        );
    }
}

#[test]
fn networks_without_a_zone_carry_no_names() {
    // Ingress has no zone, and a network can leave the node's zones before its sandboxes go.
    let sandbox = on(&node(), &["net-ingress", "net-gone"]);
    for name in ["web", "db.front", "nope.front", "10.0.1.10.in-addr.arpa"] {
        assert_eq!(run(&sandbox, &request(name, RecordType::A), 1), "FORWARD\n");
    }
}

#[test]
fn replacing_one_networks_zone_changes_what_its_sandboxes_see_only() {
    let before = node();
    let mut after = before.clone();
    after.insert(
        "net-f",
        Arc::new(NetworkZone::new(&NetworkView {
            name: "front".to_string(),
            services: vec![ServiceView {
                name: "web".to_string(),
                vip: Some(Ipv4Addr::new(10, 1, 0, 99)),
                ttl: 60,
                task_ttl: 60,
                ..Default::default()
            }],
        })),
    );
    let ask = |zones: &NodeZones, networks: &[&str], name: &str| {
        run(&on(zones, networks), &request(name, RecordType::A), 1)
    };
    assert!(ask(&after, &["net-f"], "web").contains("10.1.0.99"));
    assert_eq!(ask(&after, &["net-f"], "db"), "FORWARD\n");
    assert_eq!(
        ask(&after, &["net-b"], "db"),
        ask(&before, &["net-b"], "db")
    );
    // The untouched network's zone is the same one, not a copy.
    assert!(Arc::ptr_eq(
        before.get("net-b").expect("back"),
        after.get("net-b").expect("back")
    ));
}
