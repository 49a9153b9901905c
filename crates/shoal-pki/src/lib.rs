//! shoal's cluster PKI: the root CA, node certificates, join tokens, the rustls
//! configurations for mutual TLS, and authorization by certificate.
//!
//! # Layout
//! - `certs`: role names (OU), validity, serials, and the [`Identity`] read from a certificate.
//! - `ca`: [`RootCa`] (generate or import; issue node certificates from a CSR; cross-sign a
//!   new root) and
//!   [`ClusterCa`] (the CA certificate every node trusts).
//! - `node`: [`NodeKey`] (made on the node; its CSR) and [`NodeCredentials`].
//! - `renewal`: when a node renews ([`Renewal`]), pure.
//! - `token`: [`JoinToken`] (`SWMTKN-1-<CA digest>-<secret>`) and [`JoinTokens`].
//! - `trust`: [`Trust`], the roots a node trusts and the chain it presents, also during a
//!   root rotation (the new root cross-signed by the current one).
//! - `tls`: server and client configs, the join client that pins the CA by the token.
//! - `authz`: [`authorize`] (one check per RPC by its [`Access`]), the `require_*` checks and
//!   the [`DenyList`], pure.
//! - `files`: the thin I/O (0700 directory, 0600 files).
//!
//! Everything but `files` and the random constructors is free of I/O and the clock: `now`
//! is a parameter.

#![forbid(unsafe_code)]

mod authz;
mod ca;
mod certs;
mod error;
pub mod files;
mod node;
mod renewal;
mod tls;
mod token;
mod trust;

pub use authz::{
    Access, DenyList, authorize, require_certificate, require_cluster, require_manager,
    require_node,
};
pub use ca::{ClusterCa, NodeCertSpec, ROOT_CA_COMMON_NAME, RootCa};
pub use certs::{
    DEFAULT_NODE_CERT_VALIDITY, Identity, ROOT_CA_VALIDITY, Role, Serial, Validity, cert_from_pem,
    cert_to_pem,
};
pub use error::{PkiError, Result};
pub use node::{NodeCredentials, NodeKey};
pub use renewal::{RENEWAL_RANGE, Renewal, decide as renewal_decision, random_fraction};
pub use tls::{
    ClientCerts, MANAGER_SERVER_NAME, client_config, join_client_config, manager_server_name,
    node_server_name, peer_identity, provider, server_config,
};
pub use token::{CaDigest, JoinToken, JoinTokens};
pub use trust::{NextRoot, Trust};

/// rustls's types that appear in this crate's API.
pub use rustls;
