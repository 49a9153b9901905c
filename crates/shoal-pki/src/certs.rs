//! What a node certificate says: the role names, validity, serial numbers, and the
//! `Identity` read back from a peer's certificate. Pure: times are parameters.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::x509::AttributeTypeAndValue;

use crate::error::{PkiError, Result};

/// A node's role as its certificate's OU states it. The names are shoal's own
/// (`shoal-manager`, `shoal-worker`; Swarm writes `swarm-manager`, `swarm-worker`): these
/// certificates authorize shoal's RPCs, not Swarm's, and a distinct name keeps one from
/// being mistaken for the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Manager,
    Worker,
}

impl Role {
    /// The OU of a certificate for this role; also a DNS SAN of it (as Swarm does), so that a
    /// manager's certificate answers to [`crate::MANAGER_SERVER_NAME`] and a worker's does not.
    pub fn ou(self) -> &'static str {
        match self {
            Role::Manager => "shoal-manager",
            Role::Worker => "shoal-worker",
        }
    }

    pub fn from_ou(ou: &str) -> Option<Role> {
        [Role::Manager, Role::Worker]
            .into_iter()
            .find(|r| r.ou() == ou)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Manager => "manager",
            Role::Worker => "worker",
        })
    }
}

/// Default lifetime of a node certificate, as Swarm's.
pub const DEFAULT_NODE_CERT_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);
/// Lifetime of a generated root CA, as Swarm's (20 years).
pub const ROOT_CA_VALIDITY: Duration = Duration::from_secs(20 * 365 * 24 * 3600);
/// How far back `not_before` is set at most: nodes' clocks differ a little, and a
/// certificate must be valid on a peer whose clock is slightly behind the issuer's.
const MAX_BACKDATE: Duration = Duration::from_secs(60);

/// When a certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Validity {
    /// Exactly these bounds (a test may give a window in the past).
    pub fn new(not_before: SystemTime, not_after: SystemTime) -> Result<Validity> {
        if not_after <= not_before {
            return Err(PkiError::BadValidity {
                not_before: fmt_time(not_before),
                not_after: fmt_time(not_after),
            });
        }
        Ok(Validity {
            not_before,
            not_after,
        })
    }

    /// Valid for `lifetime` from `now`, with `not_before` moved back by a tenth of the
    /// lifetime up to a minute for clock skew (a tenth, so that a one-minute test
    /// certificate is not mostly backdating when its renewal point is computed).
    pub fn starting(now: SystemTime, lifetime: Duration) -> Validity {
        let back = (lifetime / 10).min(MAX_BACKDATE);
        Validity {
            not_before: now.checked_sub(back).unwrap_or(now),
            not_after: now + lifetime,
        }
    }
}

/// A certificate serial number: 16 random bytes, positive and without a leading zero byte,
/// so the bytes in the certificate are exactly these (and the deny list can name them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Serial([u8; 16]);

impl Serial {
    pub fn from_random(mut bytes: [u8; 16]) -> Serial {
        bytes[0] = (bytes[0] & 0x7f).max(1);
        Serial(bytes)
    }

    pub fn random() -> Serial {
        Serial::from_random(rand::random())
    }

    pub fn bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Lowercase hex, as [`Identity::serial`].
    pub fn hex(&self) -> String {
        hex(&self.0)
    }
}

/// Who a peer is, read from its (already verified) certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The CN.
    pub node_id: String,
    /// From the OU.
    pub role: Role,
    /// The O.
    pub cluster_id: String,
    /// The serial number in lowercase hex.
    pub serial: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Identity {
    /// Reads a node certificate. It does not verify the signature: that is the TLS layer's
    /// job (or the CA's, for a certificate it just issued).
    pub fn from_der(der: &[u8]) -> Result<Identity> {
        let bad = |reason: String| PkiError::NotANodeCertificate { reason };
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| bad(format!("cannot parse it: {e}")))?;
        if is_ca(&cert) {
            return Err(bad("it is a CA certificate".into()));
        }
        let subject = cert.subject();
        let node_id = only_one("CN", subject.iter_common_name()).map_err(bad)?;
        let ou = only_one("OU", subject.iter_organizational_unit()).map_err(bad)?;
        let cluster_id = only_one("O", subject.iter_organization()).map_err(bad)?;
        let role = Role::from_ou(&ou).ok_or_else(|| {
            bad(format!(
                "its OU {ou:?} is neither {} nor {}",
                Role::Manager.ou(),
                Role::Worker.ou()
            ))
        })?;
        Ok(Identity {
            node_id,
            role,
            cluster_id,
            serial: hex(cert.raw_serial()),
            not_before: from_asn1(cert.validity().not_before),
            not_after: from_asn1(cert.validity().not_after),
        })
    }
}

/// The one attribute of a kind in a subject, as a string; why not as the error.
fn only_one<'a: 'b, 'b>(
    what: &str,
    mut it: impl Iterator<Item = &'b AttributeTypeAndValue<'a>>,
) -> std::result::Result<String, String> {
    let first = it
        .next()
        .ok_or_else(|| format!("its subject has no {what}"))?;
    if it.next().is_some() {
        return Err(format!("its subject has more than one {what}"));
    }
    first
        .as_str()
        .map(str::to_string)
        .map_err(|_| format!("its {what} is not a string"))
}

/// Whether a certificate's basic constraints make it a CA.
pub(crate) fn is_ca(cert: &X509Certificate<'_>) -> bool {
    matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca)
}

/// The one certificate in a PEM text; `file` names it in errors.
pub fn cert_from_pem(pem: &[u8], file: &str) -> Result<CertificateDer<'static>> {
    CertificateDer::from_pem_slice(pem).map_err(|e| PkiError::Pem {
        file: file.to_string(),
        expected: "CERTIFICATE",
        reason: e.to_string(),
    })
}

/// A certificate (DER) as PEM.
pub fn cert_to_pem(der: &[u8]) -> String {
    pem_encode("CERTIFICATE", der)
}

pub(crate) fn pem_encode(tag: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(tag, der.to_vec()))
}

pub(crate) fn from_asn1(t: x509_parser::time::ASN1Time) -> SystemTime {
    let secs = t.timestamp();
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// A time as a certificate holds it (whole seconds).
pub(crate) fn truncate_to_secs(t: SystemTime) -> SystemTime {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => UNIX_EPOCH + Duration::from_secs(d.as_secs()),
        Err(_) => t,
    }
}

/// RFC 3339 to the second, for messages.
pub(crate) fn fmt_time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

/// A node id becomes a DNS name in the certificate: the characters of a DNS label only.
pub(crate) fn check_node_id(id: &str) -> Result<()> {
    let reason = if id.is_empty() || id.len() > 63 {
        Some("it must be 1 to 63 characters")
    } else if !id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        Some("only a-z, 0-9 and '-' are allowed")
    } else if id.starts_with('-') || id.ends_with('-') {
        Some("it must not start or end with '-'")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(PkiError::BadNodeId {
            id: id.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_through_their_ou() {
        for r in [Role::Manager, Role::Worker] {
            assert_eq!(Role::from_ou(r.ou()), Some(r));
        }
        assert_eq!(Role::from_ou("swarm-manager"), None);
    }

    #[test]
    fn serial_is_positive_without_a_leading_zero() {
        assert_eq!(Serial::from_random([0; 16]).bytes()[0], 1);
        assert_eq!(Serial::from_random([0xff; 16]).bytes()[0], 0x7f);
        assert_eq!(Serial::from_random([0xff; 16]).hex().len(), 32);
    }

    #[test]
    fn validity_backdates_a_tenth_up_to_a_minute() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let v = Validity::starting(now, Duration::from_secs(60));
        assert_eq!(now.duration_since(v.not_before).unwrap().as_secs(), 6);
        let v = Validity::starting(now, DEFAULT_NODE_CERT_VALIDITY);
        assert_eq!(now.duration_since(v.not_before).unwrap().as_secs(), 60);
        assert_eq!(v.not_after, now + DEFAULT_NODE_CERT_VALIDITY);
        let err = Validity::new(now, now).unwrap_err().to_string();
        assert!(err.contains("must come after not_before"), "{err}");
    }

    #[test]
    fn node_ids_must_be_dns_labels() {
        check_node_id("3f9a0c1b2d4e5f60718293a4").unwrap();
        for (id, why) in [
            ("", "1 to 63"),
            ("Node1", "only a-z"),
            ("a.b", "only a-z"),
            ("-a", "start or end"),
        ] {
            let err = check_node_id(id).unwrap_err().to_string();
            assert!(err.contains(why), "{id:?}: {err}");
        }
    }
}
