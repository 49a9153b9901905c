//! A change builds only the services it touched, and the result is the full build's.

use std::cell::Cell;
use std::net::Ipv4Addr;
use std::sync::Arc;

use shoal_dns::NodeZones;
use shoal_types::EndpointMode;
use shoal_types::endpoint::{EndpointView, NetworkEndpoints, ServiceEndpoint, TaskEndpoint};

use super::{Zones, network, network_zone, service_zone};

/// Service `i` of a large network: `s<i>`, VIP 10.1.<i/250>.<i%250+2>.
fn service(n: &mut NetworkEndpoints, i: u32, name: &str) {
    let id = format!("s{i:03}");
    n.services.insert(
        id.clone(),
        ServiceEndpoint {
            id,
            name: name.to_string(),
            mode: EndpointMode::Vip,
            vip: Some(
                format!("10.1.{}.{}/16", i / 250, i % 250 + 2)
                    .parse()
                    .expect("vip"),
            ),
            ports: vec![],
            aliases: vec![],
            dns_ttl: None,
            publish_not_ready: false,
        },
    );
}

/// Task `slot` of service `i`, at 10.1.<100 + i/50>.<(i%50)*5 + slot>.
fn task(n: &mut NetworkEndpoints, i: u32, slot: u32) {
    let service_id = format!("s{i:03}");
    let id = format!("{service_id}{slot:0>21}");
    n.tasks.insert(
        id.clone(),
        TaskEndpoint {
            name: format!("svc{i}.{slot}.{id}"),
            id,
            service_id,
            addr: format!("10.1.{}.{}/16", 100 + i / 50, (i % 50) * 5 + slot)
                .parse()
                .expect("addr"),
            node_id: "node1".to_string(),
            vtep: Ipv4Addr::new(192, 168, 0, 1),
            ready: true,
        },
    );
}

fn one_network(n: NetworkEndpoints, version: u64) -> Arc<EndpointView> {
    Arc::new(EndpointView {
        version,
        networks: [(n.info.id.clone(), n)].into_iter().collect(),
    })
}

/// Every published network's zone equals a full build of it from `view`.
fn same_as_full_build(zones: &NodeZones, view: &EndpointView) {
    let ids: Vec<&str> = zones.ids().collect();
    assert_eq!(ids.len(), view.networks.len());
    for (id, n) in &view.networks {
        let zone = zones.get(id).expect("zone");
        assert!(**zone == network_zone(n), "network {id}");
    }
}

#[test]
fn a_change_of_one_service_among_300_builds_that_service_only() {
    let mut n = network("net-ovl", "ovl", 1, false);
    for i in 0..300 {
        service(&mut n, i, &format!("svc{i}"));
        task(&mut n, i, 1);
        task(&mut n, i, 2);
    }
    let mut zones = Zones::new();
    let rx = zones.subscribe();
    let builds = Cell::new(0);
    let counting = |net: &str, s: &ServiceEndpoint, tasks: &[&TaskEndpoint]| {
        builds.set(builds.get() + 1);
        service_zone(net, s, tasks)
    };
    zones.update_with(&one_network(n.clone(), 1), counting);
    let first = builds.replace(0);

    let mut steps = Vec::new();
    // Scale one service up, then down, then give it an alias, then remove it.
    task(&mut n, 150, 3);
    steps.push(n.clone());
    n.tasks = n
        .tasks
        .without_values(|t| t.service_id == "s150" && t.name.starts_with("svc150.1."));
    steps.push(n.clone());
    n.services.get_mut("s150").expect("s150").aliases = vec!["svc7".to_string()];
    steps.push(n.clone());
    n.services.remove("s150");
    n.tasks = n.tasks.without_values(|t| t.service_id == "s150");
    steps.push(n.clone());

    let mut per_change = Vec::new();
    for (version, n) in steps.into_iter().enumerate() {
        let view = one_network(n, version as u64 + 2);
        assert_eq!(zones.update_with(&view, counting), 1);
        per_change.push(builds.replace(0));
        same_as_full_build(&rx.borrow(), &view);
    }
    // Before per-service parts, each of these changes rebuilt the whole network: 300.
    assert_eq!(
        (first, per_change),
        (300, vec![1, 1, 1, 0]),
        "(services built for the first view, for each one-service change)"
    );
}

/// A small deterministic generator (xorshift): no dependency for one test.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u32) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % u64::from(n)) as u32
    }
}

#[test]
fn any_sequence_of_endpoint_changes_publishes_the_full_builds_zones() {
    const NAMES: [&str; 5] = ["web", "db", "web.a", "tasks.web", "svc1"];
    for seed in 1..=100u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut nets = [
            network("net-a", "a", 1, false),
            network("net-b", "b", 2, false),
        ];
        let mut zones = Zones::new();
        let rx = zones.subscribe();
        for version in 1..40 {
            let n = &mut nets[rng.below(2) as usize];
            let i = rng.below(6);
            let sid = format!("s{i:03}");
            match rng.below(9) {
                0 => {
                    n.services.remove(&sid);
                }
                1 | 2 => {
                    service(n, i, NAMES[rng.below(5) as usize]);
                    let s = n.services.get_mut(&sid).expect("service");
                    if rng.below(3) == 0 {
                        s.mode = EndpointMode::Dnsrr;
                    }
                    if rng.below(3) == 0 {
                        s.aliases = vec![NAMES[rng.below(5) as usize].to_string()];
                    }
                }
                3 | 4 => task(n, i, rng.below(3)),
                5 => {
                    let slot = rng.below(3);
                    n.tasks.remove(&format!("{sid}{slot:0>21}"));
                }
                6 => {
                    // A task moves to another node: not a name.
                    let first = n.tasks.keys().next().cloned();
                    if let Some(t) = first.and_then(|k| n.tasks.get_mut(&k)) {
                        t.node_id = format!("node{}", rng.below(3));
                    }
                }
                7 => {
                    // Same task, new address: its names change.
                    let nth = rng.below(4) as usize;
                    let key = n.tasks.keys().nth(nth).cloned();
                    if let Some(t) = key.and_then(|k| n.tasks.get_mut(&k)) {
                        t.addr = format!("10.1.200.{}/16", rng.below(4))
                            .parse()
                            .expect("addr");
                    }
                }
                _ => n.info.name = ["a", "b", "c"][rng.below(3) as usize].to_string(),
            }
            let view = Arc::new(EndpointView {
                version,
                networks: nets
                    .iter()
                    .map(|n| (n.info.id.clone(), n.clone()))
                    .collect(),
            });
            zones.update(&view);
            same_as_full_build(&rx.borrow(), &view);
        }
    }
}

/// `retain` for the view's persistent maps (which have none): a copy without the values
/// that match.
trait WithoutValues<V> {
    fn without_values(&self, drop: impl Fn(&V) -> bool) -> Self;
}

impl<V: Clone> WithoutValues<V> for imbl::OrdMap<String, V> {
    fn without_values(&self, drop: impl Fn(&V) -> bool) -> Self {
        self.iter()
            .filter(|(_, v)| !drop(v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}
