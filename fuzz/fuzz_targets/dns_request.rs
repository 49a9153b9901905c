//! Arbitrary bytes as a client's packet: parse → answer against a fixed zone → encode for
//! UDP and for TCP. Nothing may panic, and every reply must decode again, keep the client's
//! id and fit the transport.

#![no_main]

use std::net::Ipv4Addr;
use std::sync::LazyLock;

use hickory_proto::op::Message;
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use shoal_dns::message::MAX_TCP_MESSAGE;
use shoal_dns::{
    NetworkView, NodeZones, Outcome, Parsed, Protocol, ServiceView, SrvPort, TaskView, answer,
    encode_reply, parse_request, udp_limit,
};

/// The node's zones, and the sandbox's networks in its order.
static ZONE: LazyLock<(NodeZones, Vec<String>)> = LazyLock::new(|| {
    let task = |service: &str, slot: u32, addr: [u8; 4]| TaskView {
        id: format!("{slot:024x}"),
        name: format!("{service}.{slot}.{slot:024x}"),
        addr: Ipv4Addr::from(addr),
        aliases: vec![format!("{service}-{slot}")],
        // Some not ready (`--endpoint-publish-not-ready`): in `tasks.` only.
        ready: slot % 7 != 0,
    };
    let networks = vec![
        NetworkView {
            name: "overlay1".into(),
            services: vec![
                ServiceView {
                    name: "vote".into(),
                    dnsrr: true,
                    ttl: 600,
                    task_ttl: 600,
                    aliases: vec!["ballot".into()],
                    ports: vec![SrvPort {
                        name: Some("http".into()),
                        protocol: Protocol::Tcp,
                        target_port: 80,
                    }],
                    tasks: (1..=60)
                        .map(|i| task("vote", i, [10, 0, 0, i as u8]))
                        .collect(),
                    ..Default::default()
                },
                ServiceView {
                    name: "client".into(),
                    vip: Some(Ipv4Addr::new(10, 0, 1, 1)),
                    ttl: 30,
                    task_ttl: 30,
                    ports: vec![SrvPort {
                        name: None,
                        protocol: Protocol::Udp,
                        target_port: 53,
                    }],
                    tasks: vec![task("client", 1, [10, 0, 1, 2])],
                    ..Default::default()
                },
            ],
        },
        NetworkView {
            name: "backend".into(),
            services: vec![ServiceView {
                name: "db".into(),
                vip: Some(Ipv4Addr::new(10, 1, 0, 1)),
                ttl: 5,
                task_ttl: 5,
                ..Default::default()
            }],
        },
    ];
    let ids: Vec<String> = networks.iter().map(|n| format!("id-{}", n.name)).collect();
    (ids.iter().cloned().zip(networks).collect(), ids)
});

fuzz_target!(|data: &[u8]| {
    let request = match parse_request(data) {
        Parsed::Drop => return,
        Parsed::Reply(bytes) => {
            let reply = Message::from_vec(&bytes).expect("FORMERR reply decodes");
            assert_eq!(&reply.id.to_be_bytes()[..], &data[..2]);
            return;
        }
        Parsed::Request(request) => request,
    };
    let mut rng = SmallRng::seed_from_u64(u64::from(request.id));
    let Outcome::Reply(reply) = answer(ZONE.0.scope(&ZONE.1), &request, &mut rng) else {
        return;
    };
    for limit in [udp_limit(&request), MAX_TCP_MESSAGE] {
        let Some(bytes) = encode_reply(&reply, limit) else {
            continue;
        };
        assert!(bytes.len() <= limit.max(512), "{} > {limit}", bytes.len());
        let decoded = Message::from_vec(&bytes).expect("our reply decodes");
        assert_eq!(decoded.id, request.id);
    }
});
