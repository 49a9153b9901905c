//! A load client for the lab tests under load (issue 11): sequential requests on several
//! paths at once, each request recorded with its wall-clock start and end, the task that
//! answered (`shoal demo vote` names it) and, if it failed, the error's text. The test then
//! checks from the timestamps that the load ran through every event and counts the failures
//! inside each event.
//!
//! Each group of paths runs on a thread of its own that enters a network namespace (a task's,
//! or a lab node's) and runs a current-thread tokio runtime there: the sockets it makes live
//! in that namespace, as a client process there would. Names are resolved with a DNS query to
//! the namespace's 127.0.0.11 (a task's embedded resolver), with no cache.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// A request that takes longer than this fails ("timed out").
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// Seconds since the epoch, as a float: the clock every record and event uses.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[derive(Clone, Debug)]
pub enum Dest {
    /// A fixed address (a VIP, a node's published port).
    Addr(SocketAddrV4),
    /// A name asked of 127.0.0.11 before every request, or before every connection of a
    /// keep-alive path; one of the addresses is taken at random (dnsrr).
    Name(String, u16),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    /// `GET / HTTP/1.0` on a new connection per request, read to the end.
    TcpNew,
    /// HTTP/1.1 requests on one connection, kept while the server keeps it. When the server
    /// closes it between requests (its FIN is there before the next request, or EOF comes
    /// before any byte of an answer: what an HTTP server does to idle connections when it
    /// shuts down), the client opens a new one and sends the request again, as HTTP clients
    /// do; a reset or a timeout is a failure.
    TcpKeepAlive,
    /// HTTP/1.1 on one connection and no other: the path ends when the server closes it.
    TcpOneConnection,
    /// One datagram from a new socket per request, and its answer.
    UdpNew,
    /// Every datagram from one socket (one source port), sent to the destination each time
    /// (`sendto`): one UDP flow for the whole run, as conntrack (and Swarm's IPVS) sees one.
    UdpFlow,
    /// Every datagram from one socket `connect()`ed to the destination once (`send`). When
    /// the socket fails (the eBPF balancer aborts it once its task left: ECONNABORTED), the
    /// request fails with the socket's error and the next one connects a new socket, as an
    /// application does; a timeout is a lost datagram.
    UdpConnected,
    /// A DNS query for the name (A records) to 127.0.0.11; `by` is the addresses answered,
    /// sorted, joined by spaces. Fails only when no answer comes.
    Lookup,
}

#[derive(Clone, Debug)]
pub struct Path {
    pub name: String,
    pub kind: Kind,
    pub dest: Dest,
}

impl Path {
    pub fn new(name: &str, kind: Kind, dest: Dest) -> Path {
        Path {
            name: name.to_string(),
            kind,
            dest,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Request {
    pub start: f64,
    pub end: f64,
    /// The container id in the answer.
    pub by: Option<String>,
    pub error: Option<String>,
}

/// How a connection of a keep-alive path ended.
#[derive(Clone, Debug)]
pub struct Close {
    pub at: f64,
    /// The task that had answered on it.
    pub by: Option<String>,
    /// Requests answered on it.
    pub answered: usize,
}

#[derive(Debug, Default)]
pub struct PathRun {
    pub name: String,
    pub requests: Vec<Request>,
    /// Connections the server closed (keep-alive paths).
    pub closes: Vec<Close>,
}

impl PathRun {
    pub fn failures(&self, from: f64, to: f64) -> Vec<&Request> {
        self.requests
            .iter()
            .filter(|r| r.error.is_some() && r.start >= from && r.start <= to)
            .collect()
    }

    pub fn sent(&self, from: f64, to: f64) -> usize {
        self.requests
            .iter()
            .filter(|r| r.start >= from && r.start <= to)
            .count()
    }

    /// Why the load did not cover [from, to], if it did not: no request started before
    /// `from`, none ended after `to`, or more than `gap` seconds between one request's end and
    /// the next one's start.
    pub fn uncovered(&self, from: f64, to: f64, gap: f64) -> Option<String> {
        let first = self.requests.first()?;
        let last = self.requests.last()?;
        if first.start > from {
            return Some(format!(
                "{}: first request at {:.3}, after the event started ({from:.3})",
                self.name, first.start
            ));
        }
        if last.end < to {
            return Some(format!(
                "{}: last request ended at {:.3}, before the event ended ({to:.3})",
                self.name, last.end
            ));
        }
        self.requests
            .windows(2)
            .find(|w| w[1].end >= from && w[0].start <= to && w[1].start - w[0].end > gap)
            .map(|w| {
                format!(
                    "{}: no request between {:.3} and {:.3} (the event ran {from:.3}-{to:.3})",
                    self.name, w[0].end, w[1].start
                )
            })
    }
}

/// The paths of every group, once the load stopped.
pub struct Report {
    pub paths: Vec<PathRun>,
}

impl Report {
    pub fn sent(&self, from: f64, to: f64) -> usize {
        self.paths.iter().map(|p| p.sent(from, to)).sum()
    }

    /// Every failure started within [from, to], one line each: path, time, error.
    pub fn failures(&self, from: f64, to: f64) -> Vec<String> {
        self.paths
            .iter()
            .flat_map(|p| {
                p.failures(from, to).into_iter().map(move |r| {
                    format!(
                        "{} at {:.3} (+{:.3}s): {}",
                        p.name,
                        r.start,
                        r.end - r.start,
                        r.error.as_deref().unwrap_or("")
                    )
                })
            })
            .collect()
    }

    /// Panics unless every path ran through [from, to] (see `PathRun::uncovered`).
    pub fn assert_covered(&self, event: &str, from: f64, to: f64) {
        let gaps: Vec<String> = self
            .paths
            .iter()
            .filter_map(|p| p.uncovered(from, to, 1.0))
            .collect();
        assert!(
            gaps.is_empty(),
            "the load did not cover {event}:\n{}",
            gaps.join("\n")
        );
    }

    /// Requests per path within [from, to], for the messages.
    pub fn summary(&self, from: f64, to: f64) -> String {
        self.paths
            .iter()
            .map(|p| {
                format!(
                    "{} {}/{}",
                    p.name,
                    p.failures(from, to).len(),
                    p.sent(from, to)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn path(&self, name: &str) -> &PathRun {
        self.paths
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no path {name}"))
    }
}

/// Load running on its threads until `stop`.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Vec<PathRun>>>,
}

impl Load {
    /// Starts each group (a network namespace file, e.g. `/proc/PID/ns/net` or
    /// `/run/netns/NAME`, and its paths). Each path sends a request, waits `pace`, sends the
    /// next; it stops at `stop`, after `most` (the bound in time) or after `max` requests.
    pub fn start(
        groups: Vec<(String, Vec<Path>)>,
        pace: Duration,
        most: Duration,
        max: usize,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = groups
            .into_iter()
            .map(|(netns, paths)| {
                let ns = std::fs::File::open(&netns)
                    .unwrap_or_else(|e| panic!("open network namespace {netns}: {e}"));
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    // This thread only: the sockets keep the namespace they were made in.
                    nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                        .expect("setns (are we root?)");
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a tokio runtime");
                    rt.block_on(async move {
                        let end = Instant::now() + most;
                        let runs: Vec<_> = paths
                            .into_iter()
                            .map(|p| tokio::spawn(run_path(p, Arc::clone(&stop), pace, end, max)))
                            .collect();
                        let mut out = Vec::new();
                        for r in runs {
                            out.push(r.await.expect("a load path panicked"));
                        }
                        out
                    })
                })
            })
            .collect();
        Load { stop, threads }
    }

    pub fn stop(mut self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        let mut paths = Vec::new();
        for t in std::mem::take(&mut self.threads) {
            paths.extend(t.join().expect("a load thread panicked"));
        }
        Report { paths }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        // A test that fails while the load runs: let the threads end on their own.
        self.stop.store(true, Ordering::Relaxed);
    }
}

async fn run_path(
    path: Path,
    stop: Arc<AtomicBool>,
    pace: Duration,
    end: Instant,
    max: usize,
) -> PathRun {
    let mut run = PathRun {
        name: path.name.clone(),
        ..PathRun::default()
    };
    let mut conn: Option<Conn> = None;
    let mut flow: Option<UdpSocket> = None;
    while !stop.load(Ordering::Relaxed) && Instant::now() < end && run.requests.len() < max {
        let start = now();
        let result =
            tokio::time::timeout(TIMEOUT, one(&path, &mut conn, &mut flow, &mut run.closes))
                .await
                .unwrap_or_else(|_| {
                    // A connection that timed out is not used again.
                    conn = None;
                    Err(format!("timed out after {TIMEOUT:?}"))
                });
        let (by, error) = match result {
            Ok(by) => (Some(by), None),
            Err(e) if e == ONE_CONNECTION_CLOSED => break,
            Err(e) => {
                conn = None;
                (None, Some(e))
            }
        };
        let failed = error.is_some();
        run.requests.push(Request {
            start,
            end: now(),
            by,
            error,
        });
        if failed && path.kind == Kind::TcpOneConnection {
            break;
        }
        tokio::time::sleep(pace).await;
    }
    run
}

const ONE_CONNECTION_CLOSED: &str = "the connection was closed";

/// A keep-alive connection and what it has carried.
struct Conn {
    stream: TcpStream,
    by: Option<String>,
    answered: usize,
}

/// One request on `path`; the container id that answered, or what went wrong.
async fn one(
    path: &Path,
    conn: &mut Option<Conn>,
    flow: &mut Option<UdpSocket>,
    closes: &mut Vec<Close>,
) -> Result<String, String> {
    match path.kind {
        Kind::TcpNew => {
            let addr = resolve(&path.dest).await?;
            let mut s = TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connect to {addr}: {e}"))?;
            s.write_all(b"GET / HTTP/1.0\r\nHost: load\r\n\r\n")
                .await
                .map_err(|e| format!("send to {addr}: {e}"))?;
            let mut reply = Vec::new();
            s.read_to_end(&mut reply)
                .await
                .map_err(|e| format!("read from {addr}: {e}"))?;
            answer(&reply)
        }
        Kind::TcpKeepAlive | Kind::TcpOneConnection => {
            let one_only = path.kind == Kind::TcpOneConnection;
            if conn.is_none() {
                if one_only && !closes.is_empty() {
                    return Err(ONE_CONNECTION_CLOSED.into());
                }
                *conn = Some(connect(&path.dest).await?);
            }
            let c = conn.as_mut().unwrap();
            // As HTTP clients do with an idle connection (hyper polls them): one the server has
            // closed (its FIN is here) is not used again, whatever came after the FIN.
            let mut probe = [0u8; 1];
            let closed = match c.stream.try_read(&mut probe) {
                Ok(0) => true,
                Ok(_) => return Err("data from the server between answers".into()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
                Err(e) => return Err(format!("the idle connection failed: {e}")),
            };
            let answer = if closed {
                Ok(None)
            } else {
                http11(&mut c.stream).await
            };
            match answer {
                Ok(Some((by, keep))) => {
                    c.by.get_or_insert(by.clone());
                    c.answered += 1;
                    if !keep {
                        record_close(conn, closes);
                    }
                    Ok(by)
                }
                // The server closed the connection before this request: a new one, once.
                Ok(None) => {
                    record_close(conn, closes);
                    if one_only {
                        return Err(ONE_CONNECTION_CLOSED.into());
                    }
                    let mut fresh = connect(&path.dest).await?;
                    match http11(&mut fresh.stream).await? {
                        Some((by, keep)) => {
                            fresh.by = Some(by.clone());
                            fresh.answered = 1;
                            *conn = Some(fresh);
                            if !keep {
                                record_close(conn, closes);
                            }
                            Ok(by)
                        }
                        None => Err("a new connection was closed before any answer".into()),
                    }
                }
                Err(e) => Err(format!("{e} (keep-alive connection to {:?})", c.by)),
            }
        }
        Kind::UdpNew => {
            let addr = resolve(&path.dest).await?;
            let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
                .await
                .map_err(|e| format!("bind a UDP socket: {e}"))?;
            s.send_to(b"load", addr)
                .await
                .map_err(|e| format!("send to {addr}: {e}"))?;
            let mut buf = [0u8; 2048];
            let n = s
                .recv(&mut buf)
                .await
                .map_err(|e| format!("receive from {addr}: {e}"))?;
            answer(&buf[..n])
        }
        Kind::Lookup => {
            let Dest::Name(name, _) = &path.dest else {
                return Err("a lookup needs a name".into());
            };
            let mut addrs = lookup(name).await?;
            addrs.sort();
            Ok(addrs
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(" "))
        }
        Kind::UdpFlow | Kind::UdpConnected => {
            let addr = resolve(&path.dest).await?;
            if flow.is_none() {
                let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
                    .await
                    .map_err(|e| format!("bind a UDP socket: {e}"))?;
                if path.kind == Kind::UdpConnected {
                    s.connect(addr)
                        .await
                        .map_err(|e| format!("connect the UDP socket to {addr}: {e}"))?;
                }
                *flow = Some(s);
            }
            let s = flow.as_ref().unwrap();
            let sent = if path.kind == Kind::UdpConnected {
                s.send(b"load").await
            } else {
                s.send_to(b"load", addr).await
            };
            let mut buf = [0u8; 2048];
            let received = match sent {
                Ok(_) => s.recv(&mut buf).await,
                Err(e) => Err(e),
            };
            match received {
                Ok(n) => answer(&buf[..n]),
                Err(e) if path.kind == Kind::UdpConnected => {
                    // An aborted socket is no longer connected, so a send says "destination
                    // address required"; its pending error (SO_ERROR) says why.
                    let why = s.take_error().ok().flatten().unwrap_or(e);
                    *flow = None;
                    Err(format!("the UDP socket connected to {addr} failed: {why}"))
                }
                Err(e) => Err(format!("send or receive on the UDP flow to {addr}: {e}")),
            }
        }
    }
}

fn record_close(conn: &mut Option<Conn>, closes: &mut Vec<Close>) {
    if let Some(c) = conn.take() {
        closes.push(Close {
            at: now(),
            by: c.by,
            answered: c.answered,
        });
    }
}

async fn connect(dest: &Dest) -> Result<Conn, String> {
    let addr = resolve(dest).await?;
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    Ok(Conn {
        stream,
        by: None,
        answered: 0,
    })
}

/// One HTTP/1.1 request on a kept connection: the container id and whether the server keeps
/// the connection, or None if the server had closed it (EOF before any byte of an answer).
async fn http11(s: &mut TcpStream) -> Result<Option<(String, bool)>, String> {
    s.write_all(b"GET / HTTP/1.1\r\nHost: load\r\n\r\n")
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            return Err(format!(
                "closed in the middle of an answer: {:?}",
                String::from_utf8_lossy(&buf)
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("an answer without a length: {head:?}"))?;
    let keep = !head.contains("\r\nconnection: close");
    while buf.len() < head_end + length {
        let n = s.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed in the middle of an answer's body".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    answer(&buf).map(|by| Some((by, keep)))
}

/// The container id in a `shoal demo vote` answer (a 200 page or a datagram).
fn answer(reply: &[u8]) -> Result<String, String> {
    let text = String::from_utf8_lossy(reply);
    if text.starts_with("HTTP/")
        && !text.starts_with("HTTP/1.1 200")
        && !text.starts_with("HTTP/1.0 200")
    {
        return Err(format!(
            "not a 200: {:?}",
            text.lines().next().unwrap_or("")
        ));
    }
    text.split("Processed by container ID ")
        .nth(1)
        .map(|r| r.chars().take_while(|c| c.is_ascii_hexdigit()).collect())
        .ok_or_else(|| {
            format!(
                "an answer without a container id: {:?}",
                &text[..text.len().min(80)]
            )
        })
}

async fn resolve(dest: &Dest) -> Result<SocketAddr, String> {
    match dest {
        Dest::Addr(a) => Ok(SocketAddr::V4(*a)),
        Dest::Name(name, port) => {
            let addrs = lookup(name).await?;
            if addrs.is_empty() {
                return Err(format!("{name} has no address"));
            }
            let pick = addrs[rand_index(addrs.len())];
            Ok(SocketAddr::from((pick, *port)))
        }
    }
}

fn rand_index(n: usize) -> usize {
    (SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as usize
        / 1000)
        % n
}

/// The A records the namespace's 127.0.0.11 answers for `name` (NXDOMAIN or NODATA: none).
pub async fn lookup(name: &str) -> Result<Vec<Ipv4Addr>, String> {
    let mut q = Message::query();
    q.metadata.id = rand_index(65536) as u16;
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(
        Name::from_ascii(name).map_err(|e| format!("bad name {name}: {e}"))?,
        RecordType::A,
    ));
    let bytes = q.to_vec().map_err(|e| format!("encode a query: {e}"))?;
    let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .map_err(|e| format!("bind a DNS socket: {e}"))?;
    s.send_to(&bytes, (Ipv4Addr::new(127, 0, 0, 11), 53))
        .await
        .map_err(|e| format!("resolve {name}: send to 127.0.0.11: {e}"))?;
    let mut buf = [0u8; 4096];
    let n = s
        .recv(&mut buf)
        .await
        .map_err(|e| format!("resolve {name}: {e}"))?;
    let reply = Message::from_vec(&buf[..n]).map_err(|e| format!("resolve {name}: {e}"))?;
    Ok(reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect())
}

/// `lookup` from a thread inside the namespace `netns` (a file), blocking.
pub fn lookup_in(netns: &str, name: &str) -> Result<Vec<Ipv4Addr>, String> {
    let ns = std::fs::File::open(netns).map_err(|e| format!("open {netns}: {e}"))?;
    let name = name.to_string();
    std::thread::spawn(move || {
        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("setns: {e}"))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async { tokio::time::timeout(TIMEOUT, lookup(&name)).await })
            .map_err(|_| format!("resolve {name}: timed out"))?
    })
    .join()
    .expect("lookup thread")
}
