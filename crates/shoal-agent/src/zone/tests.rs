//! The node's DNS zones: built once per changed network, whatever the number of sandboxes.

use std::cell::Cell;
use std::net::Ipv4Addr;
use std::sync::Arc;

use shoal_types::EndpointMode;
use shoal_types::endpoint::{
    EndpointView, NetworkEndpoints, NetworkInfo, NodeEndpoint, ServiceEndpoint, TaskEndpoint,
};

use super::{Zones, network_zone, service_zone};

mod incremental;

pub(super) fn network(id: &str, name: &str, octet: u8, ingress: bool) -> NetworkEndpoints {
    NetworkEndpoints {
        info: NetworkInfo {
            id: id.to_string(),
            name: name.to_string(),
            vni: 4096 + u32::from(octet),
            subnet: format!("10.{octet}.0.0/24").parse().expect("subnet"),
            gateway: Ipv4Addr::new(10, octet, 0, 1),
            ingress,
        },
        services: imbl::OrdMap::new(),
        tasks: imbl::OrdMap::new(),
        nodes: imbl::OrdMap::new(),
    }
}

pub(super) fn add_service(n: &mut NetworkEndpoints, id: &str, name: &str, vip: u8) {
    let octet = n.info.gateway.octets()[1];
    n.services.insert(
        id.to_string(),
        ServiceEndpoint {
            id: id.to_string(),
            name: name.to_string(),
            mode: EndpointMode::Vip,
            vip: Some(format!("10.{octet}.0.{vip}/24").parse().expect("vip")),
            ports: vec![],
            aliases: vec![],
            dns_ttl: None,
            publish_not_ready: false,
        },
    );
}

pub(super) fn add_task(n: &mut NetworkEndpoints, service_id: &str, slot: u8) {
    let octet = n.info.gateway.octets()[1];
    let id = format!("{service_id}{slot:0>20}");
    n.tasks.insert(
        id.clone(),
        TaskEndpoint {
            name: format!("{service_id}.{slot}.{id}"),
            id,
            service_id: service_id.to_string(),
            addr: format!("10.{octet}.0.{}/24", 100 + slot)
                .parse()
                .expect("addr"),
            node_id: "node1".to_string(),
            vtep: Ipv4Addr::new(192, 168, 0, 1),
            ready: true,
        },
    );
}

/// Two overlays with a service each, and ingress.
fn view() -> EndpointView {
    let mut front = network("net-front", "front", 1, false);
    add_service(&mut front, "web0", "web", 2);
    add_task(&mut front, "web0", 1);
    let mut back = network("net-back", "back", 2, false);
    add_service(&mut back, "db00", "db", 2);
    add_task(&mut back, "db00", 1);
    let ingress = network("net-ingress", "ingress", 255, true);
    EndpointView {
        version: 1,
        networks: [front, back, ingress]
            .into_iter()
            .map(|n| (n.info.id.clone(), n))
            .collect(),
    }
}

#[test]
fn a_change_rebuilds_each_changed_network_once_whatever_the_number_of_sandboxes() {
    let mut per_count = Vec::new();
    for sandboxes in [1, 10, 300] {
        let mut zones = Zones::new();
        // Each sandbox's DNS server holds a receiver and nothing else.
        let receivers: Vec<_> = (0..sandboxes).map(|_| zones.subscribe()).collect();
        let builds = Cell::new(0);
        let counting = |net: &str, s: &ServiceEndpoint, tasks: &[&TaskEndpoint]| {
            builds.set(builds.get() + 1);
            service_zone(net, s, tasks)
        };

        let first = Arc::new(view());
        assert_eq!(
            zones.update_with(&first, counting),
            2,
            "ingress has no zone"
        );
        let initial = builds.replace(0);

        // One more task on `front` only.
        let mut next = view();
        add_task(
            next.networks.get_mut("net-front").expect("front"),
            "web0",
            2,
        );
        let before = Arc::clone(&receivers[0].borrow());
        zones.update_with(&Arc::new(next), counting);
        let after = Arc::clone(&receivers[0].borrow());
        per_count.push((sandboxes, initial, builds.get()));

        // Every sandbox sees the one new structure, not a copy of its own...
        for rx in &receivers {
            assert!(Arc::ptr_eq(&rx.borrow(), &after));
        }
        // ...in which `back` is the very zone it had, and `front` has the new task's names.
        assert!(Arc::ptr_eq(
            before.get("net-back").expect("back"),
            after.get("net-back").expect("back")
        ));
        let front = ["net-front".to_string()];
        assert!(after.scope(&front).name_count() > before.scope(&front).name_count());
        assert!(after.get("net-ingress").is_none());
    }
    assert_eq!(
        per_count,
        [(1, 2, 1), (10, 2, 1), (300, 2, 1)],
        "(sandboxes, services built for the first view, services built for a one-service change)"
    );
}

#[test]
fn changes_that_are_not_names_rebuild_and_publish_nothing() {
    let mut zones = Zones::new();
    let mut rx = zones.subscribe();
    zones.update(&Arc::new(view()));
    rx.mark_unchanged();
    // A node joins the routing mesh: ingress endpoints only, and a new version number.
    let mut next = view();
    next.version = 2;
    next.networks
        .get_mut("net-ingress")
        .expect("ingress")
        .nodes
        .insert(
            "node2".to_string(),
            NodeEndpoint {
                node_id: "node2".to_string(),
                addr: "10.255.0.2/24".parse().expect("addr"),
                vtep: Ipv4Addr::new(192, 168, 0, 2),
            },
        );
    assert_eq!(zones.update(&Arc::new(next)), 0);
    assert!(!rx.has_changed().expect("sender alive"));
}

#[test]
fn a_network_the_node_leaves_loses_its_zone() {
    let mut zones = Zones::new();
    let rx = zones.subscribe();
    zones.update(&Arc::new(view()));
    let mut next = view();
    next.networks.remove("net-back");
    assert_eq!(zones.update(&Arc::new(next)), 0);
    let now = rx.borrow();
    assert!(now.get("net-back").is_none());
    assert!(now.get("net-front").is_some());
}

#[test]
fn a_task_that_is_not_ready_has_no_name_unless_its_service_publishes_it() {
    let mut n = network("net-front", "front", 1, false);
    add_service(&mut n, "web0", "web", 2);
    add_task(&mut n, "web0", 1);
    add_task(&mut n, "web0", 2);
    let second = format!("web0{:0>20}", 2);
    n.tasks.get_mut(&second).expect("web0.2").ready = false;
    let front = ["net-front".to_string()];
    let count = |n: &NetworkEndpoints| {
        let mut zones = shoal_dns::NodeZones::new();
        zones.insert("net-front", Arc::new(network_zone(n)));
        zones.scope(&front).name_count()
    };
    let hidden = count(&n);
    n.services.get_mut("web0").expect("web0").publish_not_ready = true;
    let published = count(&n);
    n.tasks.get_mut(&second).expect("web0.2").ready = true;
    let ready = count(&n);
    // Published: its own names (name, id, short id, each also qualified), not the service's.
    assert!(
        hidden < published && published == ready,
        "{hidden} {published} {ready}"
    );
}
