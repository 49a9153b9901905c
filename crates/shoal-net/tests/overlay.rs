//! Lab tests of overlay networks: two "nodes" (namespaces joined by a veth underlay), an
//! overlay namespace per network per node, task sandboxes, and ping over VXLAN.

mod common;

use std::net::Ipv4Addr;
use std::process::Command;

use common::{ip, link_line};
use ipnet::Ipv4Net;
use shoal_net::overlay::plan::{Attachment, Current, Desired, Remote};
use shoal_net::overlay::{observe, reconcile};
use shoal_net::{
    NetError, Netlink, OverlaySpec, add_remote, attach, create_netns, delete_netns, detach,
    ensure_overlay, netns_exists, remove_overlay, remove_remote, run_in_netns_async,
};

const VNI_A: u32 = 4097;
const VNI_B: u32 = 4098;
const VTEP1: Ipv4Addr = Ipv4Addr::new(172, 30, 41, 1);
const VTEP2: Ipv4Addr = Ipv4Addr::new(172, 30, 41, 2);

/// A namespace `shoaltest-ov-<pid>-<tag>`, deleted on drop (also when a test panics).
struct Ns(String);

impl Ns {
    fn name_for(tag: &str) -> String {
        format!("shoaltest-ov-{}-{tag}", std::process::id())
    }

    /// Creates the namespace, with `lo` up.
    async fn create(tag: &str) -> Self {
        let ns = Self::adopt(tag);
        create_netns(&ns.0).unwrap_or_else(|e| panic!("cannot set up test netns {}: {e}", ns.0));
        let nl = Netlink::in_netns(&ns.0).await.unwrap();
        nl.set_lo_up().await.unwrap();
        ns
    }

    /// Takes charge of a name that the code under test will create.
    fn adopt(tag: &str) -> Self {
        let name = Self::name_for(tag);
        // A leftover from an earlier run with the same pid would get in the way.
        let _ = delete_netns(&name);
        Ns(name)
    }

    fn name(&self) -> &str {
        &self.0
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        if let Err(e) = delete_netns(&self.0) {
            eprintln!("failed to delete test netns {}: {e}", self.0);
        }
    }
}

/// Two nodes, `<tag>-n1` (172.30.41.1) and `<tag>-n2` (172.30.41.2), on one veth.
struct Nodes {
    n1: Ns,
    n2: Ns,
}

impl Nodes {
    async fn new(tag: &str) -> Self {
        let n1 = Ns::create(&format!("{tag}-n1")).await;
        let n2 = Ns::create(&format!("{tag}-n2")).await;
        let l1 = Netlink::in_netns(n1.name()).await.unwrap();
        let l2 = Netlink::in_netns(n2.name()).await.unwrap();
        l1.create_veth("eth0", "peer0").await.unwrap();
        l1.move_to_netns("peer0", n2.name()).await.unwrap();
        l2.rename("peer0", "eth0").await.unwrap();
        l1.add_address("eth0", VTEP1, 24).await.unwrap();
        l2.add_address("eth0", VTEP2, 24).await.unwrap();
        l1.set_up("eth0").await.unwrap();
        l2.set_up("eth0").await.unwrap();
        Nodes { n1, n2 }
    }
}

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn spec(
    overlay: &Ns,
    vni: u32,
    subnet: &str,
    vtep: Ipv4Addr,
    underlay: Option<&Ns>,
) -> OverlaySpec {
    OverlaySpec {
        underlay_netns: underlay.map(|u| u.name().to_string()),
        ..OverlaySpec::new(overlay.name(), vni, net(subnet), vtep)
    }
}

/// Runs `ensure_overlay` on a thread inside `node`, with `underlay_netns: None`: the way
/// shoald calls it from its own namespace.
async fn ensure_from_inside(node: &Ns, spec: &OverlaySpec) {
    let spec = spec.clone();
    run_in_netns_async(node.name(), move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime in the node thread")
            .block_on(ensure_overlay(&spec))
    })
    .await
    .unwrap()
    .unwrap();
}

/// Whether one ping from `sandbox` to `addr` gets an answer, trying up to `tries` times.
fn pings(sandbox: &Ns, addr: &str, tries: u32) -> bool {
    (0..tries).any(|_| {
        Command::new("ip")
            .args(["netns", "exec", sandbox.name(), "ping", "-c1", "-W1", addr])
            .output()
            .unwrap_or_else(|e| panic!("cannot run ping (install iputils-ping): {e}"))
            .status
            .success()
    })
}

/// A link counter read through sysfs inside `ns` (`ip netns exec` mounts its own /sys).
fn counter(ns: &Ns, link: &str, stat: &str) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", ns.name(), "cat"])
        .arg(format!("/sys/class/net/{link}/statistics/{stat}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn udp_sockets(ns: &Ns) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns.name(), "ss", "-ulnH"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Link names of `ns`, sorted.
fn link_names(ns: &Ns) -> Vec<String> {
    let mut names: Vec<String> = ip(&["-n", ns.name(), "-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(|n| {
            n.trim_end_matches(':')
                .split('@')
                .next()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn two_nodes_talk_over_vxlan_only_through_static_entries() {
    let nodes = Nodes::new("a").await;
    let ova1 = Ns::adopt("a-ova1");
    let ova2 = Ns::adopt("a-ova2");
    let ovb2 = Ns::adopt("a-ovb2");
    let a1 = spec(&ova1, VNI_A, "10.0.9.0/24", VTEP1, None);
    let a2 = spec(&ova2, VNI_A, "10.0.9.0/24", VTEP2, Some(&nodes.n2));
    // Same subnet, other VNI: only the VNI keeps the two networks apart.
    let b2 = spec(&ovb2, VNI_B, "10.0.9.0/24", VTEP2, Some(&nodes.n2));

    ensure_from_inside(&nodes.n1, &a1).await;
    ensure_overlay(&a2).await.unwrap();
    ensure_overlay(&a2).await.unwrap(); // idempotent
    ensure_overlay(&b2).await.unwrap();

    let vx = ip(&["-n", ova1.name(), "-d", "link", "show", "vxlan0"]);
    for want in [
        "mtu 1450",
        "master br0",
        ",UP",
        "vxlan id 4097 local 172.30.41.1",
        "dstport 4789",
        "nolearning",
        "proxy",
    ] {
        assert!(vx.contains(want), "vxlan0 lacks {want:?}: {vx}");
    }
    // The device sits in the overlay namespace; its UDP socket stays in the node's.
    assert_eq!(link_names(&nodes.n1), ["eth0", "lo"]);
    assert!(
        udp_sockets(&nodes.n1).contains(":4789"),
        "{}",
        udp_sockets(&nodes.n1)
    );
    assert!(!udp_sockets(&ova1).contains(":4789"));

    let t1 = Ns::create("a-t1").await;
    let t2 = Ns::create("a-t2").await;
    let t3 = Ns::create("a-t3").await;
    attach(&a1, t1.name(), "eth0", net("10.0.9.2/24"))
        .await
        .unwrap();
    attach(&a2, t2.name(), "eth0", net("10.0.9.3/24"))
        .await
        .unwrap();
    attach(&b2, t3.name(), "eth1", net("10.0.9.4/24"))
        .await
        .unwrap();
    let eth0 = link_line(t1.name(), "eth0").expect("eth0 in task 1");
    for want in ["mtu 1450", ",UP", "link/ether 02:42:0a:00:09:02"] {
        assert!(eth0.contains(want), "eth0 lacks {want:?}: {eth0}");
    }
    assert!(ip(&["-n", t1.name(), "addr", "show", "eth0"]).contains("inet 10.0.9.2/24"));
    let host = link_line(ova1.name(), "v10010a000902").expect("host end on the bridge");
    assert!(
        host.contains("master br0") && host.contains("mtu 1450"),
        "{host}"
    );

    // Nothing is flooded: without entries the other node is unreachable.
    assert!(
        !pings(&t1, "10.0.9.3", 1),
        "reached a remote task without FDB entries"
    );

    for _ in 0..2 {
        // Twice: adding is idempotent.
        add_remote(&a1, "10.0.9.3".parse().unwrap(), VTEP2)
            .await
            .unwrap();
        add_remote(&a2, "10.0.9.2".parse().unwrap(), VTEP1)
            .await
            .unwrap();
    }
    let fdb = ip(&["-n", ova1.name(), "neigh", "show", "dev", "vxlan0"]);
    assert!(
        fdb.contains("10.0.9.3 lladdr 02:42:0a:00:09:03 PERMANENT"),
        "{fdb}"
    );
    let out = Command::new("bridge")
        .args(["-n", ova1.name(), "fdb", "show", "dev", "vxlan0"])
        .output()
        .unwrap();
    let fdb = String::from_utf8_lossy(&out.stdout);
    // `bridge` puts "link-netnsid 0" (the underlay) between dst and the flags.
    let entry = fdb
        .lines()
        .find(|l| l.starts_with("02:42:0a:00:09:03 dst 172.30.41.2 "))
        .unwrap_or_else(|| panic!("no FDB entry for task 2: {fdb}"));
    assert!(entry.ends_with("self permanent"), "{entry}");
    assert_eq!(
        observe(&a1).await.unwrap(),
        Current {
            attached: ["10.0.9.2".parse().unwrap()].into(),
            fdb: [("10.0.9.3".parse().unwrap(), VTEP2)].into(),
            neighbours: ["10.0.9.3".parse().unwrap()].into(),
        }
    );

    let tx_before = counter(&ova1, "vxlan0", "tx_packets");
    assert!(
        pings(&t1, "10.0.9.3", 3),
        "task 1 cannot reach task 2 over VXLAN"
    );
    assert!(
        pings(&t2, "10.0.9.2", 3),
        "task 2 cannot reach task 1 over VXLAN"
    );
    assert!(
        counter(&ova1, "vxlan0", "tx_packets") > tx_before,
        "the ping did not cross vxlan0"
    );

    // Task 3 is on network B on node 2. Even pointed at node 2 by a (wrong) entry on network
    // A, its address is not reached: the packets arrive with VNI A, into A's bridge.
    add_remote(&a1, "10.0.9.4".parse().unwrap(), VTEP2)
        .await
        .unwrap();
    let rx_a2 = counter(&ova2, "vxlan0", "rx_packets");
    let rx_b2 = counter(&ovb2, "vxlan0", "rx_packets");
    assert!(!pings(&t1, "10.0.9.4", 1), "reached a task on another VNI");
    assert!(
        counter(&ova2, "vxlan0", "rx_packets") > rx_a2,
        "node 2 saw nothing on VNI A"
    );
    assert_eq!(
        counter(&ovb2, "vxlan0", "rx_packets"),
        rx_b2,
        "VNI B got VNI A's packets"
    );
    remove_remote(&a1, "10.0.9.4".parse().unwrap(), Some(VTEP2))
        .await
        .unwrap();

    // A second network with the same VNI from the same underlay is refused, and the
    // namespace it would have used is not left behind.
    let dup = Ns::adopt("a-dup2");
    let err = ensure_overlay(&spec(&dup, VNI_A, "10.0.19.0/24", VTEP2, Some(&nodes.n2)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, NetError::VniInUse { vni: VNI_A, .. }),
        "{err:?}"
    );
    assert!(!netns_exists(dup.name()));

    // Removing with a VTEP the entry no longer has (a late event) changes nothing.
    remove_remote(
        &a1,
        "10.0.9.3".parse().unwrap(),
        Some(Ipv4Addr::new(172, 30, 41, 9)),
    )
    .await
    .unwrap();
    assert!(
        pings(&t1, "10.0.9.3", 3),
        "a stale remove_remote cut the endpoint off"
    );

    remove_remote(&a1, "10.0.9.3".parse().unwrap(), Some(VTEP2))
        .await
        .unwrap();
    remove_remote(&a2, "10.0.9.2".parse().unwrap(), Some(VTEP1))
        .await
        .unwrap();
    remove_remote(&a2, "10.0.9.2".parse().unwrap(), Some(VTEP1))
        .await
        .unwrap(); // idempotent
    assert!(
        !pings(&t1, "10.0.9.3", 1),
        "reached task 2 after remove_remote"
    );
    let left = observe(&a1).await.unwrap();
    assert!(
        left.fdb.is_empty() && left.neighbours.is_empty(),
        "{left:?}"
    );

    assert!(detach(&a1, "10.0.9.2".parse().unwrap()).await.unwrap());
    assert!(!detach(&a1, "10.0.9.2".parse().unwrap()).await.unwrap());
    assert_eq!(link_names(&t1), ["lo"]);
    assert_eq!(link_names(&ova1), ["br0", "lo", "vxlan0"]);

    // Removing takes the task ends and the VNI with it at once, so the network can be made
    // again straight away.
    assert!(remove_overlay(ova2.name()).await.unwrap());
    assert!(!netns_exists(ova2.name()));
    assert_eq!(link_names(&t2), ["lo"]);
    ensure_overlay(&a2).await.unwrap();
    for ov in [&ova1, &ova2, &ovb2] {
        assert!(remove_overlay(ov.name()).await.unwrap());
    }
    assert!(!remove_overlay(ova1.name()).await.unwrap());
    assert_eq!(link_names(&t3), ["lo"]);
    for node in [&nodes.n1, &nodes.n2] {
        assert_eq!(link_names(node), ["eth0", "lo"]);
        assert!(
            !udp_sockets(node).contains(":4789"),
            "{}",
            udp_sockets(node)
        );
    }
}

#[tokio::test]
async fn reconcile_builds_and_tears_down_from_the_desired_state() {
    let nodes = Nodes::new("r").await;
    let ov1 = Ns::adopt("r-ov1");
    let ov2 = Ns::adopt("r-ov2");
    let s1 = spec(&ov1, VNI_A, "10.0.9.0/24", VTEP1, Some(&nodes.n1));
    let s2 = spec(&ov2, VNI_A, "10.0.9.0/24", VTEP2, Some(&nodes.n2));
    let t1 = Ns::create("r-t1").await;
    let t2 = Ns::create("r-t2").await;
    let t3 = Ns::create("r-t3").await;

    let endpoint = |addr: &str, sandbox: &Ns, ifname: &str| Attachment {
        addr: net(addr),
        sandbox: sandbox.name().to_string(),
        ifname: ifname.to_string(),
    };
    let remote = |addr: &str, vtep| Remote {
        addr: addr.parse().unwrap(),
        vtep,
    };
    let d1 = Desired {
        attachments: vec![endpoint("10.0.9.2/24", &t1, "eth0")],
        remotes: vec![remote("10.0.9.3", VTEP2), remote("10.0.9.5", VTEP2)],
    };
    let d2 = Desired {
        attachments: vec![
            endpoint("10.0.9.3/24", &t2, "eth0"),
            endpoint("10.0.9.5/24", &t3, "eth0"),
        ],
        remotes: vec![remote("10.0.9.2", VTEP1)],
    };
    assert_eq!(reconcile(&s1, &d1).await.unwrap().len(), 3);
    assert_eq!(reconcile(&s2, &d2).await.unwrap().len(), 3);
    // Converged: a second round has nothing to do.
    assert!(reconcile(&s1, &d1).await.unwrap().is_empty());
    assert!(reconcile(&s2, &d2).await.unwrap().is_empty());
    assert!(pings(&t1, "10.0.9.3", 3));
    assert!(pings(&t1, "10.0.9.5", 3));

    // Task 5 goes away on node 2; node 1 learns of it.
    let d2 = Desired {
        attachments: d2.attachments[..1].to_vec(),
        ..d2
    };
    let d1 = Desired {
        remotes: d1.remotes[..1].to_vec(),
        ..d1
    };
    assert_eq!(reconcile(&s2, &d2).await.unwrap().len(), 1);
    assert_eq!(reconcile(&s1, &d1).await.unwrap().len(), 1);
    assert_eq!(link_names(&t3), ["lo"]);
    assert!(!pings(&t1, "10.0.9.5", 1));
    assert!(pings(&t1, "10.0.9.3", 3));

    // Everything goes.
    for s in [&s1, &s2] {
        reconcile(s, &Desired::default()).await.unwrap();
        assert_eq!(observe(s).await.unwrap(), Current::default());
    }
    assert_eq!(link_names(&t1), ["lo"]);
    assert_eq!(link_names(&t2), ["lo"]);
}

#[tokio::test]
async fn misuse_gets_errors_that_say_what_to_do() {
    let node = Ns::create("m-n1").await;
    let sandbox = Ns::create("m-t1").await;
    let ov = Ns::adopt("m-ov");
    let s = spec(&ov, VNI_A, "10.0.9.0/24", VTEP1, Some(&node));

    let err = attach(&s, sandbox.name(), "eth0", net("10.0.9.2/24"))
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::OverlayMissing(_)), "{err:?}");
    assert!(err.to_string().contains("ensure_overlay"), "{err}");
    let err = add_remote(&s, "10.0.9.3".parse().unwrap(), VTEP2)
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::OverlayMissing(_)), "{err:?}");
    // Removing what is not there is not an error.
    assert!(!detach(&s, "10.0.9.2".parse().unwrap()).await.unwrap());
    remove_remote(&s, "10.0.9.3".parse().unwrap(), None)
        .await
        .unwrap();

    ensure_overlay(&s).await.unwrap();
    let err = ensure_overlay(&OverlaySpec {
        vni: VNI_B,
        ..s.clone()
    })
    .await
    .unwrap_err();
    assert!(matches!(err, NetError::OverlayMismatch { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("VNI 4097 local 172.30.41.1 dstport 4789"),
        "{err}"
    );
    assert!(
        netns_exists(ov.name()),
        "a refused ensure must not remove the existing network"
    );

    let err = attach(&s, sandbox.name(), "eth0", net("10.0.10.2/24"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, NetError::AddressOutsideSubnet { .. }),
        "{err:?}"
    );
    let err = add_remote(&s, "10.0.10.3".parse().unwrap(), VTEP2)
        .await
        .unwrap_err();
    assert!(
        matches!(err, NetError::AddressOutsideSubnet { .. }),
        "{err:?}"
    );
    let err = attach(&s, sandbox.name(), "a-very-long-ifname", net("10.0.9.2/24"))
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::InvalidLinkName(_)), "{err:?}");

    attach(&s, sandbox.name(), "eth0", net("10.0.9.2/24"))
        .await
        .unwrap();
    // Re-attaching the same address replaces the veth.
    attach(&s, sandbox.name(), "eth0", net("10.0.9.2/24"))
        .await
        .unwrap();
    // Another address into a name the sandbox already has is refused, and leaves nothing.
    let err = attach(&s, sandbox.name(), "eth0", net("10.0.9.7/24"))
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::LinkExists { .. }), "{err:?}");
    assert!(err.to_string().contains(sandbox.name()), "{err}");
    assert_eq!(link_names(&ov), ["br0", "lo", "v10010a000902", "vxlan0"]);

    assert!(remove_overlay(ov.name()).await.unwrap());
    assert_eq!(link_names(&sandbox), ["lo"]);
}
