//! Helpers for the namespace and loopback tests: a throwaway network namespace, `dig` inside
//! it, the seed's zone, and a tiny upstream DNS server of our own on loopback.
//!
//! Nothing here sends a packet anywhere but loopback: the server under test listens on
//! 127.0.0.11 in a namespace we create, and the upstream it forwards to is ours, on
//! 127.0.0.53 in the test's own namespace.

#![allow(dead_code)] // each test binary uses a different subset

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

/// The DNS threads of every server in a test binary, as a node has one set for all its
/// sandboxes; two threads, so every sandbox gets two UDP sockets sharing its address.
pub static RUNTIME: std::sync::LazyLock<shoal_dns::DnsRuntime> =
    std::sync::LazyLock::new(|| shoal_dns::DnsRuntime::new(2));

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use shoal_dns::{NetworkView, NodeZones, Protocol, ServiceView, SrvPort, TaskView};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

pub const VOTE1: &str = "a1b2c3d4e5f6a7b8c9d0e1f2";
pub const VOTE2: &str = "b2c3d4e5f6a7b8c9d0e1f2a3";

/// The address the test upstream answers for `example.test`.
pub const EXAMPLE_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

/// A network namespace that exists for one test and is deleted when dropped, also when the
/// test fails. Its `lo` is up, as in a sandbox.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new() -> Netns {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "shoaltest-dns-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        // A leftover from a crashed run with the same pid would make `add` fail.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run("ip", &["netns", "add", &name]);
        let netns = Netns { name };
        run("ip", &["-n", &netns.name, "link", "set", "lo", "up"]);
        netns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Runs a setup command and fails the test loudly if it cannot.
fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e} (is iproute2 installed?)"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `dig @127.0.0.11 ARGS` inside `netns`, with short timeouts so a broken server fails the
/// test in seconds. Returns stdout.
pub async fn dig(netns: &Netns, args: &[&str]) -> String {
    let out = tokio::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &netns.name,
            "dig",
            "@127.0.0.11",
            "+time=3",
            "+tries=1",
        ])
        .args(args)
        .output()
        .await
        .expect("cannot run ip netns exec dig");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No such file") && !stderr.contains("not found"),
        "dig is missing: apt-get install -y dnsutils ({stderr})"
    );
    stdout
}

/// `dig +short` lines, sorted.
pub async fn dig_short_sorted(netns: &Netns, args: &[&str]) -> Vec<String> {
    let mut all = vec!["+short"];
    all.extend_from_slice(args);
    let mut lines: Vec<String> = dig(netns, &all).await.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

/// A dig output line with its runs of tabs and spaces made single spaces.
pub fn words(line: &str) -> String {
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The `status:` of a full dig output (NOERROR, NXDOMAIN, SERVFAIL...).
pub fn status(dig_output: &str) -> &str {
    dig_output
        .split("status: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("no status in dig output:\n{dig_output}"))
}

pub fn task(service: &str, slot: u32, id: &str, addr: Ipv4Addr) -> TaskView {
    TaskView {
        id: id.to_string(),
        name: format!("{service}.{slot}.{id}"),
        addr,
        aliases: vec![],
        ready: true,
    }
}

/// The id of the seed's network `overlay1` in [`seed_zone`].
pub const SEED_NET: &str = "net-overlay1";

/// The networks of a sandbox on the seed's network.
pub fn seed_networks() -> Vec<String> {
    vec![SEED_NET.to_string()]
}

/// The node's zones with the seed's services on `overlay1` (id [`SEED_NET`]), TTL 600: `vote`
/// (dnsrr, two tasks, port http/80), `client` (VIP 10.0.0.7), and `big` (dnsrr, `big_tasks`
/// tasks, to overflow UDP).
pub fn seed_zone(big_tasks: u8) -> NodeZones {
    let overlay1 = NetworkView {
        name: "overlay1".to_string(),
        services: vec![
            ServiceView {
                name: "vote".to_string(),
                dnsrr: true,
                ttl: 600,
                task_ttl: 600,
                ports: vec![SrvPort {
                    name: Some("http".to_string()),
                    protocol: Protocol::Tcp,
                    target_port: 80,
                }],
                tasks: vec![
                    task("vote", 1, VOTE1, Ipv4Addr::new(10, 0, 0, 5)),
                    task("vote", 2, VOTE2, Ipv4Addr::new(10, 0, 0, 6)),
                ],
                ..Default::default()
            },
            ServiceView {
                name: "client".to_string(),
                vip: Some(Ipv4Addr::new(10, 0, 0, 7)),
                ttl: 600,
                task_ttl: 600,
                ..Default::default()
            },
            ServiceView {
                name: "big".to_string(),
                dnsrr: true,
                ttl: 60,
                task_ttl: 60,
                tasks: (0..big_tasks)
                    .map(|i| {
                        let id = format!("{:024x}", u32::from(i) + 1);
                        task("big", u32::from(i) + 1, &id, Ipv4Addr::new(10, 0, 1, i))
                    })
                    .collect(),
                ..Default::default()
            },
        ],
    };
    [(SEED_NET.to_string(), overlay1)].into_iter().collect()
}

/// A tiny authoritative server of our own on 127.0.0.53 (UDP and TCP, same port): answers
/// `example.test` A with [`EXAMPLE_ADDR`] (TTL 42), NXDOMAIN for anything else, and counts
/// the queries it got.
pub struct TestUpstream {
    pub addr: SocketAddr,
    pub queries: Arc<AtomicUsize>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl TestUpstream {
    pub async fn start() -> TestUpstream {
        TestUpstream::start_with_delay(Duration::ZERO).await
    }

    /// Like [`TestUpstream::start`], answering each UDP query only after `delay`.
    pub async fn start_with_delay(delay: Duration) -> TestUpstream {
        // UDP picks a free port; TCP takes the same number (retry if it is busy for TCP).
        for _ in 0..20 {
            let udp = UdpSocket::bind("127.0.0.53:0")
                .await
                .expect("bind test upstream");
            let addr = udp.local_addr().expect("local addr");
            let Ok(tcp) = TcpListener::bind(addr).await else {
                continue;
            };
            let queries = Arc::new(AtomicUsize::new(0));
            let tasks = vec![
                tokio::spawn(upstream_udp(Arc::new(udp), queries.clone(), delay)),
                tokio::spawn(upstream_tcp(tcp, queries.clone())),
            ];
            return TestUpstream {
                addr,
                queries,
                tasks,
            };
        }
        panic!("no port free for both UDP and TCP on 127.0.0.53");
    }
}

fn upstream_reply(query: &[u8]) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    let q = request.queries.first()?.clone();
    let mut reply = Message::response(request.id, request.op_code);
    reply.metadata.recursion_desired = request.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.edns = request.edns.clone();
    reply.add_query(q.clone());
    let example = Name::from_ascii("example.test.").ok()?;
    if q.name().eq_ignore_root_case(&example) && q.query_type() == RecordType::A {
        reply.add_answer(Record::from_rdata(
            q.name().clone(),
            42,
            RData::A(A(EXAMPLE_ADDR)),
        ));
    } else {
        reply.metadata.response_code = ResponseCode::NXDomain;
    }
    reply.to_vec().ok()
}

async fn upstream_udp(socket: Arc<UdpSocket>, queries: Arc<AtomicUsize>, delay: Duration) {
    let mut buf = vec![0u8; 65_535];
    while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
        queries.fetch_add(1, Ordering::Relaxed);
        if let Some(reply) = upstream_reply(&buf[..n]) {
            let socket = socket.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = socket.send_to(&reply, peer).await;
            });
        }
    }
}

async fn upstream_tcp(listener: TcpListener, queries: Arc<AtomicUsize>) {
    while let Ok((mut stream, _)) = listener.accept().await {
        let queries = queries.clone();
        tokio::spawn(async move {
            while let Ok(len) = stream.read_u16().await {
                let mut buf = vec![0u8; usize::from(len)];
                if stream.read_exact(&mut buf).await.is_err() {
                    return;
                }
                queries.fetch_add(1, Ordering::Relaxed);
                let Some(reply) = upstream_reply(&buf) else {
                    return;
                };
                let Ok(len) = u16::try_from(reply.len()) else {
                    return;
                };
                let mut out = len.to_be_bytes().to_vec();
                out.extend_from_slice(&reply);
                if stream.write_all(&out).await.is_err() {
                    return;
                }
            }
        });
    }
}
