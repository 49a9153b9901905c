//! The answer to one query: a reply built from a sandbox's [`Scope`], or "forward it".
//!
//! Pure: no I/O, no clock. Randomness (the per-query shuffle of dnsrr addresses) comes in
//! as an argument so tests pin it with a seed.

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR, SRV};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use rand::Rng;
use rand::seq::SliceRandom;

use crate::node::Scope;
use crate::zone::{Lookup, key_of};

/// The UDP payload size we advertise in our own OPT record: what we accept, not what we send
/// (that follows the client's). 1232 is the DNS Flag Day 2020 value that avoids fragmentation.
pub const OUR_UDP_PAYLOAD: u16 = 1232;

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
///   EDNS version above 0 is BADVERS.
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
    Outcome::Reply(reply)
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
