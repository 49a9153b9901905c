//! The same transaction as [`crate::text`], encoded as an nfnetlink batch: the fast path.
//!
//! Why our own encoder: `nft` starts a process and fetches the table's chains and sets before
//! it applies anything: ~16 ms per update with one service, ~30-40 ms at 10,000 services here,
//! over the 10 ms budget of an update (ours: ~0.3 ms and ~3 ms at 10,000, see bench/vip).
//! The kernel applies a batch it receives as one transaction either way. The alternatives do
//! not fit: rustables is GPL-3 and has no numgen, libnftnl/libmnl are C libraries (and would
//! need `unsafe` FFI), and the `nftables` crate drives the nft binary, so it pays the same
//! cache fetch. The batch shapes here are few and fixed (elements of four kinds of maps, one
//! rule shape, chains, one map type), each mirrored from what nft 1.0.6 sends for the text of
//! [`crate::text`] (`nft --debug=mnl`), so that `nft list` prints what we wrote exactly as if
//! nft had written it; a test compares the two listings.
//!
//! This module is pure: bytes in, bytes out. The socket is in `apply.rs`.

use std::net::Ipv4Addr;

use crate::model::Ports;
use crate::plan::{JumpKey, ORPHAN_TIMEOUT_MS, Op, Shard};
use crate::text::{Cmd, SetRef, TABLE, group};

// linux/netlink.h
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;
const NLMSG_ERROR: u16 = 2;
const NLMSG_HDRLEN: usize = 16;

// linux/netfilter/nfnetlink.h and nf_tables.h
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;
const NFPROTO_IPV4: u8 = 2;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_DELSET: u16 = 11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;

const NFTA_LIST_ELEM: u16 = 1;
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_DATA_TYPE: u16 = 6;
const NFTA_SET_DATA_LEN: u16 = 7;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_USERDATA: u16 = 13;
const NFT_SET_MAP: u32 = 0x8;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFT_GOTO: i32 = -4;

// Registers as nft numbers them: NFT_REG_1 is the 16-byte register that holds the
// concatenated key (VIP in its first 4 bytes); NFT_REG32_01 is its second 4-byte part.
const NFT_REG_1: u32 = 1;
const NFT_REG32_01: u32 = 9;

/// nft's datatype ids (ipv4_addr 7, integer 4) concatenated 6 bits each as nft does for
/// `typeof ip daddr . numgen inc mod 2`.
const KEY_TYPE_ADDR_SLOT: u32 = 7 << 6 | 4;
const DATA_TYPE_IPV4: u32 = 7;

/// The set user data nft 1.0.6 writes for [`crate::text::SHARD_TYPEOF`] (byte orders and the
/// typeof expressions), copied from `nft --debug=mnl`. Without it `nft list` would print the
/// keys as raw integers.
const UDATA_ADDR_SLOT: &[u8] = &[
    0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x01, 0x04, 0x02, 0x00, 0x00, 0x00, 0x03, 0x3a, 0x00, 0x04,
    0x0d, 0x00, 0x00, 0x00, 0x01, 0x32, 0x00, 0x14, 0x00, 0x04, 0x07, 0x00, 0x00, 0x00, 0x01, 0x0c,
    0x00, 0x04, 0x0c, 0x00, 0x00, 0x00, 0x01, 0x04, 0x0c, 0x00, 0x00, 0x00, 0x01, 0x1a, 0x00, 0x04,
    0x17, 0x00, 0x00, 0x00, 0x01, 0x12, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x01, 0x04, 0x02, 0x00,
    0x00, 0x00, 0x02, 0x04, 0x00, 0x00, 0x00, 0x00, 0x04, 0x14, 0x00, 0x04, 0x07, 0x00, 0x00, 0x00,
    0x01, 0x0c, 0x00, 0x04, 0x0c, 0x00, 0x00, 0x00, 0x01, 0x04, 0x0c, 0x00, 0x00, 0x00, 0x06, 0x04,
    0x00, 0x00, 0x00, 0x00,
];

/// Elements per NEWSETELEM/DELSETELEM message: ~60 bytes each stays far below the 64 KiB a
/// nested attribute can hold.
const ELEMENTS_PER_MESSAGE: usize = 512;

/// An encoded transaction and, for each of its messages, the command it carries, so that an
/// error from the kernel (which names a sequence number) can say which command failed.
#[derive(Debug)]
pub struct Batch {
    /// The bytes to send, in one `send`.
    pub bytes: Vec<u8>,
    /// (sequence number, nft text of the command), batch begin and end included.
    pub messages: Vec<(u32, String)>,
}

impl Batch {
    /// The command that the message with sequence number `seq` carried.
    pub fn describe(&self, seq: u32) -> &str {
        self.messages
            .iter()
            .find(|(s, _)| *s == seq)
            .map_or("(unknown message)", |(_, text)| text.as_str())
    }

    /// The sequence number the kernel acknowledges last.
    pub fn last_seq(&self) -> u32 {
        self.messages.iter().rev().nth(1).map_or(0, |(s, _)| *s)
    }
}

/// A netlink message being built.
struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn begin(&mut self, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched by `end`
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
        self.buf.push(family); // struct nfgenmsg
        self.buf.push(0); // NFNETLINK_V0
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        start
    }

    fn end(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    fn attr(&mut self, ty: u16, data: &[u8]) {
        let len = (4 + data.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn str(&mut self, ty: u16, s: &str) {
        let mut data = s.as_bytes().to_vec();
        data.push(0);
        self.attr(ty, &data);
    }

    /// nftables carries its integers in network byte order.
    fn be32(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_be_bytes());
    }

    fn nest(&mut self, ty: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        start
    }

    fn nest_end(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn expr(&mut self, name: &str, attrs: &[(u16, u32)]) {
        let elem = self.nest(NFTA_LIST_ELEM);
        self.str(NFTA_EXPR_NAME, name);
        let data = self.nest(NFTA_EXPR_DATA);
        for &(ty, v) in attrs {
            self.be32(ty, v);
        }
        self.nest_end(data);
        self.nest_end(elem);
    }
}

/// Encodes `ops` as one batch whose messages are numbered from `seq`. Only the last message
/// asks for an acknowledgement: the kernel reports every failing message anyway, and a batch
/// of 30,000 elements with one ack each would overflow the socket's receive buffer.
pub fn encode(ops: &[Op], seq: u32) -> Batch {
    let cmds = group(ops);
    let mut w = Writer { buf: Vec::new() };
    let mut messages = Vec::with_capacity(cmds.len() + 2);
    let mut seq = seq;
    let begin = w.begin(
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        seq,
        0,
        NFNL_SUBSYS_NFTABLES,
    );
    w.end(begin);
    messages.push((seq, "(transaction)".to_string()));
    // A nested attribute's length is 16 bits: element lists go out in chunks, as nft does.
    let mut chunks = Vec::with_capacity(cmds.len());
    for cmd in &cmds {
        match cmd {
            Cmd::Elements { add, set, ops } if ops.len() > ELEMENTS_PER_MESSAGE => {
                chunks.extend(ops.chunks(ELEMENTS_PER_MESSAGE).map(|part| Cmd::Elements {
                    add: *add,
                    set: *set,
                    ops: part.to_vec(),
                }));
            }
            Cmd::Elements { add, set, ops } => chunks.push(Cmd::Elements {
                add: *add,
                set: *set,
                ops: ops.clone(),
            }),
            Cmd::Single(op) => chunks.push(Cmd::Single(op)),
        }
    }
    for (i, cmd) in chunks.iter().enumerate() {
        seq = seq.wrapping_add(1);
        let ack = if i + 1 == chunks.len() { NLM_F_ACK } else { 0 };
        encode_cmd(&mut w, cmd, seq, ack);
        messages.push((seq, cmd.text()));
    }
    seq = seq.wrapping_add(1);
    let end = w.begin(
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        seq,
        0,
        NFNL_SUBSYS_NFTABLES,
    );
    w.end(end);
    messages.push((seq, "(end of transaction)".to_string()));
    Batch {
        bytes: w.buf,
        messages,
    }
}

/// `delete table ip shoal`, as a batch.
pub fn encode_delete_table(seq: u32) -> Batch {
    let mut w = Writer { buf: Vec::new() };
    let begin = w.begin(
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        seq,
        0,
        NFNL_SUBSYS_NFTABLES,
    );
    w.end(begin);
    let m = msg(&mut w, NFT_MSG_DELTABLE, NLM_F_ACK, seq + 1);
    w.str(NFTA_TABLE_NAME, TABLE);
    w.end(m);
    let end = w.begin(
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        seq + 2,
        0,
        NFNL_SUBSYS_NFTABLES,
    );
    w.end(end);
    Batch {
        bytes: w.buf,
        messages: vec![
            (seq, "(transaction)".to_string()),
            (seq + 1, format!("delete table ip {TABLE}")),
            (seq + 2, "(end of transaction)".to_string()),
        ],
    }
}

fn msg(w: &mut Writer, ty: u16, flags: u16, seq: u32) -> usize {
    w.begin(
        NFNL_SUBSYS_NFTABLES << 8 | ty,
        NLM_F_REQUEST | flags,
        seq,
        NFPROTO_IPV4,
        0,
    )
}

fn encode_cmd(w: &mut Writer, cmd: &Cmd<'_>, seq: u32, ack: u16) {
    match cmd {
        Cmd::Single(op) => encode_single(w, op, seq, ack),
        Cmd::Elements { add, set, ops } => {
            let (ty, flags) = if *add {
                (NFT_MSG_NEWSETELEM, NLM_F_CREATE)
            } else {
                (NFT_MSG_DELSETELEM, 0)
            };
            let m = msg(w, ty, flags | ack, seq);
            w.str(NFTA_SET_ELEM_LIST_TABLE, TABLE);
            w.str(NFTA_SET_ELEM_LIST_SET, &set.name());
            let list = w.nest(NFTA_SET_ELEM_LIST_ELEMENTS);
            for op in ops {
                encode_element(w, *set, op);
            }
            w.nest_end(list);
            w.end(m);
        }
    }
}

fn encode_single(w: &mut Writer, op: &Op, seq: u32, ack: u16) {
    match op {
        Op::AddShard(shard) => {
            let m = msg(w, NFT_MSG_NEWSET, NLM_F_CREATE | ack, seq);
            w.str(NFTA_SET_TABLE, TABLE);
            w.str(NFTA_SET_NAME, &shard.name());
            w.be32(NFTA_SET_FLAGS, NFT_SET_MAP);
            w.be32(NFTA_SET_KEY_TYPE, KEY_TYPE_ADDR_SLOT);
            w.be32(NFTA_SET_KEY_LEN, 8);
            w.be32(NFTA_SET_DATA_TYPE, DATA_TYPE_IPV4);
            w.be32(NFTA_SET_DATA_LEN, 4);
            // Unique within the batch; lets the kernel tell new sets apart before they have
            // handles. The sequence number is unique already.
            w.be32(NFTA_SET_ID, seq);
            w.attr(NFTA_SET_USERDATA, UDATA_ADDR_SLOT);
            w.end(m);
        }
        Op::DelShard(shard) => {
            let m = msg(w, NFT_MSG_DELSET, ack, seq);
            w.str(NFTA_SET_TABLE, TABLE);
            w.str(NFTA_SET_NAME, &shard.name());
            w.end(m);
        }
        Op::AddChain(chain) | Op::DelChain(chain) => {
            let (ty, flags) = match op {
                Op::AddChain(_) => (NFT_MSG_NEWCHAIN, NLM_F_CREATE),
                _ => (NFT_MSG_DELCHAIN, 0),
            };
            let m = msg(w, ty, flags | ack, seq);
            w.str(NFTA_CHAIN_TABLE, TABLE);
            w.str(NFTA_CHAIN_NAME, chain);
            w.end(m);
        }
        Op::FlushChain(chain) => {
            // DELRULE without a handle deletes every rule of the chain: `flush chain`.
            let m = msg(w, NFT_MSG_DELRULE, ack, seq);
            w.str(NFTA_RULE_TABLE, TABLE);
            w.str(NFTA_RULE_CHAIN, chain);
            w.end(m);
        }
        Op::AddRule {
            chain,
            shard,
            modulus,
        } => encode_rule(w, chain, *shard, *modulus, seq, ack),
        // Element ops only reach the encoder grouped; `text::group` never leaves one single.
        _ => {}
    }
}

/// `dnat to ip daddr . numgen inc mod N map @be_07`, expression by expression as nft 1.0.6
/// compiles it (`nft --debug=netlink`).
fn encode_rule(w: &mut Writer, chain: &str, shard: Shard, modulus: u32, seq: u32, ack: u16) {
    const PAYLOAD_DREG: u16 = 1;
    const PAYLOAD_BASE: u16 = 2;
    const PAYLOAD_OFFSET: u16 = 3;
    const PAYLOAD_LEN: u16 = 4;
    const BASE_NETWORK: u32 = 1;
    const NG_DREG: u16 = 1;
    const NG_MODULUS: u16 = 2;
    const NG_TYPE: u16 = 3;
    const NG_OFFSET: u16 = 4;
    const NG_INCREMENTAL: u32 = 0;
    const LOOKUP_SET: u16 = 1;
    const LOOKUP_SREG: u16 = 2;
    const LOOKUP_DREG: u16 = 3;
    const NAT_TYPE: u16 = 1;
    const NAT_FAMILY: u16 = 2;
    const NAT_REG_ADDR_MIN: u16 = 3;
    const NAT_REG_ADDR_MAX: u16 = 4;
    const NAT_FLAGS: u16 = 7;
    const NFT_NAT_DNAT: u32 = 1;
    const NF_NAT_RANGE_MAP_IPS: u32 = 1;

    let m = msg(w, NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND | ack, seq);
    w.str(NFTA_RULE_TABLE, TABLE);
    w.str(NFTA_RULE_CHAIN, chain);
    let exprs = w.nest(NFTA_RULE_EXPRESSIONS);
    // ip daddr: 4 bytes at offset 16 of the IPv4 header.
    w.expr(
        "payload",
        &[
            (PAYLOAD_DREG, NFT_REG_1),
            (PAYLOAD_BASE, BASE_NETWORK),
            (PAYLOAD_OFFSET, 16),
            (PAYLOAD_LEN, 4),
        ],
    );
    let slot_reg = NFT_REG32_01;
    w.expr(
        "numgen",
        &[
            (NG_DREG, slot_reg),
            (NG_MODULUS, modulus),
            (NG_TYPE, NG_INCREMENTAL),
            (NG_OFFSET, 0),
        ],
    );
    let elem = w.nest(NFTA_LIST_ELEM);
    w.str(NFTA_EXPR_NAME, "lookup");
    let data = w.nest(NFTA_EXPR_DATA);
    w.str(LOOKUP_SET, &shard.name());
    w.be32(LOOKUP_SREG, NFT_REG_1);
    w.be32(LOOKUP_DREG, NFT_REG_1);
    w.nest_end(data);
    w.nest_end(elem);
    w.expr(
        "nat",
        &[
            (NAT_TYPE, NFT_NAT_DNAT),
            (NAT_FAMILY, u32::from(NFPROTO_IPV4)),
            (NAT_REG_ADDR_MIN, NFT_REG_1),
            (NAT_REG_ADDR_MAX, NFT_REG_1),
            (NAT_FLAGS, NF_NAT_RANGE_MAP_IPS),
        ],
    );
    w.nest_end(exprs);
    w.end(m);
}

/// A key as the kernel stores it: each field of a concatenation padded to 4 bytes, addresses
/// and ports in network order, the numgen slot in host order (numgen writes a host integer).
fn jump_key_bytes(key: &JumpKey) -> Vec<u8> {
    let mut out = key.vip.octets().to_vec();
    if let Ports::One(proto, port) = key.ports {
        out.extend_from_slice(&[proto.number(), 0, 0, 0]);
        out.extend_from_slice(&port.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
    }
    out
}

fn backend_key_bytes(vip: Ipv4Addr, slot: u32) -> Vec<u8> {
    let mut out = vip.octets().to_vec();
    out.extend_from_slice(&slot.to_ne_bytes());
    out
}

fn encode_element(w: &mut Writer, set: SetRef, op: &Op) {
    let (key, data): (Vec<u8>, Option<Data<'_>>) = match op {
        Op::DelVip(vip) | Op::AddVip(vip) => (vip.octets().to_vec(), None),
        Op::DelJump(key) => (jump_key_bytes(key), None),
        Op::AddJump { key, chain } => (jump_key_bytes(key), Some(Data::Goto(chain))),
        Op::DelBackend { vip, slot, .. } => (backend_key_bytes(*vip, *slot), None),
        Op::AddBackend {
            vip, slot, addr, ..
        } => (backend_key_bytes(*vip, *slot), Some(Data::Addr(*addr))),
        Op::AddOrphan { backend, vip } => (backend.octets().to_vec(), Some(Data::Addr(*vip))),
        _ => return,
    };
    debug_assert!(matches!(
        (set, op),
        (SetRef::Vips, Op::AddVip(_) | Op::DelVip(_))
            | (
                SetRef::Ports | SetRef::Addrs,
                Op::AddJump { .. } | Op::DelJump(_)
            )
            | (
                SetRef::Backends(_),
                Op::AddBackend { .. } | Op::DelBackend { .. }
            )
            | (SetRef::Orphans, Op::AddOrphan { .. })
    ));
    let elem = w.nest(NFTA_LIST_ELEM);
    let k = w.nest(NFTA_SET_ELEM_KEY);
    w.attr(NFTA_DATA_VALUE, &key);
    w.nest_end(k);
    match data {
        None => {}
        Some(Data::Addr(addr)) => {
            let d = w.nest(NFTA_SET_ELEM_DATA);
            w.attr(NFTA_DATA_VALUE, &addr.octets());
            w.nest_end(d);
        }
        Some(Data::Goto(chain)) => {
            let d = w.nest(NFTA_SET_ELEM_DATA);
            let v = w.nest(NFTA_DATA_VERDICT);
            w.attr(NFTA_VERDICT_CODE, &NFT_GOTO.to_be_bytes());
            w.str(NFTA_VERDICT_CHAIN, chain);
            w.nest_end(v);
            w.nest_end(d);
        }
    }
    if let Op::AddOrphan { .. } = op {
        // Milliseconds, network order; the map has `flags timeout`.
        w.attr(NFTA_SET_ELEM_TIMEOUT, &ORPHAN_TIMEOUT_MS.to_be_bytes());
    }
    w.nest_end(elem);
}

enum Data<'a> {
    Addr(Ipv4Addr),
    Goto(&'a str),
}

/// One answer of the kernel to a batch: the sequence number of the message it is about and
/// its errno (0 for an acknowledgement).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The message's sequence number.
    pub seq: u32,
    /// 0, or a positive errno.
    pub errno: i32,
}

/// Parses the `NLMSG_ERROR` messages of one datagram; other message types are skipped.
pub fn parse_acks(mut buf: &[u8]) -> Vec<Ack> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let ty = u16::from_ne_bytes([buf[4], buf[5]]);
        if len < NLMSG_HDRLEN || len > buf.len() {
            break;
        }
        // struct nlmsgerr: int error, then the header of the message it answers.
        let body = &buf[NLMSG_HDRLEN..len];
        if ty == NLMSG_ERROR && body.len() >= 4 + NLMSG_HDRLEN {
            let error = i32::from_ne_bytes([body[0], body[1], body[2], body[3]]);
            let seq = u32::from_ne_bytes([body[12], body[13], body[14], body[15]]);
            out.push(Ack { seq, errno: -error });
        }
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
    }
    out
}
