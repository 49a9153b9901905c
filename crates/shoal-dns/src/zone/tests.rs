//! Incremental zones answer exactly as a full build of the same services would.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{
    Lookup, NetworkView, NetworkZone, Protocol, ServiceView, ServiceZone, SrvPort, TaskView,
};

mod reference;

const NET: &str = "ovl";

/// A service drawn from small pools, so that names, aliases, task names and ids, VIPs and
/// task addresses collide across services (and with `tasks.` and qualified names).
fn service(rng: &mut StdRng) -> ServiceView {
    const NAMES: [&str; 6] = ["a", "B", "c", "tasks.a", "a.ovl", "x"];
    let pick = |rng: &mut StdRng| NAMES[rng.random_range(0..NAMES.len())].to_string();
    let tasks = (0..rng.random_range(0..3))
        .map(|_| {
            let id = format!("{:024x}", rng.random_range(0..4u32));
            TaskView {
                name: if rng.random_bool(0.2) {
                    pick(rng)
                } else {
                    format!("t.{}.{id}", rng.random_range(1..3))
                },
                id,
                addr: Ipv4Addr::new(10, 0, 0, rng.random_range(2..6)),
                aliases: if rng.random_bool(0.2) {
                    vec![pick(rng)]
                } else {
                    vec![]
                },
                ready: true,
            }
        })
        .collect();
    ServiceView {
        name: pick(rng),
        vip: rng
            .random_bool(0.6)
            .then(|| Ipv4Addr::new(10, 0, 0, rng.random_range(2..6))),
        dnsrr: rng.random_bool(0.3),
        ttl: rng.random_range(1..3),
        task_ttl: rng.random_range(1..3),
        aliases: (0..rng.random_range(0..2)).map(|_| pick(rng)).collect(),
        ports: if rng.random_bool(0.3) {
            vec![SrvPort {
                name: Some("http".to_string()),
                protocol: Protocol::Tcp,
                target_port: 80,
            }]
        } else {
            vec![]
        },
        tasks,
    }
}

/// The network as a full build sees it: services in the order of their keys.
fn view(services: &BTreeMap<String, ServiceView>) -> NetworkView {
    NetworkView {
        name: NET.to_string(),
        services: services.values().cloned().collect(),
    }
}

#[test]
fn any_sequence_of_service_changes_answers_as_a_full_build() {
    for seed in 0..200 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut services = BTreeMap::new();
        let mut zone = NetworkZone::named(NET);
        for _ in 0..40 {
            let key = format!("s{:02}", rng.random_range(0..8));
            if rng.random_bool(0.25) {
                services.remove(&key);
                zone.set_service(&key, None);
            } else {
                let s = service(&mut rng);
                zone.set_service(&key, Some(Arc::new(ServiceZone::new(NET, &s))));
                services.insert(key, s);
            }
            let view = view(&services);
            let oracle = reference::Reference::new(&view);
            assert!(oracle.same_as(&zone), "seed {seed}: {zone:#?}\n{oracle:#?}");
            // A full build of the same services is the same zone, whatever the path.
            assert!(zone == NetworkZone::new(&view), "seed {seed}");
        }
    }
}

#[test]
fn the_first_service_in_order_answers_a_shared_name_whatever_came_first() {
    let vip = |last| ServiceView {
        name: "web".to_string(),
        vip: Some(Ipv4Addr::new(10, 0, 0, last)),
        ttl: 60,
        task_ttl: 60,
        ..ServiceView::default()
    };
    let answer = |zone: &NetworkZone| match zone.get("web") {
        Some(Lookup::Addrs(set)) => set.addrs.clone(),
        other => panic!("{other:?}"),
    };
    let mut zone = NetworkZone::named(NET);
    zone.set_service("b", Some(Arc::new(ServiceZone::new(NET, &vip(3)))));
    assert_eq!(answer(&zone), [Ipv4Addr::new(10, 0, 0, 3)]);
    zone.set_service("a", Some(Arc::new(ServiceZone::new(NET, &vip(2)))));
    assert_eq!(answer(&zone), [Ipv4Addr::new(10, 0, 0, 2)], "a sorts first");
    let before = zone.clone();
    zone.set_service("a", None);
    assert_eq!(answer(&zone), [Ipv4Addr::new(10, 0, 0, 3)], "b is next");
    assert_eq!(
        answer(&before),
        [Ipv4Addr::new(10, 0, 0, 2)],
        "an earlier version is not changed by a later one"
    );
}
