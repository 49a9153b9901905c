//! A sequential new-connection benchmark client (run it with `bench/mesh/run.sh`): for each
//! target, connect + one HTTP GET + close, timed, with the targets interleaved in blocks so
//! that drift in the machine's load hits them all alike. The first target is the baseline
//! the others are compared with.
//!
//! Usage: `conn_bench LABEL=IP:PORT[,IP:PORT...] [LABEL=...]`
//!
//! A target with several addresses takes them in turn, one connection each: two plain
//! servers taken round robin by the client are what a published port's two tasks are to the
//! mesh, so that baseline has the same wake-ups of alternating servers.
//!
//! Knobs (environment): `CONNS=5000` (connections per target), `BLOCK=100` (connections per
//! target per round), `MAX_SECS=20` (the run stops once any target has spent this long in
//! its connections, so every target gets the same number), `WARMUP=50` (untimed connections
//! per target first), `READY_SECS=15` (how long to wait for each target to answer at all).
//!
//! Each connection: `connect`, `GET / HTTP/1.1` (keep-alive, so that the client closes first
//! and the TIME_WAIT entries stay on the client, where each connection has its own port),
//! read the headers and `Content-Length` bytes of body, close. The time covers all of it.
//! The body of `shoal demo vote` names the task that answered and the client address it
//! saw; both are tallied per target, to show what each path does to the connection.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const IO_TIMEOUT: Duration = Duration::from_secs(2);

fn num(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}")),
        Err(_) => default,
    }
}

struct Target {
    label: String,
    addrs: Vec<SocketAddr>,
    /// The index into `addrs` of the next connection.
    next: usize,
    samples: Vec<Duration>,
    failures: u64,
    first_error: Option<String>,
    /// Who answered (`Processed by container ID ...`) and how often.
    served_by: BTreeMap<String, u64>,
    /// The client address the server saw, and how often.
    seen_as: BTreeMap<String, u64>,
}

/// What one connection's response said.
struct Answer {
    served_by: String,
    seen_as: String,
}

/// The text after `marker` up to the next `<`.
fn field(body: &str, marker: &str) -> String {
    body.split_once(marker)
        .and_then(|(_, rest)| rest.split('<').next())
        .unwrap_or("?")
        .to_string()
}

/// One connect + GET + full response + close.
fn one_connection(to: SocketAddr) -> Result<Answer, String> {
    let mut conn =
        TcpStream::connect_timeout(&to, IO_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    conn.set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| format!("set timeout: {e}"))?;
    let request = format!("GET / HTTP/1.1\r\nHost: {to}\r\nUser-Agent: conn_bench\r\n\r\n");
    conn.write_all(request.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let mut body_at = None;
    let mut length = None;
    loop {
        if let (Some(at), Some(len)) = (body_at, length)
            && buf.len() >= at + len
        {
            break;
        }
        let n = conn.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!(
                "closed after {} bytes, before the end of the response",
                buf.len()
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if body_at.is_none()
            && let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n")
        {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            if !head.starts_with("http/1.1 200") {
                return Err(format!(
                    "status: {}",
                    head.lines().next().unwrap_or_default()
                ));
            }
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or("no Content-Length in the response")?;
            body_at = Some(end + 4);
            length = Some(len);
        }
    }
    drop(conn);
    let body = String::from_utf8_lossy(&buf[body_at.unwrap_or(0)..]);
    Ok(Answer {
        served_by: field(&body, "Processed by container ID "),
        seen_as: field(&body, "Client address "),
    })
}

impl Target {
    /// One timed connection, recorded.
    fn measure(&mut self) {
        let addr = self.addrs[self.next];
        self.next = (self.next + 1) % self.addrs.len();
        let started = Instant::now();
        match one_connection(addr) {
            Ok(answer) => {
                self.samples.push(started.elapsed());
                *self.served_by.entry(answer.served_by).or_default() += 1;
                *self.seen_as.entry(answer.seen_as).or_default() += 1;
            }
            Err(e) => {
                self.failures += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }

    fn spent(&self) -> Duration {
        self.samples.iter().sum()
    }
}

struct Summary {
    rate: f64,
    p50: f64,
    p99: f64,
}

/// Rate of one sequential client, p50 and p99 in µs.
fn summarize(samples: &[Duration]) -> Summary {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e6;
    Summary {
        rate: sorted.len() as f64 / sorted.iter().sum::<Duration>().as_secs_f64(),
        p50: at(0.5),
        p99: at(0.99),
    }
}

fn tally(map: &BTreeMap<String, u64>) -> String {
    map.iter()
        .map(|(k, n)| format!("{k} ×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn main() {
    let conns = num("CONNS", 5000) as usize;
    let block = num("BLOCK", 100).max(1) as usize;
    let max_spent = Duration::from_secs(num("MAX_SECS", 20));
    let warmup = num("WARMUP", 50);
    let ready = Duration::from_secs(num("READY_SECS", 15));

    let mut targets: Vec<Target> = std::env::args()
        .skip(1)
        .map(|arg| {
            let (label, addr) = arg
                .rsplit_once('=')
                .unwrap_or_else(|| panic!("expected LABEL=IP:PORT, got {arg:?}"));
            Target {
                label: label.to_string(),
                addrs: addr
                    .split(',')
                    .map(|a| a.parse().unwrap_or_else(|_| panic!("{a:?} is not IP:PORT")))
                    .collect(),
                next: 0,
                samples: Vec::with_capacity(conns),
                failures: 0,
                first_error: None,
                served_by: BTreeMap::new(),
                seen_as: BTreeMap::new(),
            }
        })
        .collect();
    if targets.is_empty() {
        eprintln!("usage: conn_bench LABEL=IP:PORT[,IP:PORT...] [LABEL=...]");
        std::process::exit(2);
    }

    // Every target must answer before anything is timed.
    for (t, &addr) in targets
        .iter()
        .flat_map(|t| t.addrs.iter().map(move |a| (t, a)))
    {
        let deadline = Instant::now() + ready;
        loop {
            match one_connection(addr) {
                Ok(_) => break,
                Err(e) if Instant::now() >= deadline => {
                    eprintln!("conn_bench: {} ({addr}) does not answer: {e}", t.label);
                    std::process::exit(1);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
    // Warm up caches, ARP and neighbour entries on every path.
    for _ in 0..warmup {
        for t in &targets {
            for &addr in &t.addrs {
                let _ = one_connection(addr);
            }
        }
    }

    let started = Instant::now();
    'rounds: while targets.iter().all(|t| t.samples.len() < conns) {
        for t in targets.iter_mut() {
            for _ in 0..block.min(conns - t.samples.len()) {
                t.measure();
            }
        }
        for t in &targets {
            if t.spent() >= max_spent {
                println!(
                    "stopped at {} connections per path: {} spent {:.1}s (MAX_SECS={})",
                    t.samples.len(),
                    t.label,
                    t.spent().as_secs_f64(),
                    max_spent.as_secs()
                );
                break 'rounds;
            }
        }
        if targets
            .iter()
            .any(|t| t.failures > 0 && t.failures * 10 > conns as u64)
        {
            break;
        }
    }
    let wall = started.elapsed();

    let width = targets.iter().map(|t| t.label.len()).max().unwrap_or(0);
    println!(
        "{} connections per path in blocks of {block}, one sequential client, {:.1}s in all",
        targets[0].samples.len(),
        wall.as_secs_f64()
    );
    let base = (!targets[0].samples.is_empty()).then(|| summarize(&targets[0].samples));
    let mut failed = false;
    for (i, t) in targets.iter().enumerate() {
        if t.samples.is_empty() {
            println!("{:<width$}  no successful connection", t.label);
            failed = true;
            continue;
        }
        let s = summarize(&t.samples);
        let mut line = format!("{:<width$}  {:>6.0} conn/s", t.label, s.rate);
        if let (Some(b), true) = (&base, i > 0) {
            line += &format!(" ({:.2}x)", s.rate / b.rate);
        } else {
            line += "        ";
        }
        line += &format!("  p50 {:>6.1} µs", s.p50);
        if let (Some(b), true) = (&base, i > 0) {
            line += &format!(" ({:+6.1} µs, {:.2}x)", s.p50 - b.p50, s.p50 / b.p50);
        }
        line += &format!("  p99 {:>6.1} µs", s.p99);
        if let (Some(b), true) = (&base, i > 0) {
            line += &format!(" ({:+6.1} µs, {:.2}x)", s.p99 - b.p99, s.p99 / b.p99);
        }
        println!("{line}");
    }
    println!();
    for t in &targets {
        println!("{:<width$}  answered by: {}", t.label, tally(&t.served_by));
        println!("{:<width$}  server saw:  {}", "", tally(&t.seen_as));
        if t.failures > 0 {
            failed = true;
            println!(
                "{:<width$}  FAILED connections: {} (first: {})",
                "",
                t.failures,
                t.first_error.as_deref().unwrap_or("?")
            );
        }
    }
    if failed {
        std::process::exit(1);
    }
}
