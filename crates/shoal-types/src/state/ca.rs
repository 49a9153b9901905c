//! The cluster's root CA in the state: the root a rotation installed, and a rotation in
//! progress (`shoal ca --rotate`). Certificates and keys are PEM text made by the proposer
//! (shoald, with shoal-pki); `apply` only records them, so it stays pure.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{ApplyError, ClusterState, OrdMap};
use crate::{Millis, Node, NodeState};

/// A root CA as the state holds it: its certificate and its key sealed with the managers'
/// key (`registry-auth.key`, the one that seals registry logins), never plain text. Only
/// the managers have the Raft log and that key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RootCaRecord {
    /// PEM.
    pub cert: String,
    pub key_sealed: String,
}

/// A move to a new root CA, as Swarm's cross-signed transition: every node trusts both
/// roots, renews its certificate from the new one, and once every node that is not Down
/// has, the new root replaces the old.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CaRotation {
    #[serde(rename = "ID")]
    pub id: String,
    pub started_at: Millis,
    /// The new root.
    pub root: RootCaRecord,
    /// The new root's certificate signed by the current root (PEM): a node that trusts
    /// only the current root verifies a certificate from the new one through it.
    pub cross_signed: String,
    /// Nodes that hold a certificate from the new root.
    #[serde(default)]
    pub renewed: BTreeSet<String>,
}

/// How far a rotation is: the nodes it waits for are those that are not Down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationProgress {
    pub renewed: usize,
    pub total: usize,
    /// Node ids still to renew.
    pub waiting: Vec<String>,
}

impl RotationProgress {
    pub fn done(&self) -> bool {
        self.waiting.is_empty()
    }
}

impl CaRotation {
    /// A node that is Down is not waited for: it keeps its certificate from the old root,
    /// which is refused once the rotation ends, and must leave and join again.
    pub fn progress(&self, nodes: &OrdMap<String, Node>) -> RotationProgress {
        let counted = nodes.values().filter(|n| n.status.state != NodeState::Down);
        let (mut renewed, mut total, mut waiting) = (0, 0, Vec::new());
        for n in counted {
            total += 1;
            if self.renewed.contains(&n.id) {
                renewed += 1;
            } else {
                waiting.push(n.id.clone());
            }
        }
        RotationProgress {
            renewed,
            total,
            waiting,
        }
    }
}

/// What a node is told to trust (`Assignments.ca`, JSON): the current root, and during a
/// rotation the new root and it cross-signed by the current one. Certificates only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaTrust {
    /// PEM; empty when the state has no record of it (a cluster not rotated since it was
    /// made): the node keeps the root it has.
    pub root: String,
    pub next: Option<NextRootPem>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextRootPem {
    pub cert: String,
    pub cross_signed: String,
}

impl ClusterState {
    /// What every node should trust now.
    pub fn ca_trust(&self) -> CaTrust {
        let c = self.cluster.as_ref();
        CaTrust {
            root: c
                .and_then(|c| c.root_ca.as_ref())
                .map(|r| r.cert.clone())
                .unwrap_or_default(),
            next: c.and_then(|c| c.ca_rotation.as_ref()).map(|r| NextRootPem {
                cert: r.root.cert.clone(),
                cross_signed: r.cross_signed.clone(),
            }),
        }
    }

    /// The rotation in progress and how far it is.
    pub fn ca_rotation(&self) -> Option<(&CaRotation, RotationProgress)> {
        let r = self.cluster.as_ref()?.ca_rotation.as_ref()?;
        Some((r, r.progress(&self.nodes)))
    }

    pub(super) fn start_ca_rotation(&mut self, rotation: CaRotation) -> Result<(), ApplyError> {
        let progress = self.ca_rotation().map(|(_, p)| p);
        let c = self.cluster.as_mut().ok_or(ApplyError::NotInitialized)?;
        if let Some(p) = progress {
            return Err(ApplyError::CaRotationInProgress {
                renewed: p.renewed,
                total: p.total,
            });
        }
        c.ca_rotation = Some(rotation);
        Ok(())
    }

    /// A node got a certificate from the new root. One for another rotation (ended or
    /// replaced) changes nothing.
    pub(super) fn ca_rotation_renewed(&mut self, rotation: &str, node_id: String) {
        if let Some(r) = self
            .cluster
            .as_mut()
            .and_then(|c| c.ca_rotation.as_mut())
            .filter(|r| r.id == rotation)
        {
            r.renewed.insert(node_id);
        }
    }

    pub(super) fn finish_ca_rotation(
        &mut self,
        rotation: &str,
        worker_token: String,
        manager_token: String,
    ) -> Result<(), ApplyError> {
        let c = self.cluster.as_mut().ok_or(ApplyError::NotInitialized)?;
        match c.ca_rotation.take() {
            Some(r) if r.id == rotation => {
                c.root_ca = Some(r.root);
                c.worker_token = worker_token;
                c.manager_token = manager_token;
                Ok(())
            }
            other => {
                c.ca_rotation = other;
                Err(ApplyError::Invalid(format!(
                    "root CA rotation {rotation} is not in progress"
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Command;
    use crate::fixtures;

    fn rotation(id: &str) -> CaRotation {
        CaRotation {
            id: id.into(),
            started_at: Millis(5),
            root: RootCaRecord {
                cert: format!("cert {id}"),
                key_sealed: format!("sealed {id}"),
            },
            cross_signed: format!("cross {id}"),
            renewed: BTreeSet::new(),
        }
    }

    #[test]
    fn a_rotation_waits_for_every_node_that_is_not_down_then_ends() {
        let mut st = fixtures::cluster(&[("n1", "a"), ("n2", "b"), ("n3", "c")]);
        assert_eq!(st.ca_trust().root, "");
        assert_eq!(st.ca_trust().next, None);
        st.apply(Command::StartCaRotation {
            rotation: rotation("r1"),
        })
        .unwrap();
        assert_eq!(
            st.ca_trust().next,
            Some(NextRootPem {
                cert: "cert r1".into(),
                cross_signed: "cross r1".into()
            })
        );
        // A second rotation while one runs is refused, saying how far the first is.
        let err = st
            .apply(Command::StartCaRotation {
                rotation: rotation("r2"),
            })
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "a root CA rotation is already in progress (0 of 3 nodes have a certificate from the new root); wait for it to finish: `shoal ca` shows its progress"
        );
        for (rot, n) in [("r1", "n1"), ("r2", "n2"), ("r1", "n1")] {
            st.apply(Command::CaRotationRenewed {
                rotation: rot.into(),
                node_id: n.into(),
            })
            .unwrap();
        }
        let (_, p) = st.ca_rotation().unwrap();
        assert_eq!((p.renewed, p.total), (1, 3));
        assert_eq!(p.waiting, vec!["n2".to_string(), "n3".to_string()]);
        // n3 goes Down: not waited for.
        st.apply(Command::SetNodeState {
            id: "n3".into(),
            state: NodeState::Down,
            message: String::new(),
            at: Millis(9),
        })
        .unwrap();
        st.apply(Command::CaRotationRenewed {
            rotation: "r1".into(),
            node_id: "n2".into(),
        })
        .unwrap();
        let (_, p) = st.ca_rotation().unwrap();
        assert!(p.done(), "{p:?}");
        assert_eq!((p.renewed, p.total), (2, 2));

        let finish = |id: &str| Command::FinishCaRotation {
            rotation: id.into(),
            worker_token: "w2".into(),
            manager_token: "m2".into(),
        };
        assert!(st.apply(finish("r2")).is_err());
        assert!(st.ca_rotation().is_some());
        st.apply(finish("r1")).unwrap();
        let c = st.cluster.as_ref().unwrap();
        assert_eq!(c.ca_rotation, None);
        assert_eq!(c.root_ca.as_ref().unwrap().key_sealed, "sealed r1");
        assert_eq!(
            (c.worker_token.as_str(), c.manager_token.as_str()),
            ("w2", "m2")
        );
        assert_eq!(st.ca_trust().root, "cert r1");
        assert_eq!(st.ca_trust().next, None);
    }
}
