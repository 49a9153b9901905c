//! What a node trusts on port 2377 and what it presents beside its own certificate, also
//! while the cluster moves to a new root CA. Pure.
//!
//! A root rotation (`shoal ca --rotate`, as Swarm's cross-signed transition): the new root
//! R2 and R2 cross-signed by the current root R1 (X: R2's subject and key, issued by R1).
//! While it runs every node trusts both roots; a node whose certificate is from R2 sends X
//! after it, so a peer that still trusts R1 alone (it has not heard of the rotation yet)
//! verifies it through X. Every node sends the current root last, so a joining node can pin
//! it by its token. When every node has a certificate from R2, R2 becomes the root and R1
//! is trusted no more.

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::ca::ClusterCa;
use crate::error::{PkiError, Result};

/// The roots a node trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trust {
    root: ClusterCa,
    next: Option<NextRoot>,
}

/// The root a rotation moves to, and it cross-signed by the current root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextRoot {
    pub ca: ClusterCa,
    pub cross_signed: CertificateDer<'static>,
}

impl From<ClusterCa> for Trust {
    fn from(root: ClusterCa) -> Trust {
        Trust { root, next: None }
    }
}

impl Trust {
    /// A rotation from `root` to `next`: `cross_signed` must be `next`'s subject and key,
    /// signed by `root`.
    pub fn rotating(
        root: ClusterCa,
        next: ClusterCa,
        cross_signed: CertificateDer<'static>,
    ) -> Result<Trust> {
        let bad = |reason: &str| PkiError::BadCrossSigned {
            reason: reason.to_string(),
        };
        let (Ok((_, x)), Ok((_, n))) = (
            X509Certificate::from_der(&cross_signed),
            X509Certificate::from_der(next.der()),
        ) else {
            return Err(bad("it does not parse"));
        };
        if next == root {
            return Err(bad("the new root is the current root"));
        }
        if x.subject().as_raw() != n.subject().as_raw() {
            return Err(bad("its subject is not the new root's"));
        }
        if x.public_key().raw != n.public_key().raw {
            return Err(bad("its key is not the new root's"));
        }
        if !root.issued(&cross_signed) {
            return Err(bad("the current root did not sign it"));
        }
        Ok(Trust {
            root,
            next: Some(NextRoot {
                ca: next,
                cross_signed,
            }),
        })
    }

    /// The cluster's root: what join tokens pin.
    pub fn root(&self) -> &ClusterCa {
        &self.root
    }

    /// The root a rotation in progress moves to.
    pub fn next(&self) -> Option<&NextRoot> {
        self.next.as_ref()
    }

    /// The rotation done: the new root is the only one.
    pub fn finished(&self) -> Trust {
        match &self.next {
            Some(n) => Trust::from(n.ca.clone()),
            None => self.clone(),
        }
    }

    /// Every root trusted: the current one, and the next during a rotation.
    pub fn roots(&self) -> impl Iterator<Item = &ClusterCa> {
        std::iter::once(&self.root).chain(self.next.iter().map(|n| &n.ca))
    }

    pub(crate) fn root_store(&self) -> Result<std::sync::Arc<RootCertStore>> {
        let mut roots = RootCertStore::empty();
        for ca in self.roots() {
            roots.add(ca.der().clone())?;
        }
        Ok(std::sync::Arc::new(roots))
    }

    /// What a node sends: its certificate, then the cross-signed new root if the certificate
    /// is from the new root, then the current root.
    pub fn chain(&self, leaf: &CertificateDer<'static>) -> Vec<CertificateDer<'static>> {
        let mut chain = vec![leaf.clone()];
        if let Some(n) = &self.next
            && n.ca.issued(leaf)
        {
            chain.push(n.cross_signed.clone());
        }
        chain.push(self.root.der().clone());
        chain
    }

    /// Whether a node holding `leaf` must renew it for the rotation in progress (it is not
    /// from the new root yet).
    pub fn must_renew(&self, leaf: &[u8]) -> bool {
        self.next.as_ref().is_some_and(|n| !n.ca.issued(leaf))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::UnixTime;
    use rustls::server::WebPkiClientVerifier;
    use rustls::{CertificateError, Error};

    use super::*;
    use crate::{NodeCertSpec, NodeCredentials, NodeKey, Role, RootCa, Serial, Validity};

    fn root(name: &str) -> RootCa {
        let v = Validity::starting(SystemTime::now(), Duration::from_secs(86400));
        RootCa::generate(name, v).unwrap()
    }

    fn node(ca: &RootCa, id: &str) -> NodeCredentials {
        let key = NodeKey::generate().unwrap();
        let spec = NodeCertSpec {
            node_id: id.into(),
            role: Role::Manager,
            cluster_id: "c1".into(),
            validity: Validity::starting(SystemTime::now(), Duration::from_secs(3600)),
            serial: Serial::random(),
        };
        key.certify(ca.issue(&key.csr().unwrap(), &spec).unwrap())
            .unwrap()
    }

    /// What a verifier trusting `trust`'s roots says of `chain`, as a client and as a server
    /// certificate (the two must agree).
    fn verify(trust: &Trust, chain: &[CertificateDer<'static>]) -> Result<(), Error> {
        let provider = crate::provider();
        let now = UnixTime::now();
        let clients = WebPkiClientVerifier::builder_with_provider(
            trust.root_store().unwrap(),
            provider.clone(),
        )
        .build()
        .unwrap();
        let as_client = clients
            .verify_client_cert(&chain[0], &chain[1..], now)
            .map(|_| ());
        let servers =
            WebPkiServerVerifier::builder_with_provider(trust.root_store().unwrap(), provider)
                .build()
                .unwrap();
        let as_server = servers
            .verify_server_cert(
                &chain[0],
                &chain[1..],
                &crate::manager_server_name(),
                &[],
                now,
            )
            .map(|_| ());
        assert_eq!(as_client, as_server);
        as_client
    }

    fn unknown_issuer() -> Result<(), Error> {
        Err(Error::InvalidCertificate(CertificateError::UnknownIssuer))
    }

    #[test]
    fn a_certificate_from_the_new_root_verifies_through_the_cross_signed_one() {
        let (r1, r2) = (root("c1"), root("c1"));
        let x = r2.cross_signed_by(&r1).unwrap();
        let old_only = Trust::from(r1.cert().clone());
        let rotating = Trust::rotating(r1.cert().clone(), r2.cert().clone(), x.clone()).unwrap();
        let new_only = rotating.finished();
        assert_eq!(new_only, Trust::from(r2.cert().clone()));
        let (a, b) = (node(&r1, "a"), node(&r2, "b"));

        // What a node sends during the rotation: its certificate, X if it is from R2, R1.
        let chain_a = rotating.chain(a.cert());
        let chain_b = rotating.chain(b.cert());
        assert_eq!(chain_a, vec![a.cert().clone(), r1.cert().der().clone()]);
        assert_eq!(
            chain_b,
            vec![b.cert().clone(), x.clone(), r1.cert().der().clone()]
        );
        // A peer that has not heard of the rotation verifies both; so does one that has.
        for trust in [&old_only, &rotating] {
            verify(trust, &chain_a).unwrap();
            verify(trust, &chain_b).unwrap();
        }
        // Without X, R2's certificate means nothing to a peer that trusts R1 alone.
        assert_eq!(verify(&old_only, &[b.cert().clone()]), unknown_issuer());
        verify(&rotating, &[b.cert().clone()]).unwrap();
        // Once done, R1's certificates are refused, R2's verify alone.
        assert_eq!(verify(&new_only, &chain_a), unknown_issuer());
        assert_eq!(
            new_only.chain(b.cert()),
            vec![b.cert().clone(), r2.cert().der().clone()]
        );
        verify(&new_only, &new_only.chain(b.cert())).unwrap();
    }

    #[test]
    fn who_must_renew_and_whose_certificate_is_whose() {
        let (r1, r2) = (root("c1"), root("c1"));
        let x = r2.cross_signed_by(&r1).unwrap();
        let rotating = Trust::rotating(r1.cert().clone(), r2.cert().clone(), x.clone()).unwrap();
        let (a, b) = (node(&r1, "a"), node(&r2, "b"));
        assert!(r1.cert().issued(a.cert()) && !r2.cert().issued(a.cert()));
        assert!(r2.cert().issued(b.cert()) && !r1.cert().issued(b.cert()));
        // X is R2 (same subject and key) issued by R1.
        assert!(r1.cert().issued(&x) && !r2.cert().issued(&x));
        assert!(rotating.must_renew(a.cert()));
        assert!(!rotating.must_renew(b.cert()));
        assert!(!Trust::from(r1.cert().clone()).must_renew(a.cert()));
        assert!(!r1.cert().issued(b"not a certificate"));
    }

    #[test]
    fn a_cross_signed_certificate_must_fit_both_roots() {
        let (r1, r2, r3) = (root("c1"), root("c1"), root("c1"));
        let err = |r: Result<Trust>| r.unwrap_err().to_string();
        // R2 signed by R3, not by the current root.
        let by_r3 = r2.cross_signed_by(&r3).unwrap();
        assert!(
            err(Trust::rotating(r1.cert().clone(), r2.cert().clone(), by_r3))
                .contains("the current root did not sign it")
        );
        // R3 cross-signed, offered as R2's: another root.
        let r3_by_r1 = r3.cross_signed_by(&r1).unwrap();
        assert!(
            err(Trust::rotating(
                r1.cert().clone(),
                r2.cert().clone(),
                r3_by_r1
            ))
            .contains("its subject is not the new root's")
        );
        let x = r1.cross_signed_by(&r1).unwrap();
        assert!(
            err(Trust::rotating(r1.cert().clone(), r1.cert().clone(), x))
                .contains("the new root is the current root")
        );
    }

    #[test]
    fn a_given_root_is_cross_signed_with_its_own_subject_bytes() {
        // A root made elsewhere, with a PrintableString subject and more attributes than
        // shoal's own: the cross-signed copy must carry the same bytes for a path to form.
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(
            rcgen::DnType::CountryName,
            rcgen::DnValue::PrintableString("NL".try_into().unwrap()),
        );
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example Ops");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ops root");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let cert = params.self_signed(&key).unwrap();
        let given = RootCa::import(
            cert.pem().as_bytes(),
            "ca.pem",
            key.serialize_pem().as_bytes(),
            "ca-key.pem",
            SystemTime::now(),
        )
        .unwrap();
        let r1 = root("c1");
        let x = given.cross_signed_by(&r1).unwrap();
        let trust = Trust::rotating(r1.cert().clone(), given.cert().clone(), x).unwrap();
        let n = node(&given, "n");
        verify(&Trust::from(r1.cert().clone()), &trust.chain(n.cert())).unwrap();
    }

    #[test]
    fn roots_are_the_current_then_the_next() {
        let (r1, r2) = (root("c1"), root("c1"));
        let x = r2.cross_signed_by(&r1).unwrap();
        let t = Trust::rotating(r1.cert().clone(), r2.cert().clone(), x).unwrap();
        let roots: Vec<_> = t.roots().map(|c| c.digest()).collect();
        assert_eq!(roots, vec![r1.cert().digest(), r2.cert().digest()]);
        assert_eq!(t.root(), r1.cert());
        assert_eq!(t.next().map(|n| &n.ca), Some(r2.cert()));
        let _ = Arc::new(t);
    }
}
