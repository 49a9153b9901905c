//! The wire path against the general one: for every query it takes, its bytes must be the
//! general path's bytes (hickory's encoding of `answer()`'s reply, fitted to the transport),
//! with the same shuffle for the same random numbers; the rest it must leave alone.

use std::net::Ipv4Addr;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{Scratch, Transport, reply};
use crate::answer::{Outcome, answer};
use crate::message::{MAX_TCP_MESSAGE, Parsed, encode_reply, parse_request, udp_limit};
use crate::node::NodeZones;
use crate::zone::{NetworkView, Protocol, ServiceView, SrvPort, TaskView};

/// A node with `overlay1` (dnsrr `vote` with `tasks` tasks, VIP `web` with an alias and an SRV
/// port, dnsrr `idle` without tasks) and a network called `arpa`, whose deniable names end
/// like reverse ones; and the sandbox's networks.
fn zones(tasks: u32) -> (NodeZones, Vec<String>) {
    let task = |i: u32| TaskView {
        id: format!("{i:024x}"),
        name: format!("vote.{i}.{i:024x}"),
        addr: Ipv4Addr::from(0x0a00_0000 + i),
        aliases: vec![],
        ready: true,
    };
    let overlay1 = NetworkView {
        name: "overlay1".to_string(),
        services: vec![
            ServiceView {
                name: "vote".to_string(),
                dnsrr: true,
                ttl: 600,
                task_ttl: 10,
                tasks: (1..=tasks).map(task).collect(),
                ..Default::default()
            },
            ServiceView {
                name: "web".to_string(),
                vip: Some(Ipv4Addr::new(10, 9, 0, 1)),
                ttl: 30,
                task_ttl: 5,
                aliases: vec!["front".to_string()],
                ports: vec![SrvPort {
                    name: Some("http".to_string()),
                    protocol: Protocol::Tcp,
                    target_port: 80,
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
    let arpa = NetworkView {
        name: "arpa".to_string(),
        services: vec![],
    };
    let ids = vec!["id-overlay1".to_string(), "id-arpa".to_string()];
    let zones = ids.iter().cloned().zip([overlay1, arpa]).collect();
    (zones, ids)
}

/// The wire path's reply, if it takes the query.
fn fast(zones: &(NodeZones, Vec<String>), packet: &[u8], transport: Transport) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut rng = StdRng::seed_from_u64(7);
    let scope = zones.0.scope(&zones.1);
    reply(
        scope,
        packet,
        transport,
        &mut rng,
        &mut Scratch::default(),
        &mut out,
    )
    .then_some(out)
}

/// The general path's reply (`None`: it would forward, ignore or drop).
fn general(
    zones: &(NodeZones, Vec<String>),
    packet: &[u8],
    transport: Transport,
) -> Option<Vec<u8>> {
    let Parsed::Request(request) = parse_request(packet) else {
        return None;
    };
    let mut rng = StdRng::seed_from_u64(7);
    let Outcome::Reply(reply) = answer(zones.0.scope(&zones.1), &request, &mut rng) else {
        return None;
    };
    let limit = match transport {
        Transport::Udp => udp_limit(&request),
        Transport::Tcp => MAX_TCP_MESSAGE,
    };
    encode_reply(&reply, limit)
}

/// Asserts that the wire path takes `packet` and answers exactly as the general path.
fn same(zones: &(NodeZones, Vec<String>), packet: &[u8], transport: Transport) -> Vec<u8> {
    let fast = fast(zones, packet, transport)
        .unwrap_or_else(|| panic!("the wire path declined {packet:02x?} over {transport:?}"));
    let general = general(zones, packet, transport).expect("the general path answers");
    assert_eq!(
        fast,
        general,
        "{packet:02x?} over {transport:?}:\nwire:    {:?}\ngeneral: {:?}",
        Message::from_vec(&fast),
        Message::from_vec(&general)
    );
    fast
}

/// A query as a stub resolver sends it; `edns`: (payload, DO bit).
fn query(name: &str, qtype: RecordType, edns: Option<(u16, bool)>) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.id = 0xbeef;
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(
        Name::from_ascii(name).expect("test name"),
        qtype,
    ));
    if let Some((payload, dnssec_ok)) = edns {
        let mut edns = Edns::new();
        edns.set_max_payload(payload);
        edns.set_dnssec_ok(dnssec_ok);
        message.edns = Some(edns);
    }
    message.to_vec().expect("test query encodes")
}

fn decoded(bytes: &[u8]) -> Message {
    Message::from_vec(bytes).expect("reply decodes")
}

#[test]
fn addresses_nodata_and_nxdomain_are_the_general_paths_bytes() {
    let zones = zones(3);
    let names = [
        "vote.overlay1",
        "tasks.vote",
        "TASKS.Vote.Overlay1.",
        "web",
        "Front",
        "idle",
        "tasks.idle",
        "nothing.overlay1",
        "NX.Overlay1",
        "x.hostmaster.overlay1",
        "x.Hostmaster.overlay1",
        "hostmaster.overlay1.overlay1",
        "tasks.nothing",
        "1.in-addr.arpa",
        "x.IN-ADDR.Arpa.",
        "a.b.in-addr.arpa",
    ];
    let types = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::ANY,
        RecordType::MX,
        RecordType::TXT,
        RecordType::SRV,
        RecordType::SOA,
    ];
    let ednss = [
        None,
        Some((1232, false)),
        Some((4096, true)),
        Some((100, false)),
    ];
    for name in names {
        for qtype in types {
            for edns in ednss {
                for transport in [Transport::Udp, Transport::Tcp] {
                    same(&zones, &query(name, qtype, edns), transport);
                }
            }
        }
    }
}

#[test]
fn a_positive_answer_points_to_the_question_and_keeps_its_case() {
    let zones = zones(2);
    let reply = same(
        &zones,
        &query("Vote.overlay1", RecordType::A, None),
        Transport::Udp,
    );
    // Header, the question echoed (12 + 15 + 4), then each owner as the pointer C0 0C.
    assert_eq!(
        &reply[..4],
        &[0xbe, 0xef, 0x85, 0x80],
        "QR AA RD, RA, NOERROR"
    );
    assert_eq!(&reply[13..17], b"Vote");
    assert_eq!(&reply[31..33], &[0xc0, 0x0c]);
    let reply = decoded(&reply);
    assert_eq!(reply.answers.len(), 2);
    // A dnsrr name answers task addresses: the task TTL.
    assert!(reply.answers.iter().all(|r| r.ttl == 10));
}

#[test]
fn a_negative_answer_carries_the_soa_of_the_names_zone() {
    let zones = zones(1);
    let reply = decoded(&same(
        &zones,
        &query("nx.Overlay1", RecordType::A, None),
        Transport::Udp,
    ));
    assert_eq!(reply.response_code.to_string(), "Non-Existent Domain");
    let soa = &reply.authorities[0];
    assert_eq!(soa.name.to_string(), "overlay1.");
    assert_eq!(soa.ttl, 5);
    let reply = decoded(&same(
        &zones,
        &query("x.in-addr.arpa", RecordType::AAAA, None),
        Transport::Udp,
    ));
    assert_eq!(reply.authorities[0].name.to_string(), "in-addr.arpa.");
}

#[test]
fn large_answers_are_truncated_over_udp_and_whole_over_tcp() {
    // 90 addresses: 1,440 bytes of records, over 1,232 and under 4,096.
    let zones = zones(90);
    for edns in [None, Some((512, false)), Some((1232, true))] {
        let packet = query("tasks.vote", RecordType::A, edns);
        let reply = decoded(&same(&zones, &packet, Transport::Udp));
        assert!(reply.truncation, "{edns:?}");
        assert!(reply.answers.is_empty());
        let reply = decoded(&same(&zones, &packet, Transport::Tcp));
        assert!(!reply.truncation);
        assert_eq!(reply.answers.len(), 90);
    }
    let reply = decoded(&same(
        &zones,
        &query("tasks.vote", RecordType::A, Some((4096, false))),
        Transport::Udp,
    ));
    assert_eq!(reply.answers.len(), 90);

    // Past the wire path's bound: truncated here when it cannot fit, else the general path.
    let zones = self::zones(150);
    same(
        &zones,
        &query("tasks.vote", RecordType::A, None),
        Transport::Udp,
    );
    let whole = query("tasks.vote", RecordType::A, None);
    assert_eq!(fast(&zones, &whole, Transport::Tcp), None);
    let reply = general(&zones, &whole, Transport::Tcp).expect("general path answers");
    assert_eq!(decoded(&reply).answers.len(), 150);

    // So many that hickory's own encoder stops at 65,535 bytes and keeps what fits, TC set:
    // the general path's, over UDP to a client that takes 65,535 bytes and over TCP.
    let zones = self::zones(5000);
    for (edns, transport) in [
        (Some((u16::MAX, false)), Transport::Udp),
        (None, Transport::Tcp),
    ] {
        let packet = query("tasks.vote", RecordType::A, edns);
        assert_eq!(fast(&zones, &packet, transport), None, "{transport:?}");
        let reply = decoded(&general(&zones, &packet, transport).expect("general path answers"));
        assert!(reply.truncation, "{transport:?}");
    }
}

#[test]
fn dnsrr_addresses_are_shuffled_as_the_general_path_shuffles_them() {
    let zones = zones(20);
    let packet = query("vote", RecordType::A, Some((4096, false)));
    let reply = decoded(&same(&zones, &packet, Transport::Udp));
    let addrs: Vec<String> = reply.answers.iter().map(|r| r.data.to_string()).collect();
    let mut sorted = addrs.clone();
    sorted.sort_by_key(|a| a.parse::<Ipv4Addr>().expect("an address"));
    assert_ne!(addrs, sorted, "20 addresses came in their zone order");
    assert_eq!(sorted.len(), 20);
}

#[test]
fn everything_else_is_left_to_the_general_path() {
    let zones = zones(2);
    let declined = |packet: &[u8], why: &str| {
        assert_eq!(fast(&zones, packet, Transport::Udp), None, "{why}");
    };
    declined(
        &query("_http._tcp.web", RecordType::SRV, None),
        "SRV records",
    );
    declined(
        &query("1.0.9.10.in-addr.arpa", RecordType::PTR, None),
        "PTR records",
    );
    declined(
        &query("example.com", RecordType::A, None),
        "a name to forward",
    );
    declined(&query("vote", RecordType::NULL, None), "an odd type");
    declined(
        &query("vote", RecordType::Unknown(4242), None),
        "an unknown type",
    );

    let base = query("vote", RecordType::A, None);
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut packet = base.clone();
        f(&mut packet);
        packet
    };
    declined(&with(&|p| p[2] |= 0x80), "a response");
    declined(&with(&|p| p[2] |= 0x10), "opcode STATUS");
    declined(&with(&|p| p[5] = 2), "two questions");
    declined(&with(&|p| p[7] = 1), "an answer record in a query");
    declined(&with(&|p| p.push(0)), "trailing bytes");
    declined(&with(&|p| p.truncate(p.len() - 1)), "a cut question");
    declined(&with(&|p| *p.last_mut().expect("class") = 3), "class CH");
    // The name as a pointer to itself: not how a question comes.
    declined(
        &with(&|p| p.splice(12..18, [0xc0, 0x0c]).for_each(drop)),
        "a pointer",
    );

    let edns = query("vote", RecordType::A, Some((1232, false)));
    let mut version1 = edns.clone();
    let ttl_at = version1.len() - 5;
    version1[ttl_at] = 1;
    declined(&version1, "EDNS version 1 (BADVERS)");
    let mut cookie = edns.clone();
    let rdlen_at = cookie.len() - 2;
    cookie[rdlen_at + 1] = 12;
    cookie.extend_from_slice(&[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
    declined(&cookie, "an EDNS option");

    let mut odd = base.clone();
    odd[13] = b' ';
    declined(&odd, "a space in a label (forwarded as it came)");
}

/// Queries changed at random, byte by byte: whatever the wire path takes, it answers exactly
/// as the general path does.
#[test]
fn mutated_queries_answer_the_same_on_both_paths() {
    let zones = zones(4);
    let seeds = [
        query("vote", RecordType::A, None),
        query("tasks.vote.overlay1", RecordType::AAAA, Some((1232, true))),
        query("nx.overlay1", RecordType::A, Some((600, false))),
        query("x.in-addr.arpa", RecordType::ANY, None),
    ];
    let mut rng = StdRng::seed_from_u64(42);
    let mut taken = 0;
    for _ in 0..20_000 {
        let mut packet = seeds[rng.random_range(0..seeds.len())].clone();
        for _ in 0..rng.random_range(1..4) {
            let at = rng.random_range(0..packet.len());
            packet[at] = match rng.random_range(0..3) {
                0 => rng.random(),
                1 => packet[at] ^ (1 << rng.random_range(0..8)),
                _ => packet[at].to_ascii_uppercase(),
            };
        }
        for transport in [Transport::Udp, Transport::Tcp] {
            if let Some(bytes) = fast(&zones, &packet, transport) {
                taken += 1;
                assert_eq!(
                    Some(bytes),
                    general(&zones, &packet, transport),
                    "{packet:02x?}"
                );
            }
        }
    }
    assert!(
        taken > 5_000,
        "only {taken} mutated queries took the wire path"
    );
}

#[test]
fn class_any_questions_take_the_general_path() {
    let zones = zones(1);
    let mut message = Message::query();
    let mut question = Query::query(Name::from_ascii("vote").expect("name"), RecordType::A);
    question.set_query_class(DNSClass::ANY);
    message.add_query(question);
    let packet = message.to_vec().expect("encodes");
    assert_eq!(fast(&zones, &packet, Transport::Udp), None);
    assert!(general(&zones, &packet, Transport::Udp).is_some());
}
