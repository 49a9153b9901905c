//! Conntrack entries of a removed backend are deleted over netlink, with no `conntrack`
//! process: the test body runs in a child of this test binary whose PATH holds only `ip` and
//! `nft`, so spawning `conntrack` would fail the flush.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use shoal_lb::{Balancer, StaleFlows, flush_conntrack};

/// The backend name in an answer `<name> <peer>`.
fn backend(answer: &str) -> &str {
    answer.split_once(' ').map_or(answer, |(name, _)| name)
}

fn find_program(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{name} is not installed"))
}

#[test]
fn removed_backend_flows_go_over_netlink_without_a_conntrack_binary() {
    let bin = std::env::temp_dir().join(format!("shoaltest-ct-path-{}", std::process::id()));
    std::fs::create_dir_all(&bin).unwrap();
    struct Cleanup<'a>(&'a Path);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.0);
        }
    }
    let _cleanup = Cleanup(&bin);
    for program in ["ip", "nft"] {
        std::os::unix::fs::symlink(find_program(program), bin.join(program)).unwrap();
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "flush_body", "--ignored", "--nocapture"])
        .env("PATH", &bin)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}\n{stderr}"
    );
}

/// Run by the test above with a PATH that has no `conntrack`.
#[tokio::test]
#[ignore = "run by removed_backend_flows_go_over_netlink_without_a_conntrack_binary"]
async fn flush_body() {
    assert!(
        std::process::Command::new("conntrack").output().is_err(),
        "conntrack must not be on PATH here"
    );
    let lab = Lab::named("shoaltest-ct");
    let mut lb = Balancer::create(&lab.client.name, &config(&[B1, B2], &[]))
        .await
        .expect("create");
    let mut to_b1 = Conn::open(&lab.client, VIP, TCP_PORT);
    assert_eq!(backend(&to_b1.request().expect("first request")), "b1");
    // Round robin: of two UDP flows (one socket each), one goes to each backend.
    let (a, b) = (
        udp_socket(&lab.client, VIP, UDP_PORT),
        udp_socket(&lab.client, VIP, UDP_PORT),
    );
    let (udp_b1, udp_b2) = match backend(&udp_request(&a).expect("udp")) {
        "b1" => (a, b),
        _ => (b, a),
    };
    assert_eq!(backend(&udp_request(&udp_b1).expect("udp")), "b1");
    assert_eq!(backend(&udp_request(&udp_b2).expect("udp")), "b2");

    let stale = lb.update(config(&[B1], &[])).await.expect("update");
    assert_eq!(
        stale,
        [StaleFlows {
            vip: VIP,
            backend: B2
        }]
    );
    // The rules changed, conntrack did not: the flow still reaches the removed backend.
    assert_eq!(backend(&udp_request(&udp_b2).expect("udp")), "b2");
    let deleted = flush_conntrack(&lab.client.name, &stale)
        .await
        .expect("flush over netlink");
    assert_eq!(deleted, 1, "the UDP flow to b2, nothing else");
    // The next datagram of that flow is balanced again, to the live backend.
    assert_eq!(backend(&udp_request(&udp_b2).expect("udp moved")), "b1");
    // Flows to the live backend are untouched: the established connection goes on.
    assert_eq!(
        backend(&to_b1.request().expect("established TCP to b1 survives")),
        "b1"
    );
    assert_eq!(backend(&udp_request(&udp_b1).expect("udp to b1")), "b1");
    // Nothing left to delete.
    assert_eq!(flush_conntrack(&lab.client.name, &stale).await.unwrap(), 0);
}
