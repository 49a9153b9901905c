//! Real TLS handshakes over loopback TCP (tokio-rustls) between this crate's configs: who is
//! let in, who is refused, and the rustls error each side sees. No root needed.

use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
use rustls::pki_types::ServerName;
use rustls::{AlertDescription, CertificateError, ClientConfig, Error, ServerConfig};
use shoal_pki::{
    ClientCerts, ClusterCa, Identity, JoinToken, NodeCertSpec, NodeCredentials, NodeKey, Role,
    RootCa, Serial, Validity,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const HOUR: Duration = Duration::from_secs(3600);

struct Cluster {
    ca: RootCa,
    id: String,
}

impl Cluster {
    fn new(id: &str) -> Cluster {
        let validity = Validity::starting(SystemTime::now(), shoal_pki::ROOT_CA_VALIDITY);
        Cluster {
            ca: RootCa::generate(id, validity).unwrap(),
            id: id.into(),
        }
    }

    fn trust(&self) -> &ClusterCa {
        self.ca.cert()
    }

    fn node(&self, node: &str, role: Role) -> NodeCredentials {
        let v = Validity::starting(SystemTime::now(), shoal_pki::DEFAULT_NODE_CERT_VALIDITY);
        self.node_valid(node, role, v)
    }

    fn node_valid(&self, node: &str, role: Role, validity: Validity) -> NodeCredentials {
        let key = NodeKey::generate().unwrap();
        let spec = NodeCertSpec {
            node_id: node.into(),
            role,
            cluster_id: self.id.clone(),
            validity,
            serial: Serial::random(),
        };
        key.certify(self.ca.issue(&key.csr().unwrap(), &spec).unwrap())
            .unwrap()
    }

    fn server(&self, node: &str, role: Role, clients: ClientCerts) -> ServerConfig {
        shoal_pki::server_config(
            &self.trust().clone().into(),
            &self.node(node, role),
            clients,
        )
        .unwrap()
    }

    fn client(&self, creds: &NodeCredentials) -> ClientConfig {
        shoal_pki::client_config(&self.trust().clone().into(), creds).unwrap()
    }
}

/// What each side saw: the server the client's identity (None: no certificate), the client
/// that it read the server's reply.
struct Outcome {
    server: Result<Option<Identity>, Error>,
    client: Result<(), Error>,
}

async fn handshake(
    server: ServerConfig,
    client: ClientConfig,
    name: ServerName<'static>,
) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.map_err(rustls_error)?;
        let id = shoal_pki::peer_identity(tls.get_ref().1.peer_certificates()).unwrap();
        tls.write_all(b"ok").await.map_err(rustls_error)?;
        tls.shutdown().await.map_err(rustls_error)?;
        Ok(id)
    });
    let client = async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut tls = TlsConnector::from(Arc::new(client))
            .connect(name, tcp)
            .await
            .map_err(rustls_error)?;
        // In TLS 1.3 the client finishes before the server has judged its certificate:
        // a refusal reaches it as an alert on its first read.
        let mut buf = [0; 2];
        tls.read_exact(&mut buf).await.map_err(rustls_error)?;
        assert_eq!(&buf, b"ok");
        Ok(())
    }
    .await;
    Outcome {
        server: server.await.unwrap(),
        client,
    }
}

/// The rustls error inside an I/O error from tokio-rustls.
fn rustls_error(e: io::Error) -> Error {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        Some(inner) => inner.clone(),
        None => panic!("not a TLS error: {e}"),
    }
}

fn manager() -> ServerName<'static> {
    shoal_pki::manager_server_name()
}

#[track_caller]
fn refused_by_server(o: &Outcome, want: CertificateError, alert: AlertDescription) {
    assert_eq!(
        o.server.as_ref().err(),
        Some(&Error::InvalidCertificate(want))
    );
    assert_eq!(o.client.as_ref().err(), Some(&Error::AlertReceived(alert)));
}

#[tokio::test]
async fn a_member_is_accepted_and_identified() {
    let c = Cluster::new("cluster-a");
    let worker = c.node("w1", Role::Worker);
    let o = handshake(
        c.server("m1", Role::Manager, ClientCerts::Required),
        c.client(&worker),
        manager(),
    )
    .await;
    o.client.unwrap();
    let id = o
        .server
        .unwrap()
        .expect("the server read the client's identity");
    assert_eq!(
        (id.node_id.as_str(), id.role, id.cluster_id.as_str()),
        ("w1", Role::Worker, "cluster-a")
    );
    assert_eq!(id, *worker.identity());
}

#[tokio::test]
async fn no_client_certificate_is_refused() {
    let c = Cluster::new("cluster-a");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(c.trust().der().clone()).unwrap();
    let anonymous = ClientConfig::builder_with_provider(shoal_pki::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let o = handshake(
        c.server("m1", Role::Manager, ClientCerts::Required),
        anonymous,
        manager(),
    )
    .await;
    assert_eq!(o.server.err(), Some(Error::NoCertificatesPresented));
    assert_eq!(
        o.client.err(),
        Some(Error::AlertReceived(AlertDescription::CertificateRequired))
    );
}

#[tokio::test]
async fn a_self_signed_certificate_is_refused() {
    let c = Cluster::new("cluster-a");
    // It claims to be a manager of this cluster, but no CA of the cluster signed it.
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["shoal-manager".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "m9");
    params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, "shoal-manager");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "cluster-a");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.self_signed(&key).unwrap();
    let forged = NodeCredentials::from_pem(
        cert.pem().as_bytes(),
        "forged.crt",
        key.serialize_pem().as_bytes(),
        "forged.key",
    )
    .unwrap();
    let o = handshake(
        c.server("m1", Role::Manager, ClientCerts::Required),
        c.client(&forged),
        manager(),
    )
    .await;
    refused_by_server(
        &o,
        CertificateError::UnknownIssuer,
        AlertDescription::UnknownCA,
    );
}

#[tokio::test]
async fn a_certificate_from_another_clusters_ca_is_refused() {
    let (a, b) = (Cluster::new("cluster-a"), Cluster::new("cluster-b"));
    let stranger = b.node("m1", Role::Manager);
    let o = handshake(
        a.server("m1", Role::Manager, ClientCerts::Required),
        a.client(&stranger),
        manager(),
    )
    .await;
    refused_by_server(
        &o,
        CertificateError::UnknownIssuer,
        AlertDescription::UnknownCA,
    );
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    let c = Cluster::new("cluster-a");
    let now = SystemTime::now();
    let expired = c.node_valid(
        "w1",
        Role::Worker,
        Validity::new(now - 2 * HOUR, now - HOUR).unwrap(),
    );
    let o = handshake(
        c.server("m1", Role::Manager, ClientCerts::Required),
        c.client(&expired),
        manager(),
    )
    .await;
    assert!(
        matches!(
            o.server,
            Err(Error::InvalidCertificate(
                CertificateError::ExpiredContext { .. }
            ))
        ),
        "{:?}",
        o.server
    );
    assert_eq!(
        o.client.err(),
        Some(Error::AlertReceived(AlertDescription::CertificateExpired))
    );
}

#[tokio::test]
async fn join_port_admits_no_certificate_but_still_refuses_a_bad_one() {
    let (a, b) = (Cluster::new("cluster-a"), Cluster::new("cluster-b"));
    let server = || a.server("m1", Role::Manager, ClientCerts::OptionalForJoin);
    // A joining node: no certificate, the manager pinned by the token.
    let token = JoinToken::random(a.trust().digest());
    let join = shoal_pki::join_client_config(&token).unwrap();
    let o = handshake(server(), join, manager()).await;
    o.client.unwrap();
    assert_eq!(o.server.unwrap(), None, "no identity: only Join is allowed");
    // A member is still identified.
    let o = handshake(server(), a.client(&a.node("w1", Role::Worker)), manager()).await;
    assert_eq!(o.server.unwrap().unwrap().node_id, "w1");
    // Another cluster's certificate is refused, not taken for "no certificate".
    let o = handshake(server(), a.client(&b.node("w1", Role::Worker)), manager()).await;
    refused_by_server(
        &o,
        CertificateError::UnknownIssuer,
        AlertDescription::UnknownCA,
    );
}

#[tokio::test]
async fn a_joining_node_refuses_a_manager_of_another_ca() {
    let (a, b) = (Cluster::new("cluster-a"), Cluster::new("cluster-b"));
    // The token is cluster b's; the address answers with cluster a's manager.
    let token = JoinToken::random(b.trust().digest());
    let join = shoal_pki::join_client_config(&token).unwrap();
    let o = handshake(
        a.server("m1", Role::Manager, ClientCerts::OptionalForJoin),
        join,
        manager(),
    )
    .await;
    let Err(Error::InvalidCertificate(CertificateError::Other(e))) = &o.client else {
        panic!("expected the CA digest refusal, got {:?}", o.client);
    };
    let text = e.to_string();
    assert!(
        text.contains("does not match the join token")
            && text.contains(&b.trust().digest().to_string())
            && text.contains(&a.trust().digest().to_string()),
        "{text}"
    );
    assert_eq!(
        o.server.err(),
        Some(Error::AlertReceived(AlertDescription::CertificateUnknown))
    );
}

#[tokio::test]
async fn a_worker_cannot_pass_for_a_manager() {
    let c = Cluster::new("cluster-a");
    let token = JoinToken::random(c.trust().digest());
    // Neither a member nor a joining node accepts a worker's certificate as a manager's.
    for client in [
        c.client(&c.node("w2", Role::Worker)),
        shoal_pki::join_client_config(&token).unwrap(),
    ] {
        let o = handshake(
            c.server("w1", Role::Worker, ClientCerts::OptionalForJoin),
            client,
            manager(),
        )
        .await;
        assert!(
            matches!(
                o.client,
                Err(Error::InvalidCertificate(
                    CertificateError::NotValidForNameContext { .. }
                ))
            ),
            "{:?}",
            o.client
        );
    }
}

#[tokio::test]
async fn a_client_trusts_only_its_cluster_ca_and_the_node_it_asked_for() {
    let (a, b) = (Cluster::new("cluster-a"), Cluster::new("cluster-b"));
    let m1 = a.node("m1", Role::Manager);
    // A manager of another cluster at the address.
    let o = handshake(
        b.server("m1", Role::Manager, ClientCerts::Required),
        a.client(&m1),
        manager(),
    )
    .await;
    assert_eq!(
        o.client.err(),
        Some(Error::InvalidCertificate(CertificateError::UnknownIssuer))
    );
    // A manager calling node w1's Agent service reaches w1, and refuses w1 if it asked
    // for w2.
    let agent = || a.server("w1", Role::Worker, ClientCerts::Required);
    let w1 = shoal_pki::node_server_name("w1").unwrap();
    let o = handshake(agent(), a.client(&m1), w1).await;
    assert_eq!(o.server.unwrap().unwrap().role, Role::Manager);
    let w2 = shoal_pki::node_server_name("w2").unwrap();
    let o = handshake(agent(), a.client(&m1), w2).await;
    assert!(
        matches!(
            o.client,
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForNameContext { .. }
            ))
        ),
        "{:?}",
        o.client
    );
}

#[tokio::test]
async fn during_a_root_rotation_a_joining_node_still_pins_the_current_root() {
    // A manager that renewed from the new root sends [its certificate, R2 cross-signed by
    // R1, R1]: a node joining with a token for R1 finds R1 and a path to it.
    let c = Cluster::new("cluster-a");
    let next = RootCa::generate(
        "cluster-a",
        Validity::starting(SystemTime::now(), shoal_pki::ROOT_CA_VALIDITY),
    )
    .unwrap();
    let cross = next.cross_signed_by(&c.ca).unwrap();
    let trust = shoal_pki::Trust::rotating(c.trust().clone(), next.cert().clone(), cross).unwrap();
    let renewed = Cluster {
        ca: next,
        id: "cluster-a".into(),
    }
    .node("m1", Role::Manager);
    let server =
        || shoal_pki::server_config(&trust, &renewed, ClientCerts::OptionalForJoin).unwrap();
    let join = shoal_pki::join_client_config(&JoinToken::random(c.trust().digest())).unwrap();
    let o = handshake(server(), join, manager()).await;
    o.client.unwrap();
    assert_eq!(o.server.unwrap(), None);
    // A member that has not heard of the rotation (it trusts R1 alone) is let in, and
    // trusts the manager.
    let w = c.node("w1", Role::Worker);
    let o = handshake(server(), c.client(&w), manager()).await;
    o.client.unwrap();
    assert_eq!(o.server.unwrap().unwrap().node_id, "w1");
    // After the rotation a token for R1 no longer finds its root.
    let done = trust.finished();
    let server = shoal_pki::server_config(&done, &renewed, ClientCerts::OptionalForJoin).unwrap();
    let join = shoal_pki::join_client_config(&JoinToken::random(c.trust().digest())).unwrap();
    let o = handshake(server, join, manager()).await;
    assert!(
        matches!(&o.client, Err(Error::InvalidCertificate(CertificateError::Other(e))) if e.to_string().contains("does not match the join token")),
        "{:?}",
        o.client
    );
}
