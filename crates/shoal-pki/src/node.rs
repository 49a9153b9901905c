//! A node's side: its own key (made on the node, never sent), the signing request it sends
//! with its join or renewal, and the credentials it holds once a manager has signed it.

use rcgen::{CertificateParams, DistinguishedName, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::certs::{self, Identity};
use crate::error::{PkiError, Result};

/// A node's private key (ECDSA P-256).
pub struct NodeKey {
    key: KeyPair,
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeKey(<hidden>)")
    }
}

impl NodeKey {
    pub fn generate() -> Result<NodeKey> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(PkiError::Issue)?;
        Ok(NodeKey { key })
    }

    /// A key saved with [`NodeKey::to_pem`]; `file` names it in errors.
    pub fn from_pem(pem: &[u8], file: &str) -> Result<NodeKey> {
        Ok(NodeKey {
            key: crate::ca::key_from_pem(pem, file)?,
        })
    }

    /// PKCS#8 PEM, to be saved 0600.
    pub fn to_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A certificate signing request (DER) for this key. Its subject is empty: the manager
    /// names the node, its role and cluster, whatever a request would ask for.
    pub fn csr(&self) -> Result<Vec<u8>> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let csr = params
            .serialize_request(&self.key)
            .map_err(PkiError::Issue)?;
        Ok(csr.der().to_vec())
    }

    /// Pairs this key with the certificate a manager issued for it, checking that the
    /// certificate is for this key and is a node certificate.
    pub fn certify(&self, cert: CertificateDer<'static>) -> Result<NodeCredentials> {
        let (_, parsed) =
            X509Certificate::from_der(&cert).map_err(|e| PkiError::NotANodeCertificate {
                reason: format!("cannot parse it: {e}"),
            })?;
        if parsed.public_key().subject_public_key.data.as_ref() != self.key.public_key_raw() {
            return Err(PkiError::NodeKeyMismatch);
        }
        let identity = Identity::from_der(&cert)?;
        Ok(NodeCredentials {
            cert,
            key: PrivatePkcs8KeyDer::from(self.key.serialize_der()),
            identity,
        })
    }
}

/// A node's certificate and key, and who the certificate says the node is.
pub struct NodeCredentials {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    identity: Identity,
}

impl Clone for NodeCredentials {
    fn clone(&self) -> Self {
        NodeCredentials {
            cert: self.cert.clone(),
            key: self.key.clone_key(),
            identity: self.identity.clone(),
        }
    }
}

impl std::fmt::Debug for NodeCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCredentials")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl NodeCredentials {
    /// Reads saved credentials (PEM certificate and key); the file names are for errors.
    pub fn from_pem(
        cert_pem: &[u8],
        cert_file: &str,
        key_pem: &[u8],
        key_file: &str,
    ) -> Result<NodeCredentials> {
        let cert = certs::cert_from_pem(cert_pem, cert_file)?;
        NodeKey::from_pem(key_pem, key_file)?.certify(cert)
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    pub fn cert_pem(&self) -> String {
        certs::cert_to_pem(&self.cert)
    }

    pub fn key_pem(&self) -> String {
        certs::pem_encode("PRIVATE KEY", self.key.secret_pkcs8_der())
    }

    pub(crate) fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }
}
