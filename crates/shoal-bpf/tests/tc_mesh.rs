//! The routing mesh's tc programs on the real kernel (root). A node namespace with no
//! nftables rules at all: whatever reaches a task through a published port got there through
//! the programs (DNAT, bpf_redirect_peer) and came back through them (reverse NAT,
//! bpf_redirect_neigh).
//!
//! ```text
//!   <prefix>-br   bridge br0
//!     ├─ <prefix>-client  eth0 10.79.0.1/24
//!     └─ <prefix>-node    eth0 10.79.0.2/24   mesh_ingress on eth0
//!          ├─ gateway veth -> <prefix>-t1  gw0 172.18.0.3   answers "t1" (TCP 80, UDP 53)
//!          └─ gateway veth -> <prefix>-t2  gw0 172.18.0.4   answers "t2"
//! ```

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::OwnedFd;
use std::time::Duration;

use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrIn, sockopt};
use shoal_bpf::{MeshBackend, MeshConfig, MeshPort, TcMesh};
use shoal_net::gateway::{self, Gateway};
use shoal_testns::{Bridge, Netns, serve_tcp, serve_udp, unique_prefix};

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 79, 0, 1);
const NODE: Ipv4Addr = Ipv4Addr::new(10, 79, 0, 2);
const T1: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 3);
const T2: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 4);
const TCP: u8 = 6;
const UDP: u8 = 17;
const TIMEOUT: Duration = Duration::from_secs(3);

struct Lab {
    client: Netns,
    node: Netns,
    // Held: the tasks' namespaces live as long as the lab.
    _t1: Netns,
    _t2: Netns,
    // Dropped last: deleting it removes the bridge and every veth.
    _br: Bridge,
}

impl Lab {
    fn new() -> Lab {
        let prefix = unique_prefix("shoaltest-tcmesh");
        let br = Bridge::new(format!("{prefix}-br"));
        let client = Netns::new(format!("{prefix}-client"));
        let node = Netns::new(format!("{prefix}-node"));
        let t1 = Netns::new(format!("{prefix}-t1"));
        let t2 = Netns::new(format!("{prefix}-t2"));
        br.attach(&client, "p-client", CLIENT);
        br.attach(&node, "p-node", NODE);
        let tasks = [(t1.name.clone(), T1), (t2.name.clone(), T2)];
        node.run(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let gw = Gateway::docker_default();
                gateway::ensure_gateway(&gw).await.expect("gateway");
                for (ns, addr) in &tasks {
                    gateway::attach_gateway(&gw, ns, "gw0", *addr, true)
                        .await
                        .expect("attach a task");
                }
            })
        });
        for (ns, name) in [(&t1, "t1"), (&t2, "t2")] {
            serve_tcp(ns, name, 80);
            serve_udp(ns, name, 53);
        }
        Lab {
            client,
            node,
            _t1: t1,
            _t2: t2,
            _br: br,
        }
    }

    /// Loads the programs on the node's eth0 and on both tasks' veths.
    fn load(&self) -> TcMesh {
        self.node.run(|| {
            let mut mesh = TcMesh::load("eth0").expect("load the tc mesh (are we root?)");
            for t in [T1, T2] {
                mesh.attach_task(&gateway::gw_ifname(t)).expect("attach");
            }
            mesh
        })
    }

    fn local(&self, addr: Ipv4Addr, port: u16) -> MeshBackend {
        let veth = gateway::gw_ifname(addr);
        MeshBackend::Local {
            addr,
            mac: shoal_bpf::task_mac(addr),
            port,
            ifindex: self
                .node
                .run(move || shoal_bpf::ifindex(&veth).expect("veth")),
        }
    }
}

fn config(ports: Vec<MeshPort>, peers: &[Ipv4Addr]) -> MeshConfig {
    MeshConfig {
        node_addr: Some(NODE),
        peers: peers.iter().copied().collect(),
        ports,
    }
}

fn port(proto: u8, port: u16, local_only: bool, backends: Vec<MeshBackend>) -> MeshPort {
    MeshPort {
        proto,
        port,
        local_only,
        backends,
    }
}

/// One TCP exchange from the client, optionally with a TOS byte on its packets. Returns the
/// server's answer (its name and the address it saw) and the client socket's peer.
fn tcp(ns: &Netns, to: Ipv4Addr, port: u16, tos: i32) -> std::io::Result<(String, SocketAddr)> {
    let conn = ns.run(move || -> std::io::Result<TcpStream> {
        let fd: OwnedFd = socket::socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::empty(),
            None,
        )?;
        socket::setsockopt(&fd, sockopt::Ipv4Tos, &tos)?;
        socket::connect(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &SockaddrIn::from(SocketAddrV4::new(to, port)),
        )?;
        Ok(TcpStream::from(fd))
    })?;
    conn.set_read_timeout(Some(TIMEOUT))?;
    let peer = conn.peer_addr()?;
    (&conn).write_all(b"hello\n")?;
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line)?;
    Ok((line.trim().to_string(), peer))
}

fn udp(ns: &Netns, to: Ipv4Addr, port: u16) -> (String, SocketAddr) {
    let s = ns.run(|| std::net::UdpSocket::bind("0.0.0.0:0").expect("bind"));
    s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    s.send_to(b"hi", (to, port)).expect("send");
    let mut buf = [0u8; 256];
    let (n, from) = s
        .recv_from(&mut buf)
        .expect("an answer through the published port");
    (String::from_utf8_lossy(&buf[..n]).into_owned(), from)
}

/// Round robin over both tasks, the task sees the client's own address, the client sees
/// the node's address and published port (the reply was translated back).
#[test]
fn published_tcp_port_round_robin_with_reply_nat() {
    let lab = Lab::new();
    let mut mesh = lab.load();
    let backends = vec![lab.local(T1, 80), lab.local(T2, 80)];
    mesh.apply(&config(vec![port(TCP, 8080, false, backends)], &[]))
        .expect("apply");
    let mut seen = Vec::new();
    for _ in 0..4 {
        let (answer, peer) = tcp(&lab.client, NODE, 8080, 0).expect("tcp to the published port");
        assert_eq!(peer, SocketAddr::from((NODE, 8080)));
        let (name, saw) = answer.split_once(' ').expect("name and address");
        assert_eq!(
            saw,
            CLIENT.to_string(),
            "the task must see the client's address"
        );
        seen.push(name.to_string());
    }
    assert_eq!(seen, ["t1", "t2", "t1", "t2"]);

    // A task leaves: every new connection goes to the one left.
    let ops = mesh
        .apply(&config(
            vec![port(TCP, 8080, false, vec![lab.local(T2, 80)])],
            &[],
        ))
        .expect("apply");
    assert!(ops <= 5, "one port changed: {ops} writes");
    for _ in 0..3 {
        let (answer, _) = tcp(&lab.client, NODE, 8080, 0).expect("tcp");
        assert!(answer.starts_with("t2 "), "{answer}");
    }

    // The port goes: the node has nothing on 8080 and refuses.
    mesh.apply(&config(vec![], &[])).expect("apply");
    let err = tcp(&lab.client, NODE, 8080, 0).expect_err("no published port any more");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err:?}");
}

/// A connection kept open from the client, asked one line at a time.
fn connect(ns: &Netns, to: Ipv4Addr, port: u16) -> BufReader<TcpStream> {
    let conn = ns
        .run(move || TcpStream::connect_timeout(&SocketAddr::from((to, port)), TIMEOUT))
        .expect("connect to the published port");
    conn.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    BufReader::new(conn)
}

/// The name of the task that answers one line on `conn`.
fn ask(conn: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    conn.get_ref().write_all(b"hello\n")?;
    let mut line = String::new();
    if conn.read_line(&mut line)? == 0 {
        return Err(ErrorKind::UnexpectedEof.into());
    }
    Ok(line.split(' ').next().unwrap_or_default().to_string())
}

/// A task leaves a published port (it is being drained): connections under way keep their
/// task, the one that left and the one whose slot moved, until the task closes them; new
/// connections go to the task left; a UDP flow that went to the task that left moves.
#[test]
fn connections_under_way_keep_their_task_when_one_leaves() {
    let lab = Lab::new();
    let mut mesh = lab.load();
    let both = |p: u16| vec![lab.local(T1, p), lab.local(T2, p)];
    mesh.apply(&config(
        vec![
            port(TCP, 8080, false, both(80)),
            port(UDP, 5353, false, both(53)),
        ],
        &[],
    ))
    .expect("apply");
    let mut to_t1 = connect(&lab.client, NODE, 8080);
    assert_eq!(ask(&mut to_t1).expect("first connection"), "t1");
    let mut to_t2 = connect(&lab.client, NODE, 8080);
    assert_eq!(ask(&mut to_t2).expect("second connection"), "t2");
    let udp_flow = lab
        .client
        .run(|| std::net::UdpSocket::bind("0.0.0.0:0").expect("bind"));
    udp_flow.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let udp_ask = || {
        udp_flow.send_to(b"hi", (NODE, 5353)).expect("send");
        let mut buf = [0u8; 256];
        let n = udp_flow.recv(&mut buf).expect("a UDP answer");
        String::from_utf8_lossy(&buf[..n])
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(udp_ask(), "t1");
    assert_eq!(udp_ask(), "t1", "a UDP flow keeps its task");

    // t1 leaves both ports: t2 moves from slot 1 to slot 0, t1's slot is gone.
    mesh.apply(&config(
        vec![
            port(TCP, 8080, false, vec![lab.local(T2, 80)]),
            port(UDP, 5353, false, vec![lab.local(T2, 53)]),
        ],
        &[],
    ))
    .expect("apply");
    for _ in 0..3 {
        assert_eq!(ask(&mut to_t1).expect("kept by the task that left"), "t1");
        assert_eq!(ask(&mut to_t2).expect("kept by the task that moved"), "t2");
        let (answer, _) = tcp(&lab.client, NODE, 8080, 0).expect("new connection");
        assert!(answer.starts_with("t2 "), "{answer}");
    }
    assert_eq!(udp_ask(), "t2", "the UDP flow moved off the task that left");

    // t1 ends (its veth goes): its connection is balanced again, and t2, which knows no such
    // connection, resets it at once rather than it waiting for a task that is gone.
    mesh.detach_task(&gateway::gw_ifname(T1));
    let err = ask(&mut to_t1).expect_err("the task is gone");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err:?}");
    assert_eq!(ask(&mut to_t2).expect("t2's connection"), "t2");
}

/// traffic=local over UDP: this node's tasks only, in turn, the client's address kept, and
/// the answer comes from the published port.
#[test]
fn local_udp_port_keeps_the_client_address() {
    let lab = Lab::new();
    let mut mesh = lab.load();
    let backends = vec![lab.local(T1, 53), lab.local(T2, 53)];
    mesh.apply(&config(vec![port(UDP, 5353, true, backends)], &[]))
        .expect("apply");
    let mut seen = Vec::new();
    for _ in 0..4 {
        let (answer, from) = udp(&lab.client, NODE, 5353);
        assert_eq!(from, SocketAddr::from((NODE, 5353)));
        let (name, saw) = answer.split_once(' ').expect("name and address");
        assert_eq!(saw, CLIENT.to_string());
        seen.push(name.to_string());
    }
    seen.sort();
    assert_eq!(seen, ["t1", "t1", "t2", "t2"]);
}

/// A flow a peer node forwarded (DSCP 43) goes to a local task, never to the other node;
/// the same client without the mark is balanced over every task, the other node included
/// (left to nftables, which this node does not have: refused).
#[test]
fn forwarded_flows_stay_on_the_node() {
    let lab = Lab::new();
    let mut mesh = lab.load();
    let other = MeshBackend::Remote {
        node: Ipv4Addr::new(10, 79, 0, 9),
        index: 0,
    };
    let backends = vec![other, lab.local(T1, 80)];
    mesh.apply(&config(vec![port(TCP, 8080, false, backends)], &[CLIENT]))
        .expect("apply");
    for _ in 0..4 {
        let (answer, _) = tcp(&lab.client, NODE, 8080, 43 << 2).expect("forwarded flow");
        assert!(answer.starts_with("t1 "), "{answer}");
    }
    let outcomes: Vec<bool> = (0..4)
        .map(|_| tcp(&lab.client, NODE, 8080, 0).is_ok())
        .collect();
    assert_eq!(outcomes, [false, true, false, true]);
}

/// Loading on an interface the namespace does not have fails, naming it: what makes shoald
/// fall back to nftables.
#[test]
fn loading_without_the_interface_says_which() {
    let lab = Lab::new();
    let err = lab
        .node
        .run(|| TcMesh::load("nosuch0").map(|_| ()))
        .expect_err("no such interface");
    assert!(
        err.to_string()
            .starts_with("no interface nosuch0 in this network namespace"),
        "{err}"
    );
}

#[test]
fn task_veths_carry_no_ipv6() {
    // The node's end of a task's veth gets no IPv6 address or route: removing it then
    // walks no node-wide IPv6 table (which would grow with the node's tasks).
    let lab = Lab::new();
    let veth = gateway::gw_ifname(T1);
    let (disabled, inet6) = lab.node.run({
        let veth = veth.clone();
        move || {
            (
                std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{veth}/disable_ipv6"))
                    .expect("the veth's IPv6 settings"),
                std::fs::read_to_string("/proc/thread-self/net/if_inet6").unwrap_or_default(),
            )
        }
    });
    assert_eq!(disabled.trim(), "1");
    assert!(!inet6.contains(&veth), "{veth} has IPv6 addresses: {inet6}");
}
