//! Negative answers carry an SOA (RFC 2308), so that resolvers in front of us may cache them
//! for a short while.

use expect_test::expect;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::{check, request, zone};
use crate::answer::{NEGATIVE_TTL, Outcome, answer};

fn reply(name: &str, qtype: RecordType) -> Message {
    let zone = zone();
    match answer(
        zone.scope(),
        &request(name, qtype),
        &mut StdRng::seed_from_u64(1),
    ) {
        Outcome::Reply(reply) => reply,
        other => panic!("{name} {qtype}: {other:?}"),
    }
}

/// (rcode, SOA owner, record TTL, SOA MINIMUM) of a negative reply.
fn negative(name: &str, qtype: RecordType) -> (ResponseCode, String, u32, u32) {
    let reply = reply(name, qtype);
    assert!(reply.answers.is_empty(), "{name}: {:?}", reply.answers);
    let [soa] = reply.authorities.as_slice() else {
        panic!("{name}: want one SOA, got {:?}", reply.authorities);
    };
    let RData::SOA(data) = &soa.data else {
        panic!("{name}: not an SOA: {soa}");
    };
    (
        reply.response_code,
        soa.name.to_string(),
        soa.ttl,
        data.minimum,
    )
}

#[test]
fn nxdomain_and_nodata_carry_a_short_lived_soa_of_the_names_zone() {
    let nx = ResponseCode::NXDomain;
    let nodata = ResponseCode::NoError;
    let ttl = NEGATIVE_TTL;
    assert_eq!(ttl, 5);
    for (name, qtype, want) in [
        ("nope.overlay1", RecordType::A, (nx, "overlay1.", ttl, ttl)),
        (
            "NOPE.Backend.",
            RecordType::AAAA,
            (nx, "backend.", ttl, ttl),
        ),
        ("tasks.nope", RecordType::A, (nx, "nope.", ttl, ttl)),
        ("_https._tcp.vote", RecordType::SRV, (nx, "vote.", ttl, ttl)),
        ("vote", RecordType::AAAA, (nodata, "vote.", ttl, ttl)),
        (
            "tasks.vote.overlay1",
            RecordType::AAAA,
            (nodata, "overlay1.", ttl, ttl),
        ),
        ("idle", RecordType::A, (nodata, "idle.", ttl, ttl)),
        (
            "6.0.0.10.in-addr.arpa",
            RecordType::A,
            (nodata, "in-addr.arpa.", ttl, ttl),
        ),
    ] {
        let (code, owner, record_ttl, minimum) = negative(name, qtype);
        assert_eq!(
            (code, owner.as_str(), record_ttl, minimum),
            want,
            "{name} {qtype}"
        );
    }
}

#[test]
fn positive_answers_have_no_authority_section() {
    for (name, qtype) in [
        ("vote", RecordType::A),
        ("client", RecordType::A),
        ("_http._tcp.vote", RecordType::SRV),
        ("6.0.0.10.in-addr.arpa", RecordType::PTR),
    ] {
        let reply = reply(name, qtype);
        assert!(!reply.answers.is_empty(), "{name}");
        assert!(
            reply.authorities.is_empty(),
            "{name}: {:?}",
            reply.authorities
        );
    }
}

#[test]
fn dnsrr_service_without_tasks_is_nodata() {
    check(
        "idle",
        RecordType::A,
        expect![[r#"
        NoError(0) id=4242 qr aa rd ra
        ? idle. IN A
        ns idle. 5 IN SOA idle. hostmaster.idle. 1 3600 600 86400 5
    "#]],
    );
}

#[test]
fn srv_of_an_unknown_port_of_a_service_is_nxdomain() {
    check(
        "_https._tcp.vote",
        RecordType::SRV,
        expect![[r#"
        NXDomain(3) id=4242 qr aa rd ra
        ? _https._tcp.vote. IN SRV
        ns vote. 5 IN SOA vote. hostmaster.vote. 1 3600 600 86400 5
    "#]],
    );
    check(
        "_http._udp.vote",
        RecordType::SRV,
        expect![[r#"
        NXDomain(3) id=4242 qr aa rd ra
        ? _http._udp.vote. IN SRV
        ns vote. 5 IN SOA vote. hostmaster.vote. 1 3600 600 86400 5
    "#]],
    );
}

#[test]
fn known_name_with_another_type_is_nodata() {
    check(
        "vote",
        RecordType::AAAA,
        expect![[r#"
        NoError(0) id=4242 qr aa rd ra
        ? vote. IN AAAA
        ns vote. 5 IN SOA vote. hostmaster.vote. 1 3600 600 86400 5
    "#]],
    );
    check(
        "client",
        RecordType::MX,
        expect![[r#"
        NoError(0) id=4242 qr aa rd ra
        ? client. IN MX
        ns client. 5 IN SOA client. hostmaster.client. 1 3600 600 86400 5
    "#]],
    );
    check(
        "web",
        RecordType::TXT,
        expect![[r#"
        NoError(0) id=4242 qr aa rd ra
        ? web. IN TXT
        ns web. 5 IN SOA web. hostmaster.web. 1 3600 600 86400 5
    "#]],
    );
    check(
        "_http._tcp.vote",
        RecordType::A,
        expect![[r#"
        NoError(0) id=4242 qr aa rd ra
        ? _http._tcp.vote. IN A
        ns vote. 5 IN SOA vote. hostmaster.vote. 1 3600 600 86400 5
    "#]],
    );
    check(
        "6.0.0.10.in-addr.arpa",
        RecordType::A,
        expect![[r#"
        NoError(0) id=4242 qr aa rd ra
        ? 6.0.0.10.in-addr.arpa. IN A
        ns in-addr.arpa. 5 IN SOA in-addr.arpa. hostmaster.in-addr.arpa. 1 3600 600 86400 5
    "#]],
    );
}

#[test]
fn names_under_ours_that_do_not_exist_are_nxdomain() {
    check(
        "tasks.nope",
        RecordType::A,
        expect![[r#"
        NXDomain(3) id=4242 qr aa rd ra
        ? tasks.nope. IN A
        ns nope. 5 IN SOA nope. hostmaster.nope. 1 3600 600 86400 5
    "#]],
    );
    check(
        "nope.overlay1",
        RecordType::AAAA,
        expect![[r#"
        NXDomain(3) id=4242 qr aa rd ra
        ? nope.overlay1. IN AAAA
        ns overlay1. 5 IN SOA overlay1. hostmaster.overlay1. 1 3600 600 86400 5
    "#]],
    );
    check(
        "a.b.backend",
        RecordType::A,
        expect![[r#"
        NXDomain(3) id=4242 qr aa rd ra
        ? a.b.backend. IN A
        ns backend. 5 IN SOA backend. hostmaster.backend. 1 3600 600 86400 5
    "#]],
    );
}
