use super::*;

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, last)
}

fn any(vip: Ipv4Addr) -> SvcKey {
    SvcKey {
        vip,
        port: 0,
        proto: PROTO_ANY,
    }
}

fn config(services: &[(&str, &str, u8, &[u8])]) -> NodeConfig {
    NodeConfig {
        services: services
            .iter()
            .map(|(net, id, vip, backends)| {
                (
                    (net.to_string(), id.to_string()),
                    Service {
                        vip: ip(*vip),
                        ports: vec![],
                        backends: backends.iter().map(|b| ip(*b)).collect(),
                    },
                )
            })
            .collect(),
    }
}

/// Applies `to` on top of `from` and returns the ops and the new state.
fn step(from: &Programmed, to: &NodeConfig) -> (Vec<MapOp>, Programmed) {
    let mut next = from.clone();
    let p = plan(&mut next, to);
    assert!(p.conflicts.is_empty(), "{:?}", p.conflicts);
    (p.ops, next)
}

fn put_be(service: u32, slot: u32, last: u8) -> MapOp {
    MapOp::PutBackend {
        service,
        slot,
        addr: ip(last),
    }
}

fn put_svc(vip: u8, index: u32, net: u32, count: u32) -> MapOp {
    MapOp::PutService {
        key: any(ip(vip)),
        value: SvcVal { index, net, count },
    }
}

#[test]
fn a_new_service_writes_its_backends_before_its_entry() {
    let (ops, next) = step(
        &Programmed::default(),
        &config(&[("net1", "web", 100, &[11, 12])]),
    );
    assert_eq!(
        ops,
        [put_be(0, 0, 11), put_be(0, 1, 12), put_svc(100, 0, 1, 2)]
    );
    // Nothing changed, nothing to do.
    let (ops, again) = step(&next, &config(&[("net1", "web", 100, &[11, 12])]));
    assert!(ops.is_empty(), "{ops:?}");
    assert_eq!(again, next);
}

#[test]
fn replacing_a_task_rewrites_one_slot_and_not_the_service() {
    let (_, s) = step(
        &Programmed::default(),
        &config(&[("net1", "web", 100, &[11, 12, 13])]),
    );
    // 12 replaced by 14: one backend write, the entry (and its counter) untouched.
    let (ops, _) = step(&s, &config(&[("net1", "web", 100, &[11, 13, 14])]));
    assert_eq!(ops, [put_be(0, 1, 14)]);
}

#[test]
fn shrinking_updates_the_count_before_deleting_slots() {
    let (_, s) = step(
        &Programmed::default(),
        &config(&[("net1", "web", 100, &[11, 12, 13])]),
    );
    // 11 goes: 13 moves down into slot 0, the count drops, then slot 2 goes.
    let (ops, s) = step(&s, &config(&[("net1", "web", 100, &[12, 13])]));
    assert_eq!(
        ops,
        [
            put_be(0, 0, 13),
            put_svc(100, 0, 1, 2),
            MapOp::DeleteBackend {
                service: 0,
                slot: 2
            }
        ]
    );
    // To zero: the entry stays (connections are refused), every slot goes after it.
    let (ops, _) = step(&s, &config(&[("net1", "web", 100, &[])]));
    assert_eq!(
        ops,
        [
            put_svc(100, 0, 1, 0),
            MapOp::DeleteBackend {
                service: 0,
                slot: 0
            },
            MapOp::DeleteBackend {
                service: 0,
                slot: 1
            }
        ]
    );
}

#[test]
fn a_change_touches_only_its_service_whatever_else_is_programmed() {
    let mut services: Vec<(String, String, u8, Vec<u8>)> = (0..200u8)
        .map(|i| {
            (
                "net1".to_string(),
                format!("s{i}"),
                i,
                vec![i, i.wrapping_add(1)],
            )
        })
        .collect();
    let cfg = |s: &[(String, String, u8, Vec<u8>)]| NodeConfig {
        services: s
            .iter()
            .map(|(n, id, vip, b)| {
                (
                    (n.clone(), id.clone()),
                    Service {
                        vip: Ipv4Addr::new(10, 1, 0, *vip),
                        ports: vec![],
                        backends: b.iter().map(|x| ip(*x)).collect(),
                    },
                )
            })
            .collect(),
    };
    let (_, s) = step(&Programmed::default(), &cfg(&services));
    services[57].3.push(250);
    let (ops, _) = step(&s, &cfg(&services));
    assert_eq!(ops.len(), 2, "one backend and one service entry: {ops:?}");
}

#[test]
fn a_removed_service_loses_its_keys_before_its_backends() {
    let (_, s) = step(
        &Programmed::default(),
        &config(&[("net1", "web", 100, &[11]), ("net1", "db", 101, &[12])]),
    );
    let (ops, s) = step(&s, &config(&[("net1", "web", 100, &[11])]));
    // `db` got index 0 (services are visited in key order: db < web).
    assert_eq!(
        ops,
        [
            MapOp::DeleteService { key: any(ip(101)) },
            MapOp::DeleteBackend {
                service: 0,
                slot: 0
            }
        ]
    );
    // A service created again gets a fresh index: no stale slot can be read as its own.
    let (ops, _) = step(
        &s,
        &config(&[("net1", "web", 100, &[11]), ("net1", "db", 101, &[12])]),
    );
    assert_eq!(ops, [put_be(2, 0, 12), put_svc(101, 2, 1, 1)]);
}

#[test]
fn networks_get_stable_indices_from_one() {
    let mut p = Programmed::default();
    assert_eq!(p.network_index("a"), 1);
    assert_eq!(p.network_index("b"), 2);
    assert_eq!(p.network_index("a"), 1);
    let (ops, _) = step(&p, &config(&[("b", "web", 100, &[11])]));
    assert_eq!(ops[1], put_svc(100, 0, 2, 1));
}

#[test]
fn a_vip_taken_by_another_network_is_reported_not_overwritten() {
    let mut state = Programmed::default();
    let p = plan(
        &mut state,
        &config(&[("net1", "web", 100, &[11]), ("net2", "api", 100, &[12])]),
    );
    assert_eq!(p.conflicts.len(), 1, "{:?}", p.conflicts);
    assert!(p.conflicts[0].contains("10.0.0.100"), "{}", p.conflicts[0]);
    let puts = p
        .ops
        .iter()
        .filter(|o| matches!(o, MapOp::PutService { .. }))
        .count();
    assert_eq!(puts, 1);
}

#[test]
fn a_vip_handed_from_one_service_to_another_is_not_deleted() {
    let (_, s) = step(
        &Programmed::default(),
        &config(&[("net1", "b", 100, &[11])]),
    );
    // `b` moves to VIP 101 and `a` (visited first) takes 100 in the same change.
    let (ops, _) = step(
        &s,
        &config(&[("net1", "a", 100, &[12]), ("net1", "b", 101, &[11])]),
    );
    assert!(
        !ops.contains(&MapOp::DeleteService { key: any(ip(100)) }),
        "{ops:?}"
    );
}

#[test]
fn declared_ports_get_one_key_each() {
    let mut cfg = config(&[("net1", "web", 100, &[11])]);
    if let Some(s) = cfg.services.values_mut().next() {
        s.ports = vec![(Proto::Tcp, 80), (Proto::Udp, 53)];
    }
    let (ops, _) = step(&Programmed::default(), &cfg);
    let keys: Vec<_> = ops
        .iter()
        .filter_map(|o| match o {
            MapOp::PutService { key, .. } => Some((key.port, key.proto)),
            _ => None,
        })
        .collect();
    assert_eq!(keys, [(53, 17), (80, 6)]);
}

#[test]
fn slots_stay_put_and_holes_close_from_the_end() {
    assert_eq!(
        assign_slots(&[ip(1), ip(2), ip(3)], &[ip(3), ip(1), ip(4)]),
        [ip(1), ip(4), ip(3)]
    );
    assert_eq!(
        assign_slots(&[ip(1), ip(2), ip(3), ip(4)], &[ip(4), ip(2)]),
        [ip(4), ip(2)]
    );
    assert_eq!(assign_slots(&[], &[ip(2), ip(1), ip(2)]), [ip(2), ip(1)]);
}

#[test]
fn a_service_that_lost_its_vip_takes_it_back_once_free() {
    let mut state = Programmed::default();
    let both = config(&[("net1", "web", 100, &[11]), ("net2", "api", 100, &[12])]);
    assert_eq!(plan(&mut state, &both).conflicts.len(), 1);
    // Unchanged: still refused, nothing written.
    let again = plan(&mut state, &both);
    assert_eq!(again.conflicts.len(), 1);
    assert!(again.ops.is_empty(), "{:?}", again.ops);
    // `web` goes: `api` takes the VIP in the same plan, and the key is not deleted.
    let p = plan(&mut state, &config(&[("net2", "api", 100, &[12])]));
    assert!(p.conflicts.is_empty());
    assert!(
        p.ops.iter().any(|o| matches!(o, MapOp::PutService { key, value } if key.vip == ip(100) && value.net == 2)),
        "{:?}",
        p.ops
    );
    assert!(!p.ops.contains(&MapOp::DeleteService { key: any(ip(100)) }));
}

#[test]
fn a_vip_change_moves_the_key() {
    let (_, s) = step(
        &Programmed::default(),
        &config(&[("net1", "web", 100, &[11])]),
    );
    let (ops, _) = step(&s, &config(&[("net1", "web", 101, &[11])]));
    assert_eq!(
        ops,
        [
            put_svc(101, 0, 1, 1),
            MapOp::DeleteService { key: any(ip(100)) }
        ]
    );
}

#[test]
fn backends_that_leave_are_reported_once_and_kept_ones_never() {
    let removed = |from: &Programmed, to: &NodeConfig| {
        let mut next = from.clone();
        let p = plan(&mut next, to);
        (p.removed, next)
    };
    let (r, s) = removed(
        &Programmed::default(),
        &config(&[
            ("net1", "web", 100, &[11, 12, 13]),
            ("net1", "db", 101, &[21]),
        ]),
    );
    assert!(r.is_empty(), "a new service removes nothing: {r:?}");
    // 12 replaced by 14, 13 gone, 11 kept; `db` untouched.
    let (r, s) = removed(
        &s,
        &config(&[("net1", "web", 100, &[11, 14]), ("net1", "db", 101, &[21])]),
    );
    assert_eq!(r, [ip(12), ip(13)]);
    // A service that goes takes all its backends.
    let (r, s) = removed(&s, &config(&[("net1", "web", 100, &[11, 14])]));
    assert_eq!(r, [ip(21)]);
    // Nothing changed: nothing removed.
    let (r, _) = removed(&s, &config(&[("net1", "web", 100, &[11, 14])]));
    assert!(r.is_empty(), "{r:?}");
}

/// The keys whose service differs between two configs (what a caller gives `plan_changes`).
fn changed_keys(a: &NodeConfig, b: &NodeConfig) -> BTreeSet<ServiceKey> {
    a.services
        .keys()
        .chain(b.services.keys())
        .filter(|k| a.services.get(*k) != b.services.get(*k))
        .cloned()
        .collect()
}

#[test]
fn planning_the_changes_alone_gives_what_the_full_plan_gives() {
    // A walk through adds, removals, backend changes, VIP moves and VIPs shared between two
    // networks (conflicts that resolve when the holder goes), from a fixed seed.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rand = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let (mut full, mut scoped) = (Programmed::default(), Programmed::default());
    let mut cfg = NodeConfig::default();
    let mut conflicts_seen = 0;
    for step in 0..2000 {
        let mut next = cfg.clone();
        for _ in 0..1 + rand(3) {
            let key = (format!("net{}", 1 + rand(2)), format!("s{}", rand(12)));
            if rand(4) == 0 {
                next.services.remove(&key);
                continue;
            }
            let backends = (0..rand(4)).map(|_| ip(10 + rand(20) as u8)).collect();
            next.services.insert(
                key,
                Service {
                    // Few VIPs among many services: two networks often want the same one.
                    vip: ip(100 + rand(16) as u8),
                    ports: vec![],
                    backends,
                },
            );
        }
        let changed = changed_keys(&cfg, &next);
        let a = plan(&mut full, &next);
        let b = plan_changes(&mut scoped, &next, &changed);
        assert_eq!(a, b, "step {step}");
        assert_eq!(full, scoped, "step {step}");
        conflicts_seen += a.conflicts.len();
        cfg = next;
    }
    assert!(
        conflicts_seen > 0,
        "the walk never made two services want one VIP"
    );
}

#[test]
fn planning_the_changes_visits_only_them() {
    let mut state = Programmed::default();
    let cfg = config(&[("net1", "web", 100, &[11]), ("net1", "db", 101, &[21])]);
    plan(&mut state, &cfg);
    // `db` differs from what was programmed, but only `web` is named: `db` is not looked at
    // (the caller promised it did not change), which is what makes the plan O(change).
    let next = config(&[("net1", "web", 100, &[11, 12]), ("net1", "db", 101, &[22])]);
    let web = BTreeSet::from([("net1".to_string(), "web".to_string())]);
    let p = plan_changes(&mut state, &next, &web);
    // `web` is service 1 (`db` came first in key order).
    assert_eq!(p.ops, [put_be(1, 1, 12), put_svc(100, 1, 1, 2)]);
    // A service waiting for a VIP is looked at even when not named: it takes the VIP as soon
    // as its holder goes.
    let mut state = Programmed::default();
    let both = config(&[("net1", "web", 100, &[11]), ("net2", "api", 100, &[12])]);
    assert_eq!(plan(&mut state, &both).conflicts.len(), 1);
    let web = BTreeSet::from([("net1".to_string(), "web".to_string())]);
    let p = plan_changes(&mut state, &config(&[("net2", "api", 100, &[12])]), &web);
    assert!(p.conflicts.is_empty(), "{:?}", p.conflicts);
    assert!(
        p.ops
            .iter()
            .any(|o| matches!(o, MapOp::PutService { key, value } if key.vip == ip(100) && value.net == 2)),
        "{:?}",
        p.ops
    );
}
