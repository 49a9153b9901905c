//! The socket loops of one sandbox's DNS server, and binding them inside its namespace.
//!
//! Thin on purpose: bytes in, [`parse_request`], [`answer()`], [`encode_reply`], bytes out.
//! Local answers are computed inline in the receive loop (a few microseconds, no allocation
//! worth a task); only forwarded queries and TCP connections get tasks of their own, bounded
//! by semaphores so that a flood cannot exhaust memory or file descriptors.

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use hickory_proto::op::Message;
use nix::sched::{CloneFlags, setns};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;

use crate::answer::{Outcome, answer, servfail};
use crate::error::DnsError;
use crate::message::{MAX_TCP_MESSAGE, Parsed, encode_reply, parse_request, udp_limit};
use crate::node::NodeZones;
use crate::upstream::Upstream;

/// Where every sandbox finds its resolver (Docker's address, so images that hard-code it work).
pub const LISTEN_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(127, 0, 0, 11)), 53);

/// Where named network namespaces live (iproute2's convention).
const NETNS_DIR: &str = "/run/netns";

/// Forwarded queries in flight per server; past this, new ones are dropped (the client
/// retries) rather than queued without bound.
const MAX_FORWARDS: usize = 256;

/// Receive loops sharing the UDP socket: more than one lets a busy server use more than one
/// runtime thread (each datagram still goes to exactly one loop).
const UDP_READERS: usize = 2;

/// The largest UDP query read whole. A query is one question and an OPT record (with padding,
/// RFC 8467, a few hundred bytes); anything longer is cut here and answered FORMERR. Kept
/// small because every sandbox has its own receive loops.
const MAX_UDP_QUERY: usize = 4096;

/// Open TCP connections per server; past this, new ones are closed at once.
const MAX_TCP_CONNECTIONS: usize = 64;

/// A TCP client that sends nothing for this long is disconnected (RFC 7766 suggests seconds).
const TCP_IDLE: Duration = Duration::from_secs(10);

/// One sandbox's DNS server. Dropping it stops it too; [`DnsServer::stop`] also waits until
/// the sockets are closed.
#[derive(Debug)]
pub struct DnsServer {
    udp_addr: SocketAddr,
    tcp_addr: SocketAddr,
    /// The UDP and TCP loops. Each owns a `JoinSet` of its children, so aborting a loop
    /// aborts everything it started.
    tasks: Vec<JoinHandle<()>>,
}

/// What every loop and child needs.
struct Shared {
    /// The node's latest zones, shared by every sandbox's server; read once per query, so
    /// updates apply to the next query.
    zones: watch::Receiver<Arc<NodeZones>>,
    /// The sandbox's network ids, in its order: what it may resolve, and which network wins
    /// an unqualified name that several define.
    networks: Box<[String]>,
    upstream: Upstream,
    forwards: Arc<Semaphore>,
    connections: Arc<Semaphore>,
}

impl DnsServer {
    /// Binds UDP and TCP 127.0.0.11:53 inside the named network namespace `netns` (a file
    /// under /run/netns) and answers from the zones of `networks` (ids, in the sandbox's
    /// order) in the node's `zones`, forwarding other names to `upstream`. Must be called
    /// within a tokio runtime.
    pub async fn start(
        netns: &str,
        zones: watch::Receiver<Arc<NodeZones>>,
        networks: Vec<String>,
        upstream: Upstream,
    ) -> Result<DnsServer, DnsError> {
        let (udp, tcp) = bind_in_netns(netns, LISTEN_ADDR).await?;
        DnsServer::from_std(udp, tcp, zones, networks, upstream)
    }

    /// Binds UDP and TCP on `addr` in the caller's own namespace (port 0 picks one for each).
    /// For tests and benchmarks; sandboxes use [`DnsServer::start`].
    pub async fn bind(
        addr: SocketAddr,
        zones: watch::Receiver<Arc<NodeZones>>,
        networks: Vec<String>,
        upstream: Upstream,
    ) -> Result<DnsServer, DnsError> {
        let (udp, tcp) = bind_std(addr, "(current)")?;
        DnsServer::from_std(udp, tcp, zones, networks, upstream)
    }

    /// Serves on sockets bound elsewhere (in another namespace, or handed over by a parent).
    /// They are set non-blocking here. Must be called within a tokio runtime.
    pub fn from_std(
        udp: std::net::UdpSocket,
        tcp: std::net::TcpListener,
        zones: watch::Receiver<Arc<NodeZones>>,
        networks: Vec<String>,
        upstream: Upstream,
    ) -> Result<DnsServer, DnsError> {
        let bind_error = |proto, addr, source| DnsError::Bind {
            proto,
            addr,
            netns: "(given socket)".to_string(),
            source,
        };
        let udp_addr = udp
            .local_addr()
            .map_err(|e| bind_error("udp", LISTEN_ADDR, e))?;
        let tcp_addr = tcp
            .local_addr()
            .map_err(|e| bind_error("tcp", LISTEN_ADDR, e))?;
        udp.set_nonblocking(true)
            .map_err(|e| bind_error("udp", udp_addr, e))?;
        tcp.set_nonblocking(true)
            .map_err(|e| bind_error("tcp", tcp_addr, e))?;
        let udp = UdpSocket::from_std(udp).map_err(|e| bind_error("udp", udp_addr, e))?;
        let tcp = TcpListener::from_std(tcp).map_err(|e| bind_error("tcp", tcp_addr, e))?;

        let shared = Arc::new(Shared {
            zones,
            networks: networks.into_boxed_slice(),
            upstream,
            forwards: Arc::new(Semaphore::new(MAX_FORWARDS)),
            connections: Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS)),
        });
        let udp = Arc::new(udp);
        let mut tasks: Vec<JoinHandle<()>> = (0..UDP_READERS)
            .map(|_| tokio::spawn(serve_udp(udp.clone(), shared.clone())))
            .collect();
        tasks.push(tokio::spawn(serve_tcp(tcp, shared)));
        Ok(DnsServer {
            udp_addr,
            tcp_addr,
            tasks,
        })
    }

    /// The UDP address served.
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    /// The TCP address served.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    /// Stops serving and waits until both listening sockets are closed, so the address can
    /// be bound again right away.
    pub async fn stop(mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            // Cancelled is the expected result; a panic has already been reported by tokio.
            let _ = task.await;
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Opens /run/netns/NAME here, then enters it on a dedicated thread that binds the sockets
/// and ends: no runtime thread ever changes namespace, and the sockets keep the namespace
/// they were created in.
async fn bind_in_netns(
    netns: &str,
    addr: SocketAddr,
) -> Result<(std::net::UdpSocket, std::net::TcpListener), DnsError> {
    let valid = !netns.is_empty()
        && netns != "."
        && netns != ".."
        && netns
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !valid {
        return Err(DnsError::InvalidNetns(netns.to_string()));
    }
    let file =
        File::open(Path::new(NETNS_DIR).join(netns)).map_err(|source| DnsError::OpenNetns {
            netns: netns.to_string(),
            source,
        })?;
    let (tx, rx) = oneshot::channel();
    let name = netns.to_string();
    std::thread::Builder::new()
        .name("shoal-dns-netns".to_string())
        .spawn(move || {
            let result = setns(&file, CloneFlags::CLONE_NEWNET)
                .map_err(|source| DnsError::EnterNetns {
                    netns: name.clone(),
                    source,
                })
                .and_then(|()| bind_std(addr, &name));
            // The receiver is gone only if the caller was cancelled; the sockets then close.
            let _ = tx.send(result);
        })
        .map_err(|_| DnsError::NetnsThread(netns.to_string()))?;
    rx.await
        .map_err(|_| DnsError::NetnsThread(netns.to_string()))?
}

fn bind_std(
    addr: SocketAddr,
    netns: &str,
) -> Result<(std::net::UdpSocket, std::net::TcpListener), DnsError> {
    let error = |proto, addr, source| DnsError::Bind {
        proto,
        addr,
        netns: netns.to_string(),
        source,
    };
    let udp = std::net::UdpSocket::bind(addr).map_err(|e| error("udp", addr, e))?;
    let tcp = std::net::TcpListener::bind(addr).map_err(|e| error("tcp", addr, e))?;
    Ok((udp, tcp))
}

/// What a parsed request leads to, before transport: bytes to send now, or a forward.
enum Step {
    Send(Vec<u8>),
    Forward(Message),
    Nothing,
}

fn step(shared: &Shared, packet: &[u8], limit: impl Fn(&Message) -> usize) -> Step {
    match parse_request(packet) {
        Parsed::Drop => Step::Nothing,
        Parsed::Reply(bytes) => Step::Send(bytes),
        Parsed::Request(request) => {
            // Clone the Arc and let go of the lock at once: an update must not wait on us.
            let zones = shared.zones.borrow().clone();
            match answer(zones.scope(&shared.networks), &request, &mut rand::rng()) {
                Outcome::Reply(reply) => match encode_reply(&reply, limit(&request)) {
                    Some(bytes) => Step::Send(bytes),
                    None => Step::Nothing,
                },
                Outcome::Forward => Step::Forward(request),
                Outcome::Ignore => Step::Nothing,
            }
        }
    }
}

async fn serve_udp(socket: Arc<UdpSocket>, shared: Arc<Shared>) {
    let mut buf = vec![0u8; MAX_UDP_QUERY];
    let mut forwards = JoinSet::new();
    loop {
        // Reap finished forwards so the set stays the size of what is in flight.
        while forwards.try_join_next().is_some() {}
        let (len, peer) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(error) => {
                // Errors here are per-datagram (e.g. a queued ICMP error): keep serving, but
                // pause a moment so that an error that does not go away cannot spin a core.
                tracing::debug!(%error, "dns: udp receive failed");
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
        };
        let packet = &buf[..len];
        match step(&shared, packet, udp_limit) {
            Step::Nothing => {}
            Step::Send(bytes) => {
                if let Err(error) = socket.send_to(&bytes, peer).await {
                    tracing::debug!(%error, %peer, "dns: udp send failed");
                }
            }
            Step::Forward(request) => {
                let Ok(permit) = shared.forwards.clone().try_acquire_owned() else {
                    tracing::debug!(%peer, "dns: too many forwarded queries in flight; dropped one");
                    continue;
                };
                let query = packet.to_vec();
                let shared = shared.clone();
                // Weak: once the loop is gone, the socket closes even while forwards finish.
                let socket = Arc::downgrade(&socket);
                forwards.spawn(async move {
                    let _permit = permit;
                    let reply = match shared.upstream.forward_udp(&query).await {
                        Some(reply) => Some(reply),
                        None => encode_reply(&servfail(&request), udp_limit(&request)),
                    };
                    if let Some(reply) = reply {
                        send_weak(&socket, &reply, peer);
                    }
                });
            }
        }
    }
}

/// Sends without holding the socket across an await (see the caller).
fn send_weak(socket: &Weak<UdpSocket>, bytes: &[u8], peer: SocketAddr) {
    if let Some(socket) = socket.upgrade()
        && let Err(error) = socket.try_send_to(bytes, peer)
    {
        tracing::debug!(%error, %peer, "dns: udp send of a forwarded reply failed");
    }
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Typically EMFILE: back off a little instead of spinning on it.
                tracing::warn!(%error, "dns: tcp accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = shared.connections.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "dns: too many tcp connections; closed one");
            continue;
        };
        let shared = shared.clone();
        connections.spawn(async move {
            let _permit = permit;
            if let Err(error) = serve_connection(stream, &shared).await {
                tracing::debug!(%error, %peer, "dns: tcp connection ended");
            }
        });
    }
}

/// Serves length-prefixed queries on one connection, one after the other, until the client
/// closes, idles for [`TCP_IDLE`], or sends something that is not DNS.
async fn serve_connection(mut stream: TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut packet = Vec::new();
    loop {
        let len = match timeout(TCP_IDLE, stream.read_u16()).await {
            Err(_) => return Ok(()),
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(result) => usize::from(result?),
        };
        packet.resize(len, 0);
        timeout(TCP_IDLE, stream.read_exact(&mut packet))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client stalled mid-message"))??;
        let reply = match step(shared, &packet, |_| MAX_TCP_MESSAGE) {
            Step::Nothing => return Ok(()),
            Step::Send(bytes) => bytes,
            Step::Forward(request) => match shared.upstream.forward_tcp(&packet).await {
                Some(reply) => reply,
                None => match encode_reply(&servfail(&request), MAX_TCP_MESSAGE) {
                    Some(bytes) => bytes,
                    None => return Ok(()),
                },
            },
        };
        let Ok(len) = u16::try_from(reply.len()) else {
            return Ok(());
        };
        let mut out = Vec::with_capacity(reply.len() + 2);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&reply);
        timeout(TCP_IDLE, stream.write_all(&out))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client stopped reading"))??;
    }
}
