//! The node guard's nftables table, rendered from what the node knows (pure).
//!
//! One table of ours, `inet shoal_guard` in the node's namespace, made once (replaced whole
//! when the agent starts) and then changed through its two sets only, so that its counters
//! keep counting:
//! - `loopback_from_outside`: with `route_localnet=1` (published ports answer on 127.0.0.1,
//!   `shoal_net::gateway`), the kernel routes a packet to 127.0.0.0/8 that arrives on any
//!   interface, and the mesh's DNAT sends it on to a task: an adjacent host could reach every
//!   published port, and every service the host binds to 127.0.0.1, through `dst 127.0.0.1`
//!   (CVE-2020-8558; Kubernetes' KUBE-FIREWALL drops the same). Dropped at `raw`, before
//!   conntrack and NAT; the host's own clients come in on `lo` and are not touched.
//! - `vxlan_from_non_members`: `vxlan0`'s socket is in the node's namespace and takes any
//!   UDP 4789 datagram, so any host could put frames onto an overlay's bridge. Only the
//!   cluster's nodes (set `nodes`, kept to the endpoint table by [`members_change`]) may.
//! - `task_to_task`: every task has a routed veth to the node (`shoal_net::gateway`), so
//!   without this a task that routes (NET_ADMIN) or sends frames (NET_RAW) to the gateway
//!   could reach any other task of the node at its gateway address, whatever their overlay
//!   networks, and so could a host on the LAN that routes the gateway subnet through the
//!   node. A new flow forwarded to an address of the gateway subnet (set `gateway`) is
//!   dropped unless the routing mesh translated it (`ct status dnat`: a published port,
//!   also one a task reaches on its own node). Replies, and the tc path's packets
//!   (redirected between devices, never forwarded), are not new flows.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use shoal_net::overlay::VXLAN_PORT;

/// The table's family and name.
pub const TABLE: &str = "inet shoal_guard";

/// Counters, one per kind of drop (`nft list counters table inet shoal_guard`).
pub const LOOPBACK_COUNTER: &str = "loopback_from_outside";
pub const VXLAN_COUNTER: &str = "vxlan_from_non_members";
pub const TASKS_COUNTER: &str = "task_to_task";

fn elements(addrs: impl IntoIterator<Item = String>) -> String {
    addrs.into_iter().collect::<Vec<_>>().join(", ")
}

/// The whole table, replacing any earlier one in the same transaction (no moment without
/// it), with the cluster's nodes and the gateway subnet if known yet.
pub fn render_table(nodes: &BTreeSet<Ipv4Addr>, gateway: Option<Ipv4Net>) -> String {
    let set = |name: &str, flags: &str, elems: String| {
        let elems = if elems.is_empty() {
            String::new()
        } else {
            format!("\n    elements = {{ {elems} }}")
        };
        format!("  set {name} {{\n    type ipv4_addr;{flags}{elems}\n  }}\n")
    };
    let mut out = format!("table {TABLE} {{}}\ndelete table {TABLE}\ntable {TABLE} {{\n");
    for c in [LOOPBACK_COUNTER, VXLAN_COUNTER, TASKS_COUNTER] {
        let _ = writeln!(out, "  counter {c} {{}}");
    }
    out += &set("nodes", "", elements(nodes.iter().map(Ipv4Addr::to_string)));
    out += &set(
        "gateway",
        " flags interval;",
        elements(gateway.iter().map(Ipv4Net::to_string)),
    );
    let _ = write!(
        out,
        "  chain loopback {{\n    type filter hook prerouting priority raw; policy accept;\n\
         \x20   iif != \"lo\" ip daddr 127.0.0.0/8 counter name {LOOPBACK_COUNTER} drop\n  }}\n\
         \x20 chain input {{\n    type filter hook input priority filter; policy accept;\n\
         \x20   udp dport {VXLAN_PORT} ip saddr != @nodes counter name {VXLAN_COUNTER} drop\n  }}\n\
         \x20 chain forward {{\n    type filter hook forward priority filter; policy accept;\n\
         \x20   ip daddr @gateway ct state new ct status ! dnat counter name {TASKS_COUNTER} drop\n  }}\n}}\n"
    );
    out
}

/// The `nodes` set going from `old` to `new`, as one transaction of element changes; `None`
/// when they are the same.
pub fn members_change(old: &BTreeSet<Ipv4Addr>, new: &BTreeSet<Ipv4Addr>) -> Option<String> {
    let gone = elements(old.difference(new).map(Ipv4Addr::to_string));
    let came = elements(new.difference(old).map(Ipv4Addr::to_string));
    let mut out = String::new();
    if !gone.is_empty() {
        let _ = writeln!(out, "delete element {TABLE} nodes {{ {gone} }}");
    }
    if !came.is_empty() {
        let _ = writeln!(out, "add element {TABLE} nodes {{ {came} }}");
    }
    (!out.is_empty()).then_some(out)
}

/// The `nodes` set made `new` whatever it holds now (after a failed change left it unknown).
pub fn members_refill(new: &BTreeSet<Ipv4Addr>) -> String {
    let mut out = format!("flush set {TABLE} nodes\n");
    if !new.is_empty() {
        let came = elements(new.iter().map(Ipv4Addr::to_string));
        let _ = writeln!(out, "add element {TABLE} nodes {{ {came} }}");
    }
    out
}

/// The `gateway` set made `subnet`.
pub fn gateway_change(subnet: Ipv4Net) -> String {
    format!("flush set {TABLE} gateway\nadd element {TABLE} gateway {{ {subnet} }}\n")
}

/// Removes the table if it is there.
pub fn render_remove() -> String {
    format!("table {TABLE} {{}}\ndelete table {TABLE}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    fn addrs(a: &[&str]) -> BTreeSet<Ipv4Addr> {
        a.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn table() {
        expect![[r#"
            table inet shoal_guard {}
            delete table inet shoal_guard
            table inet shoal_guard {
              counter loopback_from_outside {}
              counter vxlan_from_non_members {}
              counter task_to_task {}
              set nodes {
                type ipv4_addr;
                elements = { 192.168.50.1, 192.168.50.2 }
              }
              set gateway {
                type ipv4_addr; flags interval;
                elements = { 172.18.0.0/16 }
              }
              chain loopback {
                type filter hook prerouting priority raw; policy accept;
                iif != "lo" ip daddr 127.0.0.0/8 counter name loopback_from_outside drop
              }
              chain input {
                type filter hook input priority filter; policy accept;
                udp dport 4789 ip saddr != @nodes counter name vxlan_from_non_members drop
              }
              chain forward {
                type filter hook forward priority filter; policy accept;
                ip daddr @gateway ct state new ct status ! dnat counter name task_to_task drop
              }
            }
        "#]]
        .assert_eq(&render_table(
            &addrs(&["192.168.50.2", "192.168.50.1"]),
            Some("172.18.0.0/16".parse().unwrap()),
        ));
    }

    #[test]
    fn an_empty_table_has_empty_sets() {
        let t = render_table(&BTreeSet::new(), None);
        assert!(
            t.contains("  set nodes {\n    type ipv4_addr;\n  }\n  set gateway {\n    type ipv4_addr; flags interval;\n  }\n"),
            "{t}"
        );
        assert!(!t.contains("elements"));
    }

    #[test]
    fn members_change_by_elements_in_one_transaction() {
        let old = addrs(&["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
        let new = addrs(&["10.0.0.2", "10.0.0.4", "10.0.0.5"]);
        expect![[r#"
            delete element inet shoal_guard nodes { 10.0.0.1, 10.0.0.3 }
            add element inet shoal_guard nodes { 10.0.0.4, 10.0.0.5 }
        "#]]
        .assert_eq(&members_change(&old, &new).unwrap());
        assert_eq!(members_change(&new, &new.clone()), None);
        assert_eq!(
            members_change(&new, &addrs(&["10.0.0.2"])).unwrap(),
            "delete element inet shoal_guard nodes { 10.0.0.4, 10.0.0.5 }\n"
        );
    }

    #[test]
    fn refill_and_gateway_flush_first() {
        assert_eq!(
            members_refill(&addrs(&["10.0.0.2", "10.0.0.1"])),
            "flush set inet shoal_guard nodes\nadd element inet shoal_guard nodes { 10.0.0.1, 10.0.0.2 }\n"
        );
        assert_eq!(
            members_refill(&BTreeSet::new()),
            "flush set inet shoal_guard nodes\n"
        );
        assert_eq!(
            gateway_change("172.19.0.0/16".parse().unwrap()),
            "flush set inet shoal_guard gateway\nadd element inet shoal_guard gateway { 172.19.0.0/16 }\n"
        );
        assert_eq!(
            render_remove(),
            "table inet shoal_guard {}\ndelete table inet shoal_guard\n"
        );
    }
}
