//! rustls configurations for port 2377 and the nodes' Agent service.
//!
//! Trust is the cluster's root CA alone (never the system's roots), TLS 1.3 only (every peer
//! is shoal), the ring provider given explicitly (the process may link another), ALPN `h2`
//! for gRPC.
//!
//! Server names: certificates name node ids, not hosts (a node's address may change and
//! several nodes may share one in a lab), so a client does not check a host name. A manager's
//! certificate carries the fixed DNS name [`MANAGER_SERVER_NAME`] (its OU, as Swarm's
//! `swarm-manager`), and every node's carries [`node_server_name`] of its id: a client
//! that wants a manager asks for `shoal-manager`, which a worker's certificate does not
//! answer to; a manager calling one node's Agent service asks for that node's name.
//!
//! Join: a joining node has no certificate yet. As Swarm (client certificates verified if
//! given), 2377 may serve [`ClientCerts::OptionalForJoin`]: a certificate, if presented, must
//! chain to the cluster CA or the handshake fails; a connection without one gets no
//! [`Identity`], and the gRPC layer then admits only `Join` ([`crate::authorize`] with
//! [`crate::Access::Joining`]).
//! The joining node's side is [`join_client_config`]: it presents nothing and trusts the
//! manager only if the CA certificate the manager sends with its own has the digest the join
//! token pins, and the manager's certificate chains to that CA and answers to
//! `shoal-manager`. So the token's secret is only ever sent to a real manager, and no
//! separate "fetch the CA" step is needed.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore, ServerConfig,
    SignatureScheme,
};

use crate::certs::{Identity, Role};
use crate::error::{PkiError, Result};
use crate::node::NodeCredentials;
use crate::token::{CaDigest, JoinToken};
use crate::trust::Trust;

/// The name a client asks for when it wants a manager (a manager certificate's SAN).
pub const MANAGER_SERVER_NAME: &str = "shoal-manager";

const ALPN_H2: &[u8] = b"h2";

/// Whether a server requires a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCerts {
    /// Every client presents a certificate from the cluster CA (the nodes' Agent service).
    Required,
    /// A client may present none, for `Join` only (2377 on a manager); one it presents must
    /// still chain to the cluster CA.
    OptionalForJoin,
}

/// The crypto provider: ring, as the rest of the workspace.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `shoal-manager` as a rustls server name.
pub fn manager_server_name() -> ServerName<'static> {
    debug_assert_eq!(MANAGER_SERVER_NAME, Role::Manager.ou());
    ServerName::DnsName(
        rustls::pki_types::DnsName::try_from(MANAGER_SERVER_NAME)
            .expect("shoal-manager is a valid DNS name")
            .to_owned(),
    )
}

/// The name a node's certificate answers to for its node id (`<id>.node.shoal`), for a
/// manager calling that node's Agent service.
pub fn node_server_name(node_id: &str) -> Result<ServerName<'static>> {
    crate::certs::check_node_id(node_id)?;
    ServerName::try_from(crate::ca::node_dns_name(node_id)).map_err(|_| PkiError::BadNodeId {
        id: node_id.to_string(),
        reason: "it does not make a DNS name",
    })
}

/// A server presenting `creds` (with the CA certificate after it, so that a joining node can
/// pin it; see [`Trust::chain`]) and verifying clients against the roots `trust` holds.
pub fn server_config(
    trust: &Trust,
    creds: &NodeCredentials,
    clients: ClientCerts,
) -> Result<ServerConfig> {
    let mut verifier = WebPkiClientVerifier::builder_with_provider(trust.root_store()?, provider());
    if clients == ClientCerts::OptionalForJoin {
        verifier = verifier.allow_unauthenticated();
    }
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier.build()?)
        .with_single_cert(trust.chain(creds.cert()), creds.private_key())?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// A member's client: trusts only the cluster's roots and presents the node's certificate
/// (with what [`Trust::chain`] adds).
pub fn client_config(trust: &Trust, creds: &NodeCredentials) -> Result<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(trust.root_store()?)
        .with_client_auth_cert(trust.chain(creds.cert()), creds.private_key())?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// A joining node's client: no certificate; trusts the manager only through the CA the token
/// pins (see the module's notes). Connect with [`manager_server_name`].
pub fn join_client_config(token: &JoinToken) -> Result<ClientConfig> {
    let verifier = TokenPinnedVerifier {
        token: token.clone(),
        provider: provider(),
    };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// Who a verified peer is: `None` when it presented no certificate (only possible with
/// [`ClientCerts::OptionalForJoin`]). Give it the chain the TLS layer verified (tonic's
/// `Request::peer_certs`, rustls's `peer_certificates`).
pub fn peer_identity(chain: Option<&[CertificateDer<'_>]>) -> Result<Option<Identity>> {
    match chain.and_then(|c| c.first()) {
        None => Ok(None),
        Some(leaf) => Identity::from_der(leaf).map(Some),
    }
}

/// Verifies a manager against the CA that a join token pins. The verification itself is
/// rustls's own (WebPkiServerVerifier with that CA as the only root); this only picks the
/// root from what the manager sent and checks its digest first.
#[derive(Debug)]
struct TokenPinnedVerifier {
    token: JoinToken,
    provider: Arc<CryptoProvider>,
}

fn refuse(e: PkiError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

impl ServerCertVerifier for TokenPinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let pinned = self.token.ca_digest();
        let Some(ca) = intermediates.iter().find(|c| CaDigest::of(c) == pinned) else {
            return Err(refuse(match intermediates.last() {
                None => PkiError::NoCaPresented,
                Some(last) => PkiError::CaDigestMismatch {
                    expected: pinned.to_string(),
                    found: CaDigest::of(last).to_string(),
                },
            }));
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let rest: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .filter(|c| CaDigest::of(c) != pinned)
            .cloned()
            .collect();
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?
            .verify_server_cert(end_entity, &rest, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
