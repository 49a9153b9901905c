//! Header, EDNS, truncation and malformed input: what the wire sees around the answers.

use expect_test::expect;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::{Sandbox, render, request, run, sandbox, task, zone};
use crate::answer::{Outcome, answer};
use crate::message::{MAX_TCP_MESSAGE, Parsed, encode_reply, parse_request, udp_limit};
use crate::zone::{NetworkView, ServiceView};

#[test]
fn header_copies_id_and_rd_and_sets_aa_ra() {
    let mut req = request("client", RecordType::A);
    req.metadata.id = 7;
    req.metadata.recursion_desired = false;
    expect![[r#"
        NoError(0) id=7 qr aa ra
        ? client. IN A
        an client. 600 IN A 10.0.0.7
    "#]]
    .assert_eq(&run(&zone(), &req, 1));
}

#[test]
fn edns_is_answered_with_an_opt_record() {
    let mut req = request("client", RecordType::A);
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    req.set_edns(edns);
    expect![[r#"
        NoError(0) id=4242 qr aa rd ra
        opt payload=1232
        ? client. IN A
        an client. 600 IN A 10.0.0.7
    "#]]
    .assert_eq(&run(&zone(), &req, 1));
}

#[test]
fn edns_versions_above_zero_are_badvers() {
    // 16 is BADVERS in a reply with OPT; hickory decodes the number as BADSIG (its TSIG name).
    let mut req = request("client", RecordType::A);
    let mut edns = Edns::new();
    edns.set_version(1);
    req.set_edns(edns);
    expect![[r#"
        BADSIG(16) id=4242 qr rd ra
        opt payload=1232
        ? client. IN A
    "#]]
    .assert_eq(&run(&zone(), &req, 1));
}

/// A dnsrr service with `n` tasks: 16 bytes per A record, so 40 overflow 512 bytes.
fn big_zone(n: u8) -> Sandbox {
    sandbox(vec![NetworkView {
        name: "overlay1".to_string(),
        services: vec![ServiceView {
            name: "big".to_string(),
            dnsrr: true,
            ttl: 600,
            task_ttl: 600,
            tasks: (0..n)
                .map(|i| task("big", u32::from(i) + 1, &format!("{i:024x}"), [10, 0, 1, i]))
                .collect(),
            ..Default::default()
        }],
    }])
}

#[test]
fn udp_reply_larger_than_512_is_truncated() {
    expect![[r#"
        NoError(0) id=4242 qr aa tc rd ra
        ? big. IN A
    "#]]
    .assert_eq(&run(&big_zone(40), &request("big", RecordType::A), 1));
}

#[test]
fn udp_reply_fits_the_clients_edns_size() {
    let mut req = request("big", RecordType::A);
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    req.set_edns(edns.clone());
    let out = run(&big_zone(40), &req, 1);
    assert_eq!(
        out.lines().filter(|l| l.starts_with("an ")).count(),
        40,
        "{out}"
    );
    assert!(
        !out.lines().next().unwrap_or_default().contains("tc"),
        "{out}"
    );
    // 100 records need ~1.6 kB: truncated again at 1232, with the OPT record kept.
    let out = run(&big_zone(100), &req, 1);
    expect![[r#"
        NoError(0) id=4242 qr aa tc rd ra
        opt payload=1232
        ? big. IN A
    "#]]
    .assert_eq(&out);
}

#[test]
fn tcp_reply_carries_every_record() {
    let zone = big_zone(200);
    let req = request("big", RecordType::A);
    let Outcome::Reply(reply) = answer(zone.scope(), &req, &mut StdRng::seed_from_u64(1)) else {
        panic!("big is ours");
    };
    let bytes = encode_reply(&reply, MAX_TCP_MESSAGE).expect("encodable");
    let decoded = Message::from_vec(&bytes).expect("decodable");
    assert_eq!(decoded.answers.len(), 200);
    assert!(!decoded.truncation);
}

#[test]
fn no_question_or_several_is_formerr() {
    let mut none = request("vote", RecordType::A);
    none.queries.clear();
    expect![[r#"
        FormErr(1) id=4242 qr rd ra
    "#]]
    .assert_eq(&run(&zone(), &none, 1));
    let mut two = request("vote", RecordType::A);
    two.add_query(Query::query(
        Name::from_ascii("client").expect("name"),
        RecordType::A,
    ));
    expect![[r#"
        FormErr(1) id=4242 qr rd ra
    "#]]
    .assert_eq(&run(&zone(), &two, 1));
}

#[test]
fn other_opcodes_are_notimp() {
    for op in [
        OpCode::Update,
        OpCode::Notify,
        OpCode::Status,
        OpCode::Unknown(9),
    ] {
        let mut req = request("vote", RecordType::A);
        req.metadata.op_code = op;
        let out = run(&zone(), &req, 1);
        assert!(
            out.starts_with("NotImp(4) id=4242 qr rd ra\n"),
            "{op:?}: {out}"
        );
    }
}

#[test]
fn responses_are_never_answered() {
    let mut req = request("vote", RecordType::A);
    req.metadata.message_type = MessageType::Response;
    assert_eq!(run(&zone(), &req, 1), "IGNORE\n");
}

#[test]
fn garbage_is_formerr_when_the_header_says_query_and_dropped_otherwise() {
    assert!(matches!(parse_request(b""), Parsed::Drop));
    assert!(matches!(parse_request(&[0x12; 11]), Parsed::Drop));
    // Header of a query with one question and no question bytes.
    let header = [0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    let Parsed::Reply(bytes) = parse_request(&header) else {
        panic!("expected a FORMERR reply");
    };
    expect![[r#"
        FormErr(1) id=43981 qr rd ra
    "#]]
    .assert_eq(&render(&Message::from_vec(&bytes).expect("decodable")));
    // The same header as a response: dropped.
    let mut response = header;
    response[2] |= 0x80;
    assert!(matches!(parse_request(&response), Parsed::Drop));
}

#[test]
fn random_packets_never_panic() {
    use rand::Rng;
    let zone = zone();
    let mut rng = StdRng::seed_from_u64(7);
    let seed = request("_http._tcp.vote", RecordType::SRV)
        .to_vec()
        .expect("encodable");
    for _ in 0..20_000 {
        // Mutate a valid packet: most mutations get past the header.
        let mut packet = seed.clone();
        for _ in 0..rng.random_range(1..4) {
            let i = rng.random_range(0..packet.len());
            packet[i] = rng.random();
        }
        packet.truncate(rng.random_range(0..=packet.len()));
        if let Parsed::Request(req) = parse_request(&packet)
            && let Outcome::Reply(reply) = answer(zone.scope(), &req, &mut rng)
        {
            let _ = encode_reply(&reply, udp_limit(&req));
        }
    }
}
