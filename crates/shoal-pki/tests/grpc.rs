//! These configs under tonic over loopback, the way the wiring of 2377 will use them: a
//! tokio-rustls acceptor feeding `serve_with_incoming`, `Request::peer_certs` →
//! `peer_identity` → `authorize`, and clients connecting through tokio-rustls. The Raft
//! service of shoal-rpc carries the calls; `Vote` here answers with the caller's node id and
//! needs a manager's certificate, as issue 10 asks of Raft. No root needed.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, ServerConfig};
use shoal_pki::{
    Access, ClientCerts, DenyList, JoinToken, NodeCertSpec, NodeCredentials, NodeKey, PkiError,
    Role, RootCa, Serial, Validity,
};
use shoal_rpc::pb::Json;
use shoal_rpc::raft_client::RaftClient;
use shoal_rpc::raft_server::{Raft, RaftServer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, Request, Response, Status};

const CLUSTER: &str = "cluster-a";

struct Voter {
    deny: DenyList,
}

impl Voter {
    fn admit<T>(&self, request: &Request<T>, rpc: &str, access: Access) -> Result<String, Status> {
        let certs = request.peer_certs();
        let peer = shoal_pki::peer_identity(certs.as_deref().map(|c| c.as_slice()))
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        match shoal_pki::authorize(peer, rpc, access, CLUSTER, &self.deny) {
            Ok(id) => Ok(id.map(|id| id.node_id).unwrap_or_default()),
            Err(e @ PkiError::NoCertificate { .. }) => Err(Status::unauthenticated(e.to_string())),
            Err(e) => Err(Status::permission_denied(e.to_string())),
        }
    }
}

#[tonic::async_trait]
impl Raft for Voter {
    async fn append_entries(&self, _: Request<Json>) -> Result<Response<Json>, Status> {
        Err(Status::unimplemented("not used by this test"))
    }

    async fn vote(&self, request: Request<Json>) -> Result<Response<Json>, Status> {
        let node = self.admit(&request, "Vote", Access::Manager)?;
        Ok(Response::new(shoal_rpc::json(node.into_bytes())))
    }

    async fn install_snapshot(&self, _: Request<Json>) -> Result<Response<Json>, Status> {
        Err(Status::unimplemented("not used by this test"))
    }
}

/// Serves the Raft service with `config` on a loopback port; handshakes that fail are
/// dropped without stopping the listener.
async fn serve(config: ServerConfig, deny: DenyList) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    let _ = tx.send(Ok::<_, io::Error>(tls)).await;
                }
            });
        }
    });
    tokio::spawn(
        Server::builder()
            .add_service(RaftServer::new(Voter { deny }))
            .serve_with_incoming(tokio_stream::wrappers::ReceiverStream::new(rx)),
    );
    addr
}

/// A channel to `addr` whose connections are TLS with `config`, asking for `shoal-manager`.
async fn channel(addr: SocketAddr, config: ClientConfig) -> Channel {
    let connector = TlsConnector::from(Arc::new(config));
    Endpoint::from_static("http://shoal-manager")
        .connect_with_connector(tower::service_fn(move |_| {
            let connector = connector.clone();
            async move {
                let tcp = TcpStream::connect(addr).await?;
                let tls = connector
                    .connect(shoal_pki::manager_server_name(), tcp)
                    .await?;
                Ok::<_, io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .unwrap()
}

async fn vote(addr: SocketAddr, config: ClientConfig) -> Result<String, Status> {
    let reply = RaftClient::new(channel(addr, config).await)
        .vote(shoal_rpc::json(Vec::new()))
        .await?;
    Ok(String::from_utf8(reply.into_inner().data).unwrap())
}

fn node(ca: &RootCa, node: &str, role: Role) -> NodeCredentials {
    let key = NodeKey::generate().unwrap();
    let spec = NodeCertSpec {
        node_id: node.into(),
        role,
        cluster_id: CLUSTER.into(),
        validity: Validity::starting(SystemTime::now(), shoal_pki::DEFAULT_NODE_CERT_VALIDITY),
        serial: Serial::random(),
    };
    key.certify(ca.issue(&key.csr().unwrap(), &spec).unwrap())
        .unwrap()
}

#[tokio::test]
async fn tonic_sees_the_callers_certificate_and_refuses_by_it() {
    let validity = Validity::starting(SystemTime::now(), shoal_pki::ROOT_CA_VALIDITY);
    let ca = RootCa::generate(CLUSTER, validity).unwrap();
    let trust = ca.cert();
    let roots = shoal_pki::Trust::from(trust.clone());
    let removed = node(&ca, "m3", Role::Manager);
    let deny = DenyList {
        node_ids: Default::default(),
        serials: [removed.identity().serial.clone()].into(),
    };
    let server = shoal_pki::server_config(
        &roots,
        &node(&ca, "m1", Role::Manager),
        ClientCerts::OptionalForJoin,
    )
    .unwrap();
    let addr = serve(server, deny).await;
    let client = |creds: &NodeCredentials| shoal_pki::client_config(&roots, creds).unwrap();

    // A manager votes, and the server knows which one from its certificate.
    let m2 = node(&ca, "m2", Role::Manager);
    assert_eq!(vote(addr, client(&m2)).await.unwrap(), "m2");

    // A worker is refused by its role.
    let w1 = node(&ca, "w1", Role::Worker);
    let status = vote(addr, client(&w1)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("refused node w1: its certificate is a worker certificate"),
        "{status:?}"
    );

    // A connection without a certificate (a joining node's) reaches the server, which
    // admits it to nothing but Join.
    let join = shoal_pki::join_client_config(&JoinToken::random(trust.digest())).unwrap();
    let status = vote(addr, join).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("refused: Vote needs a node certificate"),
        "{status:?}"
    );

    // A removed manager's certificate is still valid TLS, and refused by its serial.
    let status = vote(addr, client(&removed)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains(&format!(
            "refused node m3: its certificate (serial {}) is on the deny list",
            removed.identity().serial
        )),
        "{status:?}"
    );
}
