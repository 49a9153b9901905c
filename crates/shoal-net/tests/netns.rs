//! Loopback tests of named namespaces: iproute2 must see what we create, and we what it sees.

mod common;

use std::os::unix::fs::MetadataExt;

use common::{TestNs, ip, link_line};
use shoal_net::{
    NetError, create_netns, delete_netns, list_netns, netns_exists, netns_path, remove_if_stale,
    remove_stale_netns, run_in_netns,
};

#[test]
fn create_is_visible_to_iproute2_and_delete_removes_it() {
    let ns = TestNs::new("vis");
    assert!(netns_exists(ns.name()));
    assert!(list_netns().unwrap().contains(&ns.0));
    assert!(
        ip(&["netns", "list"])
            .lines()
            .any(|l| l.split_whitespace().next() == Some(ns.name()))
    );

    // A fresh namespace has only lo, and lo is down.
    let links = ip(&["-n", ns.name(), "-o", "link", "show"]);
    assert_eq!(links.lines().count(), 1, "{links}");
    let lo = link_line(ns.name(), "lo").expect("lo exists");
    assert!(!lo.contains(",UP"), "lo should be down: {lo}");

    assert!(delete_netns(ns.name()).unwrap());
    assert!(!netns_exists(ns.name()));
    assert!(!netns_path(ns.name()).exists());
    assert!(!ip(&["netns", "list"]).contains(ns.name()));
    // Deleting what is not there is not an error, and says so.
    assert!(!delete_netns(ns.name()).unwrap());
}

#[test]
fn creating_an_existing_namespace_is_refused() {
    let ns = TestNs::new("dup");
    match create_netns(ns.name()) {
        Err(NetError::NetnsExists(name)) => assert_eq!(name, ns.0),
        other => panic!("expected NetnsExists, got {other:?}"),
    }
    assert!(
        netns_exists(ns.name()),
        "the refused create must not harm the existing one"
    );
}

#[test]
fn a_namespace_made_by_iproute2_is_usable() {
    let name = format!("shoaltest-{}-ipr", std::process::id());
    let _ = delete_netns(&name);
    ip(&["netns", "add", &name]);
    let guard = TestNs(name.clone());
    assert!(netns_exists(&name));
    let ino = run_in_netns(&name, || {
        std::fs::metadata("/proc/thread-self/ns/net").map(|m| m.ino())
    })
    .unwrap()
    .unwrap();
    assert_eq!(ino, std::fs::metadata(netns_path(&name)).unwrap().ino());
    drop(guard);
    assert!(!ip(&["netns", "list"]).contains(&name));
}

#[test]
fn run_in_netns_runs_there_and_leaves_the_caller_alone() {
    let ns = TestNs::new("run");
    let own = std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino();
    let target = std::fs::metadata(netns_path(ns.name())).unwrap().ino();
    assert_ne!(own, target);

    let inside = run_in_netns(ns.name(), || {
        std::fs::metadata("/proc/thread-self/ns/net").map(|m| m.ino())
    })
    .unwrap()
    .unwrap();
    assert_eq!(inside, target);
    assert_eq!(
        std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino(),
        own
    );

    // A child spawned from that thread is in the namespace too.
    let out = run_in_netns(ns.name(), || {
        std::process::Command::new("ip")
            .args(["-o", "link"])
            .output()
    })
    .unwrap()
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 1, "only lo expected: {text}");
}

#[test]
fn missing_namespaces_and_bad_names_give_clear_errors() {
    let name = format!("shoaltest-{}-missing", std::process::id());
    let err = run_in_netns(&name, || ()).unwrap_err();
    assert!(matches!(err, NetError::NoSuchNetns(_)), "{err:?}");
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(matches!(
        create_netns("../escape"),
        Err(NetError::InvalidNetnsName(_))
    ));
    assert!(matches!(
        delete_netns("a/b"),
        Err(NetError::InvalidNetnsName(_))
    ));
}

#[test]
fn a_panicking_closure_is_an_error_not_a_crash() {
    let ns = TestNs::new("panic");
    let err = run_in_netns(ns.name(), || panic!("boom")).unwrap_err();
    assert!(matches!(err, NetError::ThreadPanicked(_)), "{err:?}");
}

#[test]
fn a_namespace_made_in_a_private_mount_namespace_leaves_a_stale_file_that_the_sweep_removes() {
    // `ip netns exec` gives its command a mount namespace of its own (a slave of ours): a
    // namespace made there is a bind mount we never see, on a file we do. Once that mount
    // namespace has gone (its process ended), the file is an empty leftover.
    let outer = TestNs::new("sto");
    let prefix = format!("shoaltest-{}-stale-", std::process::id());
    let inner = format!("{prefix}in");
    let _ = delete_netns(&inner);
    ip(&["netns", "exec", outer.name(), "ip", "netns", "add", &inner]);
    let _inner = TestNs(inner.clone());
    let live_ns = TestNs::new("stale-live");
    let live = live_ns.0.clone();
    let path = netns_path(&inner);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    assert!(
        !netns_exists(&inner),
        "the bind mount stayed in its mount namespace"
    );

    assert!(
        !remove_if_stale(&live).unwrap(),
        "a live namespace is not stale"
    );
    assert_eq!(remove_stale_netns(&prefix).unwrap(), vec![inner.clone()]);
    assert!(!path.exists());
    assert!(netns_exists(&live));
    assert_eq!(remove_stale_netns(&prefix).unwrap(), Vec::<String>::new());
}
