//! The queries that make nearly all of a sandbox's traffic, answered on wire bytes: a
//! resolver's A or AAAA lookup of a cluster name that has addresses or does not exist.
//!
//! Why by hand: the general path (hickory-proto's `Message` parsed, [`answer()`](crate::answer())
//! and encoded) allocates about twenty times per query (the question, names, records, the
//! SOA's names, the encoder's compression table) for an answer that is a header, the
//! question copied, and 16 bytes per address. This path handles exactly: a standard query
//! (QR 0, opcode QUERY), one question of class IN and a common type, its name uncompressed and
//! made of printable labels, no other record but one EDNS(0) OPT without options, and a name
//! that either has addresses or is ours to deny (NXDOMAIN). Everything else gets `false` and
//! takes the general path, which stays the reference: the unit tests compare this path's bytes
//! with it, name compression included (this encoder follows hickory's rules: the first
//! earlier name whose labels match a suffix byte for byte).

use std::net::Ipv4Addr;

use rand::Rng;
use rand::seq::SliceRandom;

use crate::answer::{NEGATIVE_TTL, OUR_UDP_PAYLOAD};
use crate::message::{MAX_TCP_MESSAGE, MAX_UDP_PAYLOAD};
use crate::node::Scope;
use crate::zone::Lookup;

const HEADER_LEN: usize = 12;
const TYPE_A: u16 = 1;
const TYPE_SOA: u16 = 6;
const TYPE_OPT: u16 = 41;
const TYPE_ANY: u16 = 255;
const CLASS_IN: u16 = 1;
const RCODE_NXDOMAIN: u8 = 3;
/// The longest name on the wire, length bytes and root included (RFC 1035 §2.3.4).
const MAX_NAME: usize = 255;
/// Longer answers take the general path, unless even their smallest encoding overflows the
/// transport (then the truncated reply is all that is sent). The bound keeps this encoder
/// far from hickory's compression limits (64 remembered labels, 120 compressed names).
const MAX_ANSWERS: usize = 100;
/// Bytes of one A record whose owner is a pointer to the question.
const A_RECORD_LEN: usize = 16;
/// Bytes of our OPT record (root owner, no options).
const OPT_LEN: usize = 11;

/// Question types answered here: what resolvers ask of a cluster name. The rest (SRV, PTR,
/// odd types) is rare and goes the general way.
const TYPES: [u16; 10] = [TYPE_A, 2, 5, TYPE_SOA, 15, 16, 28, 33, 65, TYPE_ANY];

/// Which transport the reply goes out on: it decides how much may be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    /// The client's EDNS size, 512 without EDNS; a reply that does not fit is truncated.
    Udp,
    /// Up to 65,535 bytes.
    Tcp,
}

/// A thread's reusable memory for this path, so that answering allocates nothing.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    addrs: Vec<Ipv4Addr>,
}

/// A parsed query: borrowed from the packet.
struct Query<'p> {
    id: [u8; 2],
    /// RD and CD, where the reply has them.
    rd: u8,
    cd: u8,
    /// Name, type and class, as they came (the reply echoes them byte for byte).
    question: &'p [u8],
    /// The name's labels on the wire, without the root byte.
    labels: &'p [u8],
    qtype: u16,
    edns: Option<Edns>,
}

#[derive(Clone, Copy)]
struct Edns {
    payload: u16,
    dnssec_ok: bool,
}

/// Answers `packet` into `out` (cleared first) if it is a query this path handles; `false`
/// leaves `out` to the general path. `rng` shuffles dnsrr and `tasks.` addresses, drawing
/// exactly what [`answer()`](crate::answer()) draws for the same query.
pub(crate) fn reply(
    scope: Scope<'_>,
    packet: &[u8],
    transport: Transport,
    rng: &mut impl Rng,
    scratch: &mut Scratch,
    out: &mut Vec<u8>,
) -> bool {
    let mut key = [0u8; MAX_NAME];
    let Some((query, key_len)) = parse(packet, &mut key) else {
        return false;
    };
    // Printable ASCII only (checked in `parse`), so this never fails.
    let Ok(key) = std::str::from_utf8(&key[..key_len]) else {
        return false;
    };
    let wants_a = query.qtype == TYPE_A || query.qtype == TYPE_ANY;
    let (rcode, ttl) = match scope.lookup(key) {
        Lookup::NxDomain => (RCODE_NXDOMAIN, 0),
        Lookup::Addrs(set) => {
            scratch.addrs.clear();
            if wants_a {
                scratch.addrs.extend_from_slice(&set.addrs);
                if set.shuffle {
                    scratch.addrs.shuffle(rng);
                }
            }
            (0, set.ttl)
        }
        Lookup::Srv(_) | Lookup::Ptr(_) | Lookup::NotOurs => return false,
    };
    let addrs: &[Ipv4Addr] = if rcode == 0 { &scratch.addrs } else { &[] };
    let limit = match (transport, query.edns) {
        (Transport::Tcp, _) => MAX_TCP_MESSAGE,
        (Transport::Udp, None) => 512,
        (Transport::Udp, Some(edns)) => usize::from(edns.payload.max(512)).min(MAX_UDP_PAYLOAD),
    };
    let opt_len = if query.edns.is_some() { OPT_LEN } else { 0 };
    let head = HEADER_LEN + query.question.len() + opt_len;
    let smallest = head + addrs.len() * A_RECORD_LEN;
    // Every owner written out (hickory stops compressing after 120 names): past 65,535 bytes
    // hickory's encoder keeps what fits and sets TC itself, which is the general path's job.
    let largest = head + addrs.len() * (A_RECORD_LEN - 2 + query.labels.len() + 1);
    if transport == Transport::Udp && smallest > limit && largest <= usize::from(u16::MAX) {
        // Does not fit even with every owner compressed: only the truncated form goes.
        write_truncated(&query, rcode, out);
        return true;
    }
    if addrs.len() > MAX_ANSWERS {
        return false;
    }
    write_full(&query, rcode, ttl, addrs, out);
    if out.len() > limit {
        write_truncated(&query, rcode, out);
    }
    true
}

/// Reads a query this path handles, writing its lookup key (lowercase labels joined by dots,
/// as [`key_of`](crate::zone::key_of) makes it) into `key`; `None` for anything else.
fn parse<'p>(packet: &'p [u8], key: &mut [u8; MAX_NAME]) -> Option<(Query<'p>, usize)> {
    let header = packet.get(..HEADER_LEN)?;
    let counts = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
    // QR 0 and opcode QUERY; the other request flags do not show in a reply.
    if header[2] & 0xF8 != 0 || counts(4) != 1 || counts(6) != 0 || counts(8) != 0 {
        return None;
    }
    let additionals = counts(10);
    if additionals > 1 {
        return None;
    }
    let mut at = HEADER_LEN;
    let mut key_len = 0;
    loop {
        let len = usize::from(*packet.get(at)?);
        if len == 0 {
            break;
        }
        // A pointer, or a label over 63 bytes: the general path says what it is.
        if len > 63 {
            return None;
        }
        let label = packet.get(at + 1..at + 1 + len)?;
        if key_len > 0 {
            key[key_len] = b'.';
            key_len += 1;
        }
        for &b in label {
            // As `key_of`: a label with a dot or a byte that is not printable ASCII is
            // forwarded as it came.
            if b == b'.' || !b.is_ascii_graphic() {
                return None;
            }
        }
        at += 1 + len;
        // Length bytes and root included, as hickory counts.
        if at + 1 - HEADER_LEN > MAX_NAME {
            return None;
        }
        key[key_len..key_len + len].copy_from_slice(label);
        key[key_len..key_len + len].make_ascii_lowercase();
        key_len += len;
    }
    let labels = &packet[HEADER_LEN..at];
    let fixed = packet.get(at + 1..at + 5)?;
    let qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    let qclass = u16::from_be_bytes([fixed[2], fixed[3]]);
    if qclass != CLASS_IN || !TYPES.contains(&qtype) {
        return None;
    }
    let question = &packet[HEADER_LEN..at + 5];
    let rest = &packet[at + 5..];
    let edns = match (additionals, rest) {
        (0, []) => None,
        // Root owner, OPT, payload, extended rcode, version 0, flags, no options. Nothing
        // after it: anything else (options, later versions, trailing bytes) goes the
        // general way.
        (1, [0, t0, t1, p0, p1, _, 0, f0, _, 0, 0])
            if u16::from_be_bytes([*t0, *t1]) == TYPE_OPT =>
        {
            Some(Edns {
                payload: u16::from_be_bytes([*p0, *p1]),
                dnssec_ok: f0 & 0x80 != 0,
            })
        }
        _ => return None,
    };
    let query = Query {
        id: [header[0], header[1]],
        rd: header[2] & 0x01,
        cd: header[3] & 0x10,
        question,
        labels,
        qtype,
        edns,
    };
    Some((query, key_len))
}

/// Header and question: what every reply starts with.
fn write_head(query: &Query<'_>, rcode: u8, truncated: bool, counts: [u16; 4], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&query.id);
    // QR, AA, TC if truncated, RD copied; RA, CD copied, the rcode.
    out.push(0x80 | 0x04 | if truncated { 0x02 } else { 0 } | query.rd);
    out.push(0x80 | query.cd | rcode);
    for count in counts {
        out.extend_from_slice(&count.to_be_bytes());
    }
    out.extend_from_slice(query.question);
}

/// The OPT record of a reply to an EDNS query (see `answer::reply_to`).
fn write_opt(edns: Edns, out: &mut Vec<u8>) {
    out.push(0);
    out.extend_from_slice(&TYPE_OPT.to_be_bytes());
    out.extend_from_slice(&OUR_UDP_PAYLOAD.to_be_bytes());
    // Extended rcode 0 (ours fit in the header), version 0, DO copied (RFC 3225).
    out.extend_from_slice(&[0, 0, if edns.dnssec_ok { 0x80 } else { 0 }, 0]);
    out.extend_from_slice(&[0, 0]);
}

/// The reply without records (TC set): the client asks again over TCP.
fn write_truncated(query: &Query<'_>, rcode: u8, out: &mut Vec<u8>) {
    let additionals = u16::from(query.edns.is_some());
    write_head(query, rcode, true, [1, 0, 0, additionals], out);
    if let Some(edns) = query.edns {
        write_opt(edns, out);
    }
}

fn write_full(query: &Query<'_>, rcode: u8, ttl: u32, addrs: &[Ipv4Addr], out: &mut Vec<u8>) {
    let negative = addrs.is_empty();
    let counts = [
        1,
        addrs.len() as u16, // at most MAX_ANSWERS
        u16::from(negative),
        u16::from(query.edns.is_some()),
    ];
    write_head(query, rcode, false, counts, out);
    for addr in addrs {
        // The owner is the question's name: a pointer to it (offset 12).
        out.extend_from_slice(&[0xC0, HEADER_LEN as u8]);
        out.extend_from_slice(&TYPE_A.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&addr.octets());
    }
    if negative {
        write_soa(query.labels, out);
    }
    if let Some(edns) = query.edns {
        write_opt(edns, out);
    }
}

/// The negative answer's SOA, as [`negative_soa`](crate::answer::negative_soa) makes it:
/// owner and MNAME the apex (the last label, lowercase, or `in-addr.arpa`), RNAME
/// `hostmaster.<apex>`, compressed against the question and each other.
fn write_soa(question: &[u8], out: &mut Vec<u8>) {
    let mut apex = [0u8; 64];
    let apex = apex_of(question, &mut apex);
    let mut hostmaster = [0u8; 11 + 64];
    hostmaster[..11].copy_from_slice(b"\x0ahostmaster");
    hostmaster[11..11 + apex.len()].copy_from_slice(apex);
    let hostmaster = &hostmaster[..11 + apex.len()];

    let mut names = Compressor::new();
    names.remember(HEADER_LEN, question, question.len());
    names.write(apex, out);
    out.extend_from_slice(&TYPE_SOA.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out.extend_from_slice(&NEGATIVE_TTL.to_be_bytes());
    let rdlength_at = out.len();
    out.extend_from_slice(&[0, 0]);
    names.write(apex, out);
    names.write(hostmaster, out);
    // Serial 1, refresh, retry, expire (meaningless without transfers), minimum.
    for value in [1, 3600, 600, 86400, NEGATIVE_TTL] {
        out.extend_from_slice(&value.to_be_bytes());
    }
    let rdlength = (out.len() - rdlength_at - 2) as u16; // two names and 20 bytes
    out[rdlength_at..rdlength_at + 2].copy_from_slice(&rdlength.to_be_bytes());
}

/// The wire labels of the negative SOA's apex for a question's `labels`, into `buf`.
fn apex_of<'b>(labels: &[u8], buf: &'b mut [u8; 64]) -> &'b [u8] {
    // Start of every label; a name has at most 127.
    let mut starts = [0usize; 128];
    let mut count = 0;
    let mut at = 0;
    while at < labels.len() {
        starts[count] = at;
        count += 1;
        at += 1 + usize::from(labels[at]);
    }
    let label = |i: usize| &labels[starts[i] + 1..starts[i] + 1 + usize::from(labels[starts[i]])];
    let reverse = count > 2
        && label(count - 1).eq_ignore_ascii_case(b"arpa")
        && label(count - 2).eq_ignore_ascii_case(b"in-addr");
    if reverse {
        let apex = b"\x07in-addr\x04arpa";
        buf[..apex.len()].copy_from_slice(apex);
        return &buf[..apex.len()];
    }
    let last = &labels[starts[count.max(1) - 1]..];
    buf[..last.len()].copy_from_slice(last);
    buf[1..last.len()].make_ascii_lowercase();
    &buf[..last.len()]
}

/// Name compression as hickory-proto's encoder does it, for the few names of one negative
/// answer: every label written is remembered with the labels after it (the first 64, as
/// hickory keeps); a name is written label by label until the rest of it equals one
/// remembered (the first such, byte for byte), which becomes a pointer.
struct Compressor<'n> {
    /// (offset in the message, the labels from there to the end of that name).
    seen: [(usize, &'n [u8]); 64],
    count: usize,
}

impl<'n> Compressor<'n> {
    fn new() -> Compressor<'n> {
        Compressor {
            seen: [(0, &[]); 64],
            count: 0,
        }
    }

    /// Remembers the labels of `name` written at `offset`, those before `end` only (the
    /// rest was a pointer).
    fn remember(&mut self, offset: usize, name: &'n [u8], end: usize) {
        let mut at = 0;
        while at < end && self.count < self.seen.len() {
            self.seen[self.count] = (offset + at, &name[at..]);
            self.count += 1;
            at += 1 + usize::from(name[at]);
        }
    }

    fn write(&mut self, name: &'n [u8], out: &mut Vec<u8>) {
        let start = out.len();
        let mut at = 0;
        while at < name.len() {
            let rest = &name[at..];
            if let Some(&(offset, _)) = self.seen[..self.count].iter().find(|(_, s)| *s == rest) {
                out.extend_from_slice(&name[..at]);
                // Offsets stay far below 0x3FFF here: the message is a header, a question
                // and at most this record.
                out.extend_from_slice(&(0xC000 | offset as u16).to_be_bytes());
                self.remember(start, name, at);
                return;
            }
            at += 1 + usize::from(name[at]);
        }
        out.extend_from_slice(name);
        out.push(0);
        self.remember(start, name, name.len());
    }
}

#[cfg(test)]
mod tests;
