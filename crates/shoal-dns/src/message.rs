//! Bytes ↔ messages at the edges of the server: parsing with a FORMERR fallback, encoding
//! within the size the transport allows. All wire work is hickory-proto's.

use hickory_proto::op::{Header, Message, MessageType, ResponseCode};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};

/// The largest UDP payload IPv4 can carry; a client advertising more gets this.
pub const MAX_UDP_PAYLOAD: usize = 65_507;

/// The largest DNS message over TCP (two-byte length prefix).
pub const MAX_TCP_MESSAGE: usize = u16::MAX as usize;

/// A received packet, sorted.
#[derive(Debug)]
pub enum Parsed {
    /// A well-formed message (still possibly a response or a strange opcode: that is
    /// [`answer`](crate::answer())'s call).
    Request(Message),
    /// Unparsable, but the header was readable and said "query": send back this FORMERR.
    Reply(Vec<u8>),
    /// Not worth a reply (too short for a header, or a response).
    Drop,
}

/// Parses a packet from a client.
pub fn parse_request(bytes: &[u8]) -> Parsed {
    match Message::from_vec(bytes) {
        Ok(message) => Parsed::Request(message),
        Err(_) => {
            let Ok(header) = Header::read(&mut BinDecoder::new(bytes)) else {
                return Parsed::Drop;
            };
            if header.metadata.message_type != MessageType::Query {
                return Parsed::Drop;
            }
            let mut reply = Message::error_msg(
                header.metadata.id,
                header.metadata.op_code,
                ResponseCode::FormErr,
            );
            reply.metadata.recursion_desired = header.metadata.recursion_desired;
            reply.metadata.recursion_available = true;
            match reply.to_vec() {
                Ok(bytes) => Parsed::Reply(bytes),
                Err(_) => Parsed::Drop,
            }
        }
    }
}

/// The most a UDP reply to `request` may take: the client's EDNS size, 512 without EDNS.
pub fn udp_limit(request: &Message) -> usize {
    usize::from(request.max_payload()).min(MAX_UDP_PAYLOAD)
}

/// Encodes `reply` in at most `limit` bytes.
///
/// A reply that does not fit goes out with the TC bit, its question and OPT record and no
/// records, so the client asks again over TCP. Over TCP (`limit` = [`MAX_TCP_MESSAGE`]) the
/// encoder keeps the records that fit and sets TC itself. `None` only if even the
/// header-and-question form cannot be encoded.
pub fn encode_reply(reply: &Message, limit: usize) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(512);
    encode_reply_into(reply, limit, &mut out).then_some(out)
}

/// [`encode_reply`] into `out` (cleared first), so that a server can reuse its buffers;
/// `false` where that gives `None`.
pub fn encode_reply_into(reply: &Message, limit: usize, out: &mut Vec<u8>) -> bool {
    if encode(reply, out) && out.len() <= limit {
        return true;
    }
    encode(&reply.truncate(), out) && out.len() <= limit.max(512)
}

fn encode(message: &Message, out: &mut Vec<u8>) -> bool {
    out.clear();
    message.emit(&mut BinEncoder::new(out)).is_ok()
}
