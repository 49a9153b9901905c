//! The table as nft text: [`render_create`] for a fresh sandbox, [`render_update`] for a change.
//!
//! Both are what `nft -f -` takes as one transaction. The fast path sends the same commands as
//! a netlink batch ([`crate::netlink`]); this text is also what its errors quote.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::model::{LbConfig, Ports};
use crate::plan::{JumpKey, ORPHAN_TIMEOUT_MS, Op, Shard, StaleFlows, orphan_ops, plan};

/// The table's family and name. Nothing else in a sandbox is ever touched.
pub const TABLE: &str = "shoal";

/// The fixed part of the table. Chain and map names are part of the API of `nft list`: the
/// tests read them, and operators grep for them.
const SKELETON: &str = "\
table ip shoal {
	set vips {
		type ipv4_addr
	}

	map ports {
		type ipv4_addr . inet_proto . inet_service : verdict
	}

	map addrs {
		type ipv4_addr : verdict
	}

	map orphans {
		type ipv4_addr : ipv4_addr
		flags timeout
	}

	chain nat_output {
		type nat hook output priority -100; policy accept;
		ip daddr . meta l4proto . th dport vmap @ports
		ip daddr vmap @addrs
	}

	chain filter_output {
		type filter hook output priority 0; policy accept;
		ip daddr @vips goto refuse
	}

	chain refuse {
		meta l4proto tcp reject with tcp reset
		reject
	}

	chain orphan_replies {
		type filter hook prerouting priority mangle; policy accept;
		ct state new meta l4proto udp ip saddr set ip saddr map @orphans
	}
}
";

/// The whole table for `cfg`. It starts by deleting any `ip shoal` table already there (an
/// agent that restarts adopts its sandboxes this way), in the same transaction, so the
/// sandbox never sees a half-built table. `cfg` must be valid ([`LbConfig::validate`]).
pub fn render_create(cfg: &LbConfig) -> String {
    let mut out = String::from("add table ip shoal\ndelete table ip shoal\n");
    out.push_str(SKELETON);
    out.push_str(&render_ops(&plan(&LbConfig::default(), cfg)));
    out
}

/// One transaction that turns the table programmed for `old` into the one for `new`: only
/// what changed, never a flush of the table, never a listing. Empty if nothing changed.
pub fn render_update(old: &LbConfig, new: &LbConfig) -> String {
    render_ops(&plan(old, new))
}

/// The transaction that keeps the late UDP replies of `stale`'s backends (see
/// [`crate::plan::ORPHAN_TIMEOUT_MS`]). Empty if `stale` is.
pub fn render_orphans(stale: &[StaleFlows]) -> String {
    render_ops(&orphan_ops(stale))
}

/// `ops` as nft commands, one per line, grouped as [`group`] does.
fn render_ops(ops: &[Op]) -> String {
    let mut out = String::new();
    for cmd in group(ops) {
        out.push_str(&cmd.text());
        out.push('\n');
    }
    out
}

/// The sets element ops go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum SetRef {
    Vips,
    Ports,
    Addrs,
    Backends(Shard),
    Orphans,
}

impl SetRef {
    pub(crate) fn name(self) -> String {
        match self {
            SetRef::Vips => "vips".to_string(),
            SetRef::Ports => "ports".to_string(),
            SetRef::Addrs => "addrs".to_string(),
            SetRef::Backends(shard) => shard.name(),
            SetRef::Orphans => "orphans".to_string(),
        }
    }

    pub(crate) fn of_jump(key: &JumpKey) -> SetRef {
        match key.ports {
            Ports::One(..) => SetRef::Ports,
            Ports::All => SetRef::Addrs,
        }
    }
}

/// One command of a transaction: a single op, or element ops on one set grouped the way nft
/// takes them (`add element ip shoal ports { a, b }`), which is also one netlink message.
pub(crate) enum Cmd<'a> {
    Single(&'a Op),
    Elements {
        add: bool,
        set: SetRef,
        ops: Vec<&'a Op>,
    },
}

/// Which set an element op writes, and whether it adds.
fn element_target(op: &Op) -> Option<(bool, SetRef)> {
    match op {
        Op::DelJump(key) => Some((false, SetRef::of_jump(key))),
        Op::AddJump { key, .. } => Some((true, SetRef::of_jump(key))),
        Op::DelVip(_) => Some((false, SetRef::Vips)),
        Op::AddVip(_) => Some((true, SetRef::Vips)),
        Op::DelBackend { shard, .. } => Some((false, SetRef::Backends(*shard))),
        Op::AddBackend { shard, .. } => Some((true, SetRef::Backends(*shard))),
        Op::AddOrphan { .. } => Some((true, SetRef::Orphans)),
        _ => None,
    }
}

/// Groups each run of element ops of the same kind by set. The order between sets of one run
/// does not matter (a plan never deletes and adds the same element within one run), the order
/// of runs does.
pub(crate) fn group(ops: &[Op]) -> Vec<Cmd<'_>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < ops.len() {
        let Some(_) = element_target(&ops[i]) else {
            out.push(Cmd::Single(&ops[i]));
            i += 1;
            continue;
        };
        let kind = std::mem::discriminant(&ops[i]);
        let mut by_set: BTreeMap<(bool, SetRef), Vec<&Op>> = BTreeMap::new();
        while i < ops.len() && std::mem::discriminant(&ops[i]) == kind {
            if let Some(target) = element_target(&ops[i]) {
                by_set.entry(target).or_default().push(&ops[i]);
            }
            i += 1;
        }
        out.extend(
            by_set
                .into_iter()
                .map(|((add, set), ops)| Cmd::Elements { add, set, ops }),
        );
    }
    out
}

/// An element as nft writes it: the key, and for an add the data.
pub(crate) fn element_text(op: &Op) -> String {
    match op {
        Op::DelJump(key) => key.nft(),
        Op::AddJump { key, chain } => format!("{} : goto {chain}", key.nft()),
        Op::DelVip(vip) | Op::AddVip(vip) => vip.to_string(),
        Op::DelBackend { vip, slot, .. } => format!("{vip} . {slot}"),
        Op::AddBackend {
            vip, slot, addr, ..
        } => format!("{vip} . {slot} : {addr}"),
        Op::AddOrphan { backend, vip } => {
            format!("{backend} timeout {}s : {vip}", ORPHAN_TIMEOUT_MS / 1000)
        }
        _ => String::new(),
    }
}

/// The `typeof` of a backend map. `mod 2` is only there because nft wants a complete
/// expression; the key is a 32-bit slot number whatever the modulus.
pub(crate) const SHARD_TYPEOF: &str = "typeof ip daddr . numgen inc mod 2 : ip daddr";

/// The rule of a service chain.
pub(crate) fn rule_text(shard: Shard, modulus: u32) -> String {
    format!(
        "dnat to ip daddr . numgen inc mod {modulus} map @{}",
        shard.name()
    )
}

impl Cmd<'_> {
    /// The command as one line of nft text.
    pub(crate) fn text(&self) -> String {
        match self {
            Cmd::Single(op) => single_text(op),
            Cmd::Elements { add, set, ops } => {
                let mut line = format!(
                    "{} element ip {TABLE} {} {{ ",
                    if *add { "add" } else { "delete" },
                    set.name()
                );
                for (i, op) in ops.iter().enumerate() {
                    if i > 0 {
                        line.push_str(", ");
                    }
                    let _ = write!(line, "{}", element_text(op));
                }
                line.push_str(" }");
                line
            }
        }
    }
}

fn single_text(op: &Op) -> String {
    match op {
        Op::AddShard(shard) => format!("add map ip {TABLE} {} {{ {SHARD_TYPEOF}; }}", shard.name()),
        Op::DelShard(shard) => format!("delete map ip {TABLE} {}", shard.name()),
        Op::AddChain(chain) => format!("add chain ip {TABLE} {chain}"),
        Op::FlushChain(chain) => format!("flush chain ip {TABLE} {chain}"),
        Op::DelChain(chain) => format!("delete chain ip {TABLE} {chain}"),
        Op::AddRule {
            chain,
            shard,
            modulus,
        } => format!(
            "add rule ip {TABLE} {chain} {}",
            rule_text(*shard, *modulus)
        ),
        // Element ops are always grouped; render one alone the same way.
        other => Cmd::Elements {
            add: element_target(other).is_some_and(|(add, _)| add),
            set: element_target(other).map_or(SetRef::Vips, |(_, set)| set),
            ops: vec![other],
        }
        .text(),
    }
}
