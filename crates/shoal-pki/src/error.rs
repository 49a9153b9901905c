//! The crate's one error type. Messages name the file, node or token part at fault and say
//! what to do about it.

use std::path::PathBuf;

/// Everything this crate can refuse or fail at.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    // --- reading and importing the root CA ---
    #[error("{file}: not a PEM {expected}: {reason}; give a PEM file (-----BEGIN {expected}-----)")]
    Pem {
        file: String,
        expected: &'static str,
        reason: String,
    },
    #[error("{file}: cannot parse the certificate: {reason}")]
    BadCertificate { file: String, reason: String },
    #[error(
        "{file}: cannot read the private key: {reason}; give an unencrypted PKCS#8 key \
         (convert one with `openssl pkcs8 -topk8 -nocrypt -in KEY`)"
    )]
    BadKey { file: String, reason: String },
    #[error(
        "{file}: the certificate is not a CA ({reason}); give the certificate of a root CA \
         that may sign certificates"
    )]
    NotACa { file: String, reason: String },
    #[error(
        "{key_file}: the key does not belong to the certificate in {cert_file} (their public \
         keys differ); give the CA's own key"
    )]
    KeyMismatch { cert_file: String, key_file: String },
    #[error("{file}: the CA certificate expired at {not_after}; give a CA that is valid now")]
    CaExpired { file: String, not_after: String },
    #[error(
        "{file}: the CA certificate is not valid before {not_before}; check this host's clock \
         or give a CA that is valid now"
    )]
    CaNotYetValid { file: String, not_before: String },

    // --- issuing and reading node certificates ---
    #[error("invalid certificate signing request: {reason}; have the node make a new one")]
    BadCsr { reason: String },
    #[error("cannot issue a certificate: {0}")]
    Issue(#[source] rcgen::Error),
    #[error("cannot cross-sign the new root CA with the current one: {reason}")]
    CrossSign { reason: String },
    #[error(
        "the cross-signed certificate of a root rotation does not fit: {reason}; start the \
         rotation again"
    )]
    BadCrossSigned { reason: String },
    #[error("the certificate's key does not match this node's key; request a new certificate")]
    NodeKeyMismatch,
    #[error(
        "the certificate is not a shoal node certificate: {reason}; rejoin the node to get one"
    )]
    NotANodeCertificate { reason: String },
    #[error("invalid validity: not_after ({not_after}) must come after not_before ({not_before})")]
    BadValidity {
        not_before: String,
        not_after: String,
    },
    #[error("invalid node id {id:?} for a certificate: {reason}")]
    BadNodeId { id: String, reason: &'static str },

    // --- join tokens ---
    #[error(
        "invalid join token: {reason}; expected SWMTKN-1-<50 base36 characters>-<25 base36 \
         characters>: run `shoal join-token worker` on a manager to print a valid one"
    )]
    Token { reason: String },
    #[error(
        "the CA certificate does not match the join token: the token pins the CA with digest \
         {expected}, the manager presented {found}; this is not the cluster the token belongs \
         to (or its CA was rotated): check the manager address and get a current token"
    )]
    CaDigestMismatch { expected: String, found: String },
    #[error(
        "the manager presented no CA certificate with its own, so it cannot be checked against \
         the join token's CA digest; check that the address is a shoal manager's"
    )]
    NoCaPresented,
    #[error(
        "the join token's secret matches no current token of this cluster; it may have been \
         rotated: get a current one with `shoal join-token worker|manager` on a manager"
    )]
    TokenSecretRefused,

    // --- TLS ---
    #[error("cannot build the TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot build the TLS certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),

    // --- authorization ---
    #[error(
        "refused: {rpc} needs a node certificate and the peer presented none; join the cluster \
         first"
    )]
    NoCertificate { rpc: String },
    #[error(
        "refused node {node_id}: its certificate is for cluster {found}, this is cluster \
         {expected}; the node must leave and join this cluster"
    )]
    WrongCluster {
        node_id: String,
        found: String,
        expected: String,
    },
    #[error(
        "refused node {node_id}: its certificate is a {role} certificate and only managers \
         may do this"
    )]
    NotAManager { node_id: String, role: String },
    #[error(
        "refused node {node_id}: it acted for node {claimed}, and a node may act only for \
         itself (the node named in its certificate)"
    )]
    WrongNode { node_id: String, claimed: String },
    #[error(
        "refused node {node_id}: its {what} is on the deny list (the node was removed from \
         the cluster); it must join again with a new token"
    )]
    Denied { node_id: String, what: String },

    // --- files ---
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path}: the key file is readable by others (mode {mode:o}); run `chmod 600 {path}` \
         (and 700 on its directory)"
    )]
    LooseKeyFile { path: PathBuf, mode: u32 },
}

pub type Result<T, E = PkiError> = std::result::Result<T, E>;

impl PkiError {
    pub(crate) fn token(reason: impl Into<String>) -> Self {
        PkiError::Token {
            reason: reason.into(),
        }
    }

    pub(crate) fn io(action: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        PkiError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}
