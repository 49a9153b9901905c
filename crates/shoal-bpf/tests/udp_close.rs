//! A UDP socket connected through a VIP, on the real kernel (root): when its backend leaves,
//! `SockLb::close_udp` destroys it (its next receive says ECONNABORTED instead of waiting for
//! an answer that will never come), and only it: a socket connected to the same task's own
//! address and an unconnected one are left alone.

mod common;

use std::net::{SocketAddr, UdpSocket};

use common::*;
use shoal_bpf::{ClosedUdp, Options, SockLb};

fn close(lb: &mut SockLb, removed: &[std::net::Ipv4Addr], ns: &Netns) -> ClosedUdp {
    let (cookie, name) = (ns.cookie(), ns.name.clone());
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime")
        .block_on(lb.close_udp(removed, |c| (c == cookie).then(|| name.clone())))
        .expect("close the UDP sockets of removed backends")
}

fn ask(s: &UdpSocket) -> std::io::Result<String> {
    s.send(b"hello")?;
    let mut buf = [0u8; 256];
    let n = s.recv(&mut buf)?;
    Ok(split(&String::from_utf8_lossy(&buf[..n])).0)
}

#[test]
fn a_connected_udp_socket_of_a_removed_backend_is_aborted_and_only_it() {
    let lab = Lab::new();
    let mut lb = SockLb::load(&Options::default()).expect("load the eBPF balancer (are we root?)");
    assert_eq!(
        lb.udp_close_unavailable(),
        None,
        "this kernel has bpf_sock_destroy"
    );
    lb.add_sandbox(lab.a.cookie(), &["net1".into()])
        .expect("sandbox");
    lb.apply(&config(&[B1, B2], &[])).expect("apply");
    let vip = SocketAddr::from((VIP, UDP_PORT));

    let connected = udp_socket(&lab.a);
    connected.connect(vip).expect("connect to the VIP");
    let first = ask(&connected).expect("an answer through the VIP");
    let (gone, left) = if first == "b1" { (B1, B2) } else { (B2, B1) };
    // The same task through its own address, and an unconnected flow through the VIP.
    let direct = udp_socket(&lab.a);
    direct
        .connect(SocketAddr::from((gone, UDP_PORT)))
        .expect("connect to the task");
    assert_eq!(ask(&direct).expect("direct"), first);
    let flow = udp_socket(&lab.a);
    flow.send_to(b"hello", vip).expect("send to the VIP");
    let mut buf = [0u8; 256];
    flow.recv_from(&mut buf).expect("the flow's answer");

    // The connected socket's task leaves the VIP.
    let applied = lb.apply(&config(&[left], &[])).expect("remove a backend");
    assert_eq!(applied.removed, [gone]);
    let closed = close(&mut lb, &applied.removed, &lab.a);
    assert_eq!(
        closed,
        ClosedUdp {
            namespaces: 1,
            sockets: 1
        }
    );

    // Aborted, not left to time out: the socket is no longer connected (a send says so) and
    // the abort is its pending error (a receive says so).
    let send = connected
        .send(b"hello")
        .expect_err("send on an aborted socket");
    assert_eq!(send.raw_os_error(), Some(libc::EDESTADDRREQ), "{send}");
    let recv = connected
        .recv(&mut buf)
        .expect_err("receive on an aborted socket");
    assert_eq!(recv.raw_os_error(), Some(libc::ECONNABORTED), "{recv}");
    assert_eq!(
        recv.to_string(),
        "Software caused connection abort (os error 103)"
    );
    // Connected again through the VIP: a live task answers.
    connected.connect(vip).expect("connect to the VIP again");
    let name = if left == B1 { "b1" } else { "b2" };
    assert_eq!(ask(&connected).expect("an answer after reconnecting"), name);

    // The others are untouched: the direct socket still talks to its task, the flow moved.
    assert_eq!(ask(&direct).expect("the direct socket still works"), first);
    flow.send_to(b"hello", vip).expect("send to the VIP");
    let n = flow.recv(&mut buf).expect("the flow's answer");
    assert_eq!(split(&String::from_utf8_lossy(&buf[..n])).0, name);

    // Nothing left to close: no namespace is walked again.
    assert_eq!(close(&mut lb, &[gone], &lab.a), ClosedUdp::default());
}
