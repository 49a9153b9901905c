//! Every answer rule, driven through the whole pure pipeline: the request is encoded and
//! parsed like a packet from a client, answered, fitted into the transport and decoded again,
//! then rendered for an expect-test snapshot.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use expect_test::{Expect, expect};
use hickory_proto::op::{Message, MessageType, Query};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::{Outcome, answer};
use crate::message::{Parsed, encode_reply, parse_request, udp_limit};
use crate::node::{NodeZones, Scope};
use crate::zone::{NetworkView, Protocol, ServiceView, SrvPort, TaskView};

const VOTE1: &str = "a1b2c3d4e5f6a7b8c9d0e1f2";
const VOTE2: &str = "b2c3d4e5f6a7b8c9d0e1f2a3";
const CLIENT1: &str = "c3d4e5f6a7b8c9d0e1f2a3b4";

fn task(service: &str, slot: u32, id: &str, addr: [u8; 4]) -> TaskView {
    TaskView {
        id: id.to_string(),
        name: format!("{service}.{slot}.{id}"),
        addr: Ipv4Addr::from(addr),
        aliases: vec![],
        ready: true,
    }
}

/// A sandbox: the node's zones and the sandbox's networks, in its order.
pub(super) struct Sandbox {
    zones: NodeZones,
    networks: Vec<String>,
}

impl Sandbox {
    fn scope(&self) -> Scope<'_> {
        self.zones.scope(&self.networks)
    }
}

/// A sandbox attached to `networks`, in that order, each with its own zone (id `id-<name>`).
pub(super) fn sandbox(networks: Vec<NetworkView>) -> Sandbox {
    let networks: Vec<(String, NetworkView)> = networks
        .into_iter()
        .map(|n| (format!("id-{}", n.name), n))
        .collect();
    Sandbox {
        networks: networks.iter().map(|(id, _)| id.clone()).collect(),
        zones: networks.into_iter().collect(),
    }
}

/// The seed's cluster: `vote` in dnsrr mode with two tasks, `client` in vip mode, plus a VIP
/// service with no task, a dnsrr service with no task, and a second network.
fn zone() -> Sandbox {
    let overlay1 = NetworkView {
        name: "overlay1".to_string(),
        services: vec![
            ServiceView {
                name: "vote".to_string(),
                dnsrr: true,
                ttl: 600,
                task_ttl: 600,
                ports: vec![SrvPort {
                    name: Some("http".to_string()),
                    protocol: Protocol::Tcp,
                    target_port: 80,
                }],
                tasks: vec![
                    task("vote", 1, VOTE1, [10, 0, 0, 5]),
                    task("vote", 2, VOTE2, [10, 0, 0, 6]),
                ],
                ..Default::default()
            },
            ServiceView {
                name: "client".to_string(),
                vip: Some(Ipv4Addr::new(10, 0, 0, 7)),
                ttl: 600,
                task_ttl: 600,
                aliases: vec!["front".to_string()],
                ports: vec![SrvPort {
                    name: None,
                    protocol: Protocol::Udp,
                    target_port: 53,
                }],
                tasks: vec![TaskView {
                    aliases: vec!["client-primary".to_string()],
                    ..task("client", 1, CLIENT1, [10, 0, 0, 8])
                }],
                ..Default::default()
            },
            ServiceView {
                name: "web".to_string(),
                vip: Some(Ipv4Addr::new(10, 0, 0, 9)),
                ttl: 30,
                task_ttl: 30,
                ports: vec![SrvPort {
                    name: Some("http".to_string()),
                    protocol: Protocol::Tcp,
                    target_port: 8080,
                }],
                ..Default::default()
            },
            ServiceView {
                name: "idle".to_string(),
                dnsrr: true,
                ttl: 5,
                task_ttl: 5,
                ..Default::default()
            },
        ],
    };
    let backend = NetworkView {
        name: "Backend".to_string(),
        services: vec![ServiceView {
            name: "vote".to_string(),
            dnsrr: true,
            ttl: 600,
            task_ttl: 600,
            tasks: vec![task("vote", 1, VOTE1, [10, 1, 0, 5])],
            ..Default::default()
        }],
    };
    sandbox(vec![overlay1, backend])
}

fn request(name: &str, qtype: RecordType) -> Message {
    let mut message = Message::query();
    message.metadata.id = 4242;
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(
        Name::from_ascii(name).expect("test name"),
        qtype,
    ));
    message
}

/// Runs `request` through parse → answer → encode (UDP limits) → decode and renders it.
fn run(zone: &Sandbox, request: &Message, seed: u64) -> String {
    let bytes = request.to_vec().expect("encodable request");
    let Parsed::Request(parsed) = parse_request(&bytes) else {
        panic!("request did not parse");
    };
    match answer(zone.scope(), &parsed, &mut StdRng::seed_from_u64(seed)) {
        Outcome::Forward => "FORWARD\n".to_string(),
        Outcome::Ignore => "IGNORE\n".to_string(),
        Outcome::Reply(reply) => {
            let bytes = encode_reply(&reply, udp_limit(&parsed)).expect("encodable reply");
            render(&Message::from_vec(&bytes).expect("decodable reply"))
        }
    }
}

fn render(m: &Message) -> String {
    let mut out = String::new();
    let flags: Vec<&str> = [
        (m.message_type == MessageType::Response, "qr"),
        (m.authoritative, "aa"),
        (m.truncation, "tc"),
        (m.recursion_desired, "rd"),
        (m.recursion_available, "ra"),
    ]
    .into_iter()
    .filter_map(|(set, flag)| set.then_some(flag))
    .collect();
    let rcode = m.response_code;
    let _ = writeln!(
        out,
        "{rcode:?}({}) id={} {}",
        u16::from(rcode),
        m.id,
        flags.join(" ")
    );
    if let Some(edns) = &m.edns {
        let _ = writeln!(out, "opt payload={}", edns.max_payload());
    }
    for q in &m.queries {
        let _ = writeln!(out, "? {} {} {}", q.name(), q.query_class(), q.query_type());
    }
    for (section, records) in [
        ("an", &m.answers),
        ("ns", &m.authorities),
        ("ad", &m.additionals),
    ] {
        for r in records {
            let _ = writeln!(out, "{section} {r}");
        }
    }
    out
}

fn check(name: &str, qtype: RecordType, expect: Expect) {
    expect.assert_eq(&run(&zone(), &request(name, qtype), 1));
}

#[test]
fn dnsrr_service_answers_every_task() {
    check(
        "vote",
        RecordType::A,
        expect![[r#"
        NoError(0) id=4242 qr aa rd ra
        ? vote. IN A
        an vote. 600 IN A 10.0.0.5
        an vote. 600 IN A 10.0.0.6
    "#]],
    );
}

#[test]
fn dnsrr_order_is_shuffled_per_query() {
    let zone = zone();
    let req = request("vote", RecordType::A);
    let firsts: std::collections::HashSet<String> = (0..32)
        .map(|seed| {
            let out = run(&zone, &req, seed);
            out.lines()
                .find(|l| l.starts_with("an "))
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(
        firsts.len(),
        2,
        "both tasks should come first sometimes: {firsts:?}"
    );
}

#[test]
fn vip_service_answers_its_vip() {
    check(
        "client",
        RecordType::A,
        expect![[r#"
        NoError(0) id=4242 qr aa rd ra
        ? client. IN A
        an client. 600 IN A 10.0.0.7
    "#]],
    );
}

#[test]
fn vip_service_without_tasks_still_answers_its_vip() {
    check(
        "web",
        RecordType::A,
        expect![[r#"
        NoError(0) id=4242 qr aa rd ra
        ? web. IN A
        an web. 30 IN A 10.0.0.9
    "#]],
    );
}

#[test]
fn tasks_name_answers_every_task_even_in_vip_mode() {
    check(
        "tasks.client",
        RecordType::A,
        expect![[r#"
        NoError(0) id=4242 qr aa rd ra
        ? tasks.client. IN A
        an tasks.client. 600 IN A 10.0.0.8
    "#]],
    );
    check(
        "tasks.vote",
        RecordType::A,
        expect![[r#"
        NoError(0) id=4242 qr aa rd ra
        ? tasks.vote. IN A
        an tasks.vote. 600 IN A 10.0.0.5
        an tasks.vote. 600 IN A 10.0.0.6
    "#]],
    );
}

#[test]
fn task_name_and_ids_answer_the_task() {
    let full = format!("vote.2.{VOTE2}");
    check(
        &full,
        RecordType::A,
        expect![[r#"
        NoError(0) id=4242 qr aa rd ra
        ? vote.2.b2c3d4e5f6a7b8c9d0e1f2a3. IN A
        an vote.2.b2c3d4e5f6a7b8c9d0e1f2a3. 600 IN A 10.0.0.6
    "#]],
    );
    check(
        VOTE2,
        RecordType::A,
        expect![[r#"
        NoError(0) id=4242 qr aa rd ra
        ? b2c3d4e5f6a7b8c9d0e1f2a3. IN A
        an b2c3d4e5f6a7b8c9d0e1f2a3. 600 IN A 10.0.0.6
    "#]],
    );
    check(
        &VOTE2[..12],
        RecordType::A,
        expect![[r#"
        NoError(0) id=4242 qr aa rd ra
        ? b2c3d4e5f6a7. IN A
        an b2c3d4e5f6a7. 600 IN A 10.0.0.6
    "#]],
    );
}

#[test]
fn aliases_resolve_like_what_they_alias() {
    check(
        "front",
        RecordType::A,
        expect![[r#"
        NoError(0) id=4242 qr aa rd ra
        ? front. IN A
        an front. 600 IN A 10.0.0.7
    "#]],
    );
    check(
        "tasks.front",
        RecordType::A,
        expect![[r#"
        NoError(0) id=4242 qr aa rd ra
        ? tasks.front. IN A
        an tasks.front. 600 IN A 10.0.0.8
    "#]],
    );
    check(
        "client-primary",
        RecordType::A,
        expect![[r#"
        NoError(0) id=4242 qr aa rd ra
        ? client-primary. IN A
        an client-primary. 600 IN A 10.0.0.8
    "#]],
    );
}

#[test]
fn names_qualified_by_network_are_scoped_to_it() {
    check(
        "vote.overlay1",
        RecordType::A,
        expect![[r#"
        NoError(0) id=4242 qr aa rd ra
        ? vote.overlay1. IN A
        an vote.overlay1. 600 IN A 10.0.0.5
        an vote.overlay1. 600 IN A 10.0.0.6
    "#]],
    );
    check(
        "vote.backend",
        RecordType::A,
        expect![[r#"
        NoError(0) id=4242 qr aa rd ra
        ? vote.backend. IN A
        an vote.backend. 600 IN A 10.1.0.5
    "#]],
    );
    check(
        &format!("vote.1.{VOTE1}.backend"),
        RecordType::A,
        expect![[r#"
        NoError(0) id=4242 qr aa rd ra
        ? vote.1.a1b2c3d4e5f6a7b8c9d0e1f2.backend. IN A
        an vote.1.a1b2c3d4e5f6a7b8c9d0e1f2.backend. 600 IN A 10.1.0.5
    "#]],
    );
    check(
        "front.overlay1",
        RecordType::A,
        expect![[r#"
        NoError(0) id=4242 qr aa rd ra
        ? front.overlay1. IN A
        an front.overlay1. 600 IN A 10.0.0.7
    "#]],
    );
}

#[test]
fn names_are_case_insensitive_with_or_without_the_dot() {
    let plain = run(&zone(), &request("vote.overlay1", RecordType::A), 1);
    for spelling in ["VOTE.Overlay1", "vote.overlay1.", "Vote.OVERLAY1."] {
        let out = run(&zone(), &request(spelling, RecordType::A), 1);
        // Same records, with the client's spelling echoed as the owner name.
        let norm = |s: &str| s.to_ascii_lowercase().replace("overlay1. ", "overlay1 ");
        assert_eq!(norm(&out), norm(&plain), "{spelling}");
    }
    check(
        "TASKS.Vote.",
        RecordType::A,
        expect![[r#"
        NoError(0) id=4242 qr aa rd ra
        ? TASKS.Vote. IN A
        an TASKS.Vote. 600 IN A 10.0.0.5
        an TASKS.Vote. 600 IN A 10.0.0.6
    "#]],
    );
}

#[test]
fn ptr_of_a_task_is_its_name_on_the_network() {
    check(
        "6.0.0.10.in-addr.arpa",
        RecordType::PTR,
        expect![[r#"
        NoError(0) id=4242 qr aa rd ra
        ? 6.0.0.10.in-addr.arpa. IN PTR
        an 6.0.0.10.in-addr.arpa. 600 IN PTR vote.2.b2c3d4e5f6a7b8c9d0e1f2a3.overlay1.
    "#]],
    );
    check(
        "5.0.1.10.in-addr.arpa",
        RecordType::PTR,
        expect![[r#"
        NoError(0) id=4242 qr aa rd ra
        ? 5.0.1.10.in-addr.arpa. IN PTR
        an 5.0.1.10.in-addr.arpa. 600 IN PTR vote.1.a1b2c3d4e5f6a7b8c9d0e1f2.backend.
    "#]],
    );
}

#[test]
fn ptr_of_a_vip_is_the_service_on_the_network() {
    check(
        "7.0.0.10.in-addr.arpa.",
        RecordType::PTR,
        expect![[r#"
        NoError(0) id=4242 qr aa rd ra
        ? 7.0.0.10.in-addr.arpa. IN PTR
        an 7.0.0.10.in-addr.arpa. 600 IN PTR client.overlay1.
    "#]],
    );
}

#[test]
fn ptr_of_other_addresses_is_forwarded() {
    check(
        "1.0.0.10.in-addr.arpa",
        RecordType::PTR,
        expect![[r#"
        FORWARD
    "#]],
    );
    check(
        "1.2.0.192.in-addr.arpa",
        RecordType::PTR,
        expect![[r#"
        FORWARD
    "#]],
    );
}

#[test]
fn srv_of_a_dnsrr_service_lists_tasks_with_addresses() {
    check(
        "_http._tcp.vote",
        RecordType::SRV,
        expect![[r#"
        NoError(0) id=4242 qr aa rd ra
        ? _http._tcp.vote. IN SRV
        an _http._tcp.vote. 600 IN SRV 0 0 80 vote.1.a1b2c3d4e5f6a7b8c9d0e1f2.overlay1.
        an _http._tcp.vote. 600 IN SRV 0 0 80 vote.2.b2c3d4e5f6a7b8c9d0e1f2a3.overlay1.
        ad vote.1.a1b2c3d4e5f6a7b8c9d0e1f2.overlay1. 600 IN A 10.0.0.5
        ad vote.2.b2c3d4e5f6a7b8c9d0e1f2a3.overlay1. 600 IN A 10.0.0.6
    "#]],
    );
    // The number works as well as the name.
    let by_number = run(&zone(), &request("_80._tcp.vote", RecordType::SRV), 1);
    let by_name = run(&zone(), &request("_http._tcp.vote", RecordType::SRV), 1);
    assert_eq!(by_number.replace("_80.", "_http."), by_name);
}

#[test]
fn srv_of_a_vip_service_points_at_the_service() {
    check(
        "_http._tcp.web",
        RecordType::SRV,
        expect![[r#"
        NoError(0) id=4242 qr aa rd ra
        ? _http._tcp.web. IN SRV
        an _http._tcp.web. 30 IN SRV 0 0 8080 web.overlay1.
        ad web.overlay1. 30 IN A 10.0.0.9
    "#]],
    );
    check(
        "_53._udp.front.overlay1",
        RecordType::SRV,
        expect![[r#"
        NoError(0) id=4242 qr aa rd ra
        ? _53._udp.front.overlay1. IN SRV
        an _53._udp.front.overlay1. 600 IN SRV 0 0 53 client.overlay1.
        ad client.overlay1. 600 IN A 10.0.0.7
    "#]],
    );
}

#[test]
fn any_answers_the_records_the_name_has() {
    check(
        "client",
        RecordType::ANY,
        expect![[r#"
        NoError(0) id=4242 qr aa rd ra
        ? client. IN ANY
        an client. 600 IN A 10.0.0.7
    "#]],
    );
}

#[test]
fn everything_else_is_forwarded() {
    for name in [
        "example.com",
        "tasks.example.com",
        "nope",
        "overlay1",
        "vote.example",
        ".",
    ] {
        assert_eq!(
            run(&zone(), &request(name, RecordType::A), 1),
            "FORWARD\n",
            "{name}"
        );
    }
    let mut chaos = request("vote", RecordType::TXT);
    chaos.queries[0].set_query_class(DNSClass::CH);
    assert_eq!(run(&zone(), &chaos, 1), "FORWARD\n");
}

mod negative;
mod networks;
mod not_ready;
mod wire;

#[test]
fn task_addresses_carry_the_task_ttl_in_vip_mode() {
    // A VIP is stable (60 s); task addresses change with every task (5 s), also for a
    // vip-mode service's `tasks.` name and task names.
    let web = sandbox(vec![NetworkView {
        name: "overlay1".to_string(),
        services: vec![ServiceView {
            name: "web".to_string(),
            vip: Some(Ipv4Addr::new(10, 0, 0, 2)),
            dnsrr: false,
            ttl: 60,
            task_ttl: 5,
            aliases: vec![],
            ports: vec![],
            tasks: vec![task("web", 1, VOTE1, [10, 0, 0, 3])],
        }],
    }]);
    let ttl_of = |name: &str| {
        let out = run(&web, &request(name, RecordType::A), 1);
        let line = out
            .lines()
            .find(|l| l.starts_with("an "))
            .unwrap_or_default()
            .to_string();
        line.split_whitespace()
            .nth(2)
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(ttl_of("web"), "60");
    assert_eq!(ttl_of("tasks.web"), "5");
    assert_eq!(ttl_of(&format!("web.1.{VOTE1}")), "5");
    assert_eq!(ttl_of(&VOTE1[..12]), "5");
}
