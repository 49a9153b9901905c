//! A small lab for the kernel tests (the style of shoal-lb's): sandboxes and backends in
//! namespaces of our own on one bridge, tiny TCP and UDP servers that answer their name and
//! the address they saw.
//!
//! ```text
//!   shoaltest-bpf-<pid>-<n>-br        bridge br0
//!     ├─ ... -a    10.78.0.1/24   sandbox on net1
//!     ├─ ... -b    10.78.0.2/24   sandbox on net2
//!     ├─ ... -b1   10.78.0.11/24  answers "b1"
//!     └─ ... -b2   10.78.0.12/24  answers "b2"
//! ```
//! VIPs are addresses of 10.78.0.0/24 that nobody owns: a socket the programs leave alone
//! waits for an ARP answer that never comes.

#![allow(dead_code)] // each test binary uses a different subset

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::Command;

use std::time::Duration;

pub use shoal_testns::{Bridge, Netns, serve_tcp, serve_udp, unique_prefix};

/// The namespace's cookie, as the programs see it (`bpf_get_netns_cookie`).
pub trait Cookie {
    fn cookie(&self) -> u64;
}

impl Cookie for Netns {
    fn cookie(&self) -> u64 {
        shoal_bpf::netns_cookie_blocking(&self.name).expect("netns cookie")
    }
}
use shoal_bpf::{NodeConfig, Service};

pub const A: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);
pub const B: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 2);
pub const B1: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 11);
pub const B2: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 12);
/// `web` on net1.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 100);
/// `empty` on net1: no tasks.
pub const VIP_EMPTY: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 101);
/// `api` on net2.
pub const VIP2: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 102);
pub const TCP_PORT: u16 = 8080;
pub const UDP_PORT: u16 = 5353;
pub const TIMEOUT: Duration = Duration::from_secs(3);

pub struct Lab {
    pub a: Netns,
    pub b: Netns,
    pub b1: Netns,
    pub b2: Netns,
    // Dropped last: deleting it removes the bridge and every veth.
    pub br: Bridge,
}

impl Lab {
    pub fn new() -> Lab {
        let prefix = unique_prefix("shoaltest-bpf");
        let br = Bridge::new(format!("{prefix}-br"));
        let a = Netns::new(format!("{prefix}-a"));
        let b = Netns::new(format!("{prefix}-b"));
        let b1 = Netns::new(format!("{prefix}-b1"));
        let b2 = Netns::new(format!("{prefix}-b2"));
        br.attach(&a, "p-a", A);
        br.attach(&b, "p-b", B);
        br.attach(&b1, "p-b1", B1);
        br.attach(&b2, "p-b2", B2);
        for (ns, name) in [(&b1, "b1"), (&b2, "b2")] {
            serve_tcp(ns, name, TCP_PORT);
            serve_udp(ns, name, UDP_PORT);
        }
        Lab { a, b, b1, b2, br }
    }
}

/// A new TCP connection from inside `ns`, one line each way. Returns the answer and the peer
/// address the client's socket reports.
pub fn tcp_request(
    ns: &Netns,
    to: Ipv4Addr,
    port: u16,
    timeout: Duration,
) -> std::io::Result<(String, SocketAddr)> {
    let conn =
        ns.run(move || TcpStream::connect_timeout(&SocketAddr::from((to, port)), timeout))?;
    conn.set_read_timeout(Some(TIMEOUT))?;
    let peer = conn.peer_addr()?;
    (&conn).write_all(b"hello\n")?;
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line)?;
    Ok((line.trim().to_string(), peer))
}

/// An unbound UDP socket made inside `ns`.
pub fn udp_socket(ns: &Netns) -> UdpSocket {
    let s = ns.run(|| UdpSocket::bind("0.0.0.0:0").expect("bind"));
    s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    s
}

/// Splits a server's answer into (backend name, the address it saw).
pub fn split(answer: &str) -> (String, String) {
    let (n, p) = answer.split_once(' ').unwrap_or((answer, ""));
    (n.to_string(), p.to_string())
}

/// `web` (VIP, every port) and `empty` (VIP_EMPTY) on net1, `api` (VIP2) on net2.
pub fn config(web: &[Ipv4Addr], api: &[Ipv4Addr]) -> NodeConfig {
    let svc = |vip, backends: &[Ipv4Addr]| Service {
        vip,
        ports: vec![],
        backends: backends.to_vec(),
    };
    NodeConfig {
        services: [
            (("net1".into(), "web".into()), svc(VIP, web)),
            (("net1".into(), "empty".into()), svc(VIP_EMPTY, &[])),
            (("net2".into(), "api".into()), svc(VIP2, api)),
        ]
        .into_iter()
        .collect(),
    }
}

/// The program ids attached at `cgroup`, per `bpftool cgroup show`.
pub fn attached_ids(cgroup: &std::path::Path) -> Vec<u32> {
    let out = Command::new("bpftool")
        .args(["-j", "cgroup", "show"])
        .arg(cgroup)
        .output()
        .expect("run bpftool (apt install bpftool)");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("\"id\":")
        .skip(1)
        .filter_map(|s| {
            s.trim_start()
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}
