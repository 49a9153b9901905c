//! Issue 10 on a lab: port 2377 admits members only, by their certificates. A namespace of
//! the test's own, plugged into the lab's bridge, plays the outsider (no certificate, a
//! self-signed one, one from another cluster's CA) and a worker misusing its own
//! certificate (read from the worker's data directory, as an attacker on that host could).
//! Then what the CLI offers: a rotated join token, a removed node, and certificates that
//! renew themselves with a one-minute lifetime.

mod common;
#[path = "common/pki.rs"]
mod pki;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::{Lab, wait_for};
use pki::{
    block_on, certs_dir, credentials, handshake_refused, heartbeat, member, outsider, refused,
};
use shoal_pki::rustls::pki_types::pem::PemObject;
use shoal_pki::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use shoal_pki::rustls::{ClientConfig, RootCertStore};
use shoal_pki::{ClusterCa, JoinToken, Role, RootCa, Validity};
use shoal_rpc::agent_client::AgentClient;
use shoal_rpc::cluster_client::ClusterClient;
use shoal_rpc::raft_client::RaftClient;
use shoal_rpc::{Dialer, JoinRequest, LogsRequest, SessionRequest};
use tonic::Code;

fn node_field(lab: &Lab, node: u32, field: &str) -> String {
    lab.ok(
        1,
        &["node", "inspect", "--format", field, &format!("node{node}")],
    )
    .trim()
    .to_string()
}

fn serial(lab: &Lab, node: u32) -> String {
    credentials(lab, node).identity().serial.clone()
}

fn alpn(mut c: ClientConfig) -> Arc<ClientConfig> {
    c.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(c)
}

fn roots(ca: &ClusterCa) -> RootCertStore {
    let mut r = RootCertStore::empty();
    r.add(ca.der().clone()).unwrap();
    r
}

/// Trusts the cluster's CA (so the handshake gets as far as the client's certificate) and
/// presents `cert` with `key`, or nothing.
fn client(ca: &ClusterCa, cert: Option<(CertificateDer<'static>, String)>) -> Dialer {
    let builder = ClientConfig::builder_with_provider(shoal_pki::provider())
        .with_protocol_versions(&[&shoal_pki::rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots(ca));
    let config = match cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![cert],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    Dialer::Join(alpn(config))
}

async fn propose(d: &Dialer, addr: &str) -> Result<(), tonic::Status> {
    // A command that would run something on every node, if it were accepted.
    let cmd = br#"{"RemoveService":{"id":"nosuch"}}"#.to_vec();
    ClusterClient::new(d.manager(addr).unwrap())
        .propose(shoal_rpc::json(cmd))
        .await
        .map(|_| ())
}

async fn vote(d: &Dialer, addr: &str) -> Result<(), tonic::Status> {
    RaftClient::new(d.manager(addr).unwrap())
        .vote(shoal_rpc::json(b"{}".to_vec()))
        .await
        .map(|_| ())
}

async fn session(d: &Dialer, addr: &str, node_id: &str) -> Result<(), tonic::Status> {
    ClusterClient::new(d.manager(addr).unwrap())
        .session(SessionRequest {
            node_id: node_id.into(),
            ..Default::default()
        })
        .await
        .map(|_| ())
}

async fn own_session(d: &Dialer, addr: &str) -> tonic::Streaming<shoal_rpc::Assignments> {
    ClusterClient::new(d.manager(addr).unwrap())
        .session(SessionRequest::default())
        .await
        .unwrap()
        .into_inner()
}

async fn logs(d: &Dialer, addr: &str, node_id: &str) -> Result<(), tonic::Status> {
    AgentClient::new(d.node(addr, node_id).unwrap())
        .task_logs(LogsRequest {
            task_id: "x".into(),
        })
        .await
        .map(|_| ())
}

#[test]
fn port_2377_admits_members_only_by_their_certificates() {
    let started = Instant::now();
    let lab = Lab::up_with("sec", 3, 1, &["--cert-expiry", "1m"]);
    let addr = |n| format!("{}:2377", node_field(&lab, n, "{{.Status.Addr}}"));
    let (m1, w2) = (addr(1), addr(2));
    let id = |n| node_field(&lab, n, "{{.ID}}");
    let (id2, id3) = (id(2), id(3));
    let first_serials = [serial(&lab, 1)];

    // The outsider: a namespace on the lab's bridge, at .200 of the lab's subnet.
    let (outsider, prefix) = outsider(&lab, &m1);

    let ca_pem = std::fs::read(certs_dir(&lab, 1).join("root-ca.crt")).unwrap();
    let ca = ClusterCa::from_pem(&ca_pem, "root-ca.crt", SystemTime::now()).unwrap();
    let worker3 = credentials(&lab, 3);
    let nodes_before = lab.ok(1, &["node", "ls", "-q"]);
    let me = format!("{prefix}.200:");
    let (log1, log2) = (
        lab.dir().join("node1/shoald.log"),
        lab.dir().join("node2/shoald.log"),
    );
    {
        let (ca, m1, w2, id2) = (ca.clone(), m1.clone(), w2.clone(), id2.clone());
        let id3 = id3.clone();
        outsider.run(move || {
            block_on(async move {
                // No certificate: only Join is let through, and a wrong secret is refused.
                let anon = client(&ca, None);
                refused(
                    propose(&anon, &m1).await,
                    Code::Unauthenticated,
                    "refused: Propose needs a node certificate",
                );
                refused(
                    vote(&anon, &m1).await,
                    Code::Unauthenticated,
                    "refused: Raft needs a node certificate",
                );
                refused(
                    session(&anon, &m1, &id2).await,
                    Code::Unauthenticated,
                    "refused: Session needs a node certificate",
                );
                let guess = JoinToken::random(ca.digest()).to_string();
                let join = ClusterClient::new(anon.manager(&m1).unwrap())
                    .join(JoinRequest {
                        token: guess,
                        node_id: "0123456789abcdef01234567".into(),
                        ..Default::default()
                    })
                    .await;
                refused(
                    join,
                    Code::PermissionDenied,
                    "invalid join token: the secret does not match",
                );
                // A worker's listener serves managers only: no certificate, no handshake.
                handshake_refused(
                    logs(&anon, &w2, &id2).await,
                    &log2,
                    &me,
                    "peer sent no certificates",
                );

                // A self-signed certificate, and one from another cluster's CA: the
                // handshake fails on the client's certificate.
                let now = SystemTime::now();
                let own = RootCa::generate(
                    "self-signed",
                    Validity::starting(now, Duration::from_secs(3600)),
                )
                .unwrap();
                let selfsigned = client(&ca, Some((own.cert().der().clone(), own.key_pem())));
                handshake_refused(
                    propose(&selfsigned, &m1).await,
                    &log1,
                    &me,
                    "invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))",
                );
                let other = RootCa::generate(
                    "another-cluster",
                    Validity::starting(now, Duration::from_secs(3600)),
                )
                .unwrap();
                let key = shoal_pki::NodeKey::generate().unwrap();
                let spec = shoal_pki::NodeCertSpec {
                    node_id: "0123456789abcdef01234567".into(),
                    role: Role::Manager,
                    cluster_id: "another-cluster".into(),
                    validity: Validity::starting(now, Duration::from_secs(3600)),
                    serial: shoal_pki::Serial::random(),
                };
                let foreign = key
                    .certify(other.issue(&key.csr().unwrap(), &spec).unwrap())
                    .unwrap();
                let foreign = member(&ca, &foreign);
                for (r, log) in [
                    (propose(&foreign, &m1).await, &log1),
                    (vote(&foreign, &m1).await, &log1),
                    (session(&foreign, &m1, &id2).await, &log1),
                    (logs(&foreign, &w2, &id2).await, &log2),
                ] {
                    handshake_refused(r, log, &me, "invalid peer certificate: UnknownIssuer");
                }

                // A worker's own certificate: not for Raft, Propose or task logs, and not
                // for another node's session.
                let w = member(&ca, &worker3);
                let as_worker =
                    format!("refused node {id3}: its certificate is a worker certificate");
                refused(propose(&w, &m1).await, Code::PermissionDenied, &as_worker);
                refused(vote(&w, &m1).await, Code::PermissionDenied, &as_worker);
                refused(
                    logs(&w, &w2, &id2).await,
                    Code::PermissionDenied,
                    &as_worker,
                );
                refused(
                    session(&w, &m1, &id2).await,
                    Code::PermissionDenied,
                    &format!("refused node {id3}: it acted for node {id2}"),
                );
                // Its own heartbeat is fine.
                heartbeat(&w, &m1).await.unwrap();
                // One live session per node: a second one ends the first (as the agent's
                // own is ended by ours; it reconnects once ours is gone).
                let mut first = own_session(&w, &m1).await;
                let _second = own_session(&w, &m1).await;
                let end = tokio::time::timeout(Duration::from_secs(10), async {
                    loop {
                        match first.message().await {
                            Ok(Some(_)) => continue,
                            other => return other,
                        }
                    }
                })
                .await
                .expect("the first session to end");
                refused(
                    end,
                    Code::Aborted,
                    "this node opened a newer session; this one is closed",
                );
            })
        });
    }
    assert_eq!(lab.ok(1, &["node", "ls", "-q"]), nodes_before);
    assert_eq!(lab.ok(1, &["service", "ls", "-q"]), "");

    // A rotated token refuses the old one at once; the nodes already in keep working.
    let old = lab
        .ok(1, &["join-token", "-q", "worker"])
        .trim()
        .to_string();
    let new = lab
        .ok(1, &["join-token", "--rotate", "-q", "worker"])
        .trim()
        .to_string();
    assert_ne!(old, new);
    lab.ok(3, &["leave"]);
    let err = lab.fails(3, &["join", "--token", &old, &m1]);
    assert!(
        err.contains("invalid join token: the secret does not match (it may have been rotated)"),
        "{err}"
    );
    lab.ok(3, &["join", "--token", &new, &m1]);
    // The node's old entry is gone for good: its certificate was for the old id.
    lab.ok(1, &["node", "rm", "--force", &id3]);

    // A removed node's certificate is refused from then on, while it is still valid.
    let out = lab.shoal(1, &["node", "rm", "--force", "node2"]);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    assert!(
        common::text(&out.stderr).contains("the managers refuse its certificate from now on"),
        "{}",
        common::text(&out.stderr)
    );
    let removed = credentials(&lab, 2);
    {
        let (ca, m1, id2) = (ca.clone(), m1.clone(), id2.clone());
        outsider.run(move || {
            block_on(async move {
                refused(
                    heartbeat(&member(&ca, &removed), &m1).await,
                    Code::PermissionDenied,
                    &format!("refused node {id2}: its node id is on the deny list"),
                );
            })
        });
    }

    // Certificates renew on their own (one-minute lifetime, renewed at 50-80% of it), and
    // the cluster works past the first ones' expiry.
    wait_for(
        "node1's certificate to be renewed",
        Duration::from_secs(90),
        || match serial(&lab, 1) {
            s if s != first_serials[0] => Ok(()),
            s => Err(format!("still serial {s}")),
        },
    );
    let expired = started + Duration::from_secs(75);
    if let Some(left) = expired.checked_duration_since(Instant::now()) {
        std::thread::sleep(left);
    }
    let ls = lab.ok(1, &["node", "ls"]);
    assert!(!ls.contains("Down"), "{ls}");
    assert_ne!(serial(&lab, 1), first_serials[0]);
    lab.ok(
        1,
        &[
            "service",
            "create",
            "--name",
            "after",
            "--replicas",
            "2",
            "--runtime",
            "host",
            "sleep",
            "600",
        ],
    );
    lab.wait_running("after", 2);
}

/// `init --ca-cert --ca-key`: the cluster uses a root CA the user gives (bad input named),
/// and its nodes' certificates chain to it.
#[test]
fn init_uses_a_given_root_ca() {
    let lab = Lab::up("ca", 2, 1);
    let dir = lab.dir().join("given-ca");
    std::fs::create_dir_all(&dir).unwrap();
    let now = SystemTime::now();
    let root =
        RootCa::generate("ours", Validity::starting(now, Duration::from_secs(86400))).unwrap();
    let (cert, key) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    std::fs::write(&cert, root.cert().pem()).unwrap();
    std::fs::write(&key, root.key_pem()).unwrap();
    let other =
        RootCa::generate("other", Validity::starting(now, Duration::from_secs(86400))).unwrap();
    let other_key = dir.join("other-key.pem");
    std::fs::write(&other_key, other.key_pem()).unwrap();
    let (cert_s, key_s, other_s) = (
        cert.display().to_string(),
        key.display().to_string(),
        other_key.display().to_string(),
    );

    lab.ok(2, &["leave"]);
    lab.ok(1, &["leave", "--force"]);
    let err = lab.fails(1, &["init", "--ca-cert", &cert_s, "--ca-key", &other_s]);
    assert!(
        err.contains("--ca-key: the key does not belong to the certificate in --ca-cert (their public keys differ); give the CA's own key"),
        "{err}"
    );
    let err = lab.fails(1, &["init", "--ca-cert", &cert_s]);
    assert!(
        err.contains("the following required arguments were not provided")
            && err.contains("--ca-key <FILE>"),
        "{err}"
    );
    lab.ok(1, &["init", "--ca-cert", &cert_s, "--ca-key", &key_s]);
    assert_eq!(
        lab.ok(1, &["ca", "--digest"]).trim(),
        root.cert().digest().to_string()
    );
    let token = lab
        .ok(1, &["join-token", "-q", "worker"])
        .trim()
        .to_string();
    let m1 = format!("{}:2377", node_field(&lab, 1, "{{.Status.Addr}}"));
    lab.ok(2, &["join", "--token", &token, &m1]);
    // node2's certificate is from the given root: its chain verifies against it alone.
    let node2 = credentials(&lab, 2);
    shoal_pki::server_config(
        &root.cert().clone().into(),
        &node2,
        shoal_pki::ClientCerts::Required,
    )
    .unwrap();
    let verifier = shoal_pki::rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(root.cert())),
        shoal_pki::provider(),
    )
    .build()
    .unwrap();
    verifier
        .verify_client_cert(
            node2.cert(),
            &[],
            shoal_pki::rustls::pki_types::UnixTime::now(),
        )
        .unwrap();
}
