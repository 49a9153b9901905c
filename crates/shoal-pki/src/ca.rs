//! The cluster's root CA: made at `init` or imported, and the node certificates it issues.
//! Pure apart from key generation and signing (which need randomness): times are parameters.

use std::time::SystemTime;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::certs::{self, Role, Serial, Validity};
use crate::error::{PkiError, Result};
use crate::token::CaDigest;

/// The CN of a root CA that shoal generates (Swarm's is `swarm-ca`).
pub const ROOT_CA_COMMON_NAME: &str = "shoal-root-ca";

/// The DNS name a node certificate carries for its node id, so that a manager calling one
/// node's `Agent` service can check it reached that node. The id alone cannot be the name: an
/// all-digit id would be refused as a DNS name.
pub(crate) fn node_dns_name(node_id: &str) -> String {
    format!("{node_id}.node.shoal")
}

/// The root CA's certificate: what every node holds and trusts (no key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterCa {
    der: CertificateDer<'static>,
    not_after: SystemTime,
}

impl ClusterCa {
    /// Reads a CA certificate and checks that it is a CA valid at `now`; `file` names it in
    /// errors.
    pub fn from_pem(pem: &[u8], file: &str, now: SystemTime) -> Result<ClusterCa> {
        ClusterCa::from_der(certs::cert_from_pem(pem, file)?, file, now)
    }

    pub fn from_der(der: CertificateDer<'static>, file: &str, now: SystemTime) -> Result<Self> {
        let (_, cert) = X509Certificate::from_der(&der).map_err(|e| PkiError::BadCertificate {
            file: file.to_string(),
            reason: e.to_string(),
        })?;
        check_ca(&cert, file, now)?;
        let not_after = certs::from_asn1(cert.validity().not_after);
        Ok(ClusterCa { der, not_after })
    }

    /// When the CA expires: no certificate it issues is valid past this.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    pub fn der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// Whether `cert` (DER) was signed by this CA's key and names it as its issuer. Only the
    /// signature and the names are checked, not the validity: a node asks this of its own
    /// certificate to learn whether it must renew for a root rotation.
    pub fn issued(&self, cert: &[u8]) -> bool {
        let (Ok((_, ca)), Ok((_, cert))) = (
            X509Certificate::from_der(&self.der),
            X509Certificate::from_der(cert),
        ) else {
            return false;
        };
        cert.issuer().as_raw() == ca.subject().as_raw()
            && cert.verify_signature(Some(ca.public_key())).is_ok()
    }

    pub fn pem(&self) -> String {
        certs::cert_to_pem(&self.der)
    }

    /// What join tokens pin.
    pub fn digest(&self) -> CaDigest {
        CaDigest::of(&self.der)
    }
}

/// The root CA with its key: held by managers only.
pub struct RootCa {
    ca: ClusterCa,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for RootCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootCa")
            .field("digest", &self.ca.digest().to_string())
            .finish_non_exhaustive()
    }
}

impl RootCa {
    /// A new root CA (ECDSA P-256) for `validity` (give [`certs::ROOT_CA_VALIDITY`]); its O is
    /// the cluster id.
    pub fn generate(cluster_id: &str, validity: Validity) -> Result<RootCa> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(PkiError::Issue)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, ROOT_CA_COMMON_NAME);
        params
            .distinguished_name
            .push(DnType::OrganizationName, cluster_id);
        // A name of its own: a root made by a rotation must not share its subject with the
        // root it replaces, or a verifier that trusts only one of them tries the other's key
        // and says "bad signature" rather than "unknown issuer".
        params.distinguished_name.push(
            DnType::OrganizationalUnitName,
            &Serial::random().hex()[..12],
        );
        // Unconstrained path length: a CA rotation cross-signs the new root as an
        // intermediate under the old one.
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = validity.not_before.into();
        params.not_after = validity.not_after.into();
        params.serial_number = Some(SerialNumber::from_slice(Serial::random().bytes()));
        let cert = params.self_signed(&key).map_err(PkiError::Issue)?;
        Ok(RootCa {
            ca: ClusterCa {
                der: cert.der().clone(),
                not_after: certs::truncate_to_secs(validity.not_after),
            },
            issuer: Issuer::new(params, key),
        })
    }

    /// An existing CA (`--external-ca` style): a CA certificate valid at `now` and its own
    /// private key, both PEM. The file names are for errors.
    pub fn import(
        cert_pem: &[u8],
        cert_file: &str,
        key_pem: &[u8],
        key_file: &str,
        now: SystemTime,
    ) -> Result<RootCa> {
        let ca = ClusterCa::from_pem(cert_pem, cert_file, now)?;
        let key = key_from_pem(key_pem, key_file)?;
        let (_, cert) =
            X509Certificate::from_der(&ca.der).map_err(|e| PkiError::BadCertificate {
                file: cert_file.to_string(),
                reason: e.to_string(),
            })?;
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(PkiError::KeyMismatch {
                cert_file: cert_file.to_string(),
                key_file: key_file.to_string(),
            });
        }
        let issuer =
            Issuer::from_ca_cert_der(&ca.der, key).map_err(|e| PkiError::BadCertificate {
                file: cert_file.to_string(),
                reason: e.to_string(),
            })?;
        Ok(RootCa { ca, issuer })
    }

    pub fn cert(&self) -> &ClusterCa {
        &self.ca
    }

    /// This root's certificate signed by `old` instead of itself (same subject, key and
    /// subject key identifier), for a root rotation: a node that trusts only `old` verifies
    /// a certificate from this root through it. Valid while both roots are.
    pub fn cross_signed_by(&self, old: &RootCa) -> Result<CertificateDer<'static>> {
        let bad = |reason: String| PkiError::CrossSign { reason };
        let (_, cert) = X509Certificate::from_der(&self.ca.der)
            .map_err(|e| bad(format!("cannot parse the new root: {e}")))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(cert.subject()).map_err(bad)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        if let Ok(Some(ski)) = cert
            .get_extension_unique(&x509_parser::oid_registry::OID_X509_EXT_SUBJECT_KEY_IDENTIFIER)
            && let x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(id) =
                ski.parsed_extension()
        {
            params.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(id.0.to_vec());
        }
        params.not_before = certs::from_asn1(cert.validity().not_before).into();
        params.not_after = self.ca.not_after.min(old.ca.not_after).into();
        params.serial_number = Some(SerialNumber::from_slice(Serial::random().bytes()));
        params.use_authority_key_identifier_extension = true;
        let cross = params
            .signed_by(self.issuer.key(), &old.issuer)
            .map_err(PkiError::Issue)?;
        let der = cross.der().clone();
        // A path through it needs the exact subject bytes of the new root.
        let (_, parsed) = X509Certificate::from_der(&der)
            .map_err(|e| bad(format!("cannot parse the result: {e}")))?;
        if parsed.subject().as_raw() != cert.subject().as_raw() {
            return Err(bad(
                "the new root's subject cannot be reproduced byte for byte".into(),
            ));
        }
        Ok(der)
    }

    /// The key in PKCS#8 PEM, to be saved 0600 ([`crate::files::save_root_ca`]).
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Signs a node's certificate signing request (DER). Only the request's public key is
    /// used: the names, role and lifetime are the manager's decision in `spec`, never the
    /// node's, so a worker cannot ask to be a manager. A lifetime past the CA's own ends
    /// with the CA (as Swarm): a certificate cannot outlive what it chains to.
    pub fn issue(&self, csr_der: &[u8], spec: &NodeCertSpec) -> Result<CertificateDer<'static>> {
        certs::check_node_id(&spec.node_id)?;
        let csr =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(|e| PkiError::BadCsr {
                    reason: e.to_string(),
                })?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let dn = &mut params.distinguished_name;
        dn.push(DnType::CommonName, spec.node_id.as_str());
        dn.push(DnType::OrganizationalUnitName, spec.role.ou());
        dn.push(DnType::OrganizationName, spec.cluster_id.as_str());
        params.subject_alt_names = vec![
            SanType::DnsName(dns_name(spec.role.ou())?),
            SanType::DnsName(dns_name(&node_dns_name(&spec.node_id))?),
        ];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        // Every node is both a TLS server (its Agent service, a manager's 2377) and a client.
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = spec.validity.not_before.into();
        params.not_after = spec.validity.not_after.min(self.ca.not_after).into();
        params.serial_number = Some(SerialNumber::from_slice(spec.serial.bytes()));
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(PkiError::Issue)?;
        Ok(cert.der().clone())
    }
}

/// What a manager decides about a certificate it issues.
#[derive(Debug, Clone)]
pub struct NodeCertSpec {
    pub node_id: String,
    pub role: Role,
    pub cluster_id: String,
    pub validity: Validity,
    pub serial: Serial,
}

/// A subject as rcgen writes it, each attribute with its original string type, so that the
/// encoding is the same as the certificate's.
fn distinguished_name(
    name: &x509_parser::x509::X509Name<'_>,
) -> std::result::Result<DistinguishedName, String> {
    use rcgen::DnValue;
    use x509_parser::der_parser::asn1_rs::Tag;
    let mut dn = DistinguishedName::new();
    for attr in name.iter_attributes() {
        let oid: Vec<u64> = attr
            .attr_type()
            .iter()
            .ok_or("an attribute type does not fit in u64s")?
            .collect();
        let value = attr.attr_value();
        let text = || {
            std::str::from_utf8(value.data)
                .map(str::to_string)
                .map_err(|_| "an attribute is not UTF-8".to_string())
        };
        let v = match value.tag() {
            Tag::PrintableString => DnValue::PrintableString(
                text()?
                    .try_into()
                    .map_err(|e: rcgen::Error| e.to_string())?,
            ),
            Tag::Utf8String => DnValue::Utf8String(text()?),
            Tag::Ia5String => DnValue::Ia5String(
                text()?
                    .try_into()
                    .map_err(|e: rcgen::Error| e.to_string())?,
            ),
            t => {
                return Err(format!(
                    "an attribute has the string type {t}, which cannot be re-encoded"
                ));
            }
        };
        dn.push(rcgen::DnType::from_oid(&oid), v);
    }
    Ok(dn)
}

fn dns_name(s: &str) -> Result<rcgen::string::Ia5String> {
    s.try_into().map_err(PkiError::Issue)
}

/// A private key in PEM: PKCS#8 (the form ring reads).
pub(crate) fn key_from_pem(pem: &[u8], file: &str) -> Result<KeyPair> {
    let bad = |reason: String| PkiError::BadKey {
        file: file.to_string(),
        reason,
    };
    let der = PrivateKeyDer::from_pem_slice(pem).map_err(|e| PkiError::Pem {
        file: file.to_string(),
        expected: "PRIVATE KEY",
        reason: e.to_string(),
    })?;
    match der {
        PrivateKeyDer::Pkcs8(_) => {
            KeyPair::try_from(&der).map_err(|e| bad(format!("unsupported key: {e}")))
        }
        PrivateKeyDer::Sec1(_) => Err(bad("it is a SEC1 EC key (EC PRIVATE KEY)".into())),
        PrivateKeyDer::Pkcs1(_) => Err(bad("it is a PKCS#1 RSA key (RSA PRIVATE KEY)".into())),
        _ => Err(bad("unknown key format".into())),
    }
}

/// The checks a root CA certificate must pass: a CA that may sign certificates, valid at `now`.
fn check_ca(cert: &X509Certificate<'_>, file: &str, now: SystemTime) -> Result<()> {
    let not_ca = |reason: &str| PkiError::NotACa {
        file: file.to_string(),
        reason: reason.to_string(),
    };
    match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => {}
        Ok(Some(_)) => return Err(not_ca("its basic constraints say CA:FALSE")),
        Ok(None) => return Err(not_ca("it has no basic constraints extension")),
        Err(e) => return Err(not_ca(&format!("its basic constraints are invalid: {e}"))),
    }
    if let Ok(Some(ku)) = cert.key_usage()
        && !ku.value.key_cert_sign()
    {
        return Err(not_ca("its key usage does not include certificate signing"));
    }
    let not_before = certs::from_asn1(cert.validity().not_before);
    let not_after = certs::from_asn1(cert.validity().not_after);
    if now >= not_after {
        return Err(PkiError::CaExpired {
            file: file.to_string(),
            not_after: certs::fmt_time(not_after),
        });
    }
    if now < not_before {
        return Err(PkiError::CaNotYetValid {
            file: file.to_string(),
            not_before: certs::fmt_time(not_before),
        });
    }
    Ok(())
}
