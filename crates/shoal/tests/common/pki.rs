//! Helpers for the lab tests of port 2377's TLS (security.rs, ca_rotation.rs): a node's
//! certificates read from its data directory, a namespace of the test's own on the lab's
//! bridge (the outsider), clients with chosen certificates and what a refusal looks like.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_pki::{ClusterCa, NodeCredentials, Trust};
use shoal_rpc::cluster_client::ClusterClient;
use shoal_rpc::{Dialer, HeartbeatRequest};
use shoal_testns::Netns;
use tonic::Code;

use crate::common::Lab;

/// A namespace on the lab's bridge at .200 of the subnet of `manager` (`ip:port`), and
/// that subnet's first three octets.
pub fn outsider(lab: &Lab, manager: &str) -> (Netns, String) {
    let m1 = manager;
    let outsider = Netns::new(format!("{}-outsider", lab.netns(0)));
    let port = format!("o{}", std::process::id() % 100_000);
    let bridge = format!("shoal-{}-net", lab.name);
    let ip = |args: &[&str]| shoal_testns::run("ip", args);
    ip(&[
        "-n",
        &bridge,
        "link",
        "add",
        &port,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &outsider.name,
    ]);
    ip(&["-n", &bridge, "link", "set", &port, "master", "br0", "up"]);
    let prefix = m1.rsplit_once('.').unwrap().0.to_string();
    ip(&[
        "-n",
        &outsider.name,
        "addr",
        "add",
        &format!("{prefix}.200/24"),
        "dev",
        "eth0",
    ]);
    ip(&["-n", &outsider.name, "link", "set", "eth0", "up"]);
    (outsider, prefix)
}

/// A member's client that trusts `trust` and presents `creds`.
pub fn member_trusting(trust: &Trust, creds: &NodeCredentials) -> Dialer {
    Dialer::Join(Arc::new(shoal_pki::client_config(trust, creds).unwrap()))
}

pub fn certs_dir(lab: &Lab, node: u32) -> std::path::PathBuf {
    lab.dir().join(format!("node{node}/data/certificates"))
}

pub fn credentials(lab: &Lab, node: u32) -> NodeCredentials {
    shoal_pki::files::load_node(&certs_dir(lab, node)).unwrap()
}

pub fn member(ca: &ClusterCa, creds: &NodeCredentials) -> Dialer {
    Dialer::Join(Arc::new(
        shoal_pki::client_config(&ca.clone().into(), creds).unwrap(),
    ))
}

/// Everything a status and its sources say (tonic keeps TLS alerts in the sources).
pub fn said(s: &tonic::Status) -> String {
    let mut out = format!("{:?}: {}", s.code(), s.message());
    let mut src = std::error::Error::source(s);
    while let Some(e) = src {
        out.push_str(&format!(" / {e}"));
        src = e.source();
    }
    out
}

/// The TLS handshake failed: the client gets a transport error (the server's alert, or a
/// broken pipe if its request raced the alert), and the server's log says why, naming the
/// outsider's address.
#[track_caller]
pub fn handshake_refused(
    r: Result<impl std::fmt::Debug, tonic::Status>,
    log: &std::path::Path,
    from: &str,
    why: &str,
) {
    let s = r.expect_err("the handshake should have failed");
    assert!(
        matches!(
            s.code(),
            Code::Unknown | Code::Unavailable | Code::Cancelled
        ),
        "{}",
        said(&s)
    );
    let expected = format!("refused a connection on the cluster port: {why}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let plain = strip_ansi(&text);
        if plain
            .lines()
            .any(|l| l.contains(&expected) && l.contains(from))
        {
            return;
        }
        if Instant::now() > deadline {
            let ours: Vec<&str> = plain.lines().filter(|l| l.contains(from)).collect();
            panic!(
                "expected {expected:?} from {from} in {}; its lines from there: {ours:#?}",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[track_caller]
pub fn refused(r: Result<impl std::fmt::Debug, tonic::Status>, code: Code, text: &str) {
    let s = r.expect_err("the call should have been refused");
    assert_eq!(s.code(), code, "{}", said(&s));
    assert!(said(&s).contains(text), "expected {text:?} in {}", said(&s));
}

pub async fn heartbeat(d: &Dialer, addr: &str) -> Result<(), tonic::Status> {
    ClusterClient::new(d.manager(addr).unwrap())
        .heartbeat(HeartbeatRequest::default())
        .await
        .map(|_| ())
}

pub fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}
