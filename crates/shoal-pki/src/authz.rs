//! Authorization by certificate, never by a field of the request. Pure: the caller gives the
//! identity the TLS layer verified ([`crate::peer_identity`]) and the cluster's deny list.

use std::collections::BTreeSet;

use crate::certs::{Identity, Role};
use crate::error::{PkiError, Result};

/// What an RPC asks of its caller's certificate (issue 10's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `Join`: a caller without a certificate is let in (it has none yet); a certificate,
    /// if given, is checked as a member's.
    Joining,
    /// Session, Heartbeat, ReportStatus, AckEndpoints: any member; the handler then checks
    /// [`require_node`] against the node the request acts for.
    Member,
    /// Raft, Propose, TaskLogs.
    Manager,
}

/// The one check per RPC: the certificate is this cluster's, not on the deny list, and of
/// the role `access` needs. `None` only for [`Access::Joining`] without a certificate.
pub fn authorize(
    peer: Option<Identity>,
    rpc: &str,
    access: Access,
    cluster_id: &str,
    deny: &DenyList,
) -> Result<Option<Identity>> {
    let id = match peer {
        None if access == Access::Joining => return Ok(None),
        peer => require_certificate(peer, rpc)?,
    };
    require_cluster(&id, cluster_id)?;
    deny.check(&id)?;
    if access == Access::Manager {
        require_manager(&id)?;
    }
    Ok(Some(id))
}

/// The caller's identity, or a refusal naming `rpc` when it presented no certificate (only
/// `Join` may be called without one).
pub fn require_certificate(peer: Option<Identity>, rpc: &str) -> Result<Identity> {
    peer.ok_or_else(|| PkiError::NoCertificate {
        rpc: rpc.to_string(),
    })
}

/// The certificate is for this cluster (an imported CA may serve several).
pub fn require_cluster(id: &Identity, cluster_id: &str) -> Result<()> {
    if id.cluster_id == cluster_id {
        Ok(())
    } else {
        Err(PkiError::WrongCluster {
            node_id: id.node_id.clone(),
            found: id.cluster_id.clone(),
            expected: cluster_id.to_string(),
        })
    }
}

/// Raft, Propose, TaskLogs: managers only.
pub fn require_manager(id: &Identity) -> Result<()> {
    match id.role {
        Role::Manager => Ok(()),
        Role::Worker => Err(PkiError::NotAManager {
            node_id: id.node_id.clone(),
            role: id.role.to_string(),
        }),
    }
}

/// Session, Heartbeat, ReportStatus, AckEndpoints: a node acts only for itself.
pub fn require_node(id: &Identity, node_id: &str) -> Result<()> {
    if id.node_id == node_id {
        Ok(())
    } else {
        Err(PkiError::WrongNode {
            node_id: id.node_id.clone(),
            claimed: node_id.to_string(),
        })
    }
}

/// Removed nodes and revoked certificates: refused even while their certificate is valid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DenyList {
    pub node_ids: BTreeSet<String>,
    /// Lowercase hex, as [`Identity::serial`].
    pub serials: BTreeSet<String>,
}

impl DenyList {
    pub fn check(&self, id: &Identity) -> Result<()> {
        let what = if self.node_ids.contains(&id.node_id) {
            "node id".to_string()
        } else if self.serials.contains(&id.serial) {
            format!("certificate (serial {})", id.serial)
        } else {
            return Ok(());
        };
        Err(PkiError::Denied {
            node_id: id.node_id.clone(),
            what,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn id(node: &str, role: Role) -> Identity {
        Identity {
            node_id: node.into(),
            role,
            cluster_id: "c1".into(),
            serial: "0a0b".into(),
            not_before: UNIX_EPOCH,
            not_after: UNIX_EPOCH,
        }
    }

    #[test]
    fn a_worker_is_refused_manager_work_by_name() {
        require_manager(&id("m1", Role::Manager)).unwrap();
        let err = require_manager(&id("w1", Role::Worker))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("refused node w1: its certificate is a worker certificate"),
            "{err}"
        );
    }

    #[test]
    fn a_node_acts_only_for_itself() {
        require_node(&id("n1", Role::Worker), "n1").unwrap();
        let err = require_node(&id("n1", Role::Worker), "n2")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("refused node n1: it acted for node n2"),
            "{err}"
        );
    }

    #[test]
    fn another_cluster_and_no_certificate_are_refused() {
        require_cluster(&id("n1", Role::Worker), "c1").unwrap();
        let err = require_cluster(&id("n1", Role::Worker), "c2")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("refused node n1: its certificate is for cluster c1, this is cluster c2"),
            "{err}"
        );
        let err = require_certificate(None, "Propose")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("refused: Propose needs a node certificate"),
            "{err}"
        );
        let ok = require_certificate(Some(id("n1", Role::Worker)), "Session").unwrap();
        assert_eq!(ok.node_id, "n1");
    }

    #[test]
    fn authorize_applies_each_check_in_turn() {
        let deny = DenyList {
            node_ids: ["gone".to_string()].into(),
            serials: Default::default(),
        };
        let auth = |peer: Option<Identity>, access| authorize(peer, "Propose", access, "c1", &deny);
        assert_eq!(auth(None, Access::Joining).unwrap(), None);
        let err = auth(None, Access::Member).unwrap_err().to_string();
        assert!(
            err.starts_with("refused: Propose needs a node certificate"),
            "{err}"
        );
        let m = id("m1", Role::Manager);
        assert_eq!(auth(Some(m.clone()), Access::Manager).unwrap(), Some(m));
        let w = id("w1", Role::Worker);
        assert_eq!(
            auth(Some(w.clone()), Access::Member).unwrap(),
            Some(w.clone())
        );
        assert!(matches!(
            auth(Some(w.clone()), Access::Manager),
            Err(PkiError::NotAManager { .. })
        ));
        let mut foreign = w.clone();
        foreign.cluster_id = "c2".into();
        assert!(matches!(
            auth(Some(foreign), Access::Joining),
            Err(PkiError::WrongCluster { .. })
        ));
        assert!(matches!(
            auth(Some(id("gone", Role::Manager)), Access::Member),
            Err(PkiError::Denied { .. })
        ));
    }

    #[test]
    fn the_deny_list_names_what_matched() {
        let mut deny = DenyList::default();
        deny.check(&id("n1", Role::Worker)).unwrap();
        deny.node_ids.insert("n1".into());
        let err = deny.check(&id("n1", Role::Worker)).unwrap_err().to_string();
        assert!(
            err.contains("refused node n1: its node id is on the deny list"),
            "{err}"
        );
        deny.check(&id("n2", Role::Worker)).unwrap();
        deny.serials.insert("0a0b".into());
        let err = deny.check(&id("n2", Role::Worker)).unwrap_err().to_string();
        assert!(
            err.contains("refused node n2: its certificate (serial 0a0b) is on the deny list"),
            "{err}"
        );
    }
}
