//! The root CA (generate, import and each refusal) and node certificates (CSR → issue →
//! identity). No root needed.

use std::process::Command;
use std::time::{Duration, SystemTime};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use shoal_pki::{
    Identity, NodeCertSpec, NodeKey, PkiError, ROOT_CA_VALIDITY, Role, RootCa, Serial, Validity,
};

const HOUR: Duration = Duration::from_secs(3600);

fn now() -> SystemTime {
    SystemTime::now()
}

fn new_ca(cluster: &str) -> RootCa {
    RootCa::generate(cluster, Validity::starting(now(), ROOT_CA_VALIDITY)).unwrap()
}

fn spec(node: &str, role: Role, cluster: &str) -> NodeCertSpec {
    NodeCertSpec {
        node_id: node.into(),
        role,
        cluster_id: cluster.into(),
        validity: Validity::starting(now(), shoal_pki::DEFAULT_NODE_CERT_VALIDITY),
        serial: Serial::random(),
    }
}

fn import_err(cert_pem: &str, key_pem: &str) -> String {
    RootCa::import(
        cert_pem.as_bytes(),
        "ca.crt",
        key_pem.as_bytes(),
        "ca.key",
        now(),
    )
    .unwrap_err()
    .to_string()
}

#[test]
fn a_generated_ca_is_p256_long_lived_and_imports_back() {
    let ca = new_ca("cluster1");
    let cert = ca.cert().pem();
    let (_, parsed) = x509_parser::parse_x509_certificate(ca.cert().der()).unwrap();
    assert_eq!(
        parsed.public_key().algorithm.algorithm,
        x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY
    );
    let life = parsed.validity().time_to_expiration().unwrap();
    assert!(life.whole_days() >= 20 * 365 - 1, "{life}");
    let back = RootCa::import(
        cert.as_bytes(),
        "ca.crt",
        ca.key_pem().as_bytes(),
        "ca.key",
        now(),
    )
    .unwrap();
    assert_eq!(back.cert(), ca.cert());
    assert_eq!(back.cert().digest(), ca.cert().digest());
}

#[test]
fn a_node_certificate_says_who_the_manager_decided() {
    let ca = new_ca("cluster1");
    let key = NodeKey::generate().unwrap();
    let spec = spec("0123456789abcdef01234567", Role::Worker, "cluster1");
    let cert = ca.issue(&key.csr().unwrap(), &spec).unwrap();
    let creds = key.certify(cert).unwrap();
    let id = creds.identity();
    assert_eq!(id.node_id, "0123456789abcdef01234567");
    assert_eq!(id.role, Role::Worker);
    assert_eq!(id.cluster_id, "cluster1");
    assert_eq!(id.serial, spec.serial.hex());
    let secs = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(secs(id.not_after), secs(spec.validity.not_after));
    assert_eq!(secs(id.not_before), secs(spec.validity.not_before));
    // Two issues have different serials.
    let again = ca.issue(&key.csr().unwrap(), &spec_with_new_serial(&spec));
    assert_ne!(
        Identity::from_der(&again.unwrap()).unwrap().serial,
        id.serial
    );
}

fn spec_with_new_serial(s: &NodeCertSpec) -> NodeCertSpec {
    NodeCertSpec {
        serial: Serial::random(),
        ..s.clone()
    }
}

#[test]
fn the_csr_cannot_choose_its_names_or_role() {
    let ca = new_ca("cluster1");
    // A request asking to be a manager of another cluster, under another name.
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["shoal-manager".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "evil");
    params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, "shoal-manager");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "c2");
    let csr = params.serialize_request(&key).unwrap();
    let cert = ca
        .issue(csr.der(), &spec("n1", Role::Worker, "cluster1"))
        .unwrap();
    let id = Identity::from_der(&cert).unwrap();
    assert_eq!(
        (id.node_id.as_str(), id.role, id.cluster_id.as_str()),
        ("n1", Role::Worker, "cluster1")
    );
}

#[test]
fn bad_requests_and_mismatched_keys_are_refused() {
    let ca = new_ca("cluster1");
    let err = ca
        .issue(b"not a csr", &spec("n1", Role::Worker, "cluster1"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("invalid certificate signing request"),
        "{err}"
    );
    // A request whose signature does not match its contents.
    let mut csr = NodeKey::generate().unwrap().csr().unwrap();
    let last = csr.len() - 1;
    csr[last] ^= 1;
    let err = ca
        .issue(&csr, &spec("n1", Role::Worker, "cluster1"))
        .unwrap_err();
    assert!(
        matches!(&err, PkiError::BadCsr { reason } if reason.contains("signature")),
        "{err}"
    );
    let key = NodeKey::generate().unwrap();
    let err = ca
        .issue(
            &key.csr().unwrap(),
            &spec("Bad.Id", Role::Worker, "cluster1"),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("invalid node id \"Bad.Id\""), "{err}");
    // A certificate for another key.
    let other = NodeKey::generate().unwrap();
    let cert = ca
        .issue(&other.csr().unwrap(), &spec("n1", Role::Worker, "cluster1"))
        .unwrap();
    assert!(matches!(key.certify(cert), Err(PkiError::NodeKeyMismatch)));
    // The CA's own certificate is not a node's.
    let err = Identity::from_der(ca.cert().der()).unwrap_err().to_string();
    assert!(err.contains("it is a CA certificate"), "{err}");
}

#[test]
fn import_refuses_a_certificate_that_is_not_a_ca() {
    // A node certificate (CA:FALSE) with its own key.
    let ca = new_ca("cluster1");
    let key = NodeKey::generate().unwrap();
    let cert = ca
        .issue(&key.csr().unwrap(), &spec("n1", Role::Manager, "cluster1"))
        .unwrap();
    let creds = key.certify(cert).unwrap();
    let err = import_err(&creds.cert_pem(), &creds.key_pem());
    assert!(
        err.starts_with("ca.crt: the certificate is not a CA (its basic constraints say CA:FALSE)"),
        "{err}"
    );
    // A self-signed certificate without basic constraints.
    let key = KeyPair::generate().unwrap();
    let plain = CertificateParams::new(vec!["x".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let err = import_err(&plain.pem(), &key.serialize_pem());
    assert!(
        err.contains("it has no basic constraints extension"),
        "{err}"
    );
    // A CA that may not sign certificates.
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = params.self_signed(&key).unwrap();
    let err = import_err(&cert.pem(), &key.serialize_pem());
    assert!(
        err.contains("its key usage does not include certificate signing"),
        "{err}"
    );
}

#[test]
fn import_refuses_a_key_that_is_not_the_cas() {
    let (a, b) = (new_ca("c1"), new_ca("c2"));
    let err = import_err(&a.cert().pem(), &b.key_pem());
    assert!(
        err.starts_with("ca.key: the key does not belong to the certificate in ca.crt"),
        "{err}"
    );
}

#[test]
fn import_refuses_an_expired_or_future_ca() {
    let old = RootCa::generate(
        "c1",
        Validity::new(now() - 48 * HOUR, now() - 24 * HOUR).unwrap(),
    )
    .unwrap();
    let err = import_err(&old.cert().pem(), &old.key_pem());
    assert!(
        err.starts_with("ca.crt: the CA certificate expired at "),
        "{err}"
    );
    let future = RootCa::generate(
        "c1",
        Validity::new(now() + 24 * HOUR, now() + 48 * HOUR).unwrap(),
    )
    .unwrap();
    let err = import_err(&future.cert().pem(), &future.key_pem());
    assert!(
        err.starts_with("ca.crt: the CA certificate is not valid before "),
        "{err}"
    );
}

#[test]
fn import_refuses_what_is_not_pem() {
    let ca = new_ca("c1");
    let err = import_err("hello", &ca.key_pem());
    assert!(err.starts_with("ca.crt: not a PEM CERTIFICATE"), "{err}");
    let err = import_err(&ca.cert().pem(), &ca.cert().pem());
    assert!(err.starts_with("ca.key: not a PEM PRIVATE KEY"), "{err}");
}

/// A CA made the way an operator would with openssl: imported once its key is PKCS#8, and its
/// SEC1 key refused with the command that converts it.
#[test]
fn an_openssl_ca_imports_and_issues() {
    let dir = tempfile::tempdir().unwrap();
    let sec1 = dir.path().join("ca-sec1.key");
    let pkcs8 = dir.path().join("ca.key");
    let cert = dir.path().join("ca.crt");
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("run openssl (install the openssl package)");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let p = |p: &std::path::Path| p.to_str().unwrap().to_string();
    run(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        &p(&sec1),
    ]);
    run(&[
        "pkcs8",
        "-topk8",
        "-nocrypt",
        "-in",
        &p(&sec1),
        "-out",
        &p(&pkcs8),
    ]);
    run(&[
        "req",
        "-x509",
        "-new",
        "-key",
        &p(&pkcs8),
        "-days",
        "30",
        "-subj",
        "/CN=corp-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-out",
        &p(&cert),
    ]);
    let read = |p: &std::path::Path| std::fs::read(p).unwrap();
    let err = RootCa::import(&read(&cert), "ca.crt", &read(&sec1), "ca-sec1.key", now())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("it is a SEC1 EC key") && err.contains("openssl pkcs8 -topk8 -nocrypt"),
        "{err}"
    );
    let ca = RootCa::import(&read(&cert), "ca.crt", &read(&pkcs8), "ca.key", now()).unwrap();
    let key = NodeKey::generate().unwrap();
    let node = ca
        .issue(&key.csr().unwrap(), &spec("n1", Role::Manager, "c1"))
        .unwrap();
    assert_eq!(key.certify(node).unwrap().identity().role, Role::Manager);
}

#[test]
fn a_node_certificate_ends_no_later_than_its_ca() {
    let ca = RootCa::generate("c1", Validity::starting(now(), 24 * HOUR)).unwrap();
    let key = NodeKey::generate().unwrap();
    let cert = ca
        .issue(&key.csr().unwrap(), &spec("n1", Role::Worker, "c1"))
        .unwrap();
    let id = Identity::from_der(&cert).unwrap();
    assert_eq!(id.not_after, ca.cert().not_after());
}
