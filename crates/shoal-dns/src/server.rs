//! A sandbox's DNS server: its sockets, bound inside its namespace and served on the node's
//! DNS threads ([`DnsRuntime`]), and the TCP side.
//!
//! Thin on purpose: bytes in, [`parse_request`], [`answer()`], [`encode_reply_into`], bytes
//! out. Local answers are computed inline in the receive loop (a few microseconds); only
//! forwarded queries and TCP connections get tasks of their own, bounded by semaphores so
//! that a flood cannot exhaust memory or file descriptors. The UDP side is in `udp`.

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::Message;
use nix::sched::{CloneFlags, setns};
use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, SockaddrStorage, bind, setsockopt, socket, sockopt,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;

use crate::answer::{Outcome, answer, servfail};
use crate::error::DnsError;
use crate::message::{MAX_TCP_MESSAGE, Parsed, encode_reply_into, parse_request, udp_limit};
use crate::node::NodeZones;
use crate::runtime::DnsRuntime;
use crate::udp::{self, serve_udp};
use crate::upstream::Upstream;
use crate::wire::{self, Scratch, Transport};

/// Where every sandbox finds its resolver (Docker's address, so images that hard-code it work).
pub const LISTEN_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(127, 0, 0, 11)), 53);

/// Where named network namespaces live (iproute2's convention).
const NETNS_DIR: &str = "/run/netns";

/// Forwarded queries in flight per server; past this, new ones are dropped (the client
/// retries) rather than queued without bound.
const MAX_FORWARDS: usize = 256;

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
    /// The UDP loops (one per DNS thread) and the TCP loop. Each owns a `JoinSet` of its
    /// children, so aborting a loop aborts everything it started.
    tasks: Vec<JoinHandle<()>>,
}

/// What every loop and child needs.
pub(crate) struct Shared {
    /// The node's latest zones, shared by every sandbox's server; read once per batch of
    /// queries, so updates apply to the next one.
    pub(crate) zones: watch::Receiver<Arc<NodeZones>>,
    /// The sandbox's network ids, in its order: what it may resolve, and which network wins
    /// an unqualified name that several define.
    networks: Box<[String]>,
    pub(crate) upstream: Upstream,
    pub(crate) forwards: Arc<Semaphore>,
    connections: Arc<Semaphore>,
    pub(crate) metrics: Arc<crate::metrics::DnsMetrics>,
}

impl DnsServer {
    /// Binds UDP and TCP 127.0.0.11:53 inside the named network namespace `netns` (a file
    /// under /run/netns) and answers from the zones of `networks` (ids, in the sandbox's
    /// order) in the node's `zones`, forwarding other names to `upstream`. Served on
    /// `runtime`'s threads: one UDP socket per thread (SO_REUSEPORT), one TCP listener.
    pub async fn start(
        runtime: &DnsRuntime,
        netns: &str,
        zones: watch::Receiver<Arc<NodeZones>>,
        networks: Vec<String>,
        upstream: Upstream,
    ) -> Result<DnsServer, DnsError> {
        let (udp, tcp) = bind_in_netns(netns, LISTEN_ADDR, runtime.threads()).await?;
        DnsServer::from_std(runtime, udp, tcp, zones, networks, upstream)
    }

    /// Binds UDP and TCP on `addr` in the caller's own namespace (port 0 picks one for each).
    /// For tests and benchmarks; sandboxes use [`DnsServer::start`].
    pub async fn bind(
        runtime: &DnsRuntime,
        addr: SocketAddr,
        zones: watch::Receiver<Arc<NodeZones>>,
        networks: Vec<String>,
        upstream: Upstream,
    ) -> Result<DnsServer, DnsError> {
        let (udp, tcp) = bind_std(addr, runtime.threads(), "(current)")?;
        DnsServer::from_std(runtime, udp, tcp, zones, networks, upstream)
    }

    /// Serves on sockets bound elsewhere (in another namespace): the `udp` sockets share one
    /// address (SO_REUSEPORT), one per thread of `runtime`, round robin if they are not as
    /// many. They are set non-blocking here.
    pub fn from_std(
        runtime: &DnsRuntime,
        udp: Vec<std::net::UdpSocket>,
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
        let workers = runtime.workers()?;
        let handles = &workers.handles;
        let udp_addr = match udp.first() {
            Some(socket) => socket
                .local_addr()
                .map_err(|e| bind_error("udp", LISTEN_ADDR, e))?,
            None => {
                let none = io::Error::new(io::ErrorKind::InvalidInput, "no UDP socket given");
                return Err(bind_error("udp", LISTEN_ADDR, none));
            }
        };
        let tcp_addr = tcp
            .local_addr()
            .map_err(|e| bind_error("tcp", LISTEN_ADDR, e))?;

        let shared = Arc::new(Shared {
            zones,
            networks: networks.into_boxed_slice(),
            upstream,
            forwards: Arc::new(Semaphore::new(MAX_FORWARDS)),
            connections: Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS)),
            metrics: Arc::clone(runtime.metrics()),
        });
        // Registered with the I/O driver of the thread that serves it (hence `enter`): the
        // socket's wakeups then never cross threads.
        let mut ready = Vec::with_capacity(udp.len());
        for (i, socket) in udp.into_iter().enumerate() {
            let handle = &handles[i % handles.len()];
            if let Some(cpu) = workers.cpus[i % handles.len()] {
                // Not fatal: the socket still takes its share by hash.
                if let Err(error) = socket2::SockRef::from(&socket).set_cpu_affinity(cpu) {
                    tracing::warn!(%error, cpu, "dns: cannot steer a socket to its thread's CPU");
                }
            }
            let _entered = handle.enter();
            let socket = udp::register(socket).map_err(|e| bind_error("udp", udp_addr, e))?;
            ready.push((handle, socket));
        }
        let tcp_handle = &handles[runtime.next_index() % handles.len()];
        tcp.set_nonblocking(true)
            .map_err(|e| bind_error("tcp", tcp_addr, e))?;
        let tcp = {
            let _entered = tcp_handle.enter();
            TcpListener::from_std(tcp).map_err(|e| bind_error("tcp", tcp_addr, e))?
        };
        let mut tasks: Vec<JoinHandle<()>> = ready
            .into_iter()
            .map(|(handle, socket)| handle.spawn(serve_udp(socket, shared.clone())))
            .collect();
        tasks.push(tcp_handle.spawn(serve_tcp(tcp, shared)));
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

    /// Stops serving and waits until every listening socket is closed, so the address can
    /// be bound again right away (with SO_REUSEPORT, a socket left open would still take a
    /// share of the queries).
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
    udp_count: usize,
) -> Result<(Vec<std::net::UdpSocket>, std::net::TcpListener), DnsError> {
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
                .and_then(|()| bind_std(addr, udp_count, &name));
            // The receiver is gone only if the caller was cancelled; the sockets then close.
            let _ = tx.send(result);
        })
        .map_err(|_| DnsError::NetnsThread(netns.to_string()))?;
    rx.await
        .map_err(|_| DnsError::NetnsThread(netns.to_string()))?
}

/// `udp_count` UDP sockets on `addr` (all on the port the first one got, with SO_REUSEPORT:
/// the kernel spreads clients over them by address and port) and one TCP listener.
fn bind_std(
    addr: SocketAddr,
    udp_count: usize,
    netns: &str,
) -> Result<(Vec<std::net::UdpSocket>, std::net::TcpListener), DnsError> {
    let error = |proto, addr, source| DnsError::Bind {
        proto,
        addr,
        netns: netns.to_string(),
        source,
    };
    let first = reuseport_udp(addr).map_err(|e| error("udp", addr, e))?;
    let bound = first.local_addr().map_err(|e| error("udp", addr, e))?;
    let mut udp = vec![first];
    for _ in 1..udp_count.max(1) {
        udp.push(reuseport_udp(bound).map_err(|e| error("udp", bound, e))?);
    }
    let tcp = std::net::TcpListener::bind(addr).map_err(|e| error("tcp", addr, e))?;
    Ok((udp, tcp))
}

/// A UDP socket bound to `addr` with SO_REUSEPORT (which must be set before bind; std
/// cannot). Joining the group takes the same user, in the same namespace: only the sandbox's
/// own root could add a socket, and it would only divert its own queries.
fn reuseport_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket(family, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::ReusePort, &true)?;
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    Ok(std::net::UdpSocket::from(fd))
}

/// What a parsed request leads to, before transport: a reply (in the caller's buffer), or a
/// forward.
pub(crate) enum Step {
    Reply,
    Forward(Message),
    Nothing,
}

/// Answers `packet` from `zones` as this sandbox sees them, encoding a reply into `out`: on
/// the wire path (`wire`) when the query is a common one, through hickory's `Message`
/// otherwise.
pub(crate) fn step(
    shared: &Shared,
    zones: &NodeZones,
    packet: &[u8],
    transport: Transport,
    scratch: &mut Scratch,
    out: &mut Vec<u8>,
) -> Step {
    let scope = zones.scope(&shared.networks);
    let mut rng = rand::rng();
    if wire::reply(scope, packet, transport, &mut rng, scratch, out) {
        return Step::Reply;
    }
    match parse_request(packet) {
        Parsed::Drop => Step::Nothing,
        Parsed::Reply(bytes) => {
            out.clear();
            out.extend_from_slice(&bytes);
            Step::Reply
        }
        Parsed::Request(request) => match answer(scope, &request, &mut rng) {
            Outcome::Reply(reply) => {
                let limit = match transport {
                    Transport::Udp => udp_limit(&request),
                    Transport::Tcp => MAX_TCP_MESSAGE,
                };
                if encode_reply_into(&reply, limit, out) {
                    Step::Reply
                } else {
                    Step::Nothing
                }
            }
            Outcome::Forward => Step::Forward(request),
            Outcome::Ignore => Step::Nothing,
        },
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
    let mut scratch = Scratch::default();
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
        let received = std::time::Instant::now();
        // Clone the Arc and let go of the lock at once: an update must not wait on us.
        let zones = shared.zones.borrow().clone();
        let mut reply = Vec::new();
        match step(
            shared,
            &zones,
            &packet,
            Transport::Tcp,
            &mut scratch,
            &mut reply,
        ) {
            Step::Nothing => return Ok(()),
            Step::Reply => {}
            Step::Forward(request) => {
                shared.metrics.forwarded();
                match shared.upstream.forward_tcp(&packet).await {
                    Some(bytes) => reply = bytes,
                    None => {
                        shared.metrics.upstream_failed();
                        if !encode_reply_into(&servfail(&request), MAX_TCP_MESSAGE, &mut reply) {
                            return Ok(());
                        }
                    }
                }
            }
        }
        shared.metrics.answered(&packet, &reply, received.elapsed());
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
