//! Unit tests of the pure parts: rendering, diffing, validation, netlink encoding.

use std::net::Ipv4Addr;

use expect_test::{Expect, expect};

use crate::model::{LbConfig, Proto, VipService};
use crate::netlink::{Ack, encode, parse_acks};
use crate::plan::{StaleFlows, orphan_ops, plan, removed_backends};
use crate::text::{render_create, render_orphans, render_update};

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, last)
}

fn svc(id: &str, vip: u8, ports: &[(Proto, u16)], backends: &[u8]) -> VipService {
    VipService {
        id: id.to_string(),
        vip: ip(vip),
        ports: ports.to_vec(),
        backends: backends.iter().map(|b| ip(*b)).collect(),
    }
}

/// The seed's `vote` (VIP 10.0.0.9, two tasks) and `client` (VIP 10.0.0.7, no declared port,
/// one task), plus `db` with no task.
fn seed(vote: &[u8]) -> LbConfig {
    LbConfig::new([
        svc("vote", 9, &[(Proto::Tcp, 80), (Proto::Udp, 53)], vote),
        svc("client", 7, &[], &[8]),
        svc("db", 12, &[(Proto::Tcp, 5432)], &[]),
    ])
}

fn check_update(old: &LbConfig, new: &LbConfig, expected: Expect) {
    expected.assert_eq(&render_update(old, new));
}

#[test]
fn create_renders_the_whole_table() {
    expect![[r#"
        add table ip shoal
        delete table ip shoal
        table ip shoal {
        	set vips {
        		type ipv4_addr
        	}

        	map ports {
        		type ipv4_addr . inet_proto . inet_service : verdict
        	}

        	map addrs {
        		type ipv4_addr : verdict
        	}

        	map orphans {
        		type ipv4_addr : ipv4_addr
        		flags timeout
        	}

        	chain nat_output {
        		type nat hook output priority -100; policy accept;
        		ip daddr . meta l4proto . th dport vmap @ports
        		ip daddr vmap @addrs
        	}

        	chain filter_output {
        		type filter hook output priority 0; policy accept;
        		ip daddr @vips goto refuse
        	}

        	chain refuse {
        		meta l4proto tcp reject with tcp reset
        		reject
        	}

        	chain orphan_replies {
        		type filter hook prerouting priority mangle; policy accept;
        		ct state new meta l4proto udp ip saddr set ip saddr map @orphans
        	}
        }
    "#]]
    .assert_eq(&render_create(&LbConfig::default()));
    expect![[r#"
        add map ip shoal be_03 { typeof ip daddr . numgen inc mod 2 : ip daddr; }
        add map ip shoal be_21 { typeof ip daddr . numgen inc mod 2 : ip daddr; }
        add map ip shoal be_30 { typeof ip daddr . numgen inc mod 2 : ip daddr; }
        add chain ip shoal svc_client
        add chain ip shoal svc_db
        add chain ip shoal svc_vote
        add element ip shoal be_21 { 10.0.0.9 . 0 : 10.0.0.10, 10.0.0.9 . 1 : 10.0.0.11 }
        add element ip shoal be_30 { 10.0.0.7 . 0 : 10.0.0.8 }
        add rule ip shoal svc_client dnat to ip daddr . numgen inc mod 1 map @be_30
        add rule ip shoal svc_vote dnat to ip daddr . numgen inc mod 2 map @be_21
        add element ip shoal ports { 10.0.0.9 . tcp . 80 : goto svc_vote, 10.0.0.9 . udp . 53 : goto svc_vote, 10.0.0.12 . tcp . 5432 : goto svc_db }
        add element ip shoal addrs { 10.0.0.7 : goto svc_client }
        add element ip shoal vips { 10.0.0.7, 10.0.0.9, 10.0.0.12 }
    "#]].assert_eq(render_create(&seed(&[10, 11])).split_once("}\n}\n").unwrap().1);
}

#[test]
fn update_without_change_is_empty() {
    check_update(&seed(&[10, 11]), &seed(&[10, 11]), expect![[""]]);
    assert!(plan(&seed(&[10]), &seed(&[10])).is_empty());
}

#[test]
fn replacing_a_task_changes_elements_only() {
    // Same N: the rule (and its numgen counter) stays, no table-wide validation.
    check_update(
        &seed(&[10, 11]),
        &seed(&[10, 12]),
        expect![[r#"
            delete element ip shoal be_21 { 10.0.0.9 . 1 }
            add element ip shoal be_21 { 10.0.0.9 . 1 : 10.0.0.12 }
        "#]],
    );
}

#[test]
fn scaling_replaces_the_rule() {
    check_update(
        &seed(&[10, 11]),
        &seed(&[10, 11, 12]),
        expect![[r#"
            flush chain ip shoal svc_vote
            add element ip shoal be_21 { 10.0.0.9 . 2 : 10.0.0.12 }
            add rule ip shoal svc_vote dnat to ip daddr . numgen inc mod 3 map @be_21
        "#]],
    );
    check_update(
        &seed(&[10, 11, 12]),
        &seed(&[11]),
        expect![[r#"
            flush chain ip shoal svc_vote
            delete element ip shoal be_21 { 10.0.0.9 . 0, 10.0.0.9 . 1, 10.0.0.9 . 2 }
            add element ip shoal be_21 { 10.0.0.9 . 0 : 10.0.0.11 }
            add rule ip shoal svc_vote dnat to ip daddr . numgen inc mod 1 map @be_21
        "#]],
    );
}

#[test]
fn scaling_to_zero_and_back() {
    check_update(
        &seed(&[10]),
        &seed(&[]),
        expect![[r#"
            flush chain ip shoal svc_vote
            delete element ip shoal be_21 { 10.0.0.9 . 0 }
        "#]],
    );
    check_update(
        &seed(&[]),
        &seed(&[10]),
        expect![[r#"
            add element ip shoal be_21 { 10.0.0.9 . 0 : 10.0.0.10 }
            add rule ip shoal svc_vote dnat to ip daddr . numgen inc mod 1 map @be_21
        "#]],
    );
}

#[test]
fn adding_and_removing_services_and_ports() {
    let mut more = seed(&[10]);
    more.services.insert(
        "web".into(),
        svc("web", 20, &[(Proto::Tcp, 8080)], &[21, 22]),
    );
    check_update(
        &seed(&[10]),
        &more,
        expect![[r#"
            add map ip shoal be_17 { typeof ip daddr . numgen inc mod 2 : ip daddr; }
            add chain ip shoal svc_web
            add element ip shoal be_17 { 10.0.0.20 . 0 : 10.0.0.21, 10.0.0.20 . 1 : 10.0.0.22 }
            add rule ip shoal svc_web dnat to ip daddr . numgen inc mod 2 map @be_17
            add element ip shoal ports { 10.0.0.20 . tcp . 8080 : goto svc_web }
            add element ip shoal vips { 10.0.0.20 }
        "#]],
    );
    check_update(
        &more,
        &seed(&[10]),
        expect![[r#"
            flush chain ip shoal svc_web
            delete element ip shoal ports { 10.0.0.20 . tcp . 8080 }
            delete element ip shoal vips { 10.0.0.20 }
            delete element ip shoal be_17 { 10.0.0.20 . 0, 10.0.0.20 . 1 }
            delete chain ip shoal svc_web
            delete map ip shoal be_17
        "#]],
    );

    let mut other_port = seed(&[10]);
    other_port
        .services
        .insert("vote".into(), svc("vote", 9, &[(Proto::Tcp, 8080)], &[10]));
    check_update(
        &seed(&[10]),
        &other_port,
        expect![[r#"
            delete element ip shoal ports { 10.0.0.9 . tcp . 80, 10.0.0.9 . udp . 53 }
            add element ip shoal ports { 10.0.0.9 . tcp . 8080 : goto svc_vote }
        "#]],
    );
}

#[test]
fn a_backend_map_stays_while_another_chain_uses_it() {
    // Many services share 64 maps: removing one must not delete a map another still uses.
    let many = LbConfig::new((0..200u8).map(|i| VipService {
        id: format!("s{i}"),
        vip: Ipv4Addr::new(10, 1, 0, i),
        ports: vec![(Proto::Tcp, 80)],
        backends: vec![ip(10)],
    }));
    let mut fewer = many.clone();
    fewer.services.remove("s7");
    let text = render_update(&many, &fewer);
    assert!(!text.contains("delete map"), "{text}");
    assert!(text.contains("delete chain ip shoal svc_s7\n"), "{text}");
    let text = render_update(&fewer, &many);
    assert!(!text.contains("add map"), "{text}");
    // From nothing, every used map is created once.
    let text = render_update(&LbConfig::default(), &many);
    assert_eq!(text.matches("add map").count(), 64);
}

#[test]
fn removed_backends_lists_only_what_left() {
    let gone = removed_backends(&seed(&[10, 11]), &seed(&[11, 12]));
    assert_eq!(
        gone,
        [StaleFlows {
            vip: ip(9),
            backend: ip(10)
        }]
    );
    let mut without_client = seed(&[11]);
    without_client.services.remove("client");
    assert_eq!(
        removed_backends(&seed(&[11]), &without_client),
        [StaleFlows {
            vip: ip(7),
            backend: ip(8)
        }]
    );
    assert!(removed_backends(&seed(&[10]), &seed(&[10])).is_empty());
}

#[test]
fn late_replies_of_removed_backends_are_kept_one_element_per_backend() {
    let stale = [
        StaleFlows {
            vip: ip(9),
            backend: ip(10),
        },
        StaleFlows {
            vip: ip(7),
            backend: ip(8),
        },
        // The same address again (it cannot be a backend of two VIPs on one network): one
        // element, so the transaction cannot clash with itself.
        StaleFlows {
            vip: ip(12),
            backend: ip(10),
        },
    ];
    expect![[r#"
        add element ip shoal orphans { 10.0.0.10 timeout 10s : 10.0.0.9, 10.0.0.8 timeout 10s : 10.0.0.7 }
    "#]]
    .assert_eq(&render_orphans(&stale));
    assert_eq!(render_orphans(&[]), "");
    // The netlink batch: begin, one NEWSETELEM (0x0a0c), end; its text is what nft takes.
    let batch = encode(&orphan_ops(&stale), 7);
    let types: Vec<u16> = message_types(&batch.bytes);
    assert_eq!(types, [0x0010, 0x0a0c, 0x0011]);
    assert_eq!(batch.describe(8), render_orphans(&stale).trim_end());
    // Each element carries its timeout: 10,000 ms, 8 bytes in network order.
    let timeout = [0u8, 0, 0, 0, 0, 0, 0x27, 0x10];
    assert_eq!(
        batch.bytes.windows(8).filter(|w| *w == timeout).count(),
        2,
        "one timeout per element"
    );
}

#[test]
fn validation_names_the_service() {
    let check = |cfg: LbConfig, expected: Expect| {
        expected.assert_eq(&cfg.validate().map_err(|e| e.to_string()).unwrap_err());
    };
    check(
        LbConfig::new([svc("a", 9, &[], &[1]), svc("b", 9, &[], &[2])]),
        expect!["invalid load-balancer config for service b: it shares its VIP 10.0.0.9 with a"],
    );
    check(
        LbConfig::new([svc("a b", 9, &[], &[1])]),
        expect![
            "invalid load-balancer config for service a b: it needs an id of letters, digits, '_', '.' and '-'"
        ],
    );
    check(
        LbConfig::new([svc("a", 9, &[(Proto::Udp, 53), (Proto::Udp, 53)], &[1])]),
        expect!["invalid load-balancer config for service a: it lists udp/53 twice"],
    );
    check(
        LbConfig::new([svc("a", 9, &[(Proto::Tcp, 0)], &[1])]),
        expect!["invalid load-balancer config for service a: it lists port 0"],
    );
    assert!(seed(&[10, 11]).validate().is_ok());
}

/// Walks the messages of a batch: lengths add up, types are what the plan asked for, and
/// every nested attribute fits in its parent.
fn message_types(bytes: &[u8]) -> Vec<u16> {
    let mut types = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
        let ty = u16::from_ne_bytes(rest[4..6].try_into().unwrap());
        assert!(
            len >= 20 && len <= rest.len() && len.is_multiple_of(4),
            "bad length {len}"
        );
        check_attrs(&rest[20..len]);
        types.push(ty);
        rest = &rest[len..];
    }
    types
}

fn check_attrs(mut attrs: &[u8]) {
    while !attrs.is_empty() {
        let len = u16::from_ne_bytes(attrs[0..2].try_into().unwrap()) as usize;
        let ty = u16::from_ne_bytes(attrs[2..4].try_into().unwrap());
        assert!(
            len >= 4 && len <= attrs.len(),
            "attribute overflows its parent"
        );
        if ty & 0x8000 != 0 {
            check_attrs(&attrs[4..len]);
        }
        attrs = &attrs[len.next_multiple_of(4).min(attrs.len())..];
    }
}

#[test]
fn netlink_batch_is_well_formed() {
    let batch = encode(&plan(&seed(&[10, 11]), &seed(&[10, 11, 12])), 100);
    // begin, flush chain, add element, add rule, end (0x0a00: the nftables subsystem).
    let types: Vec<String> = message_types(&batch.bytes)
        .iter()
        .map(|t| format!("{t:#06x}"))
        .collect();
    expect![[r#"
        [
            "0x0010",
            "0x0a08",
            "0x0a0c",
            "0x0a06",
            "0x0011",
        ]
    "#]]
    .assert_debug_eq(&types);
    assert_eq!(batch.messages.first().map(|m| m.0), Some(100));
    assert_eq!(batch.last_seq(), 100 + batch.messages.len() as u32 - 2);
    expect!["flush chain ip shoal svc_vote"].assert_eq(batch.describe(101));
}

#[test]
fn netlink_splits_large_element_lists() {
    let big = LbConfig::new((0..2000u32).map(|i| VipService {
        id: format!("s{i}"),
        vip: Ipv4Addr::from(0x0a01_0000 + i),
        ports: vec![(Proto::Tcp, 80)],
        backends: vec![ip(10)],
    }));
    let batch = encode(&plan(&LbConfig::default(), &big), 1);
    message_types(&batch.bytes);
    // 2000 `vips` elements need 4 messages of at most 512.
    let vips = batch
        .messages
        .iter()
        .filter(|(_, text)| text.starts_with("add element ip shoal vips"))
        .count();
    assert_eq!(vips, 4);
}

#[test]
fn acks_are_parsed() {
    // Two NLMSG_ERROR messages: an ack for seq 7 and ENOENT for seq 5.
    let mut buf = Vec::new();
    for (error, seq) in [(0i32, 7u32), (-2, 5)] {
        buf.extend_from_slice(&36u32.to_ne_bytes());
        buf.extend_from_slice(&2u16.to_ne_bytes());
        buf.extend_from_slice(&0u16.to_ne_bytes());
        buf.extend_from_slice(&[0; 8]);
        buf.extend_from_slice(&error.to_ne_bytes());
        buf.extend_from_slice(&20u32.to_ne_bytes()); // the echoed header
        buf.extend_from_slice(&[0; 4]);
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&[0; 4]);
    }
    assert_eq!(
        parse_acks(&buf),
        [Ack { seq: 7, errno: 0 }, Ack { seq: 5, errno: 2 }]
    );
    assert!(parse_acks(&buf[..10]).is_empty());
}
