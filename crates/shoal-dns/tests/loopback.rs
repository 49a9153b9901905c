//! Loopback tier: the server on 127.0.0.1 in the test's own namespace, driven with raw
//! packets (hostile ones included) and many concurrent clients.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{EXAMPLE_ADDR, TestUpstream, seed_networks, seed_zone};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use shoal_dns::{DnsServer, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::timeout;

async fn server(upstream: Upstream) -> DnsServer {
    let (_, rx) = watch::channel(Arc::new(seed_zone(0)));
    DnsServer::bind(
        &common::RUNTIME,
        "127.0.0.1:0".parse().expect("addr"),
        rx,
        seed_networks(),
        upstream,
    )
    .await
    .expect("bind on loopback")
}

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = true;
    m.add_query(hickory_proto::op::Query::query(
        Name::from_ascii(name).expect("name"),
        RecordType::A,
    ));
    m.to_vec().expect("encodable")
}

/// One UDP exchange from a fresh socket; panics if no reply within 2 s.
async fn ask_udp(server: SocketAddr, packet: &[u8]) -> Message {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    socket.send_to(packet, server).await.expect("send");
    let mut buf = vec![0u8; 65_535];
    let (n, _) = timeout(Duration::from_secs(2), socket.recv_from(&mut buf))
        .await
        .expect("reply within 2 s")
        .expect("recv");
    Message::from_vec(&buf[..n]).expect("decodable reply")
}

/// Like `ask_udp`, with up to 5 tries of 1 s each (a resolver's retries).
async fn ask_udp_retrying(server: SocketAddr, packet: &[u8]) -> Message {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let mut buf = vec![0u8; 65_535];
    for _ in 0..5 {
        socket.send_to(packet, server).await.expect("send");
        if let Ok(r) = timeout(Duration::from_secs(1), socket.recv_from(&mut buf)).await {
            let (n, _) = r.expect("recv");
            return Message::from_vec(&buf[..n]).expect("decodable reply");
        }
    }
    panic!("no reply to 5 tries of 1 s: the server stalled");
}

fn first_a(m: &Message) -> Option<std::net::Ipv4Addr> {
    m.answers.iter().find_map(|r| match &r.data {
        RData::A(a) => Some(a.0),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_udp_packets_neither_crash_nor_stall_the_server() {
    let server = server(Upstream {
        servers: vec![],
        timeout: Duration::from_millis(100),
    })
    .await;
    let addr = server.udp_addr();
    let attacker = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let mut header_only = vec![0xab, 0xcd, 0x01, 0x00, 0xff, 0xff, 0, 0, 0, 0, 0, 0];
    let mut garbage: Vec<Vec<u8>> = vec![
        vec![],
        vec![0],
        header_only.clone(),
        vec![0xff; 65_000],
        // A response: must not be answered (no reflection loops).
        {
            let mut r = query(9, "vote");
            r[2] |= 0x80;
            r
        },
    ];
    // Pointer loops in the question name.
    let mut looped = query(10, "vote");
    looped.truncate(12);
    looped.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
    garbage.push(looped);
    for i in 0..2000u32 {
        garbage.push(i.to_le_bytes().repeat(1 + (i % 40) as usize));
    }
    for packet in &garbage {
        let _ = attacker.send_to(packet, addr).await;
    }
    // Still serving. The flood can fill the socket's receive buffer, and a datagram that
    // arrives then is dropped by the kernel, as for any UDP server: ask as a resolver
    // would, again after a second, a few times.
    let reply = ask_udp_retrying(addr, &query(7, "client")).await;
    assert_eq!(reply.id, 7);
    assert_eq!(first_a(&reply), Some("10.0.0.7".parse().expect("ip")));
    // A readable query header with no question bytes gets FORMERR with its id.
    header_only[5] = 1;
    let reply = ask_udp_retrying(addr, &header_only).await;
    assert_eq!(
        (reply.id, reply.response_code),
        (0xabcd, ResponseCode::FormErr)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_garbage_tcp_clients_do_not_block_others() {
    let server = server(Upstream {
        servers: vec![],
        timeout: Duration::from_millis(100),
    })
    .await;
    let addr = server.tcp_addr();
    // One client sends half a length prefix and waits; another sends nonsense.
    let mut stalled = TcpStream::connect(addr).await.expect("connect");
    stalled.write_all(&[0]).await.expect("write");
    let mut junk = TcpStream::connect(addr).await.expect("connect");
    junk.write_all(&[0, 3, 1, 2, 3]).await.expect("write");

    // A well-behaved client pipelines two queries on one connection and gets both answers.
    let mut good = TcpStream::connect(addr).await.expect("connect");
    let mut out = Vec::new();
    for (id, name) in [(1u16, "client"), (2, "vote")] {
        let q = query(id, name);
        out.extend_from_slice(&u16::try_from(q.len()).expect("short").to_be_bytes());
        out.extend_from_slice(&q);
    }
    good.write_all(&out).await.expect("write");
    for id in [1u16, 2] {
        let len = timeout(Duration::from_secs(2), good.read_u16())
            .await
            .expect("in time")
            .expect("len");
        let mut buf = vec![0u8; usize::from(len)];
        good.read_exact(&mut buf).await.expect("body");
        let reply = Message::from_vec(&buf).expect("decodable");
        assert_eq!(reply.id, id);
        assert!(!reply.answers.is_empty());
    }
    // The junk connection was closed by the server rather than left hanging.
    let mut buf = [0u8; 16];
    let n = timeout(Duration::from_secs(2), junk.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    drop(stalled);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_forwards_run_concurrently_and_local_answers_do_not_wait() {
    let upstream = TestUpstream::start_with_delay(Duration::from_secs(1)).await;
    let server = server(Upstream {
        servers: vec![upstream.addr],
        timeout: Duration::from_secs(2),
    })
    .await;
    let addr = server.udp_addr();
    let mut forwards = JoinSet::new();
    for id in 0..200u16 {
        forwards.spawn(async move { ask_udp(addr, &query(id, "example.test")).await });
    }
    // Concurrent, not one after the other: all 200 reach the upstream before it has
    // answered any (it answers each after 1 s).
    loop {
        if upstream.queries.load(std::sync::atomic::Ordering::Relaxed) >= 200 {
            break;
        }
        assert!(
            forwards.try_join_next().is_none(),
            "a forward came back before all 200 had reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // While 200 forwards wait on the slow upstream, cluster names answer first: no forward
    // has come back when the local answer does.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let reply = ask_udp(addr, &query(5000, "client")).await;
    assert_eq!(first_a(&reply), Some("10.0.0.7".parse().expect("ip")));
    assert!(
        forwards.try_join_next().is_none(),
        "a forward came back before the local answer"
    );
    let mut ids = Vec::new();
    while let Some(reply) = forwards.join_next().await {
        let reply = reply.expect("task");
        assert_eq!(first_a(&reply), Some(EXAMPLE_ADDR));
        ids.push(reply.id);
    }
    ids.sort_unstable();
    assert_eq!(
        ids,
        (0..200).collect::<Vec<u16>>(),
        "every client keeps its own id"
    );
    server.stop().await;
}
