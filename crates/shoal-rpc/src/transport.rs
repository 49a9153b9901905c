//! How bytes cross port 2377: TLS with the cluster's rustls configurations (made by
//! shoal-pki), or plain h2c where a crate's own tests run one service on loopback.
//!
//! tonic's own `ClientTlsConfig`/`ServerTlsConfig` take PEM and build their own rustls
//! configs; shoal's need a custom verifier (a joining node pins the CA by its token) and
//! configs that change while the process runs (renewed certificates, a rotated root), so
//! TLS is done here with tokio-rustls and handed to tonic as streams: the server side
//! through `serve_with_incoming` (tonic still sees the TLS stream, so `Request::peer_certs`
//! works), the client side through a connector.

use std::io;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, info};

/// How long a peer may take to finish a TLS handshake before its connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections whose handshakes run at once; more wait in the listen backlog.
const MAX_HANDSHAKES: usize = 256;
/// Connect timeout suited to a LAN.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A client pings its peer (HTTP/2) this often, even with no call in flight...
const PING_INTERVAL: Duration = Duration::from_secs(2);
/// ...and drops the connection, failing its calls and streams, when a ping is not answered
/// within this: an agent learns that its leader's host is gone within about 5 s, not when
/// TCP gives up retransmitting (about 15 minutes).
const PING_TIMEOUT: Duration = Duration::from_secs(3);
/// The server's pings are slower: its side only needs to let go of a dead agent's session.
const SERVER_PING_INTERVAL: Duration = Duration::from_secs(5);
const SERVER_PING_TIMEOUT: Duration = Duration::from_secs(5);

/// TCP keepalives under HTTP/2's pings, for a connection whose pings cannot be sent: the
/// first probe after this much silence...
const TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
/// ...then one this often, and the connection is dropped after this many unanswered.
const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
const TCP_KEEPALIVE_PROBES: u32 = 3;
/// Data sent and not acknowledged for this long closes the connection (TCP_USER_TIMEOUT):
/// a peer that vanished while a write was in flight, which keepalives do not cover.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);

/// Keepalives and the unacknowledged-data limit on a 2377 socket, either side.
pub fn set_liveness(tcp: &TcpStream) -> io::Result<()> {
    tcp.set_nodelay(true)?;
    let sock = socket2::SockRef::from(tcp);
    sock.set_tcp_keepalive(
        &socket2::TcpKeepalive::new()
            .with_time(TCP_KEEPALIVE_IDLE)
            .with_interval(TCP_KEEPALIVE_INTERVAL)
            .with_retries(TCP_KEEPALIVE_PROBES),
    )?;
    sock.set_tcp_user_timeout(Some(TCP_USER_TIMEOUT))
}

/// The HTTP/2 and TCP settings of the server on port 2377 (pings to clients, keepalives;
/// `incoming` sets the accepted sockets' own).
pub fn server_builder() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(SERVER_PING_INTERVAL))
        .http2_keepalive_timeout(Some(SERVER_PING_TIMEOUT))
        .tcp_keepalive(Some(TCP_KEEPALIVE_IDLE))
        .tcp_nodelay(true)
}

/// A node's current TLS configurations. Replaced whole when its certificate is renewed or
/// the cluster's root changes; connections already made keep the configuration they were
/// made with, so nothing is dropped by a renewal.
pub struct Tls {
    server: RwLock<Arc<ServerConfig>>,
    client: RwLock<Arc<ClientConfig>>,
}

impl Tls {
    pub fn new(server: ServerConfig, client: ClientConfig) -> Arc<Tls> {
        Arc::new(Tls {
            server: RwLock::new(Arc::new(server)),
            client: RwLock::new(Arc::new(client)),
        })
    }

    pub fn replace(&self, server: ServerConfig, client: ClientConfig) {
        *self.server.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(server);
        *self.client.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(client);
    }

    pub fn server(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.server.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn client(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.client.read().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Where a client's TLS configuration comes from.
#[derive(Clone)]
pub enum Dialer {
    /// Plain h2c: only for a crate's own loopback tests.
    Plain,
    /// A member: the node's current configuration (its certificate, the cluster's root).
    Member(Arc<Tls>),
    /// A joining node: no certificate, the manager verified against the token's CA.
    Join(Arc<ClientConfig>),
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Dialer::Plain => "Dialer::Plain",
            Dialer::Member(_) => "Dialer::Member",
            Dialer::Join(_) => "Dialer::Join",
        })
    }
}

/// The name every manager's certificate answers to (shoal-pki's `MANAGER_SERVER_NAME`, its
/// OU): a client that wants a manager refuses a worker's certificate.
pub const MANAGER_NAME: &str = "shoal-manager";

/// The name a node's certificate answers to (shoal-pki's `node_dns_name`).
pub fn node_name(node_id: &str) -> String {
    format!("{node_id}.node.shoal")
}

impl Dialer {
    /// A channel to the manager at `addr`.
    pub fn manager(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        self.channel(
            addr,
            ServerName::try_from(MANAGER_NAME).expect("a valid DNS name"),
        )
    }

    /// A channel to the node `node_id`'s Agent service at `addr`.
    pub fn node(&self, addr: &str, node_id: &str) -> Result<Channel, DialError> {
        let name = ServerName::try_from(node_name(node_id))
            .map_err(|_| DialError::BadNodeId(node_id.to_string()))?;
        self.channel(addr, name).map_err(DialError::Transport)
    }

    /// A channel to the manager at `addr`, connected now: an error means no request was
    /// sent, so a write that fails here may be tried again elsewhere without applying twice.
    pub async fn manager_connected(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let name = ServerName::try_from(MANAGER_NAME).expect("a valid DNS name");
        let (endpoint, connector) = self.endpoint(addr, name)?;
        match connector {
            None => endpoint.connect().await,
            Some(c) => endpoint.connect_with_connector(c).await,
        }
    }

    /// A lazily connecting channel to `addr` (`ip:port`) that expects the server to answer to
    /// `server_name` (shoal-pki's `shoal-manager`, or a node's own name).
    pub fn channel(
        &self,
        addr: &str,
        server_name: ServerName<'static>,
    ) -> Result<Channel, tonic::transport::Error> {
        let (endpoint, connector) = self.endpoint(addr, server_name)?;
        Ok(match connector {
            None => endpoint.connect_lazy(),
            Some(c) => endpoint.connect_with_connector_lazy(c),
        })
    }

    /// The endpoint's settings (deadlines, pings) and, for TLS, the connector.
    #[allow(clippy::type_complexity)]
    fn endpoint(
        &self,
        addr: &str,
        server_name: ServerName<'static>,
    ) -> Result<(Endpoint, Option<Connector>), tonic::transport::Error> {
        let addr = addr.strip_prefix("http://").unwrap_or(addr).to_string();
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(crate::deadline::BACKSTOP)
            .tcp_nodelay(true)
            .tcp_keepalive(Some(TCP_KEEPALIVE_IDLE))
            .http2_keep_alive_interval(PING_INTERVAL)
            .keep_alive_timeout(PING_TIMEOUT)
            .keep_alive_while_idle(true);
        let config = match self {
            Dialer::Plain => return Ok((endpoint, None)),
            Dialer::Member(tls) => Config::Member(Arc::clone(tls)),
            Dialer::Join(config) => Config::Fixed(Arc::clone(config)),
        };
        Ok((
            endpoint,
            Some(Connector {
                addr,
                server_name,
                config,
            }),
        ))
    }
}

/// Opens a 2377 connection: TCP (keepalives set) then TLS.
#[derive(Clone)]
struct Connector {
    addr: String,
    server_name: ServerName<'static>,
    config: Config,
}

impl tower::Service<tonic::codegen::http::Uri> for Connector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, io::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), io::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: tonic::codegen::http::Uri) -> Self::Future {
        let Connector {
            addr,
            server_name,
            config,
        } = self.clone();
        Box::pin(async move {
            let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr))
                .await
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("connect to {addr}: no answer within {CONNECT_TIMEOUT:?}"),
                    )
                })??;
            set_liveness(&tcp)?;
            let tls = TlsConnector::from(config.get())
                .connect(server_name, tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}

#[derive(Debug)]
pub enum DialError {
    BadNodeId(String),
    Transport(tonic::transport::Error),
}

impl std::fmt::Display for DialError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DialError::BadNodeId(id) => write!(f, "node id {id:?} does not make a DNS name"),
            DialError::Transport(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for DialError {}

#[derive(Clone)]
enum Config {
    Member(Arc<Tls>),
    Fixed(Arc<ClientConfig>),
}

impl Config {
    fn get(&self) -> Arc<ClientConfig> {
        match self {
            Config::Member(tls) => tls.client(),
            Config::Fixed(c) => Arc::clone(c),
        }
    }
}

/// The TLS connections accepted on `listener`, for `serve_with_incoming`: each handshake runs
/// on its own task with a deadline, and one that fails (no or a wrong certificate, a plain
/// client) is logged and dropped without stopping the listener.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<Tls>,
) -> impl tokio_stream::Stream<Item = io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        // The listener is dropped (the port freed) as soon as the server stops reading.
        loop {
            let accepted = tokio::select! {
                _ = tx.closed() => return,
                a = accept(&listener, &permits) => a,
            };
            let (tcp, peer, permit) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: wait rather than spin.
                    debug!("accept on the cluster port failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (conn_tx, acceptor) = (tx.clone(), TlsAcceptor::from(tls.server()));
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(e) = set_liveness(&tcp) {
                    debug!(%peer, "could not set keepalives on a cluster connection: {e}");
                }
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = conn_tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => info!(%peer, "refused a connection on the cluster port: {e}"),
                    Err(_) => {
                        info!(%peer, "refused a connection on the cluster port: no TLS handshake within {HANDSHAKE_TIMEOUT:?}")
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// The next connection, once fewer than [`MAX_HANDSHAKES`] are being shaken hands with.
async fn accept(
    listener: &TcpListener,
    permits: &Arc<tokio::sync::Semaphore>,
) -> io::Result<(
    TcpStream,
    std::net::SocketAddr,
    tokio::sync::OwnedSemaphorePermit,
)> {
    let permit = Arc::clone(permits)
        .acquire_owned()
        .await
        .map_err(io::Error::other)?;
    let (tcp, peer) = listener.accept().await?;
    Ok((tcp, peer, permit))
}

/// Accepted plain connections with Nagle off (a crate's own loopback tests).
pub fn incoming_plain(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = io::Result<TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        set_liveness(&conn)?;
        Ok(conn)
    })
}
