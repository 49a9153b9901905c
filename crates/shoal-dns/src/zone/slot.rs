//! Who defines a name, and which definition wins.
//!
//! Every service that defines a name keeps a claim on it, ranked as a full build would have
//! added it: first by [`Tier`] (all services' own names before any task's), then by the
//! service's order key. The lowest rank answers. Keeping the losing claims is what lets one
//! service be removed or replaced without rebuilding the others: its claims go, and the next
//! one in rank answers, exactly as if the network had been built without it.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use super::service::Tier;

/// A claim's place in the order of a full build.
pub(super) type Rank = (Tier, Arc<str>);

/// Every claim on one key, lowest rank first. Almost always one, so the winner is kept
/// inline (no allocation for `rest`, one less pointer to follow on a lookup).
#[derive(Clone, Debug)]
pub(super) struct Slot<T> {
    first: (Rank, T),
    rest: Vec<(Rank, T)>,
}

impl<T: Clone> Slot<T> {
    /// What the key answers.
    pub(super) fn winner(&self) -> &T {
        &self.first.1
    }

    fn add(&mut self, rank: Rank, value: T) {
        let new = (rank, value);
        if new.0 < self.first.0 {
            let old = std::mem::replace(&mut self.first, new);
            self.rest.insert(0, old);
        } else {
            let at = self.rest.partition_point(|(r, _)| *r < new.0);
            self.rest.insert(at, new);
        }
    }

    /// Drops the claim of `rank`; `false` if none is left.
    fn remove(&mut self, rank: &Rank) -> bool {
        if self.first.0 == *rank {
            if self.rest.is_empty() {
                return false;
            }
            self.first = self.rest.remove(0);
        } else {
            self.rest.retain(|(r, _)| r != rank);
        }
        true
    }
}

/// A persistent map from keys to their claims: cloning it is O(1), and changing a key copies
/// only the O(log n) nodes on its path, so a new zone version costs what changed.
pub(super) type Claims<K, T> =
    imbl::GenericHashMap<K, Slot<T>, Hasher, imbl::shared_ptr::DefaultSharedPtr>;

/// foldhash rather than SipHash: every query hashes its name once per network in scope, and
/// the keys are the cluster's own names (seeded per map, so not predictable from outside).
pub(super) type Hasher = foldhash::fast::RandomState;

/// Moves the claims of the service ordered `order` from `old` to `new` (each key at most once
/// per tier). Keys it claims in both with the same records are not touched: a scale change
/// leaves the service's VIP name and its other tasks' names as they were, and every key
/// touched costs a copy of its path in the persistent map.
pub(super) fn replace<K, T>(
    map: &mut Claims<K, T>,
    order: &Arc<str>,
    old: &[(K, Tier, T)],
    new: &[(K, Tier, T)],
) where
    K: Hash + Eq + Clone,
    T: Clone + PartialEq,
{
    let before: HashMap<(&K, Tier), &T> = old.iter().map(|(k, t, v)| ((k, *t), v)).collect();
    let mut kept: HashMap<(&K, Tier), ()> = HashMap::new();
    if !before.is_empty() {
        for (k, tier, v) in new {
            if before.get(&(k, *tier)).is_some_and(|was| *was == v) {
                kept.insert((k, *tier), ());
            }
        }
    }
    for (k, tier, _) in old {
        if !kept.contains_key(&(k, *tier)) {
            unclaim(map, k, &(*tier, Arc::clone(order)));
        }
    }
    for (k, tier, v) in new {
        if !kept.contains_key(&(k, *tier)) {
            claim(map, k.clone(), (*tier, Arc::clone(order)), v.clone());
        }
    }
}

/// Adds the claim of `rank` on `key`.
fn claim<K, T>(map: &mut Claims<K, T>, key: K, rank: Rank, value: T)
where
    K: Hash + Eq + Clone,
    T: Clone,
{
    if let Some(slot) = map.get_mut(&key) {
        slot.add(rank, value);
    } else {
        map.insert(
            key,
            Slot {
                first: (rank, value),
                rest: Vec::new(),
            },
        );
    }
}

/// Drops the claim of `rank` on `key`, and the key if nothing else claims it.
fn unclaim<K, T>(map: &mut Claims<K, T>, key: &K, rank: &Rank)
where
    K: Hash + Eq + Clone,
    T: Clone,
{
    if let Some(slot) = map.get_mut(key)
        && !slot.remove(rank)
    {
        map.remove(key);
    }
}
