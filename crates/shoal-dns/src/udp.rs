//! The UDP side of a sandbox's server: one socket per DNS thread, read and answered in
//! batches.
//!
//! Per wakeup: one `recvmmsg` takes every queued query (up to [`BATCH`]), each is answered
//! into a reply buffer that is reused, and one `sendmmsg` sends all replies. The buffers
//! belong to the thread, not to the socket: a thread serves many sandboxes' sockets but runs
//! one batch at a time, so they cost memory per thread and nothing per sandbox.
//!
//! The socket is registered for reading only. tokio's `UdpSocket` always asks epoll for
//! writability too, and on loopback every reply sent frees its buffer at once, which queues
//! an EPOLLOUT edge: the thread's next `epoll_wait` then returned at once with nothing to
//! read, one wasted wakeup per batch (as many `epoll_wait`s as `recvmmsg`s under dnsperf).
//! Writes wait for room only in the rare case the socket is full, on a duplicate of it.

use std::cell::RefCell;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use hickory_proto::op::Message;
use nix::errno::Errno;
use nix::sys::socket::{
    ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg,
};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::UdpSocket;
use tokio::task::JoinSet;

use crate::answer::servfail;
use crate::message::{encode_reply, udp_limit};
use crate::metrics::Tally;
use crate::server::{Shared, Step, step};
use crate::wire::{Scratch, Transport};

/// Datagrams read (and replies sent) per system call. dnsperf-like loads queue tens per
/// wakeup; more would only grow the per-thread buffers.
const BATCH: usize = 32;

/// The largest UDP query read whole. A query is one question and an OPT record (with padding,
/// RFC 8467, a few hundred bytes); anything longer is cut here and answered FORMERR.
const MAX_UDP_QUERY: usize = 4096;

thread_local! {
    /// This thread's buffers: taken for one synchronous batch, never across an await.
    static BUFFERS: RefCell<Buffers> = RefCell::new(Buffers::new());
}

/// What a batch could not finish without waiting: forwarded queries, and replies the socket
/// had no room for. Rare; owned, so they can outlive the batch.
enum Later {
    Forward {
        request: Message,
        query: Vec<u8>,
        peer: SocketAddr,
        received: Instant,
    },
    Send(Vec<u8>, SocketAddr),
}

struct Buffers {
    queries: Box<[[u8; MAX_UDP_QUERY]; BATCH]>,
    /// Length and sender of each datagram of the current batch.
    received: [(usize, Option<SockaddrStorage>); BATCH],
    replies: [Vec<u8>; BATCH],
    peers: [Option<SockaddrStorage>; BATCH],
    /// recvmmsg leaves each header's address length at what it last received, so IPv4 and
    /// IPv6 sockets (tests bind either) keep headers of their own.
    rx_v4: MultiHeaders<SockaddrStorage>,
    rx_v6: MultiHeaders<SockaddrStorage>,
    tx: MultiHeaders<SockaddrStorage>,
    scratch: Scratch,
    tally: Tally,
}

impl Buffers {
    fn new() -> Buffers {
        Buffers {
            queries: Box::new([[0u8; MAX_UDP_QUERY]; BATCH]),
            received: [(0, None); BATCH],
            replies: std::array::from_fn(|_| Vec::with_capacity(512)),
            peers: [None; BATCH],
            rx_v4: MultiHeaders::preallocate(BATCH, None),
            rx_v6: MultiHeaders::preallocate(BATCH, None),
            tx: MultiHeaders::preallocate(BATCH, None),
            scratch: Scratch::default(),
            tally: Tally::default(),
        }
    }

    /// Reads, answers and replies to one batch. `Err(WouldBlock)` once the socket is empty,
    /// which is what tells tokio to wait for the next datagram: a batch shorter than
    /// [`BATCH`] means the queue was drained, so no extra `recvmmsg` is spent to learn it (a
    /// datagram arriving after it wakes the socket again).
    fn serve(
        &mut self,
        fd: RawFd,
        v6: bool,
        shared: &Shared,
        later: &mut Vec<Later>,
    ) -> io::Result<()> {
        let count = self.receive(fd, v6)?;
        let received = Instant::now();
        // One look at the zones per batch: an update applies from the next batch.
        let zones = shared.zones.borrow().clone();
        let mut out = 0;
        for i in 0..count {
            let (len, peer) = self.received[i];
            let Some(peer) = peer else { continue };
            let packet = &self.queries[i][..len.min(MAX_UDP_QUERY)];
            let reply = &mut self.replies[out];
            match step(
                shared,
                &zones,
                packet,
                Transport::Udp,
                &mut self.scratch,
                reply,
            ) {
                Step::Reply => {
                    self.tally.count(packet, reply);
                    self.peers[out] = Some(peer);
                    out += 1;
                }
                Step::Forward(request) => {
                    if let Some(peer) = socket_addr(&peer) {
                        let query = packet.to_vec();
                        later.push(Later::Forward {
                            request,
                            query,
                            peer,
                            received,
                        });
                    }
                }
                Step::Nothing => {}
            }
        }
        // One clock read and one add per class for the whole batch: its replies were all
        // ready now, and leave together.
        shared
            .metrics
            .answered_batch(&mut self.tally, received.elapsed());
        self.send(fd, out, later);
        if count < BATCH {
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(())
        }
    }

    fn receive(&mut self, fd: RawFd, v6: bool) -> io::Result<usize> {
        let Buffers {
            queries,
            received,
            rx_v4,
            rx_v6,
            ..
        } = self;
        let headers = if v6 { rx_v6 } else { rx_v4 };
        let mut iovs = queries.each_mut().map(|q| [IoSliceMut::new(q)]);
        let results = recvmmsg(fd, headers, iovs.iter_mut(), MsgFlags::MSG_DONTWAIT, None)
            .map_err(io::Error::from)?;
        let mut count = 0;
        for (slot, message) in received.iter_mut().zip(results) {
            *slot = (message.bytes, message.address);
            count += 1;
        }
        Ok(count)
    }

    /// Sends the first `count` replies. What the socket cannot take now (it is full) goes to
    /// `later`; a reply the kernel refuses (a bad address) is dropped, and the rest still go.
    fn send(&mut self, fd: RawFd, count: usize, later: &mut Vec<Later>) {
        let Buffers {
            replies, peers, tx, ..
        } = self;
        let iovs: [[IoSlice<'_>; 1]; BATCH] = std::array::from_fn(|i| [IoSlice::new(&replies[i])]);
        let mut sent = 0;
        while sent < count {
            let no_cmsgs: [ControlMessage<'_>; 0] = [];
            match sendmmsg(
                fd,
                tx,
                &iovs[sent..count],
                &peers[sent..count],
                no_cmsgs,
                MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(results) => sent += results.count().max(1),
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => {
                    for i in sent..count {
                        if let Some(peer) = peers[i].as_ref().and_then(socket_addr) {
                            later.push(Later::Send(replies[i].clone(), peer));
                        }
                    }
                    return;
                }
                Err(error) => {
                    tracing::debug!(%error, "dns: udp send failed");
                    sent += 1;
                }
            }
        }
    }
}

fn socket_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    addr.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

/// A sandbox's UDP socket as its DNS thread waits on it: for reading only (see the module
/// docs). Made on that thread's runtime (inside its `enter`), so its wakeups stay there.
pub(crate) fn register(socket: std::net::UdpSocket) -> io::Result<AsyncFd<std::net::UdpSocket>> {
    socket.set_nonblocking(true)?;
    // The safe constructor: its replacement is `unsafe` (the crate forbids it) because an
    // arbitrary `AsRawFd` could change its fd while registered; a `UdpSocket` owns its fd.
    #[expect(deprecated, reason = "sound for an owned std socket; see above")]
    AsyncFd::with_interest(socket, Interest::READABLE)
}

/// Serves one of a sandbox's UDP sockets until aborted. Runs on a DNS thread's own runtime.
pub(crate) async fn serve_udp(socket: AsyncFd<std::net::UdpSocket>, shared: Arc<Shared>) {
    let fd = socket.as_raw_fd();
    let v6 = socket.get_ref().local_addr().is_ok_and(|a| a.is_ipv6());
    let socket = Arc::new(socket);
    let mut forwards = JoinSet::new();
    let mut later = Vec::new();
    loop {
        // Reap finished forwards so the set stays the size of what is in flight.
        while forwards.try_join_next().is_some() {}
        let result = match socket.readable().await {
            // `try_io` clears the readiness when the batch ends in WouldBlock.
            Ok(mut guard) => match guard
                .try_io(|_| BUFFERS.with_borrow_mut(|b| b.serve(fd, v6, &shared, &mut later)))
            {
                Ok(result) => result,
                Err(_would_block) => Ok(()),
            },
            Err(error) => Err(error),
        };
        if let Err(error) = result {
            // Errors here are per-datagram (e.g. a queued ICMP error): keep serving, but
            // pause a moment so that an error that does not go away cannot spin a core.
            tracing::debug!(%error, "dns: udp receive failed");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        for item in later.drain(..) {
            match item {
                Later::Send(bytes, peer) => {
                    send_when_writable(socket.get_ref(), &bytes, peer).await
                }
                Later::Forward {
                    request,
                    query,
                    peer,
                    received,
                } => forward(
                    &socket,
                    &shared,
                    &mut forwards,
                    (request, query),
                    peer,
                    received,
                ),
            }
        }
    }
}

/// Sends a reply the full socket refused, once it has room: through a duplicate registered
/// for writing (the socket itself is registered for reading only), dropped again after.
async fn send_when_writable(socket: &std::net::UdpSocket, bytes: &[u8], peer: SocketAddr) {
    let sent = match socket.try_clone().and_then(UdpSocket::from_std) {
        Ok(dup) => dup.send_to(bytes, peer).await.map(drop),
        Err(error) => Err(error),
    };
    if let Err(error) = sent {
        tracing::debug!(%error, %peer, "dns: udp send failed");
    }
}

fn forward(
    socket: &Arc<AsyncFd<std::net::UdpSocket>>,
    shared: &Arc<Shared>,
    forwards: &mut JoinSet<()>,
    (request, query): (Message, Vec<u8>),
    peer: SocketAddr,
    received: Instant,
) {
    let Ok(permit) = shared.forwards.clone().try_acquire_owned() else {
        tracing::debug!(%peer, "dns: too many forwarded queries in flight; dropped one");
        return;
    };
    let shared = shared.clone();
    // Weak: once the loop is gone, the socket closes even while forwards finish.
    let socket = Arc::downgrade(socket);
    shared.metrics.forwarded();
    forwards.spawn(async move {
        let _permit = permit;
        let reply = match shared.upstream.forward_udp(&query).await {
            Some(reply) => Some(reply),
            None => {
                shared.metrics.upstream_failed();
                encode_reply(&servfail(&request), udp_limit(&request))
            }
        };
        if let Some(reply) = reply {
            shared.metrics.answered(&query, &reply, received.elapsed());
            send_weak(&socket, &reply, peer);
        }
    });
}

/// Sends without holding the socket across an await (see the caller).
fn send_weak(socket: &Weak<AsyncFd<std::net::UdpSocket>>, bytes: &[u8], peer: SocketAddr) {
    if let Some(socket) = socket.upgrade()
        && let Err(error) = socket.get_ref().send_to(bytes, peer)
    {
        tracing::debug!(%error, %peer, "dns: udp send of a forwarded reply failed");
    }
}
