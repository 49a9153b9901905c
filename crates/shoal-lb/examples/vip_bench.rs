//! The VIP benchmark (run it with `bench/vip/run.sh`): new-connection cost through a VIP with
//! the eBPF socket balancer (`shoal-bpf`, one per node) and with the nftables balancer (this
//! crate, one table per sandbox), each beside straight to a task address in the same run; and
//! the time of one endpoint change. At 1, 1,000 and 10,000 services, with 1 and 300 client
//! sandboxes on the node.
//!
//! Knobs (environment): `SERVICES="1 1000 10000"`, `SANDBOXES="1 300"`, `PORTS=1` (ports per
//! nftables filler service), `CONNS=4000` (connections per path and run), `UPDATES=100`
//! (changes timed per kind), `NFT_MANY_MAX=1000` (the largest service count for which a
//! table is made in every sandbox: 300 × 10,000 services is minutes of `nft -f`).
//!
//! The lab is the tests' (`tests/common`): the nftables client sandbox and two backends on a
//! bridge, plus a second client sandbox for eBPF (no nftables table at all, as on an eBPF
//! node) and idle sandboxes up to `SANDBOXES`, all in namespaces `shoalbench-vip-<pid>-...`,
//! deleted on exit, also on failure. The eBPF programs are this process's, detached on exit.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::{B1, B2, Lab, Netns, VIP};
use shoal_lb::{Balancer, LbConfig, Proto, VipService};

const PORT: u16 = 7000;
/// The direct path goes to another port of the same servers: a VIP connection and a direct
/// one from the same source port would otherwise be the same 4-tuple on the backend (no
/// SNAT), and the backend's TIME_WAIT entries of one path would stall the other.
const DIRECT_PORT: u16 = 7001;
/// The warm-up (`AGED`) goes through the VIP to a third port: on the measured VIP port its
/// tens of thousands of TIME_WAIT entries would make the first rows' connects (and only the
/// VIP path's) search past occupied 4-tuples until they expire, 60 s later.
const AGED_PORT: u16 = 7002;
const EBPF_CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn num(name: &str, default: usize) -> usize {
    env(name, &default.to_string())
        .parse()
        .unwrap_or_else(|_| panic!("{name} must be a number"))
}

fn list(name: &str, default: &str) -> Vec<usize> {
    env(name, default)
        .split_whitespace()
        .map(|s| s.parse().unwrap_or_else(|_| panic!("{name}: numbers")))
        .collect()
}

fn filler(i: u32) -> (Ipv4Addr, Vec<Ipv4Addr>) {
    (
        Ipv4Addr::from(0x0a50_0000 + i),
        vec![
            Ipv4Addr::from(0x0a4f_0000 + i),
            Ipv4Addr::from(0x0a4e_0000 + i),
        ],
    )
}

/// `n` services for nftables: `s0` is the measured one (VIP, port 7000, b1 and b2); the others
/// are fillers on their own VIPs, two tasks each, never contacted.
fn nft_services(n: usize, ports: usize) -> LbConfig {
    LbConfig::new((0..n).map(|i| {
        if i == 0 {
            return VipService {
                id: "s0".to_string(),
                vip: VIP,
                ports: vec![(Proto::Tcp, PORT)],
                backends: vec![B1, B2],
            };
        }
        let (vip, backends) = filler(i as u32);
        VipService {
            id: format!("s{i}"),
            vip,
            ports: (0..ports as u16).map(|p| (Proto::Tcp, 80 + p)).collect(),
            backends,
        }
    }))
}

/// The same services for eBPF, every port of each VIP (what shoal programs).
fn bpf_services(n: usize) -> shoal_bpf::NodeConfig {
    shoal_bpf::NodeConfig {
        services: (0..n)
            .map(|i| {
                let (vip, backends) = if i == 0 {
                    (VIP, vec![B1, B2])
                } else {
                    filler(i as u32)
                };
                let svc = shoal_bpf::Service {
                    vip,
                    ports: vec![],
                    backends,
                };
                (("net".to_string(), format!("s{i}")), svc)
            })
            .collect(),
    }
}

/// One thread, one connection at a time (the client is sequential too): read, answer, close.
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
    let mut conn = TcpStream::connect(to).unwrap_or_else(|e| panic!("connect {to}: {e}"));
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

fn percentile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort();
    samples[((samples.len() - 1) as f64 * q).round() as usize]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Per-connection times of four paths: direct and VIP from the nftables sandbox, direct and
/// VIP from the eBPF sandbox, interleaved in blocks of 100 so that drift in the machine's load
/// hits all alike. Direct alternates b1/b2 like round robin does.
///
/// Also returns the kernel's own time in the connect4 program per run during the eBPF
/// sandbox's direct blocks and its VIP blocks (ns): the balancer's part of a connection,
/// without the client's and the scheduler's noise around it.
fn bench_connections(
    nft: &Netns,
    ebpf: &Netns,
    conns: usize,
    sock_lb: &shoal_bpf::SockLb,
) -> ([Vec<Duration>; 4], [f64; 4]) {
    // A socket keeps the namespace it was made in, but `connect` makes its own: run each
    // block on a thread inside the right sandbox.
    let block = |ns: &Netns, to: [SocketAddr; 2], warm: bool| {
        ns.run(move || {
            if warm {
                for i in 0..50 {
                    one_connection(to[i % 2]);
                }
            }
            (0..100)
                .map(|i| one_connection(to[i % 2]))
                .collect::<Vec<_>>()
        })
    };
    let direct = [
        SocketAddr::from((B1, DIRECT_PORT)),
        SocketAddr::from((B2, DIRECT_PORT)),
    ];
    let vip = [SocketAddr::from((VIP, PORT)); 2];
    let runs = || {
        [
            sock_lb
                .connect4_runs()
                .expect("read connect4's run counters"),
            sock_lb
                .getpeername4_runs()
                .expect("read getpeername4's run counters"),
            sock_lb
                .sock_release_runs()
                .expect("read sock_release's run counters"),
        ]
    };
    // (time, runs) in connect4 during the eBPF direct and VIP blocks, then getpeername4's
    // (it runs in the backends' accept()) and sock_release's (every close) during both.
    let mut kernel = [(Duration::ZERO, 0u64); 4];
    let mut timed = |k: usize, f: &mut dyn FnMut() -> Vec<Duration>| {
        let before = runs();
        let samples = f();
        let after = runs();
        for (slot, p) in [(k, 0), (2, 1), (3, 2)] {
            kernel[slot].0 += after[p].0.saturating_sub(before[p].0);
            kernel[slot].1 += after[p].1.saturating_sub(before[p].1);
        }
        samples
    };
    let mut out: [Vec<Duration>; 4] = Default::default();
    let mut first = true;
    while out[0].len() < conns {
        out[0].extend(block(nft, direct, first));
        out[1].extend(block(nft, vip, first));
        out[2].extend(timed(0, &mut || block(ebpf, direct, first)));
        out[3].extend(timed(1, &mut || block(ebpf, vip, first)));
        first = false;
    }
    let per_run = |(t, n): (Duration, u64)| t.as_nanos() as f64 / n.max(1) as f64;
    (
        out,
        [
            per_run(kernel[0]),
            per_run(kernel[1]),
            per_run(kernel[2]),
            per_run(kernel[3]),
        ],
    )
}

/// The two kinds of endpoint change of one service, alternately: its second task replaced
/// (`replace`), or a third task added and removed again.
fn change(backends: &mut Vec<Ipv4Addr>, i: usize, replace: bool) {
    if replace {
        backends[1] = Ipv4Addr::new(10, 79, 255, 1 + (i % 2) as u8);
    } else if backends.len() == 2 {
        backends.push(Ipv4Addr::new(10, 79, 255, 100));
    } else {
        backends.pop();
    }
}

/// The service the update benchmark changes: a filler if there is one.
fn target(n: usize) -> String {
    if n > 1 { "s1" } else { "s0" }.to_string()
}

/// `count` changes through the eBPF balancer (one map update set for the node).
fn ebpf_updates(
    lb: &mut shoal_bpf::SockLb,
    cfg: &mut shoal_bpf::NodeConfig,
    count: usize,
    replace: bool,
) -> Vec<Duration> {
    let key = ("net".to_string(), target(cfg.services.len()));
    let original = cfg.services.get(&key).map(|s| s.backends.clone());
    let mut times = Vec::new();
    for i in 0..count {
        let Some(svc) = cfg.services.get_mut(&key) else {
            break;
        };
        change(&mut svc.backends, i, replace);
        let started = Instant::now();
        lb.apply(cfg).expect("apply");
        times.push(started.elapsed());
    }
    // Back as it was: s0 is the service the connections go to.
    if let (Some(svc), Some(b)) = (cfg.services.get_mut(&key), original) {
        svc.backends = b;
    }
    lb.apply(cfg).expect("restore");
    times
}

/// `count` changes through nftables: every sandbox's table, as the agent does.
async fn nft_updates(
    tables: &mut [Balancer],
    cfg: &mut LbConfig,
    count: usize,
    replace: bool,
) -> Vec<Duration> {
    let key = target(cfg.services.len());
    let original = cfg.services.get(&key).map(|s| s.backends.clone());
    let mut times = Vec::new();
    for i in 0..count {
        let Some(svc) = cfg.services.get_mut(&key) else {
            break;
        };
        change(&mut svc.backends, i, replace);
        let started = Instant::now();
        for lb in tables.iter_mut() {
            lb.update(cfg.clone()).await.expect("update");
        }
        times.push(started.elapsed());
    }
    if let (Some(svc), Some(b)) = (cfg.services.get_mut(&key), original) {
        svc.backends = b;
    }
    for lb in tables.iter_mut() {
        lb.update(cfg.clone()).await.expect("restore");
    }
    times
}

/// The eBPF client: a second sandbox on the lab's bridge.
fn ebpf_client(lab: &Lab) -> Netns {
    let ns = Netns::new(lab.client.name.replace("-client", "-ebpf"));
    lab.br.attach(&ns, "p-ebpf", EBPF_CLIENT);
    ns
}

fn cookie(ns: &Netns) -> u64 {
    shoal_bpf::netns_cookie_blocking(&ns.name).expect("netns cookie")
}

fn p50_p99(samples: &mut [Duration]) -> (Duration, Duration) {
    (percentile(samples, 0.5), percentile(samples, 0.99))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let sizes = list("SERVICES", "1 1000 10000");
    let sandboxes = list("SANDBOXES", "1 300");
    let conns = num("CONNS", 4000);
    let aged = num("AGED", 70_000);
    let updates = num("UPDATES", 100);
    let ports = num("PORTS", 1).max(1);
    let nft_many_max = num("NFT_MANY_MAX", 1000);

    let lab = Lab::named("shoalbench-vip");
    let ebpf = ebpf_client(&lab);
    for port in [PORT, DIRECT_PORT, AGED_PORT] {
        serve(&lab.b1, port);
        serve(&lab.b2, port);
    }
    let mut sock_lb = shoal_bpf::SockLb::load(&shoal_bpf::Options::default())
        .expect("load the eBPF balancer (root, Linux 5.18+)");
    // The kernel counts program run times only while this fd is open (the whole run).
    let _run_stats = shoal_bpf::enable_run_stats().expect("enable eBPF run-time statistics");
    sock_lb
        .add_sandbox(cookie(&ebpf), &["net".to_string()])
        .expect("register the eBPF client");
    let mut idle: Vec<Netns> = Vec::new();

    println!(
        "{conns} connections per path and run; p50/p99 in µs; Δ and × are VIP against direct from the same sandbox, same run;\nkernel ns/run: the kernel's mean time per run in the eBPF connect4 program during the eBPF sandbox's direct / VIP blocks, and in getpeername4 (run by every accept()) and sock_release (every close) during both"
    );
    println!(
        "{:>8} {:>5} | {:>13} {:>13} {:>8} {:>6} | {:>13} {:>13} {:>8} {:>6} | {:>27}",
        "services",
        "sbox",
        "eBPF direct",
        "eBPF VIP",
        "Δp50",
        "×p50",
        "nft direct",
        "nft VIP",
        "Δp50",
        "×p50",
        "kernel ns/run"
    );
    // A node's balancer has seen many connections. Measured on fresh maps, the first rows
    // flattered it (connect4 1.0 µs per VIP connect fresh, 1.6-1.9 µs once `reverse` was full,
    // before sock_release deleted closed sockets' entries).
    if aged > 0 {
        let started = Instant::now();
        let vip = SocketAddr::from((VIP, AGED_PORT));
        let bpf_cfg = bpf_services(1);
        sock_lb.apply(&bpf_cfg).expect("program the eBPF maps");
        ebpf.run(move || {
            for _ in 0..aged {
                one_connection(vip);
            }
        });
        println!(
            "{aged} VIP connections made first, so per-socket maps are as full as on a busy node ({:.1} s)",
            started.elapsed().as_secs_f64()
        );
    }
    let mut update_lines = Vec::new();
    for &n in &sizes {
        let mut bpf_cfg = bpf_services(n);
        let started = Instant::now();
        sock_lb.apply(&bpf_cfg).expect("program the eBPF maps");
        let bpf_create = started.elapsed();
        let mut nft_cfg = nft_services(n, ports);
        let started = Instant::now();
        let client_table = Balancer::create(&lab.client.name, &nft_cfg)
            .await
            .expect("create");
        let nft_create = started.elapsed();
        let mut tables = vec![client_table];
        for &s in &sandboxes {
            // Idle sandboxes up to `s`: each is one more membership entry for eBPF, one more
            // table (created once per size) for nftables.
            while idle.len() + 1 < s {
                let name = format!(
                    "{}-idle{}",
                    lab.br.ns.name.trim_end_matches("-br"),
                    idle.len()
                );
                let ns = Netns::new(name);
                sock_lb
                    .add_sandbox(cookie(&ns), &["net".to_string()])
                    .expect("register an idle sandbox");
                idle.push(ns);
            }
            let nft_many = s == 1 || n <= nft_many_max;
            if nft_many {
                for ns in idle.iter().take(s - 1).skip(tables.len() - 1) {
                    tables.push(Balancer::create(&ns.name, &nft_cfg).await.expect("create"));
                }
            }
            let (mut paths, kernel_ns) = bench_connections(&lab.client, &ebpf, conns, &sock_lb);
            let [nd, nv, ed, ev] = &mut paths;
            let (nd, nv, ed, ev) = (p50_p99(nd), p50_p99(nv), p50_p99(ed), p50_p99(ev));
            let cell = |p: (Duration, Duration)| format!("{:>6.1} {:>6.1}", us(p.0), us(p.1));
            println!(
                "{n:>8} {s:>5} | {} {} {:>+7.1}µ {:>5.3}x | {} {} {:>+7.1}µ {:>5.3}x | {:>6.0} {:>6.0} {:>6.0} {:>6.0}",
                cell(ed),
                cell(ev),
                us(ev.0) - us(ed.0),
                ev.0.as_secs_f64() / ed.0.as_secs_f64(),
                cell(nd),
                cell(nv),
                us(nv.0) - us(nd.0),
                nv.0.as_secs_f64() / nd.0.as_secs_f64(),
                kernel_ns[0],
                kernel_ns[1],
                kernel_ns[2],
                kernel_ns[3],
            );

            let mut e_repl = ebpf_updates(&mut sock_lb, &mut bpf_cfg, updates, true);
            let mut e_scale = ebpf_updates(&mut sock_lb, &mut bpf_cfg, updates, false);
            let e = format!(
                "{:>7.3} {:>7.3} {:>7.3} {:>7.3}",
                ms(percentile(&mut e_repl, 0.5)),
                ms(percentile(&mut e_repl, 0.99)),
                ms(percentile(&mut e_scale, 0.5)),
                ms(percentile(&mut e_scale, 0.99)),
            );
            let nf = if nft_many {
                // Fewer rounds when every change is one update per sandbox.
                let count = if s > 1 { updates.min(20) } else { updates };
                let mut r = nft_updates(&mut tables[..s], &mut nft_cfg, count, true).await;
                let mut a = nft_updates(&mut tables[..s], &mut nft_cfg, count, false).await;
                format!(
                    "{:>7.2} {:>7.2} {:>7.2} {:>7.2}",
                    ms(percentile(&mut r, 0.5)),
                    ms(percentile(&mut r, 0.99)),
                    ms(percentile(&mut a, 0.5)),
                    ms(percentile(&mut a, 0.99)),
                )
            } else {
                format!("{:>31}", format!("skipped (> NFT_MANY_MAX={nft_many_max})"))
            };
            update_lines.push(format!(
                "{n:>8} {s:>5} | {:>7.1} {e} | {:>7.0} {nf}",
                ms(bpf_create),
                ms(nft_create)
            ));
        }
        // Tables stay in the namespaces; the next size's `create` replaces them.
        drop(tables);
    }
    println!();
    println!(
        "one endpoint change on the node (ms): eBPF = one SockLb::apply; nftables = Balancer::update in every sandbox"
    );
    println!(
        "{:>8} {:>5} | {:>7} {:>15} {:>15} | {:>7} {:>15} {:>15}",
        "services",
        "sbox",
        "load",
        "eBPF replaced",
        "eBPF add/rm",
        "create",
        "nft replaced",
        "nft add/rm"
    );
    println!(
        "{:>8} {:>5} | {:>7} {:>7} {:>7} {:>7} {:>7} | {:>7} {:>7} {:>7} {:>7} {:>7}",
        "", "", "", "p50", "p99", "p50", "p99", "", "p50", "p99", "p50", "p99"
    );
    for line in update_lines {
        println!("{line}");
    }
    drop(sock_lb);
    drop(idle);
    drop(ebpf);
}
