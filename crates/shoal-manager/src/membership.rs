//! The Raft group follows the state: a manager the state no longer names (removed with
//! `node rm --force`, or gone with `leave --force`) is taken out of the voters by the
//! leader. Driving membership from committed state means a removal decided while the
//! leader was the leaving node itself, or while a change was refused, is finished by
//! whichever manager leads next.

use shoal_types::{ClusterState, NodeRole, ids};

/// Why taking voter `target` out of the group would stop it from committing, given each
/// voter's id and whether the leader hears from it (docker refuses such a demotion the
/// same way). Both the joint configuration (the voters as they are) and the one after
/// must keep a majority that answers.
pub fn removal_refused(voters: &[(u64, bool)], target: u64) -> Option<String> {
    if !voters.iter().any(|&(id, _)| id == target) {
        return None;
    }
    let reachable = voters.iter().filter(|&&(_, up)| up).count();
    let after = voters.len() - 1;
    if after == 0 {
        // The last one: the state refuses that with its own words (`LastManager`).
        return None;
    }
    let reachable_after = voters
        .iter()
        .filter(|&&(id, up)| up && id != target)
        .count();
    if reachable * 2 <= voters.len() || reachable_after * 2 <= after {
        return Some(format!(
            "can't remove member from the raft: this would result in a loss of quorum ({reachable} of {} managers are reachable and {reachable_after} of {after} would be left; bring the others back or remove the unreachable ones first)",
            voters.len()
        ));
    }
    None
}

/// Voters the state does not name as a manager. The leader removes itself only when it was
/// demoted (its node is still in the state, as a worker: openraft's leader steps down once
/// the change is committed); a leader that left or was removed is taken out by the next
/// leader once it has gone.
pub fn stale_voters(state: &ClusterState, voters: &[u64], leader: u64) -> Vec<u64> {
    let demoted = |id: u64| {
        state
            .nodes
            .values()
            .any(|n| n.spec.role == NodeRole::Worker && ids::raft_id_of(&n.id) == id)
    };
    voters
        .iter()
        .copied()
        .filter(|&id| id != leader || demoted(id))
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
    fn the_leader_removes_itself_only_when_demoted() {
        let st = with_managers(&[("m2", 2)]);
        // Raft id 1 is no node of the state (it left): not removed while it leads.
        assert_eq!(stale_voters(&st, &[1, 2], 1), Vec::<u64>::new());
        assert_eq!(stale_voters(&st, &[1, 2], 2), vec![1]);
        // A demoted leader (its node a worker now) takes itself out.
        let mut st = with_managers(&[("m2", 2)]);
        let w = shoal_types::fixtures::node("00000000000000a", "w");
        let wid = ids::raft_id_of(&w.id);
        st.nodes.insert(w.id.clone(), w);
        assert_eq!(stale_voters(&st, &[wid, 2], wid), vec![wid]);
    }

    #[test]
    fn a_removal_that_would_lose_the_quorum_is_refused() {
        // Three voters, all up: any one may go.
        assert_eq!(removal_refused(&[(1, true), (2, true), (3, true)], 3), None);
        // One down: removing another that is up leaves 1 of 2.
        let err = removal_refused(&[(1, true), (2, true), (3, false)], 2).unwrap();
        assert_eq!(
            err,
            "can't remove member from the raft: this would result in a loss of quorum (2 of 3 managers are reachable and 1 of 2 would be left; bring the others back or remove the unreachable ones first)"
        );
        // Removing the one that is down is fine: 2 of 2 left.
        assert_eq!(
            removal_refused(&[(1, true), (2, true), (3, false)], 3),
            None
        );
        // Four voters, one down: removing the down one needs 3 of 4 for the joint
        // configuration, which it has; two down is refused whichever goes.
        assert_eq!(
            removal_refused(&[(1, true), (2, true), (3, true), (4, false)], 4),
            None
        );
        assert!(removal_refused(&[(1, true), (2, true), (3, false), (4, false)], 4).is_some());
        // Not a voter (promoted, not yet added): nothing to check.
        assert_eq!(removal_refused(&[(1, true)], 9), None);
        // The last voter: for the state to refuse, as the last manager.
        assert_eq!(removal_refused(&[(1, true)], 1), None);
    }
}
