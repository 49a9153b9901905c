//! The answer to one query: a reply built from a sandbox's [`Scope`], or "forward it".
//!
//! Pure: no I/O, no clock. Randomness (the per-query shuffle of dnsrr addresses) comes in
//! as an argument so tests pin it with a seed.

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR, SOA, SRV};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use rand::Rng;
use rand::seq::SliceRandom;

use crate::node::Scope;
use crate::zone::{Lookup, key_of};

/// The UDP payload size we advertise in our own OPT record: what we accept, not what we send
/// (that follows the client's). 1232 is the DNS Flag Day 2020 value that avoids fragmentation.
pub const OUR_UDP_PAYLOAD: u16 = 1232;

/// How long a resolver may cache a negative answer about a cluster name (the SOA's TTL and
/// MINIMUM, RFC 2308 §5). Short: a name that does not exist now may be a task starting.
pub const NEGATIVE_TTL: u32 = 5;

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Send this reply (the transport layer still fits it into the client's UDP size).
    Reply(Message),
    /// Not a cluster name: send the request to the upstream resolvers.
    Forward,
    /// Send nothing: the message is itself a response. Answering responses would let two
    /// servers bounce a packet between them forever.
    Ignore,
}

/// Decides what to do with `request` for a sandbox that sees `scope`.
///
/// The rules (names are case-insensitive, with or without the trailing dot):
/// - a known name of the asked type (A, SRV, PTR, or ANY) answers its records with the
///   service's TTL; a known name asked for another type answers NOERROR with no records;
/// - `tasks.<unknown>`, `<unknown>.<network>` and `_<unknown port>._<tcp|udp>.<service>`
///   answer NXDOMAIN: those names are ours, upstream cannot know them;
/// - everything else is [`Outcome::Forward`]ed;
/// - more or less than one question is FORMERR, an opcode other than QUERY is NOTIMP, an
///   EDNS version above 0 is BADVERS;
/// - a negative answer about a cluster name (NXDOMAIN, or NOERROR without records) carries
///   an SOA in the authority section ([`negative_soa`]), so that resolvers may cache it.
pub fn answer(scope: Scope<'_>, request: &Message, rng: &mut impl Rng) -> Outcome {
    if request.message_type != MessageType::Query {
        return Outcome::Ignore;
    }
    if request.op_code != OpCode::Query {
        return Outcome::Reply(error_reply(request, ResponseCode::NotImp));
    }
    if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
        return Outcome::Reply(error_reply(request, ResponseCode::BADVERS));
    }
    let [query] = request.queries.as_slice() else {
        return Outcome::Reply(error_reply(request, ResponseCode::FormErr));
    };
    if !matches!(query.query_class(), DNSClass::IN | DNSClass::ANY) {
        return Outcome::Forward;
    }
    let Some(key) = key_of(query.name()) else {
        return Outcome::Forward;
    };
    let mut reply = reply_to(request);
    reply.metadata.authoritative = true;
    let owner = query.name().clone();
    let wants = |t: RecordType| query.query_type() == t || query.query_type() == RecordType::ANY;
    match scope.lookup(&key) {
        Lookup::NotOurs => return Outcome::Forward,
        Lookup::NxDomain => reply.metadata.response_code = ResponseCode::NXDomain,
        Lookup::Addrs(set) if wants(RecordType::A) => {
            let mut addrs = set.addrs.clone();
            if set.shuffle {
                addrs.shuffle(rng);
            }
            reply.answers = addrs
                .into_iter()
                .map(|addr| Record::from_rdata(owner.clone(), set.ttl, RData::A(A(addr))))
                .collect();
        }
        Lookup::Srv(set) if wants(RecordType::SRV) => {
            let mut order: Vec<usize> = (0..set.targets.len()).collect();
            if set.shuffle {
                order.shuffle(rng);
            }
            for i in order {
                let target = &set.targets[i];
                // Priority 0, weight 0: all targets equal (RFC 2782), the order is shuffled.
                let srv = SRV::new(0, 0, target.port, target.name.clone());
                reply
                    .answers
                    .push(Record::from_rdata(owner.clone(), set.ttl, RData::SRV(srv)));
                // The targets' addresses, so that clients need no second round trip.
                reply.additionals.push(Record::from_rdata(
                    target.name.clone(),
                    set.ttl,
                    RData::A(A(target.addr)),
                ));
            }
        }
        Lookup::Ptr(ptr) if wants(RecordType::PTR) => {
            let rdata = RData::PTR(PTR(ptr.name.clone()));
            reply
                .answers
                .push(Record::from_rdata(owner, ptr.ttl, rdata));
        }
        // A name we know, asked for a type it does not have: NODATA.
        Lookup::Addrs(_) | Lookup::Srv(_) | Lookup::Ptr(_) => {}
    }
    if reply.answers.is_empty() {
        reply.authorities.push(negative_soa(query.name()));
    }
    Outcome::Reply(reply)
}

/// The SOA that makes a negative answer about `name` cacheable (RFC 2308 §3), for
/// [`NEGATIVE_TTL`] seconds. Its owner stands for the zone the name is in: cluster names are
/// `<name>.<network>` or flat names, so the last label (the network, or the flat name's own
/// top label) is the apex; reverse names are in `in-addr.arpa.`. The server names itself as
/// the zone's primary; refresh, retry and expire mean nothing without zone transfers.
pub fn negative_soa(name: &Name) -> Record {
    let reverse = name.num_labels() > 2 && {
        let mut last = name.iter().rev();
        last.next().is_some_and(|l| l.eq_ignore_ascii_case(b"arpa"))
            && last
                .next()
                .is_some_and(|l| l.eq_ignore_ascii_case(b"in-addr"))
    };
    let mut apex = name.trim_to(if reverse { 2 } else { 1 }).to_lowercase();
    apex.set_fqdn(true);
    let rname = Name::from_labels([&b"hostmaster"[..]])
        .and_then(|n| n.append_domain(&apex))
        .unwrap_or_else(|_| apex.clone());
    let soa = SOA::new(apex.clone(), rname, 1, 3600, 600, 86400, NEGATIVE_TTL);
    Record::from_rdata(apex, NEGATIVE_TTL, RData::SOA(soa))
}

/// SERVFAIL for `request`: what a forwarded query gets when no upstream answers.
pub fn servfail(request: &Message) -> Message {
    error_reply(request, ResponseCode::ServFail)
}

/// An error reply. It echoes the question only when there is exactly one, so that a reply to
/// a hostile message with many questions stays small.
pub(crate) fn error_reply(request: &Message, code: ResponseCode) -> Message {
    let mut reply = reply_to(request);
    if request.queries.len() != 1 {
        reply.queries.clear();
    }
    reply.metadata.response_code = code;
    reply
}

/// A response header for `request`: same id and opcode, RD and CD copied, RA set (we
/// recurse by forwarding), the question echoed, and an OPT record if the request had one.
fn reply_to(request: &Message) -> Message {
    let mut reply = Message::response(request.id, request.op_code);
    reply.metadata.recursion_desired = request.recursion_desired;
    reply.metadata.checking_disabled = request.checking_disabled;
    reply.metadata.recursion_available = true;
    reply.queries = request.queries.to_vec();
    if let Some(their) = &request.edns {
        let mut ours = Edns::new();
        ours.set_max_payload(OUR_UDP_PAYLOAD);
        // RFC 3225: the DO bit is copied into the response.
        ours.set_dnssec_ok(their.flags().dnssec_ok);
        reply.edns = Some(ours);
    }
    reply
}

#[cfg(test)]
mod tests;
