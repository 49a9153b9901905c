//! The embedded DNS server for bench/dns/run.sh: a synthetic zone of N services on network
//! `bench`, served at 127.0.0.11:53 inside a named namespace until SIGTERM or Ctrl-C.
//!
//! It also writes the same data for the baseline servers (an unbound `local-data` include, a
//! dnsmasq hosts file and an authoritative zone file for NSD and Knot) and the dnsperf query
//! file, so every server answers exactly the same names with the same records.
//!
//! Usage: dns_bench_server --netns NAME [--services 1000] [--tasks 3] [--threads 2] [--steer off|on]
//!        [--write-unbound FILE] [--write-hosts FILE] [--write-zone FILE] [--write-queries FILE]

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use shoal_dns::{DnsRuntime, DnsServer, NetworkView, NodeZones, ServiceView, TaskView, Upstream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

const NETWORK: &str = "bench";
const TTL: u32 = 600;

struct Args {
    netns: String,
    services: u32,
    tasks: u32,
    threads: usize,
    /// Steer by CPU when the threads are as many as the CPUs (shoald --dns-steering cpu).
    steer: bool,
    unbound: Option<String>,
    hosts: Option<String>,
    queries: Option<String>,
    zone: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        netns: String::new(),
        services: 1000,
        tasks: 3,
        threads: 2,
        steer: false,
        unbound: None,
        hosts: None,
        queries: None,
        zone: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u32>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--netns" => args.netns = value()?,
            "--services" => args.services = number(value()?)?,
            "--tasks" => args.tasks = number(value()?)?,
            "--threads" => args.threads = number(value()?)?.max(1) as usize,
            "--steer" => {
                args.steer = match value()?.as_str() {
                    "on" => true,
                    "off" => false,
                    v => return Err(format!("--steer: {v:?} is neither on nor off")),
                }
            }
            "--write-unbound" => args.unbound = Some(value()?),
            "--write-hosts" => args.hosts = Some(value()?),
            "--write-queries" => args.queries = Some(value()?),
            "--write-zone" => args.zone = Some(value()?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.netns.is_empty() {
        return Err("--netns NAME is required".to_string());
    }
    Ok(args)
}

/// Even services are dnsrr with `tasks` tasks (answer: every task, shuffled); odd ones have
/// a VIP (answer: one address), so both paths are measured.
fn services(count: u32, tasks: u32) -> Vec<ServiceView> {
    (0..count)
        .map(|i| {
            let name = format!("svc{i}");
            let tasks = (0..tasks)
                .map(|t| {
                    let id = format!("{:012x}{:012x}", i, t);
                    TaskView {
                        name: format!("{name}.{}.{id}", t + 1),
                        id,
                        // 10.0.0.0/9 for tasks, 10.128.0.0/9 for VIPs: never overlapping.
                        addr: Ipv4Addr::from(0x0a00_0000 + i * 8 + t + 1),
                        aliases: vec![],
                        ready: true,
                    }
                })
                .collect();
            let dnsrr = i % 2 == 0;
            ServiceView {
                name,
                vip: (!dnsrr).then(|| Ipv4Addr::from(0x0a80_0000 + i + 1)),
                dnsrr,
                ttl: TTL,
                task_ttl: TTL,
                tasks,
                ..Default::default()
            }
        })
        .collect()
}

/// The A records of every name queried that exists: each service and its `tasks.` name.
fn records(services: &[ServiceView]) -> Vec<(String, Vec<Ipv4Addr>)> {
    let mut out = Vec::with_capacity(services.len() * 2);
    for s in services {
        let tasks: Vec<Ipv4Addr> = s.tasks.iter().map(|t| t.addr).collect();
        let addrs = match s.vip {
            Some(vip) => vec![vip],
            None => tasks.clone(),
        };
        out.push((format!("{}.{NETWORK}", s.name), addrs));
        out.push((format!("tasks.{}.{NETWORK}", s.name), tasks));
    }
    out
}

/// The query mix, as glibc asks: an A and an AAAA query for every lookup (no name here has
/// an IPv6 address: NODATA), of a service, of its `tasks.` name, and of a name that does not
/// exist (NXDOMAIN), in equal parts.
fn queries(services: &[ServiceView]) -> String {
    let mut out = String::new();
    for (i, s) in services.iter().enumerate() {
        for name in [
            format!("{}.{NETWORK}", s.name),
            format!("tasks.{}.{NETWORK}", s.name),
            format!("nx{i}.{NETWORK}"),
        ] {
            let _ = writeln!(out, "{name} A\n{name} AAAA");
        }
    }
    out
}

fn write_files(
    args: &Args,
    records: &[(String, Vec<Ipv4Addr>)],
    queries: &str,
) -> std::io::Result<()> {
    if let Some(path) = &args.unbound {
        let mut out = format!("local-zone: \"{NETWORK}.\" static\n");
        for (name, addrs) in records {
            for addr in addrs {
                let _ = writeln!(out, "local-data: \"{name}. {TTL} IN A {addr}\"");
            }
        }
        std::fs::write(path, out)?;
    }
    if let Some(path) = &args.hosts {
        let mut out = String::new();
        for (name, addrs) in records {
            for addr in addrs {
                let _ = writeln!(out, "{addr} {name}");
            }
        }
        std::fs::write(path, out)?;
    }
    if let Some(path) = &args.zone {
        // An authoritative zone for NSD and Knot. The NS target is outside the zone, so no
        // glue rides along in the additional section of their answers.
        let mut out = format!(
            "$ORIGIN {NETWORK}.\n$TTL {TTL}\n\
             @ IN SOA ns.invalid. hostmaster.invalid. 1 3600 600 86400 {TTL}\n\
             @ IN NS ns.invalid.\n"
        );
        for (name, addrs) in records {
            for addr in addrs {
                let _ = writeln!(out, "{name}. IN A {addr}");
            }
        }
        std::fs::write(path, out)?;
    }
    if let Some(path) = &args.queries {
        std::fs::write(path, queries)?;
    }
    Ok(())
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("dns_bench_server: {e}");
            std::process::exit(2);
        }
    };
    let services = services(args.services, args.tasks);
    if let Err(e) = write_files(&args, &records(&services), &queries(&services)) {
        eprintln!("dns_bench_server: failed to write the data files: {e}");
        std::process::exit(1);
    }
    let networks = vec![format!("id-{NETWORK}")];
    let zones: NodeZones = [(
        networks[0].clone(),
        NetworkView {
            name: NETWORK.to_string(),
            services,
        },
    )]
    .into_iter()
    .collect();
    // The servers run on the DNS threads, as in the daemon; this runtime only waits for a
    // signal.
    let dns = DnsRuntime::new(args.threads);
    let dns = if args.steer {
        dns.steered_by_cpu()
    } else {
        dns
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let names = zones.scope(&networks).name_count();
        let (_tx, rx) = watch::channel(Arc::new(zones));
        // No upstream: the benchmark asks only cluster names, and must never leave the box.
        let upstream = Upstream {
            servers: vec![],
            timeout: Duration::from_secs(1),
        };
        let server = match DnsServer::start(&dns, &args.netns, rx, networks, upstream).await {
            Ok(server) => server,
            Err(e) => {
                eprintln!("dns_bench_server: {e}");
                std::process::exit(1);
            }
        };
        println!(
            "ready: {names} names at 127.0.0.11:53 in netns {}",
            args.netns
        );
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        server.stop().await;
    });
}
