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

    /// A lazily connecting channel to `addr` (`ip:port`) that expects the server to answer to
    /// `server_name` (shoal-pki's `shoal-manager`, or a node's own name).
    pub fn channel(
        &self,
        addr: &str,
        server_name: ServerName<'static>,
    ) -> Result<Channel, tonic::transport::Error> {
        let addr = addr.strip_prefix("http://").unwrap_or(addr).to_string();
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        let config = match self {
            Dialer::Plain => return Ok(endpoint.connect_lazy()),
            Dialer::Member(tls) => Config::Member(Arc::clone(tls)),
            Dialer::Join(config) => Config::Fixed(Arc::clone(config)),
        };
        Ok(
            endpoint.connect_with_connector_lazy(tower::service_fn(move |_| {
                let (addr, server_name, config) =
                    (addr.clone(), server_name.clone(), config.clone());
                async move {
                    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr))
                        .await
                        .map_err(|_| {
                            io::Error::new(io::ErrorKind::TimedOut, format!("connect to {addr}"))
                        })??;
                    tcp.set_nodelay(true)?;
                    let tls = TlsConnector::from(config.get())
                        .connect(server_name, tcp)
                        .await?;
                    Ok::<_, io::Error>(TokioIo::new(tls))
                }
            })),
        )
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
                let _ = tcp.set_nodelay(true);
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
        conn.set_nodelay(true)?;
        Ok(conn)
    })
}
