//! Who may call what on port 2377: the caller's certificate, read from the TLS connection,
//! checked by shoal-pki's `authorize` against this cluster and its removed nodes. Never a
//! field of the request.

use shoal_pki::{Access, DenyList, Identity, PkiError};
use tonic::{Request, Status};
use tracing::info;

use crate::role::ManagerSlot;

/// Whether the state names `node_id` a worker (a manager certificate it holds is stale).
fn demoted(state: &shoal_types::ClusterState, node_id: &str) -> bool {
    state
        .nodes
        .get(node_id)
        .is_some_and(|n| n.spec.role == shoal_types::NodeRole::Worker)
}

/// The check every RPC passes first.
#[derive(Clone)]
pub struct Gate {
    cluster_id: String,
    /// On managers, the state's removed nodes are refused; a worker has no state and
    /// relies on the certificates' short lives. The role may come and go (`node promote`).
    manager: ManagerSlot,
}

impl Gate {
    pub fn new(cluster_id: String, manager: ManagerSlot) -> Gate {
        Gate {
            cluster_id,
            manager,
        }
    }

    fn deny_list(&self) -> DenyList {
        let node_ids = self
            .manager
            .get()
            .and_then(|m| m.state().cluster.as_ref().map(|c| c.removed_nodes.clone()))
            .unwrap_or_default();
        DenyList {
            node_ids,
            serials: Default::default(),
        }
    }

    /// The caller's identity if `access` admits it; `None` only for `Join` without a
    /// certificate.
    pub fn admit<T>(
        &self,
        req: &Request<T>,
        rpc: &str,
        access: Access,
    ) -> Result<Option<Identity>, Status> {
        let certs = req.peer_certs();
        let peer = shoal_pki::peer_identity(certs.as_deref().map(|c| c.as_slice()))
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        let id = shoal_pki::authorize(peer, rpc, access, &self.cluster_id, &self.deny_list())
            .map_err(|e| {
                info!(peer = ?req.remote_addr(), rpc, "{e}");
                to_status(e)
            })?;
        // A demoted manager's certificate still says manager until it is renewed: the
        // state's word is the newer one. Not for Raft: a demoted leader replicates its own
        // removal, and Raft's membership is the voters' own check.
        if access == Access::Manager
            && rpc != "Raft"
            && let (Some(id), Some(m)) = (&id, self.manager.get())
            && demoted(&m.state(), &id.node_id)
        {
            info!(node = %id.node_id, rpc, "refused: the node was demoted");
            return Err(Status::permission_denied(format!(
                "refused: {rpc} is for managers and node {} was demoted to a worker",
                id.node_id
            )));
        }
        Ok(id)
    }

    /// A member's identity (every RPC but `Join`).
    pub fn member<T>(
        &self,
        req: &Request<T>,
        rpc: &str,
        access: Access,
    ) -> Result<Identity, Status> {
        self.admit(req, rpc, access)?.ok_or_else(|| {
            Status::unauthenticated(format!("refused: {rpc} needs a node certificate"))
        })
    }

    /// For services checked as a whole (Raft, the Agent service): every call needs `access`.
    pub fn interceptor(
        self,
        service: &'static str,
        access: Access,
    ) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone + Send + Sync + 'static
    {
        move |req: Request<()>| {
            self.member(&req, service, access)?;
            Ok(req)
        }
    }
}

/// What a node may do is for the node named in its certificate: a request that names
/// another node is refused.
pub fn acting_for(id: &Identity, claimed: &str) -> Result<(), Status> {
    if claimed.is_empty() {
        return Ok(());
    }
    shoal_pki::require_node(id, claimed).map_err(|e| {
        info!(node = %id.node_id, claimed, "refused: {e}");
        to_status(e)
    })
}

pub fn to_status(e: PkiError) -> Status {
    match e {
        PkiError::NoCertificate { .. } => Status::unauthenticated(e.to_string()),
        e => Status::permission_denied(e.to_string()),
    }
}
