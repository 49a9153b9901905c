//! The VIP benchmark (run it with `bench/vip/run.sh`): new-connection cost through a VIP
//! against straight to a task address, in the same run, and the time of one endpoint change,
//! with 1, 1,000 and 10,000 services programmed in the client's sandbox.
//!
//! Knobs (environment): `SERVICES="1 1000 10000"`, `PORTS=1` (ports per filler service: each
//! is a chain, and the kernel's validation walks every chain), `CONNS=4000` (connections per
//! path and size), `UPDATES=100` (netlink updates timed per kind and size), `NFT_UPDATES=10`
//! (the same through `nft -f`, for comparison).
//!
//! The lab is the tests' (`tests/common`): a client sandbox and two backends on a bridge, all
//! in namespaces named `shoalbench-vip-<pid>-...`, deleted on exit, also on failure.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::{B1, B2, Lab, Netns, VIP};
use shoal_lb::{Balancer, LbConfig, Proto, Transport, VipService};

const PORT: u16 = 7000;
/// The direct path goes to another port of the same servers: a VIP connection and a direct
/// one from the same source port would otherwise be the same 4-tuple on the backend (no
/// SNAT), and the backend's TIME_WAIT entries of one path would stall the other.
const DIRECT_PORT: u16 = 7001;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn num(name: &str, default: usize) -> usize {
    env(name, &default.to_string())
        .parse()
        .unwrap_or_else(|_| panic!("{name} must be a number"))
}

/// `n` services: `s0` is the one the connections go to (VIP [`VIP`], port 7000, b1 and b2);
/// the others are fillers on their own VIPs (10.80.0.0/16 and up), two tasks each, never
/// contacted, like a big cluster's services seen from one sandbox.
fn services(n: usize, ports: usize) -> LbConfig {
    LbConfig::new((0..n).map(|i| {
        if i == 0 {
            return VipService {
                id: "s0".to_string(),
                vip: VIP,
                ports: vec![(Proto::Tcp, PORT)],
                backends: vec![B1, B2],
            };
        }
        let i = i as u32;
        VipService {
            id: format!("s{i}"),
            vip: Ipv4Addr::from(0x0a50_0000 + i),
            ports: (0..ports as u16).map(|p| (Proto::Tcp, 80 + p)).collect(),
            backends: vec![
                Ipv4Addr::from(0x0a4f_0000 + i),
                Ipv4Addr::from(0x0a4e_0000 + i),
            ],
        }
    }))
}

/// A server for the connection benchmark: one thread, one connection at a time (the client
/// is sequential too): read the request, answer, close.
fn serve(ns: &Netns, port: u16) {
    let listener = ns.run(move || TcpListener::bind(("0.0.0.0", port)).expect("bind"));
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            if stream.read(&mut buf).is_ok() {
                let _ = stream.write_all(b"ok\n");
            }
        }
    });
}

/// One connect + request + close; returns its duration.
fn one_connection(to: SocketAddr) -> Duration {
    let started = Instant::now();
    let mut conn = TcpStream::connect(to).expect("connect");
    conn.write_all(b"GET\n").expect("write");
    let mut buf = [0u8; 8];
    let mut got = 0;
    while got < 3 {
        match conn.read(&mut buf[got..]) {
            Ok(0) => panic!("closed before the answer"),
            Ok(n) => got += n,
            Err(e) => panic!("read: {e}"),
        }
    }
    drop(conn);
    started.elapsed()
}

struct Conns {
    rate: f64,
    p50: Duration,
    p99: Duration,
}

fn summarize(mut samples: Vec<Duration>) -> Conns {
    samples.sort();
    let total: Duration = samples.iter().sum();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Conns {
        rate: samples.len() as f64 / total.as_secs_f64(),
        p50: at(0.5),
        p99: at(0.99),
    }
}

/// Direct and VIP connections, interleaved in blocks of 100 so that drift in the machine's
/// load hits both paths alike. Direct alternates b1/b2 like the VIP's round robin does.
fn bench_connections(client: &Netns, conns: usize) -> (Conns, Conns) {
    client.run(move || {
        let (mut direct, mut vip) = (Vec::new(), Vec::new());
        let targets = [
            SocketAddr::from((B1, DIRECT_PORT)),
            SocketAddr::from((B2, DIRECT_PORT)),
        ];
        let vip_addr = SocketAddr::from((VIP, PORT));
        for _ in 0..50 {
            one_connection(vip_addr); // warm up caches and ARP
            one_connection(targets[0]);
            one_connection(targets[1]);
        }
        while direct.len() < conns {
            for i in 0..100 {
                direct.push(one_connection(targets[i % 2]));
            }
            for _ in 0..100 {
                vip.push(one_connection(vip_addr));
            }
        }
        (summarize(direct), summarize(vip))
    })
}

fn percentile(mut samples: Vec<Duration>, q: f64) -> Duration {
    samples.sort();
    samples[((samples.len() - 1) as f64 * q).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Times `count` updates of one service: `same_n` replaces its second task by another
/// address (elements only); otherwise a third task comes and goes (the rule is replaced).
async fn bench_updates(
    lb: &mut Balancer,
    cfg: &mut LbConfig,
    count: usize,
    same_n: bool,
) -> Vec<Duration> {
    let target = if cfg.services.len() > 1 { "s1" } else { "s0" };
    let mut times = Vec::with_capacity(count);
    for i in 0..count {
        let Some(svc) = cfg.services.get_mut(target) else {
            break;
        };
        if same_n {
            svc.backends[1] = Ipv4Addr::new(10, 79, 255, 1 + (i % 2) as u8);
        } else if svc.backends.len() == 2 {
            svc.backends.push(Ipv4Addr::new(10, 79, 255, 100));
        } else {
            svc.backends.pop();
        }
        let next = cfg.clone();
        let started = Instant::now();
        lb.update(next).await.expect("update");
        times.push(started.elapsed());
    }
    // Leave s0 as the connection benchmark needs it.
    if target == "s0" {
        if let Some(svc) = cfg.services.get_mut("s0") {
            svc.backends = vec![B1, B2];
        }
        lb.update(cfg.clone()).await.expect("restore s0");
    }
    times
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let sizes: Vec<usize> = env("SERVICES", "1 1000 10000")
        .split_whitespace()
        .map(|s| s.parse().expect("SERVICES: numbers"))
        .collect();
    let conns = num("CONNS", 4000);
    let updates = num("UPDATES", 100);
    let nft_updates = num("NFT_UPDATES", 10);
    let ports = num("PORTS", 1).max(1);

    let lab = Lab::named("shoalbench-vip");
    println!(
        "services programmed in the client sandbox, {ports} port(s) each; {conns} connections per path and size"
    );
    for port in [PORT, DIRECT_PORT] {
        serve(&lab.b1, port);
        serve(&lab.b2, port);
    }
    println!(
        "{:>8} {:>9} | {:>27} | {:>27} | {:>15} {:>14}",
        "services",
        "create",
        "direct conn/s  p50   p99",
        "VIP conn/s  p50   p99",
        "VIP-direct p50",
        "VIP/direct p50"
    );
    let mut update_lines = Vec::new();
    for &n in &sizes {
        let mut cfg = services(n, ports);
        let started = Instant::now();
        let mut lb = Balancer::create(&lab.client.name, &cfg)
            .await
            .expect("create");
        let create = started.elapsed();

        let (direct, vip) = bench_connections(&lab.client, conns);
        let extra_us = (vip.p50.as_secs_f64() - direct.p50.as_secs_f64()) * 1e6;
        println!(
            "{n:>8} {:>7.0}ms | {:>10.0} {:>6.1}µs {:>6.1}µs | {:>10.0} {:>6.1}µs {:>6.1}µs | {:>+13.1}µs {:>13.3}x",
            ms(create),
            direct.rate,
            direct.p50.as_secs_f64() * 1e6,
            direct.p99.as_secs_f64() * 1e6,
            vip.rate,
            vip.p50.as_secs_f64() * 1e6,
            vip.p99.as_secs_f64() * 1e6,
            extra_us,
            vip.p50.as_secs_f64() / direct.p50.as_secs_f64(),
        );

        let same = bench_updates(&mut lb, &mut cfg, updates, true).await;
        let scale = bench_updates(&mut lb, &mut cfg, updates, false).await;
        // The same two kinds of change through `nft -f`, on a table created for it.
        let mut slow = Balancer::create_with(&lab.client.name, &cfg, Transport::Nft)
            .await
            .expect("create for nft");
        let nft_same = bench_updates(&mut slow, &mut cfg, nft_updates, true).await;
        let nft_scale = bench_updates(&mut slow, &mut cfg, nft_updates, false).await;
        update_lines.push(format!(
            "{n:>8} | {:>7.2} {:>7.2} | {:>7.2} {:>7.2} | {:>7.1} {:>7.1}",
            ms(percentile(same.clone(), 0.5)),
            ms(percentile(same, 0.99)),
            ms(percentile(scale.clone(), 0.5)),
            ms(percentile(scale, 0.99)),
            ms(percentile(nft_same, 0.5)),
            ms(percentile(nft_scale, 0.5)),
        ));
        drop(slow);
        drop(lb);
    }
    println!();
    println!("one endpoint change, time of Balancer::update (ms)");
    println!(
        "{:>8} | {:>15} | {:>15} | {:>15}",
        "services", "task replaced", "task added/rm", "nft -f (same)"
    );
    println!(
        "{:>8} | {:>7} {:>7} | {:>7} {:>7} | {:>7} {:>7}",
        "", "p50", "p99", "p50", "p99", "repl.", "add/rm"
    );
    for line in update_lines {
        println!("{line}");
    }
}
