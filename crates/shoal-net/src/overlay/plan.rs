//! What to change in one overlay network on one node: current state in, operations out.
//!
//! Pure: no netlink, no namespaces. [`super::observe`] reads the [`Current`] state from the
//! kernel and [`super::apply`] carries the [`Op`]s out; the agent builds the [`Desired`] state
//! from its tasks and the endpoint table.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// A local task's interface on the network.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Attachment {
    /// The task's address and the network's prefix length.
    pub addr: Ipv4Net,
    /// The task's sandbox namespace (`shoal-task-<short id>`).
    pub sandbox: String,
    /// The interface name inside the sandbox (`eth0`, `eth1`, ...).
    pub ifname: String,
}

/// An endpoint on another node: `addr` is reached through the VTEP `vtep`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Remote {
    /// The endpoint's overlay address.
    pub addr: Ipv4Addr,
    /// The underlay address of the node it runs on.
    pub vtep: Ipv4Addr,
}

/// What the network should look like on this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// Local tasks on this network.
    pub attachments: Vec<Attachment>,
    /// Endpoints of this network on other nodes.
    pub remotes: Vec<Remote>,
}

/// What the kernel has, as [`super::observe`] reads it.
///
/// FDB and neighbour entries are kept apart (not as [`Remote`]s) so that half of a remote
/// endpoint — left by a crash between the two netlink requests, or by hand — is seen and
/// repaired rather than taken for the whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Current {
    /// Addresses with a veth on the bridge (from the host-side names).
    pub attached: BTreeSet<Ipv4Addr>,
    /// Overlay address (from the MAC, which encodes it) to the VTEP its FDB entry points at.
    pub fdb: BTreeMap<Ipv4Addr, Ipv4Addr>,
    /// Addresses with a permanent neighbour entry carrying their derived MAC.
    pub neighbours: BTreeSet<Ipv4Addr>,
}

/// One change, in the order [`plan`] returns them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Remove the local task's veth ([`super::detach`]).
    Detach(Ipv4Addr),
    /// Remove a remote endpoint's FDB and neighbour entries, whatever VTEP they name
    /// ([`super::remove_remote`] with no VTEP).
    RemoveRemote(Ipv4Addr),
    /// Give a local task its veth ([`super::attach`]).
    Attach(Attachment),
    /// Add or repoint a remote endpoint ([`super::add_remote`], which replaces).
    AddRemote(Remote),
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Detach(addr) => write!(f, "detach {addr}"),
            Op::RemoveRemote(addr) => write!(f, "remove-remote {addr}"),
            Op::Attach(a) => write!(f, "attach {} as {} in {}", a.addr, a.ifname, a.sandbox),
            Op::AddRemote(r) => write!(f, "add-remote {} via {}", r.addr, r.vtep),
        }
    }
}

/// The operations that turn `current` into `desired`.
///
/// Order: every removal before any addition, so that an address moving between "local" and
/// "remote" (a rescheduled task that kept its IP) never has both at once; within a kind,
/// by address, so the output is deterministic.
///
/// Rules:
/// - When `desired` lists an address twice, the last entry wins.
/// - An address that is both a local attachment and a remote is local: the veth on this node
///   is the truth, the endpoint table is late.
/// - A remote whose VTEP changed is repointed in place ([`Op::AddRemote`] replaces), not
///   removed and added, so traffic to it is not cut in between.
/// - An existing attachment is left alone even if its sandbox or interface name differs;
///   the kernel side does not record them and a task's attachment does not change while it
///   lives.
pub fn plan(current: &Current, desired: &Desired) -> Vec<Op> {
    let local: BTreeMap<Ipv4Addr, &Attachment> = desired
        .attachments
        .iter()
        .map(|a| (a.addr.addr(), a))
        .collect();
    let remote: BTreeMap<Ipv4Addr, Ipv4Addr> = desired
        .remotes
        .iter()
        .filter(|r| !local.contains_key(&r.addr))
        .map(|r| (r.addr, r.vtep))
        .collect();

    let mut ops = Vec::new();
    ops.extend(
        current
            .attached
            .iter()
            .filter(|addr| !local.contains_key(addr))
            .map(|addr| Op::Detach(*addr)),
    );
    let seen: BTreeSet<Ipv4Addr> = current
        .fdb
        .keys()
        .chain(current.neighbours.iter())
        .copied()
        .collect();
    ops.extend(
        seen.iter()
            .filter(|addr| !remote.contains_key(addr))
            .map(|addr| Op::RemoveRemote(*addr)),
    );
    ops.extend(
        local
            .iter()
            .filter(|(addr, _)| !current.attached.contains(addr))
            .map(|(_, a)| Op::Attach((*a).clone())),
    );
    ops.extend(
        remote
            .iter()
            .filter(|(addr, vtep)| {
                current.fdb.get(addr) != Some(vtep) || !current.neighbours.contains(addr)
            })
            .map(|(addr, vtep)| {
                Op::AddRemote(Remote {
                    addr: *addr,
                    vtep: *vtep,
                })
            }),
    );
    ops
}

/// The operations for a change of remote endpoints alone, the local attachments being as
/// `current` has them: `changes` maps each address whose remote entry may differ to the VTEP
/// it should be reached through now (`None`: it is no remote endpoint any more). The same
/// operations [`plan`] gives for the whole desired state when only those addresses changed,
/// at the cost of the change: a network of a thousand tasks changes one task at a time.
pub fn plan_remotes(current: &Current, changes: &BTreeMap<Ipv4Addr, Option<Ipv4Addr>>) -> Vec<Op> {
    // A local attachment wins over the endpoint table, as in `plan`.
    let remote = changes
        .iter()
        .filter(|(addr, _)| !current.attached.contains(addr));
    let mut ops: Vec<Op> = remote
        .clone()
        .filter(|(addr, vtep)| {
            vtep.is_none() && (current.fdb.contains_key(addr) || current.neighbours.contains(addr))
        })
        .map(|(addr, _)| Op::RemoveRemote(*addr))
        .collect();
    ops.extend(remote.filter_map(|(addr, vtep)| {
        let vtep = (*vtep)?;
        (current.fdb.get(addr) != Some(&vtep) || !current.neighbours.contains(addr))
            .then_some(Op::AddRemote(Remote { addr: *addr, vtep }))
    }));
    ops
}

/// The operations for local attachments that came or went alone (by address), the remote
/// endpoints being as `current` has them, plus those `shadowed` keeps: a sandbox that
/// comes or goes costs its own attachments, not a walk over every task of the network.
/// Carried out before [`plan_remotes`] for a change of the same pass.
pub fn plan_locals(
    current: &Current,
    shadowed: &Shadowed,
    gone: &BTreeSet<Ipv4Addr>,
    came: &[Attachment],
) -> Vec<Op> {
    let came_addrs: BTreeSet<Ipv4Addr> = came.iter().map(|a| a.addr.addr()).collect();
    let mut ops: Vec<Op> = gone
        .iter()
        .filter(|a| current.attached.contains(a))
        .map(|a| Op::Detach(*a))
        .collect();
    // A remote entry at an address a local task now holds: the veth wins, as in `plan`.
    ops.extend(
        came_addrs
            .iter()
            .filter(|a| current.fdb.contains_key(a) || current.neighbours.contains(a))
            .map(|a| Op::RemoveRemote(*a)),
    );
    ops.extend(
        came.iter()
            .filter(|a| !current.attached.contains(&a.addr.addr()) || gone.contains(&a.addr.addr()))
            .cloned()
            .map(Op::Attach),
    );
    // The table names the address of a task that left on another node: reach it there.
    ops.extend(
        gone.iter()
            .filter(|a| !came_addrs.contains(a))
            .filter_map(|a| shadowed.0.get(a).map(|v| (a, v)))
            .map(|(addr, vtep)| {
                Op::AddRemote(Remote {
                    addr: *addr,
                    vtep: *vtep,
                })
            }),
    );
    ops
}

/// Remote endpoints the table names at an address a local task holds: not programmed (the
/// local veth wins) but remembered, so that [`plan_locals`] adds the entry once the local
/// task goes without reading the whole table again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shadowed(BTreeMap<Ipv4Addr, Ipv4Addr>);

impl Shadowed {
    /// The remotes of `desired` hidden by its local attachments (the last entry wins).
    pub fn of(desired: &Desired) -> Shadowed {
        let local: BTreeSet<Ipv4Addr> = desired.attachments.iter().map(|a| a.addr.addr()).collect();
        Shadowed(
            desired
                .remotes
                .iter()
                .filter(|r| local.contains(&r.addr))
                .map(|r| (r.addr, r.vtep))
                .collect(),
        )
    }

    /// After [`plan_locals`]' operations, `before` being the state they were planned from.
    pub fn locals_changed(
        &mut self,
        before: &Current,
        gone: &BTreeSet<Ipv4Addr>,
        came: &[Attachment],
    ) {
        for a in gone {
            self.0.remove(a);
        }
        for a in came {
            let addr = a.addr.addr();
            if let Some(vtep) = before.fdb.get(&addr) {
                self.0.insert(addr, *vtep);
            }
        }
    }

    /// After [`plan_remotes`]' operations for `changes`, carried out on `current`.
    pub fn remotes_changed(
        &mut self,
        current: &Current,
        changes: &BTreeMap<Ipv4Addr, Option<Ipv4Addr>>,
    ) {
        for (addr, vtep) in changes {
            match vtep {
                Some(v) if current.attached.contains(addr) => {
                    self.0.insert(*addr, *v);
                }
                _ => {
                    self.0.remove(addr);
                }
            }
        }
    }
}

impl Current {
    /// What the kernel holds once `ops` were carried out.
    pub fn record(&mut self, ops: &[Op]) {
        for op in ops {
            match op {
                Op::Detach(addr) => {
                    self.attached.remove(addr);
                }
                Op::RemoveRemote(addr) => {
                    self.fdb.remove(addr);
                    self.neighbours.remove(addr);
                }
                Op::Attach(a) => {
                    self.attached.insert(a.addr.addr());
                }
                Op::AddRemote(r) => {
                    self.fdb.insert(r.addr, r.vtep);
                    self.neighbours.insert(r.addr);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("test address")
    }

    fn att(addr: &str, sandbox: &str, ifname: &str) -> Attachment {
        Attachment {
            addr: addr.parse().expect("test prefix"),
            sandbox: sandbox.to_string(),
            ifname: ifname.to_string(),
        }
    }

    fn rem(addr: &str, vtep: &str) -> Remote {
        Remote {
            addr: ip(addr),
            vtep: ip(vtep),
        }
    }

    /// Current state in a compact form: `attached` addresses, `(addr, vtep)` FDB entries,
    /// `neighbours` addresses.
    fn current(attached: &[&str], fdb: &[(&str, &str)], neighbours: &[&str]) -> Current {
        Current {
            attached: attached.iter().map(|a| ip(a)).collect(),
            fdb: fdb.iter().map(|(a, v)| (ip(a), ip(v))).collect(),
            neighbours: neighbours.iter().map(|a| ip(a)).collect(),
        }
    }

    fn check(current: &Current, desired: &Desired, expected: Expect) {
        let rendered: String = plan(current, desired)
            .iter()
            .map(|op| format!("{op}\n"))
            .collect();
        expected.assert_eq(&rendered);
    }

    #[test]
    fn empty_to_empty_is_nothing() {
        check(&Current::default(), &Desired::default(), expect![""]);
    }

    #[test]
    fn fresh_network_attaches_and_adds_in_address_order() {
        let desired = Desired {
            attachments: vec![
                att("10.0.9.5/24", "shoal-task-bbbbbbbbbbbb", "eth1"),
                att("10.0.9.2/24", "shoal-task-aaaaaaaaaaaa", "eth0"),
            ],
            remotes: vec![
                rem("10.0.9.7", "172.30.41.3"),
                rem("10.0.9.3", "172.30.41.2"),
            ],
        };
        check(
            &Current::default(),
            &desired,
            expect![[r#"
                attach 10.0.9.2/24 as eth0 in shoal-task-aaaaaaaaaaaa
                attach 10.0.9.5/24 as eth1 in shoal-task-bbbbbbbbbbbb
                add-remote 10.0.9.3 via 172.30.41.2
                add-remote 10.0.9.7 via 172.30.41.3
            "#]],
        );
    }

    #[test]
    fn converged_state_needs_nothing() {
        let desired = Desired {
            attachments: vec![att("10.0.9.2/24", "shoal-task-aaaaaaaaaaaa", "eth0")],
            remotes: vec![rem("10.0.9.3", "172.30.41.2")],
        };
        let now = current(&["10.0.9.2"], &[("10.0.9.3", "172.30.41.2")], &["10.0.9.3"]);
        check(&now, &desired, expect![""]);
    }

    #[test]
    fn removals_come_before_additions() {
        let desired = Desired {
            attachments: vec![att("10.0.9.9/24", "shoal-task-cccccccccccc", "eth0")],
            remotes: vec![rem("10.0.9.4", "172.30.41.2")],
        };
        let now = current(&["10.0.9.2"], &[("10.0.9.3", "172.30.41.2")], &["10.0.9.3"]);
        check(
            &now,
            &desired,
            expect![[r#"
                detach 10.0.9.2
                remove-remote 10.0.9.3
                attach 10.0.9.9/24 as eth0 in shoal-task-cccccccccccc
                add-remote 10.0.9.4 via 172.30.41.2
            "#]],
        );
    }

    #[test]
    fn a_moved_remote_is_repointed_not_removed() {
        let desired = Desired {
            remotes: vec![rem("10.0.9.3", "172.30.41.3")],
            ..Desired::default()
        };
        let now = current(&[], &[("10.0.9.3", "172.30.41.2")], &["10.0.9.3"]);
        check(
            &now,
            &desired,
            expect!["add-remote 10.0.9.3 via 172.30.41.3\n"],
        );
    }

    #[test]
    fn half_entries_are_repaired_or_removed() {
        // 10.0.9.3: FDB without neighbour; 10.0.9.4: neighbour without FDB; both wanted.
        // 10.0.9.5 / 10.0.9.6: the same halves, not wanted.
        let desired = Desired {
            remotes: vec![
                rem("10.0.9.3", "172.30.41.2"),
                rem("10.0.9.4", "172.30.41.2"),
            ],
            ..Desired::default()
        };
        let now = current(
            &[],
            &[("10.0.9.3", "172.30.41.2"), ("10.0.9.5", "172.30.41.2")],
            &["10.0.9.4", "10.0.9.6"],
        );
        check(
            &now,
            &desired,
            expect![[r#"
                remove-remote 10.0.9.5
                remove-remote 10.0.9.6
                add-remote 10.0.9.3 via 172.30.41.2
                add-remote 10.0.9.4 via 172.30.41.2
            "#]],
        );
    }

    #[test]
    fn a_task_that_moves_here_becomes_local() {
        // The endpoint table still says 10.0.9.3 is remote, but it now runs on this node.
        let desired = Desired {
            attachments: vec![att("10.0.9.3/24", "shoal-task-dddddddddddd", "eth0")],
            remotes: vec![rem("10.0.9.3", "172.30.41.2")],
        };
        let now = current(&[], &[("10.0.9.3", "172.30.41.2")], &["10.0.9.3"]);
        check(
            &now,
            &desired,
            expect![[r#"
                remove-remote 10.0.9.3
                attach 10.0.9.3/24 as eth0 in shoal-task-dddddddddddd
            "#]],
        );
    }

    #[test]
    fn a_task_that_moves_away_becomes_remote() {
        let desired = Desired {
            remotes: vec![rem("10.0.9.2", "172.30.41.2")],
            ..Desired::default()
        };
        let now = current(&["10.0.9.2"], &[], &[]);
        check(
            &now,
            &desired,
            expect![[r#"
                detach 10.0.9.2
                add-remote 10.0.9.2 via 172.30.41.2
            "#]],
        );
    }

    #[test]
    fn duplicates_in_desired_last_wins_and_existing_attachments_stay() {
        let desired = Desired {
            attachments: vec![
                att("10.0.9.2/24", "shoal-task-aaaaaaaaaaaa", "eth0"),
                att("10.0.9.2/24", "shoal-task-eeeeeeeeeeee", "eth3"),
            ],
            remotes: vec![
                rem("10.0.9.3", "172.30.41.2"),
                rem("10.0.9.3", "172.30.41.9"),
            ],
        };
        check(
            &Current::default(),
            &desired,
            expect![[r#"
                attach 10.0.9.2/24 as eth3 in shoal-task-eeeeeeeeeeee
                add-remote 10.0.9.3 via 172.30.41.9
            "#]],
        );
        let now = current(&["10.0.9.2"], &[("10.0.9.3", "172.30.41.9")], &["10.0.9.3"]);
        check(&now, &desired, expect![""]);
    }

    /// A change of remote endpoints planned from the change alone gives what the full plan
    /// gives, and `record` then holds what the kernel holds, over many random changes.
    #[test]
    fn remote_changes_plan_as_the_whole_does() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut below = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let addr = |i: u64| Ipv4Addr::new(10, 0, 0, i as u8 + 2);
        let vtep = |i: u64| Ipv4Addr::new(172, 29, 1, i as u8 + 1);
        let attachments: Vec<Attachment> = (0..4)
            .map(|i| att(&format!("{}/24", addr(i)), &format!("sb{i}"), "eth0"))
            .collect();
        let mut remotes: BTreeMap<Ipv4Addr, Ipv4Addr> = BTreeMap::new();
        let mut current = Current::default();
        for round in 0..500 {
            let mut changes: BTreeMap<Ipv4Addr, Option<Ipv4Addr>> = BTreeMap::new();
            for _ in 0..=below(3) {
                // Addresses 0..4 are also local: the table may be late about them.
                let a = addr(below(12));
                let v = (below(3) > 0).then(|| vtep(below(3)));
                match v {
                    Some(v) => remotes.insert(a, v),
                    None => remotes.remove(&a),
                };
                changes.insert(a, v);
            }
            let desired = Desired {
                attachments: attachments.clone(),
                remotes: remotes
                    .iter()
                    .map(|(a, v)| Remote { addr: *a, vtep: *v })
                    .collect(),
            };
            let full = plan(&current, &desired);
            if round == 0 {
                current.record(&full);
                continue;
            }
            assert_eq!(plan_remotes(&current, &changes), full, "round {round}");
            current.record(&full);
            assert!(
                plan(&current, &desired).is_empty(),
                "round {round}: recorded"
            );
        }
    }

    /// Local attachments that come and go, planned alone and interleaved with remote
    /// changes, leave the kernel as the full plan would, over many random rounds.
    #[test]
    fn local_changes_plan_as_the_whole_does() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut below = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let addr = |i: u64| Ipv4Addr::new(10, 0, 0, i as u8 + 2);
        let vtep = |i: u64| Ipv4Addr::new(172, 29, 1, i as u8 + 1);
        let mut locals: BTreeMap<Ipv4Addr, Attachment> = BTreeMap::new();
        let mut remotes: BTreeMap<Ipv4Addr, Ipv4Addr> = BTreeMap::new();
        let mut current = Current::default();
        let mut shadowed = Shadowed::default();
        for round in 0..2000 {
            let mut gone = BTreeSet::new();
            let mut came = Vec::new();
            for _ in 0..below(3) {
                let a = addr(below(10));
                if locals.remove(&a).is_some() {
                    // One that came this round goes again: neither came nor gone.
                    let before = came.len();
                    came.retain(|c: &Attachment| c.addr.addr() != a);
                    if came.len() == before {
                        gone.insert(a);
                    }
                } else if !gone.contains(&a) {
                    let at = att(&format!("{a}/24"), &format!("sb{round}"), "eth0");
                    locals.insert(a, at.clone());
                    came.push(at);
                }
            }
            let mut changes: BTreeMap<Ipv4Addr, Option<Ipv4Addr>> = BTreeMap::new();
            for _ in 0..below(3) {
                let a = addr(below(12));
                let v = (below(3) > 0).then(|| vtep(below(3)));
                match v {
                    Some(v) => remotes.insert(a, v),
                    None => remotes.remove(&a),
                };
                changes.insert(a, v);
            }
            let ops = plan_locals(&current, &shadowed, &gone, &came);
            shadowed.locals_changed(&current, &gone, &came);
            current.record(&ops);
            let ops = plan_remotes(&current, &changes);
            current.record(&ops);
            shadowed.remotes_changed(&current, &changes);
            let desired = Desired {
                attachments: locals.values().cloned().collect(),
                remotes: remotes
                    .iter()
                    .map(|(a, v)| Remote { addr: *a, vtep: *v })
                    .collect(),
            };
            assert_eq!(plan(&current, &desired), [], "round {round}");
            assert_eq!(shadowed, Shadowed::of(&desired), "round {round}");
        }
    }
}
