//! The node's certificates: on disk in `<data-dir>/certificates` (0700; keys 0600), in the
//! TLS configurations of port 2377 (replaced in place when a certificate is renewed, so no
//! connection drops), and, on managers, the root CA that issues them.
//!
//! The decisions (what a certificate says, when to renew, who may call what) are
//! shoal-pki's; this module holds the node's current credentials and does the file I/O.
//!
//! A root rotation reaches a manager through its Raft state (`follow_state`: the new root's
//! key, sealed there) and a worker through its session (`follow_session`: certificates
//! only). Either swaps the TLS configurations and, if the node's certificate is not from
//! the new root, wakes `renewal::run`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use shoal_pki::rustls::pki_types::CertificateDer;
use shoal_pki::{
    ClientCerts, ClusterCa, Identity, NodeCertSpec, NodeCredentials, NodeKey, PkiError, Role,
    RootCa, Serial, Trust, Validity, files,
};
use shoal_types::NodeRole;
use shoal_types::state::CaTrust;
use tracing::info;

/// The directory of a node's certificates.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("certificates")
}

pub fn role_of(role: NodeRole) -> Role {
    match role {
        NodeRole::Manager => Role::Manager,
        NodeRole::Worker => Role::Worker,
    }
}

/// A node's credentials and the TLS configurations made from them.
pub struct NodeCerts {
    dir: PathBuf,
    tls: Arc<shoal_rpc::Tls>,
    current: RwLock<Current>,
    /// Woken when a root rotation wants this node's certificate renewed now.
    renew_now: tokio::sync::Notify,
}

struct Current {
    creds: NodeCredentials,
    trust: Trust,
    /// Managers only: the root's key.
    root: Option<Arc<RootCa>>,
    /// Managers only, during a rotation: the new root's key and the rotation's id.
    next: Option<(Arc<RootCa>, String)>,
}

impl NodeCerts {
    /// The credentials saved in `data_dir` (a daemon restart). A manager also loads the root
    /// CA's key.
    pub fn load(data_dir: &Path, role: NodeRole) -> Result<Arc<NodeCerts>, PkiError> {
        let dir = dir(data_dir);
        let now = SystemTime::now();
        let trust = files::load_trust(&dir, now)?;
        let creds = files::load_node(&dir)?;
        let root = match role {
            NodeRole::Manager => Some(Arc::new(files::load_root_ca(&dir, now)?)),
            NodeRole::Worker => None,
        };
        // A manager learns the new root's key from its state again (`follow_state`).
        Self::new(
            dir,
            Current {
                creds,
                trust,
                root,
                next: None,
            },
        )
    }

    /// The first manager of a new cluster: its root CA (a new one, or `given` by the user)
    /// and this node's certificate from it.
    pub fn init(
        data_dir: &Path,
        cluster_id: &str,
        node_id: &str,
        lifetime: Duration,
        given: Option<RootCa>,
    ) -> Result<Arc<NodeCerts>, PkiError> {
        let dir = dir(data_dir);
        let now = SystemTime::now();
        let root = match given {
            Some(root) => root,
            None => RootCa::generate(
                cluster_id,
                Validity::starting(now, shoal_pki::ROOT_CA_VALIDITY),
            )?,
        };
        let key = NodeKey::generate()?;
        let cert = root.issue(
            &key.csr()?,
            &spec(node_id, Role::Manager, cluster_id, lifetime, now),
        )?;
        let creds = key.certify(cert)?;
        files::save_root_ca(&dir, &root)?;
        files::save_node(&dir, &creds)?;
        Self::new(
            dir,
            Current {
                creds,
                trust: Trust::from(root.cert().clone()),
                root: Some(Arc::new(root)),
                next: None,
            },
        )
    }

    /// A node that joined: the certificate the manager issued for `key`, the cluster's root
    /// CA (checked against the token by the TLS handshake already), and for a manager the
    /// root CA's key.
    pub fn joined(
        data_dir: &Path,
        key: &NodeKey,
        cert: Vec<u8>,
        ca_cert: Vec<u8>,
        ca_key_pem: Option<&[u8]>,
    ) -> Result<Arc<NodeCerts>, PkiError> {
        let dir = dir(data_dir);
        let now = SystemTime::now();
        let ca = ClusterCa::from_der(CertificateDer::from(ca_cert), "the manager's CA", now)?;
        let creds = key.certify(CertificateDer::from(cert))?;
        let root = match ca_key_pem {
            Some(pem) => Some(Arc::new(RootCa::import(
                ca.pem().as_bytes(),
                "the manager's CA",
                pem,
                "the manager's CA key",
                now,
            )?)),
            None => None,
        };
        match &root {
            Some(root) => files::save_root_ca(&dir, root)?,
            None => files::save_cluster_ca(&dir, &ca)?,
        }
        files::save_node(&dir, &creds)?;
        Self::new(
            dir,
            Current {
                creds,
                trust: Trust::from(ca),
                root,
                next: None,
            },
        )
    }

    fn new(dir: PathBuf, current: Current) -> Result<Arc<NodeCerts>, PkiError> {
        let (server, client) = configs(&current)?;
        Ok(Arc::new(NodeCerts {
            dir,
            tls: shoal_rpc::Tls::new(server, client),
            current: RwLock::new(current),
            renew_now: tokio::sync::Notify::new(),
        }))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Current> {
        self.current.read().unwrap_or_else(|p| p.into_inner())
    }

    /// How this node dials others on 2377.
    pub fn dialer(&self) -> shoal_rpc::Dialer {
        shoal_rpc::Dialer::Member(Arc::clone(&self.tls))
    }

    pub fn tls(&self) -> Arc<shoal_rpc::Tls> {
        Arc::clone(&self.tls)
    }

    /// Who this node's certificate says it is.
    pub fn identity(&self) -> Identity {
        self.read().creds.identity().clone()
    }

    /// The cluster's root CA (what join tokens pin).
    pub fn ca(&self) -> ClusterCa {
        self.read().trust.root().clone()
    }

    /// The root CA (managers only).
    pub fn root(&self) -> Option<Arc<RootCa>> {
        self.read().root.clone()
    }

    /// What a manager issues certificates from: the new root during a rotation (with the
    /// rotation's id, to record the node as renewed), else the root. `None` on a worker.
    pub fn issuer(&self) -> Option<(Arc<RootCa>, Option<String>)> {
        let c = self.read();
        match &c.next {
            Some((next, rotation)) => Some((Arc::clone(next), Some(rotation.clone()))),
            None => c.root.clone().map(|r| (r, None)),
        }
    }

    /// Whether a rotation in progress wants this node's certificate renewed.
    pub fn must_renew(&self) -> bool {
        let c = self.read();
        c.trust.must_renew(c.creds.cert())
    }

    /// Resolves when a rotation wants this node's certificate renewed now.
    pub async fn renewal_wanted(&self) {
        self.renew_now.notified().await
    }

    /// A worker: what its session says the cluster trusts now. Only certificates: a
    /// worker never holds a root's key.
    pub fn follow_session(&self, t: &CaTrust) -> Result<(), PkiError> {
        let now = SystemTime::now();
        let current = self.read().trust.clone();
        let root = match t.root.as_str() {
            "" => current.root().clone(),
            pem if pem == current.root().pem() => current.root().clone(),
            pem => ClusterCa::from_pem(pem.as_bytes(), "the session's root CA", now)?,
        };
        let trust = match &t.next {
            None => Trust::from(root),
            Some(n) => Trust::rotating(
                root,
                ClusterCa::from_pem(n.cert.as_bytes(), "the session's new root CA", now)?,
                shoal_pki::cert_from_pem(n.cross_signed.as_bytes(), "the cross-signed root")?,
            )?,
        };
        if trust != current {
            self.set_trust(trust, None, None)?;
        }
        Ok(())
    }

    /// A manager: the root and the rotation its Raft state records, the keys unsealed with
    /// the managers' key.
    pub fn follow_state(
        &self,
        info: &shoal_types::ClusterInfo,
        seal: &shoal_image::SealKey,
    ) -> Result<(), String> {
        let now = SystemTime::now();
        let (current_root, current_rotation) = {
            let c = self.read();
            (
                c.trust.root().pem(),
                c.next.as_ref().map(|(_, id)| id.clone()),
            )
        };
        let unseal = |r: &shoal_types::state::RootCaRecord, what: &str| {
            let key = seal
                .open(&r.key_sealed)
                .map_err(|e| format!("cannot unseal {what}'s key: {e}"))?;
            RootCa::import(r.cert.as_bytes(), what, &key, what, now)
                .map(Arc::new)
                .map_err(|e| e.to_string())
        };
        let root_changed = info
            .root_ca
            .as_ref()
            .is_some_and(|r| r.cert != current_root);
        let rotation = info.ca_rotation.as_ref();
        if !root_changed && rotation.map(|r| &r.id) == current_rotation.as_ref() {
            return Ok(());
        }
        let root = match (&info.root_ca, root_changed) {
            (Some(r), true) => unseal(r, "the state's root CA")?,
            _ => self.root().ok_or("this manager has no root CA key")?,
        };
        let (trust, next) = match rotation {
            None => (Trust::from(root.cert().clone()), None),
            Some(r) => {
                let next = unseal(&r.root, "the rotation's new root CA")?;
                let cross =
                    shoal_pki::cert_from_pem(r.cross_signed.as_bytes(), "the cross-signed root")
                        .map_err(|e| e.to_string())?;
                let trust = Trust::rotating(root.cert().clone(), next.cert().clone(), cross)
                    .map_err(|e| e.to_string())?;
                (trust, Some((next, r.id.clone())))
            }
        };
        if root_changed {
            files::save_root_ca(&self.dir, &root).map_err(|e| e.to_string())?;
        }
        self.set_trust(trust, Some(root), next)
            .map_err(|e| e.to_string())
    }

    /// Saves `trust`, swaps the TLS configurations, and wakes the renewal if the node's
    /// certificate is not from the new root.
    fn set_trust(
        &self,
        trust: Trust,
        root: Option<Arc<RootCa>>,
        next: Option<(Arc<RootCa>, String)>,
    ) -> Result<(), PkiError> {
        files::save_trust(&self.dir, &trust)?;
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        let next = Current {
            creds: current.creds.clone(),
            trust,
            root: root.or_else(|| current.root.clone()),
            next,
        };
        let (server, client) = configs(&next)?;
        self.tls.replace(server, client);
        *current = next;
        let digests: Vec<String> = current
            .trust
            .roots()
            .map(|c| c.digest().to_string())
            .collect();
        let renew = current.trust.must_renew(current.creds.cert());
        drop(current);
        info!(roots = ?digests, renew, "the cluster's trusted root CAs changed");
        if renew {
            self.renew_now.notify_one();
        }
        Ok(())
    }

    /// The manager role starts or stops here (`node promote|demote`): a promoted node keeps
    /// the root CA's key it was given with its manager certificate, a demoted one forgets
    /// it (the file too). The certificate itself comes through `install`.
    pub fn set_root_key(&self, key_pem: Option<&[u8]>) -> Result<(), PkiError> {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        match key_pem {
            Some(pem) => {
                let ca = current.trust.root().clone();
                let root = RootCa::import(
                    ca.pem().as_bytes(),
                    "the cluster's CA",
                    pem,
                    "the CA key a manager sent",
                    SystemTime::now(),
                )?;
                files::save_root_ca(&self.dir, &root)?;
                current.root = Some(Arc::new(root));
            }
            None => {
                let _ = std::fs::remove_file(self.dir.join(files::ROOT_CA_KEY));
                current.root = None;
                current.next = None;
            }
        }
        Ok(())
    }

    /// Installs a renewed certificate for `key`: saved first, then used for new connections.
    pub fn install(&self, key: &NodeKey, cert: Vec<u8>) -> Result<Identity, PkiError> {
        let creds = key.certify(CertificateDer::from(cert))?;
        files::save_node(&self.dir, &creds)?;
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        let next = Current {
            creds,
            trust: current.trust.clone(),
            root: current.root.clone(),
            next: current.next.clone(),
        };
        let (server, client) = configs(&next)?;
        self.tls.replace(server, client);
        *current = next;
        Ok(current.creds.identity().clone())
    }
}

/// Server and client configurations: a manager's 2377 admits clients without a certificate
/// (to `Join` only); a worker's listener serves managers only, each with a certificate.
fn configs(
    c: &Current,
) -> Result<
    (
        shoal_pki::rustls::ServerConfig,
        shoal_pki::rustls::ClientConfig,
    ),
    PkiError,
> {
    let clients = if c.creds.identity().role == Role::Manager {
        ClientCerts::OptionalForJoin
    } else {
        ClientCerts::Required
    };
    Ok((
        shoal_pki::server_config(&c.trust, &c.creds, clients)?,
        shoal_pki::client_config(&c.trust, &c.creds)?,
    ))
}

/// What a manager writes into a certificate it issues.
pub fn spec(
    node_id: &str,
    role: Role,
    cluster_id: &str,
    lifetime: Duration,
    now: SystemTime,
) -> NodeCertSpec {
    NodeCertSpec {
        node_id: node_id.to_string(),
        role,
        cluster_id: cluster_id.to_string(),
        validity: Validity::starting(now, lifetime),
        serial: Serial::random(),
    }
}

/// A certificate for `node_id` in `role` from the node's CSR, valid for the cluster's
/// `--cert-expiry`; during a root rotation from the new root, with the command that
/// records the node as renewed (to be committed before the certificate is handed out,
/// so a rotation never waits for a node that has its certificate).
pub fn issue(
    certs: &NodeCerts,
    csr: &[u8],
    node_id: &str,
    role: NodeRole,
    cluster: &shoal_types::ClusterInfo,
) -> Result<(Vec<u8>, Option<shoal_types::Command>), tonic::Status> {
    let spec = spec(
        node_id,
        role_of(role),
        &cluster.id,
        std::time::Duration::from_millis(cluster.cert_expiry_ms),
        std::time::SystemTime::now(),
    );
    let (issuer, rotation) = certs
        .issuer()
        .ok_or_else(|| tonic::Status::internal("this manager has no root CA key"))?;
    let cert = issuer
        .issue(csr, &spec)
        .map(|c| c.to_vec())
        .map_err(|e| tonic::Status::invalid_argument(format!("cannot issue a certificate: {e}")))?;
    Ok((
        cert,
        rotation.map(|rotation| shoal_types::Command::CaRotationRenewed {
            rotation,
            node_id: node_id.to_string(),
        }),
    ))
}
