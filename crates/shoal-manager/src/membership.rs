//! The Raft group follows the state: a manager the state no longer names (removed with
//! `node rm --force`, or gone with `leave --force`) is taken out of the voters by the
//! leader. Driving membership from committed state means a removal decided while the
//! leader was the leaving node itself, or while a change was refused, is finished by
//! whichever manager leads next.

use shoal_types::ClusterState;

/// Voters the state does not name as a manager, except `leader` (a leader does not vote
/// itself out; the next leader removes it once it has gone).
pub fn stale_voters(state: &ClusterState, voters: &[u64], leader: u64) -> Vec<u64> {
    voters
        .iter()
        .copied()
        .filter(|&id| id != leader)
        .filter(|&id| {
            !state
                .nodes
                .values()
                .any(|n| n.manager_status.as_ref().is_some_and(|m| m.raft_id == id))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_types::node::ManagerStatus;

    fn with_managers(ids: &[(&str, u64)]) -> ClusterState {
        let mut st = ClusterState::default();
        for (name, raft_id) in ids {
            let mut n = shoal_types::fixtures::node(name, name);
            n.spec.role = shoal_types::NodeRole::Manager;
            n.manager_status = Some(ManagerStatus {
                raft_id: *raft_id,
                addr: format!("{name}:2377"),
                leader: false,
                reachability: String::new(),
            });
            st.nodes.insert(name.to_string(), n);
        }
        st
    }

    #[test]
    fn voters_the_state_does_not_name_are_stale() {
        let st = with_managers(&[("m1", 1), ("m3", 3)]);
        // m2 (raft id 2) was removed from the state; 4 was never a node.
        assert_eq!(stale_voters(&st, &[1, 2, 3, 4], 1), vec![2, 4]);
        assert_eq!(stale_voters(&st, &[1, 3], 1), Vec::<u64>::new());
    }

    #[test]
    fn the_leader_never_removes_itself() {
        let st = with_managers(&[("m2", 2)]);
        assert_eq!(stale_voters(&st, &[1, 2], 1), Vec::<u64>::new());
        assert_eq!(stale_voters(&st, &[1, 2], 2), vec![1]);
    }
}
