//! A small lab for the kernel tests: a client sandbox and two backend namespaces on a bridge,
//! tiny TCP and UDP servers that answer their own name, and clients that run inside the
//! sandbox.
//!
//! Layout (all in namespaces of our own, nothing in the root namespace):
//! ```text
//!   shoaltest-lb-<pid>-<n>-br      bridge br0 (the bench: shoalbench-vip-...)
//!     ├─ veth ── shoaltest-lb-<pid>-<n>-client   10.77.0.1/24  (the sandbox under test)
//!     ├─ veth ── shoaltest-lb-<pid>-<n>-b1       10.77.0.11/24 (answers "b1")
//!     └─ veth ── shoaltest-lb-<pid>-<n>-b2       10.77.0.12/24 (answers "b2")
//! ```
//! VIPs are addresses of 10.77.0.0/24 that nobody owns: without a DNAT, a packet to one waits
//! for an ARP answer that never comes, which is what makes "refused at once" observable.

#![allow(dead_code)] // each test binary uses a different subset

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};

use std::time::Duration;

use shoal_lb::{LbConfig, Proto, VipService};
pub use shoal_testns::{Bridge, Netns, serve_tcp, serve_udp, unique_prefix};

pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const B1: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 11);
pub const B2: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 12);
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 100);
pub const VIP_ANY: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 101);
pub const VIP_EMPTY: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 102);
pub const TCP_PORT: u16 = 8080;
pub const UDP_PORT: u16 = 5353;

/// The lab: client sandbox, two backends answering "b1" and "b2", all on one bridge.
pub struct Lab {
    pub client: Netns,
    pub b1: Netns,
    pub b2: Netns,
    // Dropped last: deleting it removes the bridge and every veth.
    pub br: Bridge,
}

impl Lab {
    pub fn new() -> Lab {
        Lab::named("shoaltest-lb")
    }

    /// A lab whose namespaces are named `<kind>-<pid>-<n>-...`.
    pub fn named(kind: &str) -> Lab {
        let prefix = unique_prefix(kind);
        let br = Bridge::new(format!("{prefix}-br"));
        let client = Netns::new(format!("{prefix}-client"));
        let b1 = Netns::new(format!("{prefix}-b1"));
        let b2 = Netns::new(format!("{prefix}-b2"));
        br.attach(&client, "p-client", CLIENT);
        br.attach(&b1, "p-b1", B1);
        br.attach(&b2, "p-b2", B2);
        for (ns, name) in [(&b1, "b1"), (&b2, "b2")] {
            serve_tcp(ns, name, TCP_PORT);
            serve_tcp(ns, name, 9090);
            serve_udp(ns, name, UDP_PORT);
        }
        Lab { client, b1, b2, br }
    }
}

/// One request on a new TCP connection from inside `ns`: connect, send a line, read the answer.
pub fn tcp_request(ns: &Netns, to: Ipv4Addr, port: u16) -> std::io::Result<String> {
    ns.run(move || {
        let mut conn = TcpStream::connect_timeout(&SocketAddr::from((to, port)), TIMEOUT)?;
        conn.set_read_timeout(Some(TIMEOUT))?;
        conn.write_all(b"hello\n")?;
        let mut line = String::new();
        BufReader::new(conn).read_line(&mut line)?;
        Ok(line.trim().to_string())
    })
}

/// An open TCP connection made from inside a namespace (the socket keeps the namespace).
pub struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    pub fn open(ns: &Netns, to: Ipv4Addr, port: u16) -> Conn {
        let stream = ns
            .run(move || TcpStream::connect_timeout(&SocketAddr::from((to, port)), TIMEOUT))
            .expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        Conn {
            writer: stream.try_clone().expect("clone"),
            reader: BufReader::new(stream),
        }
    }

    /// One request on the connection.
    pub fn request(&mut self) -> std::io::Result<String> {
        self.writer.write_all(b"again\n")?;
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(ErrorKind::UnexpectedEof, "closed"));
        }
        Ok(line.trim().to_string())
    }
}

/// A connected UDP socket made inside a namespace: all its datagrams are one conntrack flow.
pub fn udp_socket(ns: &Netns, to: Ipv4Addr, port: u16) -> UdpSocket {
    ns.run(move || {
        let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
        socket.connect((to, port)).expect("connect");
        socket.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        socket
    })
}

/// One datagram and its answer.
pub fn udp_request(socket: &UdpSocket) -> std::io::Result<String> {
    socket.send(b"hello")?;
    let mut buf = [0u8; 1500];
    let n = socket.recv(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

pub const TIMEOUT: Duration = Duration::from_secs(3);

/// The services of the tests: `web` (TCP 8080 and UDP 5353 on [`VIP`]), `any` (every port of
/// [`VIP_ANY`]) and `empty` (no tasks, [`VIP_EMPTY`]).
pub fn config(web: &[Ipv4Addr], any: &[Ipv4Addr]) -> LbConfig {
    LbConfig::new([
        VipService {
            id: "web".to_string(),
            vip: VIP,
            ports: vec![(Proto::Tcp, TCP_PORT), (Proto::Udp, UDP_PORT)],
            backends: web.to_vec(),
        },
        VipService {
            id: "any".to_string(),
            vip: VIP_ANY,
            ports: vec![],
            backends: any.to_vec(),
        },
        VipService {
            id: "empty".to_string(),
            vip: VIP_EMPTY,
            ports: vec![(Proto::Tcp, TCP_PORT), (Proto::Udp, UDP_PORT)],
            backends: vec![],
        },
    ])
}

/// `nft list table ip shoal` inside `ns`, normalised for comparison: each set, map and chain
/// as a block, element lists sorted (the kernel lists hash sets in no fixed order), without
/// the time left of elements that expire.
pub fn listing_blocks(ns: &Netns) -> std::collections::BTreeMap<String, Vec<String>> {
    let text = ns.cmd("nft", &["list", "table", "ip", "shoal"]);
    let mut blocks = std::collections::BTreeMap::new();
    let mut current: Option<(String, Vec<String>)> = None;
    let mut elements: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if let Some(acc) = elements.as_mut() {
            acc.push_str(line);
        } else if line.starts_with("elements = {") {
            elements = Some(line.to_string());
        } else if line.starts_with("set ") || line.starts_with("map ") || line.starts_with("chain ")
        {
            current = Some((line.to_string(), Vec::new()));
        } else if line == "}" {
            if let Some((name, body)) = current.take() {
                blocks.insert(name, body);
            }
        } else if let Some((_, body)) = current.as_mut().filter(|_| !line.is_empty()) {
            body.push(line.to_string());
        }
        if elements.as_ref().is_some_and(|e| e.ends_with('}')) {
            let all = elements.take().unwrap_or_default();
            let inner = all.trim_start_matches("elements = {").trim_end_matches('}');
            // An element's time left (`expires 9s976ms`) differs from one listing to the next.
            let mut items: Vec<String> = inner
                .split(',')
                .map(|s| {
                    let mut words = s.split_whitespace();
                    let mut kept = Vec::new();
                    while let Some(w) = words.next() {
                        if w == "expires" {
                            words.next();
                        } else {
                            kept.push(w);
                        }
                    }
                    kept.join(" ")
                })
                .collect();
            items.sort();
            if let Some((_, body)) = current.as_mut() {
                body.push(format!("elements = {{ {} }}", items.join(", ")));
            }
        }
    }
    blocks
}
