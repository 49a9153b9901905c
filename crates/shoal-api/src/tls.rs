//! The API over TCP with TLS, as dockerd's `--tlsverify`: the server requires a client
//! certificate signed by the CA it is given, and the client trusts only the CA it is given.
//!
//! Trust is those files alone, never the system's roots: a client certificate from the CA is
//! full control of the daemon, as root on its Unix socket is. TLS 1.2 and 1.3 (curl and other
//! HTTP clients speak to the API too), ring as the provider (as shoal-pki), ALPN `http/1.1`
//! (the router serves HTTP/1.1).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

pub use rustls;

/// How long a client may take to finish its handshake before the server drops it.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once on one listener: a client that opens connections and
/// never finishes them holds a bounded amount of the daemon.
const MAX_PENDING_HANDSHAKES: usize = 64;

const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Which of the three files a [`TlsError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    Ca,
    Cert,
    Key,
}

impl std::fmt::Display for TlsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsFile::Ca => "CA certificate",
            TlsFile::Cert => "certificate",
            TlsFile::Key => "private key",
        })
    }
}

/// The CA to trust and this side's certificate and key, all PEM (docker's `ca.pem`,
/// `cert.pem`, `key.pem`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    pub fn path(&self, which: TlsFile) -> &Path {
        match which {
            TlsFile::Ca => &self.ca,
            TlsFile::Cert => &self.cert,
            TlsFile::Key => &self.key,
        }
    }
}

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read the {which} {}: {source}", .path.display())]
    Read {
        which: TlsFile,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the {which} file {} holds no {which} in PEM form{detail}", .path.display())]
    NoPem {
        which: TlsFile,
        path: PathBuf,
        /// Why the parser gave up, if it said.
        detail: String,
    },
    #[error("the CA certificate file {} holds a certificate that cannot be a trust root: {detail}", .path.display())]
    BadCa { path: PathBuf, detail: String },
    #[error("the certificate {} and the key {} cannot be used together: {source}", .cert.display(), .key.display())]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

impl TlsError {
    /// The file the error is about, when it is about one file.
    pub fn file(&self) -> Option<TlsFile> {
        match self {
            TlsError::Read { which, .. } | TlsError::NoPem { which, .. } => Some(*which),
            TlsError::BadCa { .. } => Some(TlsFile::Ca),
            TlsError::Pair { .. } => None,
        }
    }
}

/// The crypto provider: ring, given explicitly (the process may link another).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(which: TlsFile, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        which,
        path: path.to_path_buf(),
        source,
    })
}

fn certs(which: TlsFile, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(which, path)?;
    let no_pem = |detail: String| TlsError::NoPem {
        which,
        path: path.to_path_buf(),
        detail,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| no_pem(format!(" ({e})")))?;
    if certs.is_empty() {
        return Err(no_pem(String::new()));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(TlsFile::Key, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::NoPem {
        which: TlsFile::Key,
        path: path.to_path_buf(),
        detail: format!(" ({e})"),
    })
}

fn roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs(TlsFile::Ca, path)? {
        roots.add(cert).map_err(|e| TlsError::BadCa {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    }
    Ok(Arc::new(roots))
}

fn pair_error(files: &TlsFiles) -> impl FnOnce(rustls::Error) -> TlsError + '_ {
    |source| TlsError::Pair {
        cert: files.cert.clone(),
        key: files.key.clone(),
        source,
    }
}

/// The server's side: presents `cert` (with any chain after it in the file) and requires
/// every client to present a certificate that chains to `ca`.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(&files.ca)?, provider())
        .build()
        .map_err(|e| TlsError::BadCa {
            path: files.ca.clone(),
            detail: e.to_string(),
        })?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(pair_error(files))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(TlsFile::Cert, &files.cert)?, key(&files.key)?)
        .map_err(pair_error(files))?;
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}

/// The client's side: trusts only `ca` and presents `cert`.
pub fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, TlsError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(pair_error(files))?
        .with_root_certificates(roots(&files.ca)?)
        .with_client_auth_cert(certs(TlsFile::Cert, &files.cert)?, key(&files.key)?)
        .map_err(pair_error(files))?;
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}

/// A TCP listener whose connections are TLS streams from verified clients, for
/// [`crate::serve_with_shutdown`]. Handshakes run on tasks of their own, so one slow client
/// does not hold up the others; a failed one is logged and its connection closed after the
/// alert has gone out (the client then reads why, instead of a reset).
pub struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    acceptor: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, accepted) = mpsc::channel(MAX_PENDING_HANDSHAKES);
        let acceptor = tokio::spawn(accept_loop(tcp, TlsAcceptor::from(config), tx));
        Ok(TlsListener {
            accepted,
            local,
            acceptor,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(conn) => conn,
            // The accept loop only ends when this listener drops it.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let Ok(permit) = Arc::clone(&pending).acquire_owned().await else {
            return;
        };
        let (stream, peer) = match tcp.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!(error = %e, "API: failed to accept a TCP connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let handshake = acceptor.accept(stream).into_fallible();
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send((tls, peer)).await;
                }
                Ok(Err((error, stream))) => {
                    tracing::warn!(%peer, %error, "API: refused a TLS connection");
                    linger_close(stream).await;
                }
                Err(_) => {
                    tracing::warn!(%peer, "API: a client did not finish its TLS handshake in time");
                }
            }
        });
    }
}

/// Closes a refused connection so that the client reads the alert: closing a socket with
/// unread data (a TLS 1.3 client's first request, sent before it learns its certificate was
/// refused) would send a reset that can overtake the alert.
async fn linger_close(mut stream: TcpStream) {
    let _ = stream.shutdown().await;
    let mut buf = [0u8; 4096];
    let drain = async {
        let mut total = 0usize;
        while let Ok(n) = stream.read(&mut buf).await {
            total += n;
            if n == 0 || total > 64 * 1024 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

/// The rustls error under an I/O or hyper error, if there is one. `io::Error::source` skips
/// the error it wraps, so each one's inner error is looked at too.
pub(crate) fn rustls_error<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(r) = e
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(r);
        }
        next = e.source();
    }
    None
}

/// An alert a server sends about a client certificate, in words.
pub(crate) fn describe_alert(alert: rustls::AlertDescription) -> String {
    use rustls::AlertDescription as A;
    match alert {
        A::UnknownCA => "unknown CA".into(),
        A::BadCertificate => "bad certificate".into(),
        A::CertificateRequired => "certificate required".into(),
        A::CertificateExpired => "certificate expired".into(),
        A::CertificateRevoked => "certificate revoked".into(),
        A::DecryptError => "decrypt error".into(),
        A::HandshakeFailure => "handshake failure".into(),
        other => format!("{other:?}"),
    }
}

/// Why the daemon's certificate did not verify, and what to change.
pub(crate) fn describe_server_cert_error(e: &rustls::CertificateError, host: &str) -> String {
    use rustls::CertificateError as C;
    match e {
        C::UnknownIssuer => {
            "its certificate is not signed by the CA in --tlscacert (SHOAL_CERT_PATH/ca.pem); \
             use the CA that signed the daemon's --tlscert"
                .into()
        }
        C::NotValidForName | C::NotValidForNameContext { .. } => format!(
            "its certificate is not valid for the address in {host}: connect with a name or IP \
             the certificate lists (its subjectAltName), or reissue it with this one"
        ),
        C::Expired | C::ExpiredContext { .. } => "its certificate has expired".into(),
        C::NotValidYet | C::NotValidYetContext { .. } => {
            "its certificate is not valid yet (check both hosts' clocks)".into()
        }
        other => format!("its certificate was refused: {other:?}"),
    }
}
