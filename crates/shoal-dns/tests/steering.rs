//! Steering by CPU on the real kernel: with one DNS thread per CPU the process may use, a
//! query sent from a CPU is answered by the DNS thread pinned to that CPU; without steering,
//! the kernel spreads the same queries over the threads by hash.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use common::{seed_networks, seed_zone};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;
use shoal_dns::{DnsMetrics, DnsRuntime, DnsServer, Upstream};
use tokio::sync::watch;

/// Queries sent from each CPU; each from a fresh socket, so that hashing would spread them.
const QUERIES: u64 = 40;

fn allowed_cpus() -> Vec<usize> {
    let set = sched_getaffinity(Pid::from_raw(0)).expect("sched_getaffinity");
    (0..CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect()
}

/// A server on 127.0.0.1 served by `runtime`'s threads.
fn serve(runtime: &DnsRuntime, tokio: &tokio::runtime::Runtime) -> DnsServer {
    let (_, rx) = watch::channel(Arc::new(seed_zone(0)));
    let upstream = Upstream {
        servers: vec![],
        timeout: Duration::from_millis(100),
    };
    tokio
        .block_on(DnsServer::bind(
            runtime,
            "127.0.0.1:0".parse().expect("addr"),
            rx,
            seed_networks(),
            upstream,
        ))
        .expect("bind on loopback")
}

/// From a thread pinned to `cpu`: `QUERIES` queries for `vote`, each from a new socket,
/// each answered NOERROR.
fn ask_from(cpu: usize, server: SocketAddr) {
    std::thread::spawn(move || {
        let mut set = CpuSet::new();
        set.set(cpu).expect("cpu in range");
        sched_setaffinity(Pid::from_raw(0), &set).expect("pin the client");
        for id in 0..QUERIES as u16 {
            let mut m = Message::query();
            m.metadata.id = id;
            m.add_query(hickory_proto::op::Query::query(
                Name::from_ascii("vote").expect("name"),
                RecordType::A,
            ));
            let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
            socket
                .set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            socket
                .send_to(&m.to_vec().expect("encodable"), server)
                .expect("send");
            let mut buf = [0u8; 1500];
            let (n, _) = socket.recv_from(&mut buf).expect("a reply within 2 s");
            let reply = Message::from_vec(&buf[..n]).expect("decodable reply");
            assert_eq!(reply.metadata.id, id);
            assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        }
    })
    .join()
    .expect("client thread");
}

fn answers(metrics: &DnsMetrics, threads: usize) -> Vec<u64> {
    (0..threads).map(|i| metrics.thread_answers(i)).collect()
}

#[test]
fn a_query_is_answered_by_the_thread_on_the_cpu_that_sent_it() {
    let cpus = allowed_cpus();
    assert!(
        cpus.len() >= 2,
        "steering needs two CPUs this process may use; it has {cpus:?}"
    );
    let metrics = Arc::new(DnsMetrics::default());
    let runtime = DnsRuntime::new(cpus.len())
        .steered_by_cpu()
        .with_metrics(metrics.clone());
    let tokio = tokio::runtime::Runtime::new().expect("runtime");
    let server = serve(&runtime, &tokio);
    let pinned: Vec<Option<usize>> = cpus.iter().copied().map(Some).collect();
    assert_eq!(runtime.steered_cpus(), Some(pinned));

    let mut expected = vec![0; cpus.len()];
    for (i, cpu) in cpus.iter().enumerate() {
        ask_from(*cpu, server.udp_addr());
        expected[i] = QUERIES;
        // Every answer by thread i, none by another: the reply is counted before it is sent.
        assert_eq!(answers(&metrics, cpus.len()), expected, "after CPU {cpu}");
    }
    tokio.block_on(server.stop());
}

#[test]
fn without_steering_the_kernel_spreads_the_same_queries() {
    let cpus = allowed_cpus();
    assert!(cpus.len() >= 2, "needs two CPUs; it has {cpus:?}");
    let metrics = Arc::new(DnsMetrics::default());
    // The default.
    let runtime = DnsRuntime::new(cpus.len()).with_metrics(metrics.clone());
    let tokio = tokio::runtime::Runtime::new().expect("runtime");
    let server = serve(&runtime, &tokio);
    assert_eq!(runtime.steered_cpus(), Some(vec![None; cpus.len()]));

    ask_from(cpus[0], server.udp_addr());
    let spread = answers(&metrics, cpus.len());
    assert_eq!(spread.iter().sum::<u64>(), QUERIES);
    // By hash of 40 source ports: all on one thread has odds of about 2^-39.
    assert!(
        spread.iter().filter(|n| **n > 0).count() >= 2,
        "all on one thread: {spread:?}"
    );
    tokio.block_on(server.stop());
}
