//! The host's resolvers, and forwarding the names that are not the cluster's to them.
//!
//! Forwarded queries leave from sockets in the daemon's own namespace (the host's network),
//! not the sandbox's: a sandbox on an overlay network may have no route out at all. Each
//! query gets its own connected socket, so replies cannot be confused between clients (the
//! client's id is kept as it is) and a forged reply from another address is never read.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use hickory_proto::op::{Header, MessageType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{Instant, timeout_at};

use crate::error::DnsError;

/// Where names that are not the cluster's go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    /// Tried in order until one answers.
    pub servers: Vec<SocketAddr>,
    /// Budget for one forwarded query over all servers, shared evenly between them. Keep it
    /// below the client's own timeout (glibc: 5 s) so the client hears SERVFAIL rather than
    /// nothing.
    pub timeout: Duration,
}

/// The timeout when resolv.conf names none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

impl Upstream {
    /// The nameservers of a resolv.conf (`/etc/resolv.conf` of the host), port 53.
    ///
    /// Loopback servers (127.0.0.0/8, ::1) are skipped: forwarded queries leave from the
    /// daemon's namespace, where such an address is the host's local stub, and inside a
    /// sandbox it would be ourselves. `options timeout:N` sets the timeout (capped at
    /// [`DEFAULT_TIMEOUT`] for the reason given on [`Upstream::timeout`]).
    pub fn from_resolv_conf(path: impl AsRef<Path>) -> Result<Upstream, DnsError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| DnsError::ResolvConf {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Upstream::parse_resolv_conf(&text))
    }

    /// [`Upstream::from_resolv_conf`] on text.
    pub fn parse_resolv_conf(text: &str) -> Upstream {
        let mut servers = Vec::new();
        let mut timeout = DEFAULT_TIMEOUT;
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    // An IPv6 server may carry a zone ("fe80::1%eth0"): not reachable from a
                    // plain SocketAddr, so skipped like anything unparsable.
                    let Some(addr) = words.next().and_then(|w| w.parse::<IpAddr>().ok()) else {
                        continue;
                    };
                    if !addr.is_loopback() {
                        servers.push(SocketAddr::new(addr, 53));
                    }
                }
                Some("options") => {
                    for option in words {
                        if let Some(secs) = option.strip_prefix("timeout:")
                            && let Ok(secs) = secs.parse::<u64>()
                        {
                            timeout = Duration::from_secs(secs.max(1)).min(DEFAULT_TIMEOUT);
                        }
                    }
                }
                _ => {}
            }
        }
        Upstream { servers, timeout }
    }

    /// Sends `query` (a client's raw request) to the servers over UDP; the first reply that
    /// matches its id comes back raw. `None` when none answered in time.
    pub(crate) async fn forward_udp(&self, query: &[u8]) -> Option<Vec<u8>> {
        self.try_each(|server| udp_exchange(server, query)).await
    }

    /// The same over TCP, for a client that asked over TCP.
    pub(crate) async fn forward_tcp(&self, query: &[u8]) -> Option<Vec<u8>> {
        self.try_each(|server| tcp_exchange(server, query)).await
    }

    async fn try_each<F, Fut>(&self, exchange: F) -> Option<Vec<u8>>
    where
        F: Fn(SocketAddr) -> Fut,
        Fut: Future<Output = io::Result<Vec<u8>>>,
    {
        let count = u32::try_from(self.servers.len()).ok().filter(|&n| n > 0)?;
        let share = self.timeout / count;
        for &server in &self.servers {
            let deadline = Instant::now() + share;
            match timeout_at(deadline, exchange(server)).await {
                Ok(Ok(reply)) => return Some(reply),
                Ok(Err(error)) => {
                    tracing::debug!(%server, %error, "upstream DNS server failed");
                }
                Err(_) => tracing::debug!(%server, "upstream DNS server timed out"),
            }
        }
        None
    }
}

/// Whether `reply` is a response to the query with id `id`.
fn answers(reply: &[u8], id: u16) -> bool {
    Header::read(&mut BinDecoder::new(reply))
        .is_ok_and(|h| h.metadata.id == id && h.metadata.message_type == MessageType::Response)
}

fn query_id(query: &[u8]) -> io::Result<u16> {
    Header::read(&mut BinDecoder::new(query))
        .map(|h| h.metadata.id)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "query without a header"))
}

async fn udp_exchange(server: SocketAddr, query: &[u8]) -> io::Result<Vec<u8>> {
    let id = query_id(query)?;
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    // Connected: the kernel drops datagrams from anyone else, and an ICMP "port
    // unreachable" comes back as an error at once instead of a wait for the timeout.
    socket.connect(server).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; 65_535];
    loop {
        let n = socket.recv(&mut buf).await?;
        if answers(&buf[..n], id) {
            buf.truncate(n);
            return Ok(buf);
        }
        // A stray or late datagram: keep waiting until the deadline.
    }
}

async fn tcp_exchange(server: SocketAddr, query: &[u8]) -> io::Result<Vec<u8>> {
    let id = query_id(query)?;
    let len = u16::try_from(query.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "query too long for TCP"))?;
    let mut stream = TcpStream::connect(server).await?;
    stream.set_nodelay(true)?;
    let mut out = Vec::with_capacity(query.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(query);
    stream.write_all(&out).await?;
    loop {
        let n = usize::from(stream.read_u16().await?);
        let mut reply = vec![0u8; n];
        stream.read_exact(&mut reply).await?;
        if answers(&reply, id) {
            return Ok(reply);
        }
    }
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::{DEFAULT_TIMEOUT, Upstream};

    #[test]
    fn resolv_conf_skips_loopback_and_reads_the_timeout() {
        let upstream = Upstream::parse_resolv_conf(
            "# generated\nnameserver 127.0.0.53\nnameserver 192.0.2.10 # lab\nnameserver ::1\n\
             nameserver 2001:db8::1\nnameserver fe80::1%eth0\nsearch example\noptions ndots:0 timeout:2\n",
        );
        expect![[r#"
            Upstream {
                servers: [
                    192.0.2.10:53,
                    [2001:db8::1]:53,
                ],
                timeout: 2s,
            }
        "#]]
        .assert_debug_eq(&upstream);
        let default = Upstream::parse_resolv_conf("nameserver 127.0.0.11\n");
        assert!(default.servers.is_empty());
        assert_eq!(default.timeout, DEFAULT_TIMEOUT);
    }
}
