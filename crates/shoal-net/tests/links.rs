//! Loopback tests of link operations: a bridge in one namespace, a veth into another,
//! addresses and a default route, checked with `ip` and with a ping across the bridge.

mod common;

use std::net::Ipv4Addr;
use std::process::Command;

use common::{TestNs, ip, link_line};
use shoal_net::{NetError, Netlink};

#[tokio::test]
async fn bridge_veth_address_route_and_delete() {
    let hub = TestNs::new("hub");
    let leaf = TestNs::new("leaf");
    let h = Netlink::in_netns(hub.name()).await.unwrap();
    let l = Netlink::in_netns(leaf.name()).await.unwrap();

    h.set_lo_up().await.unwrap();
    l.set_lo_up().await.unwrap();
    assert!(link_line(hub.name(), "lo").unwrap().contains(",UP"));

    let br = h.create_bridge("br0").await.unwrap();
    assert!(br > 0);
    h.add_address("br0", Ipv4Addr::new(172, 30, 99, 254), 24)
        .await
        .unwrap();

    // Both ends are made in the hub; one moves to the leaf by fd.
    h.create_veth("vleaf", "eth0").await.unwrap();
    h.move_to_netns("eth0", leaf.name()).await.unwrap();
    assert!(
        link_line(hub.name(), "eth0").is_none(),
        "eth0 must have left the hub"
    );
    h.set_controller("vleaf", "br0").await.unwrap();
    h.set_up("vleaf").await.unwrap();

    l.add_address("eth0", Ipv4Addr::new(172, 30, 99, 2), 24)
        .await
        .unwrap();
    l.set_up("eth0").await.unwrap();
    l.add_default_route(Ipv4Addr::new(172, 30, 99, 254))
        .await
        .unwrap();

    let vleaf = link_line(hub.name(), "vleaf").unwrap();
    assert!(vleaf.contains("master br0"), "{vleaf}");
    let addrs = ip(&["-n", leaf.name(), "addr", "show", "eth0"]);
    assert!(addrs.contains("inet 172.30.99.2/24"), "{addrs}");
    assert!(link_line(leaf.name(), "eth0").unwrap().contains(",UP"));
    let routes = ip(&["-n", leaf.name(), "route"]);
    assert!(
        routes.contains("default via 172.30.99.254 dev eth0"),
        "{routes}"
    );

    let links = h.links().await.unwrap();
    let vleaf = links.iter().find(|k| k.name == "vleaf").unwrap();
    assert_eq!(vleaf.controller, Some(br));
    assert_eq!(vleaf.kind.as_deref(), Some("veth"));
    assert!(vleaf.up);
    assert_eq!(
        links
            .iter()
            .find(|k| k.name == "br0")
            .unwrap()
            .kind
            .as_deref(),
        Some("bridge")
    );

    // Traffic crosses the bridge.
    let ping = Command::new("ip")
        .args([
            "netns",
            "exec",
            leaf.name(),
            "ping",
            "-c",
            "1",
            "-W",
            "5",
            "172.30.99.254",
        ])
        .output()
        .unwrap();
    assert!(
        ping.status.success(),
        "ping failed (is iputils-ping installed?): {}{}",
        String::from_utf8_lossy(&ping.stdout),
        String::from_utf8_lossy(&ping.stderr)
    );

    // Deleting one end of a veth removes the other.
    h.delete_link("vleaf").await.unwrap();
    assert!(link_line(hub.name(), "vleaf").is_none());
    assert!(link_line(leaf.name(), "eth0").is_none());
}

#[tokio::test]
async fn deleting_a_veth_from_its_far_end_if_present() {
    let hub = TestNs::new("far");
    let leaf = TestNs::new("fare");
    let h = Netlink::in_netns(hub.name()).await.unwrap();
    let l = Netlink::in_netns(leaf.name()).await.unwrap();
    h.create_veth("vleaf", "eth0").await.unwrap();
    h.move_to_netns("eth0", leaf.name()).await.unwrap();

    // The sandbox's end goes, and the hub's end with it.
    assert!(l.delete_link_if_present("eth0").await.unwrap());
    assert!(link_line(leaf.name(), "eth0").is_none());
    assert!(link_line(hub.name(), "vleaf").is_none());
    // Gone already: said, not an error.
    assert!(!l.delete_link_if_present("eth0").await.unwrap());
    assert!(!h.delete_link_if_present("vleaf").await.unwrap());
}

#[tokio::test]
async fn rename_and_mtu() {
    let ns = TestNs::new("ren");
    let n = Netlink::in_netns(ns.name()).await.unwrap();
    n.create_veth("va", "vb").await.unwrap();
    n.rename("vb", "eth1").await.unwrap();
    n.set_mtu("eth1", 1450).await.unwrap();
    let line = link_line(ns.name(), "eth1").expect("renamed link");
    assert!(line.contains("mtu 1450"), "{line}");
}

#[tokio::test]
async fn errors_name_the_link_and_the_namespace() {
    let ns = TestNs::new("err");
    let n = Netlink::in_netns(ns.name()).await.unwrap();
    let err = n.set_up("nope0").await.unwrap_err();
    assert!(matches!(err, NetError::NoSuchLink { .. }), "{err:?}");
    assert!(
        err.to_string().contains("nope0") && err.to_string().contains(ns.name()),
        "{err}"
    );

    n.create_bridge("br0").await.unwrap();
    let err = n.create_bridge("br0").await.unwrap_err();
    assert_eq!(
        err.errno(),
        Some(nix::errno::Errno::EEXIST as i32),
        "{err:?}"
    );
    assert!(err.to_string().contains("create bridge br0"), "{err}");

    let missing = format!("shoaltest-{}-nowhere", std::process::id());
    let err = Netlink::in_netns(&missing).await.unwrap_err();
    assert!(matches!(err, NetError::NoSuchNetns(_)), "{err:?}");
}

#[tokio::test]
async fn current_namespace_connection_reads_links() {
    // Read-only in the root namespace: lo is always there.
    let n = Netlink::current().unwrap();
    let links = n.links().await.unwrap();
    assert!(links.iter().any(|k| k.name == "lo" && k.index == 1));
}
