//! The socket balancer on the real kernel (root): its programs attached at the cgroup v2 root,
//! acting only on the namespaces each test made. Every test owns its `SockLb`, so a failing
//! test still detaches (drop) and deletes its namespaces (drop).

mod common;

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use shoal_bpf::{Options, SockLb};

fn load() -> SockLb {
    SockLb::load(&Options::default()).expect("load the eBPF balancer (are we root?)")
}

/// Every connection round robin over the backends; the backend sees the client's own address;
/// the client's socket says it is connected to the VIP.
#[test]
fn tcp_round_robin_keeps_the_source_address_and_shows_the_vip() {
    let lab = Lab::new();
    let mut lb = load();
    lb.add_sandbox(lab.a.cookie(), &["net1".into()])
        .expect("sandbox");
    lb.apply(&config(&[B1, B2], &[B1])).expect("apply");

    let mut seen = Vec::new();
    for _ in 0..4 {
        let (answer, peer) = tcp_request(&lab.a, VIP, TCP_PORT, TIMEOUT).expect("tcp via VIP");
        let (name, saw) = split(&answer);
        assert_eq!(
            saw,
            A.to_string(),
            "the backend must see the client's address"
        );
        assert_eq!(
            peer,
            SocketAddr::from((VIP, TCP_PORT)),
            "getpeername shows the VIP"
        );
        seen.push(name);
    }
    assert_eq!(seen, ["b1", "b2", "b1", "b2"]);
    // The programs' own counters: one per connection, per backend of the VIP.
    let mut counts = lb.connection_counts();
    counts.sort();
    assert_eq!(counts, [(VIP, B1, 2), (VIP, B2, 2)]);

    // Every port of the VIP is balanced, VIP port = backend port: 9999 has no server.
    let err = tcp_request(&lab.a, VIP, 9999, TIMEOUT).expect_err("no server on 9999");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err:?}");

    // An endpoint change: new connections go to the new set.
    let applied = lb.apply(&config(&[B2], &[B1])).expect("apply");
    assert!(applied.ops <= 3, "one service changed: {applied:?}");
    for _ in 0..2 {
        let (answer, _) = tcp_request(&lab.a, VIP, TCP_PORT, TIMEOUT).expect("tcp via VIP");
        assert_eq!(split(&answer).0, "b2");
    }
}

/// A sandbox reaches only the VIPs of its own networks: a VIP of another network is refused
/// with "network unreachable", at once, for TCP and UDP.
#[test]
fn a_sandbox_cannot_reach_a_vip_of_a_network_it_is_not_on() {
    let lab = Lab::new();
    let mut lb = load();
    lb.add_sandbox(lab.a.cookie(), &["net1".into()])
        .expect("sandbox a");
    lb.add_sandbox(lab.b.cookie(), &["net2".into()])
        .expect("sandbox b");
    lb.apply(&config(&[B1], &[B2])).expect("apply");

    // The error itself shows it came at once: a dropped SYN would end in a timeout.
    let err = tcp_request(&lab.b, VIP, TCP_PORT, TIMEOUT).expect_err("net1's VIP from net2");
    assert_eq!(err.raw_os_error(), Some(libc::ENETUNREACH), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::NetworkUnreachable);
    let udp = udp_socket(&lab.b);
    let err = udp
        .send_to(b"x", (VIP, UDP_PORT))
        .expect_err("udp to net1's VIP from net2");
    assert_eq!(err.raw_os_error(), Some(libc::ENETUNREACH), "{err:?}");

    // Each reaches its own.
    let (answer, _) = tcp_request(&lab.b, VIP2, TCP_PORT, TIMEOUT).expect("own VIP");
    assert_eq!(split(&answer), ("b2".into(), B.to_string()));
    let (answer, _) = tcp_request(&lab.a, VIP, TCP_PORT, TIMEOUT).expect("own VIP");
    assert_eq!(split(&answer).0, "b1");
}

/// A VIP without backends refuses at once (as the nftables balancer does).
#[test]
fn a_vip_without_backends_is_refused() {
    let lab = Lab::new();
    let mut lb = load();
    lb.add_sandbox(lab.a.cookie(), &["net1".into()])
        .expect("sandbox");
    lb.apply(&config(&[B1], &[])).expect("apply");
    // Refused, not timed out: the error kind is the proof that it came at once.
    let err = tcp_request(&lab.a, VIP_EMPTY, TCP_PORT, TIMEOUT).expect_err("no backends");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err:?}");
    let err = udp_socket(&lab.a)
        .send_to(b"x", (VIP_EMPTY, UDP_PORT))
        .expect_err("udp, no backends");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err:?}");

    // Scaled to zero, and back.
    lb.apply(&config(&[], &[])).expect("to zero");
    let err = tcp_request(&lab.a, VIP, TCP_PORT, TIMEOUT).expect_err("scaled to zero");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err:?}");
    lb.apply(&config(&[B2], &[])).expect("back");
    let (answer, _) = tcp_request(&lab.a, VIP, TCP_PORT, TIMEOUT).expect("scaled up");
    assert_eq!(split(&answer).0, "b2");
}

/// UDP: a reply to a datagram sent to VIP:port comes from VIP:port (recvmsg4), and a connected
/// UDP socket reports the VIP as its peer (getpeername4).
#[test]
fn udp_replies_come_from_the_vip() {
    let lab = Lab::new();
    let mut lb = load();
    lb.add_sandbox(lab.a.cookie(), &["net1".into()])
        .expect("sandbox");
    lb.apply(&config(&[B1, B2], &[])).expect("apply");
    let vip = SocketAddr::from((VIP, UDP_PORT));

    // One unconnected socket's datagrams to the VIP are one flow: they keep their backend,
    // as under conntrack; another socket gets the next backend.
    let ask = |socket: &std::net::UdpSocket| {
        socket.send_to(b"hello", vip).expect("send to the VIP");
        let mut buf = [0u8; 256];
        let (n, from) = socket.recv_from(&mut buf).expect("reply");
        assert_eq!(from, vip, "the reply must come from the VIP");
        let (name, saw) = split(&String::from_utf8_lossy(&buf[..n]));
        assert_eq!(
            saw,
            A.to_string(),
            "the backend must see the client's address"
        );
        name
    };
    let first = udp_socket(&lab.a);
    let second = udp_socket(&lab.a);
    let a = ask(&first);
    assert_eq!(ask(&first), a, "a flow keeps its backend");
    let b = ask(&second);
    assert_ne!(a, b, "the next flow goes to the next backend");
    assert_eq!(ask(&first), a);
    // The flow's task goes: its next datagram goes to a live one, with nothing to flush.
    let left = if a == "b1" { B2 } else { B1 };
    lb.apply(&config(&[left], &[])).expect("remove a's backend");
    assert_eq!(ask(&first), b);

    let connected = udp_socket(&lab.a);
    connected.connect(vip).expect("connect to the VIP");
    assert_eq!(connected.peer_addr().expect("peer"), vip);
    connected.send(b"hello").expect("send");
    let mut buf = [0u8; 256];
    let (n, from) = connected.recv_from(&mut buf).expect("reply");
    assert_eq!(from, vip);
    assert_eq!(split(&String::from_utf8_lossy(&buf[..n])).1, A.to_string());

    // Counted per flow, not per datagram: `first` began a flow twice (to a, then to b once
    // a was gone), `second` once, the connected socket once (its connect).
    let (a_addr, b_addr) = if a == "b1" { (B1, B2) } else { (B2, B1) };
    let mut counts = lb.connection_counts();
    counts.sort();
    let mut want = vec![(VIP, a_addr, 1), (VIP, b_addr, 3)];
    want.sort();
    assert_eq!(counts, want);
}

/// Namespaces a node does not know are left alone: no translation, no refusal.
#[test]
fn unknown_and_released_sandboxes_are_left_alone() {
    let lab = Lab::new();
    let mut lb = load();
    let a = lab.a.cookie();
    lb.add_sandbox(a, &["net1".into()]).expect("sandbox");
    lb.apply(&config(&[B1], &[B1])).expect("apply");
    // `b` was never added: its connect to the VIP goes out as is, to an address nobody owns.
    let err = tcp_request(&lab.b, VIP, TCP_PORT, Duration::from_millis(300))
        .expect_err("untouched, unanswered");
    assert!(
        matches!(err.kind(), ErrorKind::TimedOut | ErrorKind::HostUnreachable),
        "{err:?}"
    );
    tcp_request(&lab.a, VIP, TCP_PORT, TIMEOUT).expect("known sandbox");
    lb.remove_sandbox(a).expect("release");
    let err = tcp_request(&lab.a, VIP, TCP_PORT, Duration::from_millis(300))
        .expect_err("released: untouched");
    assert!(
        matches!(err.kind(), ErrorKind::TimedOut | ErrorKind::HostUnreachable),
        "{err:?}"
    );
}

/// Two nodes on one kernel (the lab): each balances its own sandboxes with its own maps, the
/// same VIP meaning different backends; dropping one detaches its programs and leaves the
/// other working.
#[test]
fn two_nodes_on_one_kernel_do_not_interfere() {
    let lab = Lab::new();
    let mut node1 = load();
    let mut node2 = load();
    let root = node1.cgroup().to_path_buf();
    node1
        .add_sandbox(lab.a.cookie(), &["net1".into()])
        .expect("node1 sandbox");
    node2
        .add_sandbox(lab.b.cookie(), &["net1".into()])
        .expect("node2 sandbox");
    node1.apply(&config(&[B1], &[])).expect("node1");
    node2.apply(&config(&[B2], &[])).expect("node2");
    for _ in 0..3 {
        let (answer, _) = tcp_request(&lab.a, VIP, TCP_PORT, TIMEOUT).expect("node1's sandbox");
        assert_eq!(split(&answer), ("b1".into(), A.to_string()));
        let (answer, _) = tcp_request(&lab.b, VIP, TCP_PORT, TIMEOUT).expect("node2's sandbox");
        assert_eq!(split(&answer), ("b2".into(), B.to_string()));
    }

    let ids1 = node1.program_ids();
    let ids2 = node2.program_ids();
    assert_eq!(ids1.len(), 5);
    let attached = attached_ids(&root);
    for id in ids1.iter().chain(&ids2) {
        assert!(attached.contains(id), "{id} not in {attached:?}");
    }
    drop(node1);
    let attached = attached_ids(&root);
    for id in &ids1 {
        assert!(!attached.contains(id), "{id} still attached: {attached:?}");
    }
    for id in &ids2 {
        assert!(attached.contains(id), "{id} detached with the other node");
    }
    let (answer, _) = tcp_request(&lab.b, VIP, TCP_PORT, TIMEOUT).expect("node2 still works");
    assert_eq!(split(&answer).0, "b2");
    let err = tcp_request(&lab.a, VIP, TCP_PORT, Duration::from_millis(300))
        .expect_err("node1 gone: untouched");
    assert!(
        matches!(err.kind(), ErrorKind::TimedOut | ErrorKind::HostUnreachable),
        "{err:?}"
    );
}

/// The programs die with the process that loaded them, SIGKILL included (links, not pins).
#[test]
fn a_killed_loader_leaves_nothing_attached() {
    let exe = std::env::current_exe().expect("test binary");
    let root = shoal_bpf::cgroup2_root().expect("cgroup2");
    let mut child = std::process::Command::new(exe)
        .args([
            "--exact",
            "hold_programs_until_killed",
            "--ignored",
            "--nocapture",
        ])
        .env("SHOAL_BPF_HOLD", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn holder");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut ids = Vec::new();
    let mut line = String::new();
    while std::io::BufRead::read_line(&mut out, &mut line).expect("read") > 0 {
        if let Some(rest) = line.trim().strip_prefix("ids ") {
            ids = rest
                .split(',')
                .filter_map(|s| s.parse::<u32>().ok())
                .collect();
            break;
        }
        line.clear();
    }
    assert_eq!(ids.len(), 5, "holder printed {line:?}");
    let attached = attached_ids(&root);
    assert!(ids.iter().all(|id| attached.contains(id)), "{attached:?}");
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    // The kernel releases links when the last fd closes, which the exit does.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let attached = attached_ids(&root);
        if ids.iter().all(|id| !attached.contains(id)) {
            break;
        }
        assert!(Instant::now() < deadline, "still attached: {attached:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Helper of the test above, run in a child process.
#[test]
#[ignore = "run by a_killed_loader_leaves_nothing_attached"]
fn hold_programs_until_killed() {
    if std::env::var_os("SHOAL_BPF_HOLD").is_none() {
        return;
    }
    let lb = load();
    let ids: Vec<String> = lb.program_ids().iter().map(u32::to_string).collect();
    println!("ids {}", ids.join(","));
    std::thread::sleep(Duration::from_secs(60));
}

/// A TCP socket connected through the VIP keeps its entry (a `tcp_slots` slot; getpeername
/// shows the VIP) while it is open, and the entry goes when it closes (sock_release), so an
/// occupied slot is a live socket.
#[test]
fn a_closed_tcp_socket_leaves_no_reverse_entry() {
    let lab = Lab::new();
    let mut lb = load();
    lb.add_sandbox(lab.a.cookie(), &["net1".into()])
        .expect("sandbox");
    lb.apply(&config(&[B1, B2], &[])).expect("apply");
    assert_eq!(lb.reverse_entries(), 0);

    let open: Vec<std::net::TcpStream> = (0..5)
        .map(|_| {
            lab.a
                .run(|| {
                    std::net::TcpStream::connect_timeout(
                        &SocketAddr::from((VIP, TCP_PORT)),
                        TIMEOUT,
                    )
                })
                .expect("connect via VIP")
        })
        .collect();
    for conn in &open {
        assert_eq!(
            conn.peer_addr().expect("peer"),
            SocketAddr::from((VIP, TCP_PORT))
        );
    }
    assert_eq!(lb.reverse_entries(), 5, "one entry per open socket");
    drop(open);
    for _ in 0..20 {
        tcp_request(&lab.a, VIP, TCP_PORT, TIMEOUT).expect("tcp via VIP");
    }
    assert_eq!(
        lb.reverse_entries(),
        0,
        "closed sockets left entries behind"
    );
}

/// The socket cookie the kernel gave `fd` (SO_COOKIE makes one if it had none).
fn socket_cookie(fd: std::os::fd::RawFd) -> u64 {
    let mut cookie = 0u64;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: SO_COOKIE writes a u64 into the buffer of `len` bytes given.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "SO_COOKIE: {}", std::io::Error::last_os_error());
    cookie
}

/// A TCP socket keeps its VIP in the `tcp_slots` slot its cookie names (cookie % 65,536); when
/// a newer socket needs that slot while the older one is still open, the older one's VIP moves
/// to `reverse`, so both still show the VIP, and both entries go when they close.
#[test]
fn a_live_socket_keeps_its_vip_when_a_newer_one_takes_its_slot() {
    use std::os::fd::AsRawFd;
    const SLOTS: u64 = 65_536; // TCP_SLOTS in bpf/sock_lb.c
    let lab = Lab::new();
    let mut lb = load();
    lb.add_sandbox(lab.a.cookie(), &["net1".into()])
        .expect("sandbox");
    lb.apply(&config(&[B1, B2], &[])).expect("apply");
    let vip = SocketAddr::from((VIP, TCP_PORT));
    let connect = || {
        lab.a
            .run(move || std::net::TcpStream::connect_timeout(&vip, TIMEOUT))
            .expect("connect via VIP")
    };
    let old = connect();
    let old_slot = socket_cookie(old.as_raw_fd()) % SLOTS;
    // Cookies come from one counter for the whole kernel: take them (with sockets that do
    // nothing else) up to the one before the old socket's slot, then connect. Another test's
    // sockets may take the cookie first: then go round again.
    let mut newer = None;
    for _ in 0..5 {
        loop {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp socket");
            if (socket_cookie(s.as_raw_fd()) + 1) % SLOTS == old_slot {
                break;
            }
        }
        let conn = connect();
        if socket_cookie(conn.as_raw_fd()) % SLOTS == old_slot {
            newer = Some(conn);
            break;
        }
    }
    let newer = newer.expect("a connect with the old socket's slot in 5 rounds");
    assert_eq!(old.peer_addr().expect("peer"), vip, "the older socket");
    assert_eq!(newer.peer_addr().expect("peer"), vip, "the newer socket");
    assert_eq!(lb.reverse_entries(), 2, "one slot and one `reverse` entry");
    drop((old, newer));
    assert_eq!(
        lb.reverse_entries(),
        0,
        "closed sockets left entries behind"
    );
}

/// A cgroup that is not a cgroup v2 directory is a clear error, not a panic.
#[test]
fn a_wrong_cgroup_is_a_clear_error() {
    let err = SockLb::load(&Options {
        cgroup: Some("/proc".into()),
    })
    .expect_err("not a cgroup");
    assert!(err.to_string().contains("cgroup"), "{err}");
}
