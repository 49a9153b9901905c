//! The node's certificates: on disk in `<data-dir>/certificates` (0700; keys 0600), in the
//! TLS configurations of port 2377 (replaced in place when a certificate is renewed, so no
//! connection drops), and, on managers, the root CA that issues them.
//!
//! The decisions (what a certificate says, when to renew, who may call what) are
//! shoal-pki's; this module holds the node's current credentials and does the file I/O.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use shoal_pki::rustls::pki_types::CertificateDer;
use shoal_pki::{
    ClientCerts, ClusterCa, Identity, NodeCertSpec, NodeCredentials, NodeKey, PkiError, Role,
    RootCa, Serial, Validity, files,
};
use shoal_types::NodeRole;

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
}

struct Current {
    creds: NodeCredentials,
    ca: ClusterCa,
    /// Managers only.
    root: Option<Arc<RootCa>>,
}

impl NodeCerts {
    /// The credentials saved in `data_dir` (a daemon restart). A manager also loads the root
    /// CA's key.
    pub fn load(data_dir: &Path, role: NodeRole) -> Result<Arc<NodeCerts>, PkiError> {
        let dir = dir(data_dir);
        let now = SystemTime::now();
        let ca = files::load_cluster_ca(&dir, now)?;
        let creds = files::load_node(&dir)?;
        let root = match role {
            NodeRole::Manager => Some(Arc::new(files::load_root_ca(&dir, now)?)),
            NodeRole::Worker => None,
        };
        Self::new(dir, Current { creds, ca, root })
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
                ca: root.cert().clone(),
                root: Some(Arc::new(root)),
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
        Self::new(dir, Current { creds, ca, root })
    }

    fn new(dir: PathBuf, current: Current) -> Result<Arc<NodeCerts>, PkiError> {
        let (server, client) = configs(&current)?;
        Ok(Arc::new(NodeCerts {
            dir,
            tls: shoal_rpc::Tls::new(server, client),
            current: RwLock::new(current),
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

    pub fn ca(&self) -> ClusterCa {
        self.read().ca.clone()
    }

    /// The root CA (managers only).
    pub fn root(&self) -> Option<Arc<RootCa>> {
        self.read().root.clone()
    }

    /// Installs a renewed certificate for `key`: saved first, then used for new connections.
    pub fn install(&self, key: &NodeKey, cert: Vec<u8>) -> Result<Identity, PkiError> {
        let creds = key.certify(CertificateDer::from(cert))?;
        files::save_node(&self.dir, &creds)?;
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        let next = Current {
            creds,
            ca: current.ca.clone(),
            root: current.root.clone(),
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
        shoal_pki::server_config(&c.ca, &c.creds, clients)?,
        shoal_pki::client_config(&c.ca, &c.creds)?,
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
