//! A node's role as the cluster decides it (`node promote|demote`) and the managers a
//! forced new cluster leaves out (`init --force-new-cluster`).
//!
//! Raft membership itself is not state: the leader makes the voters follow what is decided
//! here (`shoal_manager::membership`), and the nodes follow it through their sessions.

use super::{ApplyError, ClusterState};
use crate::node::ManagerStatus;
use crate::{Millis, NodeRole, NodeState, ids};

impl ClusterState {
    pub(super) fn set_node_role(
        &mut self,
        id: &str,
        role: NodeRole,
        at: Millis,
    ) -> Result<(), ApplyError> {
        let node = self
            .nodes
            .get(id)
            .ok_or_else(|| ApplyError::NoSuchNode(id.to_string()))?;
        if node.spec.role == role {
            return Ok(());
        }
        if role == NodeRole::Worker {
            let managers = self
                .nodes
                .values()
                .filter(|n| n.spec.role == NodeRole::Manager)
                .count();
            if managers <= 1 {
                return Err(ApplyError::LastManager(node.hostname().to_string()));
            }
        }
        let node = self.nodes.get_mut(id).expect("looked up above");
        node.spec.role = role;
        node.manager_status = match role {
            // The id is the node id's, so every manager replaying the log agrees on it and
            // a node promoted again gets the same one.
            NodeRole::Manager => Some(ManagerStatus {
                raft_id: ids::raft_id_of(id),
                addr: node.status.cluster_addr.clone(),
                leader: false,
                reachability: String::new(),
            }),
            NodeRole::Worker => None,
        };
        node.updated_at = at;
        Ok(())
    }

    pub(super) fn force_new_cluster(
        &mut self,
        node_id: &str,
        at: Millis,
    ) -> Result<(), ApplyError> {
        let cluster = self.cluster.as_mut().ok_or(ApplyError::NotInitialized)?;
        let node = self
            .nodes
            .get(node_id)
            .ok_or_else(|| ApplyError::NoSuchNode(node_id.to_string()))?;
        if node.spec.role != NodeRole::Manager {
            return Err(ApplyError::Invalid(format!(
                "node {} is not a manager and cannot start a new cluster",
                node.hostname()
            )));
        }
        let others: Vec<String> = self
            .nodes
            .values()
            .filter(|n| n.id != node_id && n.spec.role == NodeRole::Manager)
            .map(|n| n.id.clone())
            .collect();
        for id in others {
            self.nodes.remove(&id);
            cluster.removed_nodes.insert(id);
        }
        if let Some(node) = self.nodes.get_mut(node_id) {
            node.status.state = NodeState::Ready;
            node.status.message = String::new();
            node.updated_at = at;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Command;
    use crate::fixtures;

    fn cluster(managers: &[&str], workers: &[&str]) -> ClusterState {
        let mut st = ClusterState {
            cluster: Some(fixtures::info()),
            ..Default::default()
        };
        for (i, name) in managers.iter().chain(workers).enumerate() {
            let mut n = fixtures::node(&format!("{:x}", 0xa0 + i), name);
            n.status.cluster_addr = format!("10.0.0.{i}:2377");
            st.nodes.insert(n.id.clone(), n);
        }
        let ids: Vec<String> = st
            .nodes
            .values()
            .filter(|n| managers.contains(&n.hostname()))
            .map(|n| n.id.clone())
            .collect();
        for id in ids {
            st.apply(Command::SetNodeRole {
                id,
                role: NodeRole::Manager,
                at: Millis(1),
            })
            .unwrap();
        }
        st
    }

    fn id_of(st: &ClusterState, host: &str) -> String {
        st.nodes
            .values()
            .find(|n| n.hostname() == host)
            .map(|n| n.id.clone())
            .unwrap()
    }

    #[test]
    fn a_promoted_node_gets_its_raft_id_and_address_and_a_demoted_one_loses_them() {
        let mut st = cluster(&["m1"], &["w1"]);
        let w1 = id_of(&st, "w1");
        let set = |role| Command::SetNodeRole {
            id: w1.clone(),
            role,
            at: Millis(5),
        };
        st.apply(set(NodeRole::Manager)).unwrap();
        let n = &st.nodes[&w1];
        assert_eq!(n.spec.role, NodeRole::Manager);
        let ms = n.manager_status.as_ref().unwrap();
        assert_eq!(ms.raft_id, ids::raft_id_of(&w1));
        assert_eq!(ms.addr, n.status.cluster_addr);
        st.apply(set(NodeRole::Worker)).unwrap();
        let n = &st.nodes[&w1];
        assert_eq!(n.spec.role, NodeRole::Worker);
        assert_eq!(n.manager_status, None);
        // Again: nothing to do, no error.
        st.apply(set(NodeRole::Worker)).unwrap();
    }

    #[test]
    fn the_last_manager_is_not_demoted() {
        let mut st = cluster(&["m1"], &["w1"]);
        let m1 = id_of(&st, "m1");
        let err = st
            .apply(Command::SetNodeRole {
                id: m1.clone(),
                role: NodeRole::Worker,
                at: Millis(5),
            })
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "attempting to demote the last manager of the swarm (m1); promote another node first"
        );
        assert_eq!(st.nodes[&m1].spec.role, NodeRole::Manager);
    }

    #[test]
    fn a_forced_new_cluster_removes_and_refuses_the_other_managers_only() {
        let mut st = cluster(&["m1", "m2", "m3"], &["w1"]);
        let (m1, m2, m3, w1) = (
            id_of(&st, "m1"),
            id_of(&st, "m2"),
            id_of(&st, "m3"),
            id_of(&st, "w1"),
        );
        st.nodes.get_mut(&m1).unwrap().status.state = NodeState::Down;
        st.apply(Command::ForceNewCluster {
            node_id: m1.clone(),
            at: Millis(9),
        })
        .unwrap();
        let mut left: Vec<&str> = st.nodes.values().map(|n| n.hostname()).collect();
        left.sort();
        assert_eq!(left, ["m1", "w1"]);
        assert_eq!(st.nodes[&m1].status.state, NodeState::Ready);
        let removed = &st.cluster.as_ref().unwrap().removed_nodes;
        assert!(removed.contains(&m2) && removed.contains(&m3) && !removed.contains(&w1));
        // Only a manager can be the one left.
        let err = st
            .apply(Command::ForceNewCluster {
                node_id: w1,
                at: Millis(10),
            })
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "node w1 is not a manager and cannot start a new cluster"
        );
    }
}
