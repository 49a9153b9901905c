//! A client of the API for the CLI: hyper 1 over a Unix socket or TCP (with TLS, as the docker
//! CLI's `--tlsverify`), one connection per call, which is what a command-line tool needs.

use std::path::PathBuf;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use serde::Serialize;
use serde::de::DeserializeOwned;
use shoal_types::{Network, Node, NodeRole, ServiceSpec};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::{ApiError, ErrorBody};
use crate::tls::{TlsError, TlsFiles};
use crate::types::*;

mod events;

/// Where the CLI finds the local daemon unless `-H` or `$SHOAL_HOST` say otherwise.
pub const DEFAULT_HOST: &str = "unix:///run/shoal/shoal.sock";

/// Where a daemon listens: `unix:///path` (or a bare `/path`), or `tcp://HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Unix(PathBuf),
    /// `host` is a name or an IP (an IPv6 one without its brackets).
    Tcp {
        host: String,
        port: u16,
    },
}

impl Host {
    pub fn parse(s: &str) -> Result<Host, ClientError> {
        let bad = || ClientError::InvalidHost(s.to_string());
        if let Some(path) = s.strip_prefix("unix://") {
            if path.starts_with('/') {
                Ok(Host::Unix(path.into()))
            } else {
                Err(bad())
            }
        } else if let Some(addr) = s.strip_prefix("tcp://") {
            let addr = addr.strip_suffix('/').unwrap_or(addr);
            let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
            let host = match host.strip_prefix('[') {
                Some(v6) => v6.strip_suffix(']').ok_or_else(bad)?,
                None if host.contains(':') => return Err(bad()),
                None => host,
            };
            let port = port.parse::<u16>().map_err(|_| bad())?;
            if host.is_empty() || host.contains('/') || port == 0 {
                return Err(bad());
            }
            Ok(Host::Tcp {
                host: host.to_string(),
                port,
            })
        } else if s.starts_with('/') {
            Ok(Host::Unix(s.into()))
        } else {
            Err(bad())
        }
    }
}

impl std::fmt::Display for Host {
    /// How error messages name the daemon: the socket's path, or `tcp://HOST:PORT`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Unix(p) => write!(f, "{}", p.display()),
            Host::Tcp { host, port } if host.contains(':') => write!(f, "tcp://[{host}]:{port}"),
            Host::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
        }
    }
}

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("invalid host {0:?}: expected unix:///path/to/shoal.sock or tcp://HOST:PORT")]
    InvalidHost(String),
    #[error("cannot connect to the shoal daemon at {host}: is shoald running{hint}?")]
    Connect {
        host: String,
        /// For TCP, the flag the daemon must have been started with.
        hint: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("permission denied connecting to the shoal daemon at {host}: run shoal as root")]
    PermissionDenied {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("lost the connection to the shoal daemon at {host}: {source}{hint}")]
    Http {
        host: String,
        /// What to try when a plain client may have reached a TLS listener.
        hint: &'static str,
        #[source]
        source: hyper::Error,
    },
    /// The daemon's TLS listener refused this client's certificate (an alert at or right
    /// after the handshake).
    #[error(
        "the shoal daemon at {host} refused this client's certificate (TLS alert: {alert}): use a certificate signed by the CA the daemon trusts (its --tlscacert)"
    )]
    CertRefused { host: String, alert: String },
    /// The daemon's certificate did not verify against `--tlscacert`.
    #[error("the shoal daemon at {host} is not trusted: {reason}")]
    ServerNotTrusted { host: String, reason: String },
    #[error("TLS handshake with the shoal daemon at {host} failed: {source}")]
    Handshake {
        host: String,
        #[source]
        source: std::io::Error,
    },
    /// `--tlscacert`, `--tlscert` or `--tlskey` could not be used.
    #[error(transparent)]
    TlsFiles(Box<TlsError>),
    #[error("unexpected answer from the shoal daemon at {host}: {detail}")]
    Protocol { host: String, detail: String },
    /// The daemon answered with an error: its status and message.
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl ClientError {
    /// The HTTP status when the daemon answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api(e) => Some(e.status),
            _ => None,
        }
    }
}

pub type ClientResult<T> = Result<T, ClientError>;

/// A handle on one daemon. Cheap to clone; each call opens its own connection.
#[derive(Debug, Clone)]
pub struct Client {
    host: Host,
    /// TLS for a `tcp://` host (`--tlsverify`); `None` speaks plain HTTP.
    tls: Option<Arc<ClientConfig>>,
}

impl Client {
    /// `host` as `-H` takes it: `unix:///run/shoal/shoal.sock`, `/path`, or `tcp://HOST:PORT`
    /// in plain HTTP (which shoald serves on loopback addresses only).
    pub fn new(host: &str) -> ClientResult<Client> {
        Ok(Client {
            host: Host::parse(host)?,
            tls: None,
        })
    }

    /// Like [`Client::new`], and a `tcp://` host is spoken to over TLS: the daemon must
    /// present a certificate from `files.ca` for the name or IP in `host`, and this client
    /// presents `files.cert`. A Unix socket needs no TLS; the files are then not read.
    pub fn with_tls(host: &str, files: &TlsFiles) -> ClientResult<Client> {
        let host = Host::parse(host)?;
        let tls = match host {
            Host::Unix(_) => None,
            Host::Tcp { .. } => Some(
                crate::tls::client_config(files).map_err(|e| ClientError::TlsFiles(Box::new(e)))?,
            ),
        };
        Ok(Client { host, tls })
    }

    pub fn host(&self) -> &Host {
        &self.host
    }

    pub async fn info(&self) -> ClientResult<Info> {
        self.get("/v1/info").await
    }

    pub async fn init(&self, req: &InitRequest) -> ClientResult<InitResponse> {
        self.post("/v1/swarm/init", req).await
    }

    pub async fn join(&self, req: &JoinRequest) -> ClientResult<JoinResponse> {
        self.post("/v1/swarm/join", req).await
    }

    pub async fn leave(&self, force: bool) -> ClientResult<()> {
        self.call(
            Method::POST,
            &format!("/v1/swarm/leave?force={force}"),
            None,
        )
        .await
    }

    pub async fn join_token(&self, role: NodeRole) -> ClientResult<JoinToken> {
        self.get(&format!("/v1/swarm/join-token/{role}")).await
    }

    pub async fn rotate_join_token(&self, role: NodeRole) -> ClientResult<JoinToken> {
        self.post(&format!("/v1/swarm/join-token/{role}/rotate"), &())
            .await
    }

    pub async fn ca(&self) -> ClientResult<ClusterCa> {
        self.get("/v1/swarm/ca").await
    }

    pub async fn rotate_ca(&self, req: &CaRotateRequest) -> ClientResult<ClusterCa> {
        self.post("/v1/swarm/ca/rotate", req).await
    }

    pub async fn nodes(&self) -> ClientResult<Vec<Node>> {
        self.get("/v1/nodes").await
    }

    pub async fn node(&self, key: &str) -> ClientResult<Node> {
        self.get(&format!("/v1/nodes/{}", encode(key))).await
    }

    pub async fn update_node(&self, key: &str, update: &NodeUpdate) -> ClientResult<()> {
        self.post(&format!("/v1/nodes/{}/update", encode(key)), update)
            .await
    }

    pub async fn remove_node(&self, key: &str, force: bool) -> ClientResult<()> {
        self.call(
            Method::DELETE,
            &format!("/v1/nodes/{}?force={force}", encode(key)),
            None,
        )
        .await
    }

    pub async fn services(&self) -> ClientResult<Vec<ServiceView>> {
        self.get("/v1/services").await
    }

    pub async fn service(&self, key: &str) -> ClientResult<ServiceView> {
        self.get(&format!("/v1/services/{}", encode(key))).await
    }

    pub async fn create_service(&self, spec: &ServiceSpec) -> ClientResult<CreateResponse> {
        self.post("/v1/services", spec).await
    }

    pub async fn update_service(&self, key: &str, spec: &ServiceSpec) -> ClientResult<()> {
        self.update_service_with(key, spec, &ServiceOptions::default())
            .await
            .map(|_| ())
    }

    /// `service create` with the image options (`--no-resolve-image`,
    /// `--with-registry-auth`).
    pub async fn create_service_with(
        &self,
        spec: &ServiceSpec,
        opts: &ServiceOptions,
    ) -> ClientResult<ServiceCreated> {
        self.post_with(&with_query("/v1/services", opts), spec, opts)
            .await
    }

    pub async fn update_service_with(
        &self,
        key: &str,
        spec: &ServiceSpec,
        opts: &ServiceOptions,
    ) -> ClientResult<ServiceUpdated> {
        let path = with_query(&format!("/v1/services/{}/update", encode(key)), opts);
        self.post_with(&path, spec, opts).await
    }

    /// `service rollback`: back to the previous spec.
    pub async fn rollback_service(&self, key: &str) -> ClientResult<()> {
        self.call(
            Method::POST,
            &format!("/v1/services/{}/rollback", encode(key)),
            None,
        )
        .await
    }

    pub async fn images(&self) -> ClientResult<Vec<ImageSummary>> {
        self.get("/v1/images").await
    }

    pub async fn remove_image(&self, name: &str) -> ClientResult<Vec<String>> {
        self.call(
            Method::DELETE,
            &format!("/v1/images/{}", encode(name)),
            None,
        )
        .await
    }

    pub async fn prune_images(&self) -> ClientResult<ImagesPruned> {
        self.post("/v1/images/prune", &()).await
    }

    pub async fn remove_service(&self, key: &str) -> ClientResult<()> {
        self.call(
            Method::DELETE,
            &format!("/v1/services/{}", encode(key)),
            None,
        )
        .await
    }

    pub async fn tasks(&self, filter: &TaskFilter) -> ClientResult<Vec<TaskView>> {
        let mut query = Vec::new();
        if let Some(s) = &filter.service {
            query.push(format!("service={}", encode(s)));
        }
        if let Some(n) = &filter.node {
            query.push(format!("node={}", encode(n)));
        }
        let path = if query.is_empty() {
            "/v1/tasks".to_string()
        } else {
            format!("/v1/tasks?{}", query.join("&"))
        };
        self.get(&path).await
    }

    pub async fn task(&self, key: &str) -> ClientResult<TaskView> {
        self.get(&format!("/v1/tasks/{}", encode(key))).await
    }

    pub async fn service_logs(&self, key: &str) -> ClientResult<Vec<LogLine>> {
        self.get(&format!("/v1/services/{}/logs", encode(key)))
            .await
    }

    pub async fn local_task_pid(&self, key: &str) -> ClientResult<Pid> {
        self.get(&format!("/v1/tasks/{}/pid", encode(key))).await
    }

    pub async fn networks(&self) -> ClientResult<Vec<Network>> {
        self.get("/v1/networks").await
    }

    pub async fn network(&self, key: &str) -> ClientResult<Network> {
        self.get(&format!("/v1/networks/{}", encode(key))).await
    }

    pub async fn create_network(&self, req: &NetworkCreate) -> ClientResult<CreateResponse> {
        self.post("/v1/networks", req).await
    }

    pub async fn remove_network(&self, key: &str) -> ClientResult<()> {
        self.call(
            Method::DELETE,
            &format!("/v1/networks/{}", encode(key)),
            None,
        )
        .await
    }

    pub async fn endpoint_stats(&self) -> ClientResult<EndpointStats> {
        self.get("/v1/endpoints/stats").await
    }

    pub async fn reset_endpoint_stats(&self) -> ClientResult<()> {
        self.call(Method::DELETE, "/v1/endpoints/stats", None).await
    }

    /// The daemon's OpenAPI document.
    pub async fn openapi(&self) -> ClientResult<serde_json::Value> {
        self.get("/v1/openapi.json").await
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> ClientResult<T> {
        self.call(Method::GET, path, None).await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> ClientResult<T> {
        let body = serde_json::to_vec(body)
            .map_err(|e| self.protocol(format!("failed to encode the request: {e}")))?;
        self.call(Method::POST, path, Some(body)).await
    }

    async fn post_with<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        opts: &ServiceOptions,
    ) -> ClientResult<T> {
        let body = serde_json::to_vec(body)
            .map_err(|e| self.protocol(format!("failed to encode the request: {e}")))?;
        self.call_with(
            Method::POST,
            path,
            Some(body),
            opts.registry_auth.as_deref(),
        )
        .await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> ClientResult<T> {
        self.call_with(method, path, body, None).await
    }

    async fn call_with<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        registry_auth: Option<&str>,
    ) -> ClientResult<T> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "shoal");
        if let Some(auth) = registry_auth {
            req = req.header("X-Registry-Auth", auth);
        }
        if body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| self.protocol(format!("failed to build the request: {e}")))?;
        let (resp, conn) = self.send(req).await?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| self.http_error(e))?
            .to_bytes();
        drop(conn);
        if status.is_success() {
            let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
            serde_json::from_slice(bytes)
                .map_err(|e| self.protocol(format!("failed to decode the answer: {e}")))
        } else {
            Err(api_error(status, &bytes))
        }
    }

    /// Sends `req` on a new connection; the response's body is read through the returned
    /// [`Conn`], which closes the connection when dropped.
    async fn send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> ClientResult<(hyper::Response<hyper::body::Incoming>, Conn)> {
        match &self.host {
            Host::Unix(path) => {
                let io = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| self.connect_error(e))?;
                self.exchange(io, req).await
            }
            Host::Tcp { host, port } => {
                let io = tokio::net::TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(|e| self.connect_error(e))?;
                match &self.tls {
                    None => self.exchange(io, req).await,
                    Some(config) => {
                        let name = ServerName::try_from(host.clone())
                            .map_err(|_| ClientError::InvalidHost(self.host.to_string()))?;
                        let io = tokio_rustls::TlsConnector::from(Arc::clone(config))
                            .connect(name, io)
                            .await
                            .map_err(|e| self.handshake_error(e))?;
                        self.exchange(io, req).await
                    }
                }
            }
        }
    }

    async fn exchange<IO>(
        &self,
        io: IO,
        req: Request<Full<Bytes>>,
    ) -> ClientResult<(hyper::Response<hyper::body::Incoming>, Conn)>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let http = |source| self.http_error(source);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(http)?;
        // The connection future drives the socket while the body is read; `Conn` stops it.
        let driver = tokio::spawn(conn);
        let resp = sender.send_request(req).await.map_err(http)?;
        Ok((resp, Conn(driver)))
    }

    fn connect_error(&self, source: std::io::Error) -> ClientError {
        let host = self.host.to_string();
        let hint = match self.host {
            Host::Unix(_) => "",
            Host::Tcp { .. } => " and serving this address (shoald -H tcp://...)",
        };
        if source.kind() == std::io::ErrorKind::PermissionDenied && hint.is_empty() {
            ClientError::PermissionDenied { host, source }
        } else {
            ClientError::Connect { host, hint, source }
        }
    }

    /// A failed request: a TLS alert after the handshake (TLS 1.3 clients learn only then
    /// that their certificate was refused) says so; a plain client that reached a TLS
    /// listener is told to try `--tlsverify`.
    fn http_error(&self, source: hyper::Error) -> ClientError {
        let host = self.host.to_string();
        if let Some(rustls::Error::AlertReceived(alert)) = crate::tls::rustls_error(&source) {
            return ClientError::CertRefused {
                host,
                alert: crate::tls::describe_alert(*alert),
            };
        }
        let hint = match (&self.host, &self.tls) {
            (Host::Tcp { .. }, None) => {
                "; if the daemon serves TLS (shoald --tlsverify), pass --tlsverify and its certificates"
            }
            _ => "",
        };
        ClientError::Http { host, hint, source }
    }

    fn handshake_error(&self, source: std::io::Error) -> ClientError {
        let host = self.host.to_string();
        match crate::tls::rustls_error(&source) {
            Some(rustls::Error::AlertReceived(alert)) => ClientError::CertRefused {
                host,
                alert: crate::tls::describe_alert(*alert),
            },
            Some(rustls::Error::InvalidCertificate(e)) => ClientError::ServerNotTrusted {
                reason: crate::tls::describe_server_cert_error(e, &host),
                host,
            },
            _ => ClientError::Handshake { host, source },
        }
    }

    fn protocol(&self, detail: String) -> ClientError {
        ClientError::Protocol {
            host: self.host.to_string(),
            detail,
        }
    }
}

/// An open connection: dropping it closes the socket.
struct Conn(tokio::task::JoinHandle<Result<(), hyper::Error>>);

impl Drop for Conn {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A daemon's error answer: its `{"message"}`, else its text, else the status's name.
fn api_error(status: StatusCode, bytes: &[u8]) -> ClientError {
    let message = match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(b) => b.message,
        Err(_) => {
            let text = String::from_utf8_lossy(bytes).trim().to_string();
            if text.is_empty() {
                status.canonical_reason().unwrap_or("error").to_lowercase()
            } else {
                text
            }
        }
    };
    ClientError::Api(ApiError::new(status.as_u16(), message))
}

/// Percent-encodes one path segment or query value.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `path` with `?queryRegistry=false` when the image is not to be resolved.
fn with_query(path: &str, opts: &ServiceOptions) -> String {
    let mut query = Vec::new();
    if !opts.query_registry {
        query.push("queryRegistry=false".to_string());
    }
    if let Some(v) = opts.version {
        query.push(format!("version={v}"));
    }
    if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", query.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(
            Host::parse(DEFAULT_HOST).unwrap(),
            Host::Unix("/run/shoal/shoal.sock".into())
        );
        assert_eq!(
            Host::parse("/tmp/s.sock").unwrap(),
            Host::Unix("/tmp/s.sock".into())
        );
        let tcp = |host: &str, port| Host::Tcp {
            host: host.into(),
            port,
        };
        assert_eq!(
            Host::parse("tcp://10.0.0.1:2376").unwrap(),
            tcp("10.0.0.1", 2376)
        );
        assert_eq!(
            Host::parse("tcp://node1.example:2376/").unwrap(),
            tcp("node1.example", 2376)
        );
        assert_eq!(Host::parse("tcp://[::1]:2376").unwrap(), tcp("::1", 2376));
        assert_eq!(tcp("::1", 2376).to_string(), "tcp://[::1]:2376");
        assert_eq!(tcp("10.0.0.1", 2376).to_string(), "tcp://10.0.0.1:2376");
        for bad in [
            "unix://rel.sock",
            "tcp://nohost",
            "tcp://:1",
            "tcp://h:0",
            "tcp://h:99999",
            "tcp://::1:2376",
            "tcp://[::1:2376",
            "http://x:1",
            "shoal.sock",
        ] {
            assert_eq!(
                Host::parse(bad).unwrap_err().to_string(),
                format!(
                    "invalid host {bad:?}: expected unix:///path/to/shoal.sock or tcp://HOST:PORT"
                )
            );
        }
        assert_eq!(
            Host::parse(DEFAULT_HOST).unwrap().to_string(),
            "/run/shoal/shoal.sock"
        );
    }

    #[test]
    fn encoding() {
        assert_eq!(encode("vote.1"), "vote.1");
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
