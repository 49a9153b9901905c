//! ctnetlink messages for deleting the conntrack entries of removed backends: a dump request,
//! the dump's entries parsed, a filter, and one delete request per matching entry. Pure: bytes
//! in, bytes out; the socket is in `conntrack.rs`.
//!
//! Encoding and parsing come from netlink-packet-netfilter (rust-netlink, the family of the
//! rtnetlink crates shoal-net uses), which has ctnetlink's tuples and messages. It has no
//! kernel-side dump filter (CTA_FILTER), so the dump is filtered here, as `conntrack -D` does:
//! a sandbox's table holds its own flows only, and the node's those of the node.

use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoInfo, ProtoInfoTCP, ProtoTuple, Protocol,
    Tuple,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};

/// Which flows to delete: reply source `reply_src` (the backend a DNAT chose), and where set,
/// original destination `orig_dst`, transport `proto` (IPPROTO_*) and original destination
/// port `orig_dport`. Flows to other backends never match, whatever the rest, and neither does
/// a TCP connection past its handshake ([`Flow::cuttable`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowFilter {
    pub reply_src: Ipv4Addr,
    pub orig_dst: Option<Ipv4Addr>,
    pub proto: Option<u8>,
    pub orig_dport: Option<u16>,
}

/// IPPROTO_TCP and IPPROTO_UDP, for [`FlowFilter::proto`].
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;

/// Conntrack's TCP states (`enum tcp_conntrack`, linux/netfilter/nf_conntrack_tcp.h) before
/// the handshake completes: NONE, SYN_SENT, SYN_RECV and SYN_SENT2. ESTABLISHED is 3; FIN_WAIT
/// to CLOSE (4-8) follow it.
const TCP_BEFORE_ESTABLISHED: [u8; 4] = [0, 1, 2, 9];

/// One conntrack entry, as much of it as the filter and the delete need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    pub proto: u8,
    pub orig_src: Ipv4Addr,
    pub orig_dst: Ipv4Addr,
    pub orig_sport: u16,
    pub orig_dport: u16,
    pub reply_src: Ipv4Addr,
    /// TCP only: conntrack's state of the connection (`None` when the dump had none).
    pub tcp_state: Option<u8>,
}

impl Flow {
    /// Whether deleting the entry cuts nothing a user has: true for UDP (and other
    /// transports), and for a TCP flow whose handshake has not completed (a new flow that
    /// still names a removed backend: deleted, its next SYN is balanced again). A TCP
    /// connection that was established is kept, closing included: its application closes it
    /// on its own SIGTERM, and without the entry its segments would lose their translation and
    /// be reset. A TCP entry without a state is kept too.
    pub fn cuttable(&self) -> bool {
        self.proto != TCP
            || self
                .tcp_state
                .is_some_and(|s| TCP_BEFORE_ESTABLISHED.contains(&s))
    }
}

impl FlowFilter {
    pub fn matches(&self, f: &Flow) -> bool {
        f.cuttable()
            && f.reply_src == self.reply_src
            && self.orig_dst.is_none_or(|d| d == f.orig_dst)
            && self.proto.is_none_or(|p| p == f.proto)
            && self.orig_dport.is_none_or(|p| p == f.orig_dport)
    }
}

/// What one read of a dump held.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DumpPart {
    pub flows: Vec<Flow>,
    /// The dump's end (NLMSG_DONE) was in it.
    pub done: bool,
    /// The kernel refused the dump (errno).
    pub error: Option<i32>,
    /// Entries that could not be parsed (other families, malformed): skipped.
    pub skipped: usize,
}

fn message(seq: u32, flags: u16, ct: ConntrackMessage) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut msg = NetlinkMessage::new(
        header,
        NetlinkPayload::from(NetfilterMessage::new(
            NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0),
            ct,
        )),
    );
    msg.finalize();
    let mut buf = vec![0; msg.buffer_len()];
    msg.serialize(&mut buf);
    buf
}

/// IPCTNL_MSG_CT_GET with NLM_F_DUMP: every IPv4 entry of the namespace.
pub fn dump_request(seq: u32) -> Vec<u8> {
    message(
        seq,
        NLM_F_REQUEST | NLM_F_DUMP,
        ConntrackMessage::Get(vec![]),
    )
}

/// IPCTNL_MSG_CT_DELETE of the entry whose original tuple is `f`'s, acknowledged.
pub fn delete_request(seq: u32, f: &Flow) -> Vec<u8> {
    let tuple = vec![
        Tuple::Ip(vec![
            IPTuple::SourceAddress(IpAddr::V4(f.orig_src)),
            IPTuple::DestinationAddress(IpAddr::V4(f.orig_dst)),
        ]),
        Tuple::Proto(vec![
            ProtoTuple::Protocol(Protocol::from(f.proto)),
            ProtoTuple::SourcePort(f.orig_sport),
            ProtoTuple::DestinationPort(f.orig_dport),
        ]),
    ];
    message(
        seq,
        NLM_F_REQUEST | NLM_F_ACK,
        ConntrackMessage::Delete(vec![ConntrackAttribute::CtaTupleOrig(tuple)]),
    )
}

/// (addresses, ports) of a tuple; ports are 0 for protocols without them.
fn tuple(t: &[Tuple]) -> Option<(u8, Ipv4Addr, Ipv4Addr, u16, u16)> {
    let (mut src, mut dst, mut proto, mut sport, mut dport) = (None, None, None, 0, 0);
    for part in t {
        match part {
            Tuple::Ip(ips) => {
                for ip in ips {
                    match ip {
                        IPTuple::SourceAddress(IpAddr::V4(a)) => src = Some(*a),
                        IPTuple::DestinationAddress(IpAddr::V4(a)) => dst = Some(*a),
                        _ => {}
                    }
                }
            }
            Tuple::Proto(ps) => {
                for p in ps {
                    match p {
                        ProtoTuple::Protocol(n) => proto = Some(u8::from(*n)),
                        ProtoTuple::SourcePort(n) => sport = *n,
                        ProtoTuple::DestinationPort(n) => dport = *n,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some((proto?, src?, dst?, sport, dport))
}

fn flow(attrs: &[ConntrackAttribute]) -> Option<Flow> {
    let (mut orig, mut reply, mut tcp_state) = (None, None, None);
    for a in attrs {
        match a {
            ConntrackAttribute::CtaTupleOrig(t) => orig = tuple(t),
            ConntrackAttribute::CtaTupleReply(t) => reply = tuple(t),
            ConntrackAttribute::CtaProtoInfo(infos) => {
                for info in infos {
                    if let ProtoInfo::TCP(parts) = info {
                        for part in parts {
                            if let ProtoInfoTCP::State(s) = part {
                                tcp_state = Some(*s);
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let (proto, orig_src, orig_dst, orig_sport, orig_dport) = orig?;
    let (_, reply_src, ..) = reply?;
    Some(Flow {
        proto,
        orig_src,
        orig_dst,
        orig_sport,
        orig_dport,
        reply_src,
        tcp_state,
    })
}

/// Walks the netlink messages of one read: `f` gets each message's length, sequence number
/// and parsed form (`None` if it did not parse).
fn each_message(mut buf: &[u8], mut f: impl FnMut(u32, Option<NetlinkMessage<NetfilterMessage>>)) {
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let seq = u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]);
        if len < 16 || len > buf.len() {
            break;
        }
        f(
            seq,
            NetlinkMessage::<NetfilterMessage>::deserialize(&buf[..len]).ok(),
        );
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
    }
}

/// The entries of one read of a dump answer to request `seq`.
pub fn parse_dump(buf: &[u8], seq: u32) -> DumpPart {
    let mut part = DumpPart::default();
    each_message(buf, |s, msg| {
        if s != seq {
            return;
        }
        match msg.map(|m| m.payload) {
            Some(NetlinkPayload::Done(_)) => part.done = true,
            Some(NetlinkPayload::Error(e)) => {
                part.error = e.code.map(|c| -c.get());
                part.done = true;
            }
            Some(NetlinkPayload::InnerMessage(NetfilterMessage {
                inner: NetfilterMessageInner::Conntrack(ConntrackMessage::New(attrs)),
                ..
            })) => match flow(&attrs) {
                Some(f) => part.flows.push(f),
                None => part.skipped += 1,
            },
            _ => part.skipped += 1,
        }
    });
    part
}

/// (sequence number, errno) of each acknowledgement in one read; errno 0 is success.
pub fn parse_acks(buf: &[u8]) -> Vec<(u32, i32)> {
    let mut out = Vec::new();
    each_message(buf, |seq, msg| {
        if let Some(NetlinkPayload::Error(e)) = msg.map(|m| m.payload) {
            out.push((seq, e.code.map_or(0, |c| -c.get())));
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // `conntrack -L` of a UDP flow 10.77.0.1:40000 -> 10.77.0.100:5353 DNATed to 10.77.0.12,
    // as the kernel sends it in a dump (IPCTNL_MSG_CT_NEW, multipart, sequence 7): header,
    // nfgenmsg, CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, CTA_STATUS, CTA_TIMEOUT, CTA_ID.
    fn dumped_udp_flow() -> Vec<u8> {
        dumped_flow(UDP, None)
    }

    // The same flow over `proto`, with CTA_PROTOINFO / CTA_PROTOINFO_TCP / _STATE `state` when
    // given (the kernel sends it for TCP).
    fn dumped_flow(proto: u8, state: Option<u8>) -> Vec<u8> {
        let tuple = |src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16| {
            let mut t = vec![];
            t.extend([20, 0, 1, 0x80]); // CTA_TUPLE_IP, nested
            t.extend([8, 0, 1, 0]);
            t.extend(src);
            t.extend([8, 0, 2, 0]);
            t.extend(dst);
            t.extend([28, 0, 2, 0x80]); // CTA_TUPLE_PROTO, nested
            t.extend([5, 0, 1, 0, proto, 0, 0, 0]);
            t.extend([6, 0, 2, 0]);
            t.extend(sport.to_be_bytes());
            t.extend([0, 0]);
            t.extend([6, 0, 3, 0]);
            t.extend(dport.to_be_bytes());
            t.extend([0, 0]);
            t
        };
        let mut body = vec![2, 0, 0, 0]; // AF_INET, version 0, res_id 0
        body.extend([52, 0, 1, 0x80]);
        body.extend(tuple([10, 77, 0, 1], [10, 77, 0, 100], 40000, 5353));
        body.extend([52, 0, 2, 0x80]);
        body.extend(tuple([10, 77, 0, 12], [10, 77, 0, 1], 5353, 40000));
        body.extend([8, 0, 3, 0, 0, 0, 0x01, 0x88]); // CTA_STATUS
        body.extend([8, 0, 7, 0, 0, 0, 0, 30]); // CTA_TIMEOUT
        body.extend([8, 0, 12, 0, 0x12, 0x34, 0x56, 0x78]); // CTA_ID
        if let Some(state) = state {
            body.extend([16, 0, 4, 0x80, 12, 0, 1, 0x80, 5, 0, 1, 0, state, 0, 0, 0]);
        }
        let mut msg = vec![];
        msg.extend(((16 + body.len()) as u32).to_ne_bytes());
        msg.extend(0x0100u16.to_ne_bytes()); // CTNETLINK << 8 | IPCTNL_MSG_CT_NEW
        msg.extend(2u16.to_ne_bytes()); // NLM_F_MULTI
        msg.extend(7u32.to_ne_bytes());
        msg.extend(0u32.to_ne_bytes());
        msg.extend(body);
        msg
    }

    fn done(seq: u32) -> Vec<u8> {
        let mut m = vec![];
        m.extend(20u32.to_ne_bytes());
        m.extend(3u16.to_ne_bytes()); // NLMSG_DONE
        m.extend(2u16.to_ne_bytes());
        m.extend(seq.to_ne_bytes());
        m.extend(0u32.to_ne_bytes());
        m.extend(0i32.to_ne_bytes());
        m
    }

    fn ack(seq: u32, error: i32) -> Vec<u8> {
        let mut m = vec![];
        m.extend(36u32.to_ne_bytes());
        m.extend(2u16.to_ne_bytes()); // NLMSG_ERROR
        m.extend(0u16.to_ne_bytes());
        m.extend(seq.to_ne_bytes());
        m.extend(0u32.to_ne_bytes());
        m.extend(error.to_ne_bytes());
        m.extend([0u8; 16]); // the request's header
        m
    }

    const REMOVED: Flow = Flow {
        proto: UDP,
        orig_src: Ipv4Addr::new(10, 77, 0, 1),
        orig_dst: Ipv4Addr::new(10, 77, 0, 100),
        orig_sport: 40000,
        orig_dport: 5353,
        reply_src: Ipv4Addr::new(10, 77, 0, 12),
        tcp_state: None,
    };

    #[test]
    fn a_dump_is_parsed_into_flows_and_its_end_seen() {
        let mut buf = dumped_udp_flow();
        buf.extend(dumped_udp_flow());
        buf.extend(done(7));
        let part = parse_dump(&buf, 7);
        assert_eq!(part.flows, [REMOVED, REMOVED]);
        assert!(part.done && part.error.is_none() && part.skipped == 0);
        // Answers to another request are not ours.
        assert_eq!(parse_dump(&buf, 8), DumpPart::default());
        // A refused dump ends with the errno.
        let part = parse_dump(&ack(7, -1), 7);
        assert_eq!((part.done, part.error), (true, Some(1)));
    }

    #[test]
    fn the_filter_selects_flows_of_the_removed_backend_only() {
        let vip = FlowFilter {
            reply_src: Ipv4Addr::new(10, 77, 0, 12),
            orig_dst: Some(Ipv4Addr::new(10, 77, 0, 100)),
            proto: None,
            orig_dport: None,
        };
        assert!(vip.matches(&REMOVED));
        let live = Flow {
            reply_src: Ipv4Addr::new(10, 77, 0, 11),
            ..REMOVED
        };
        assert!(!vip.matches(&live), "a flow to a live backend stays");
        let other_vip = Flow {
            orig_dst: Ipv4Addr::new(10, 77, 0, 101),
            ..REMOVED
        };
        assert!(!vip.matches(&other_vip));
        // The mesh: UDP to a published port, any local address.
        let mesh = FlowFilter {
            reply_src: Ipv4Addr::new(10, 77, 0, 12),
            orig_dst: None,
            proto: Some(UDP),
            orig_dport: Some(5353),
        };
        assert!(mesh.matches(&REMOVED));
        assert!(!mesh.matches(&Flow {
            proto: TCP,
            tcp_state: Some(1),
            ..REMOVED
        }));
        assert!(!mesh.matches(&Flow {
            orig_dport: 53,
            ..REMOVED
        }));
    }

    #[test]
    fn tcp_connections_past_their_handshake_are_never_cut() {
        let buf = [dumped_flow(TCP, Some(3)), dumped_flow(TCP, Some(1))].concat();
        let part = parse_dump(&buf, 7);
        let states: Vec<_> = part.flows.iter().map(|f| (f.proto, f.tcp_state)).collect();
        assert_eq!(states, [(TCP, Some(3)), (TCP, Some(1))]);
        let vip = FlowFilter {
            reply_src: REMOVED.reply_src,
            orig_dst: Some(REMOVED.orig_dst),
            proto: None,
            orig_dport: None,
        };
        assert!(!vip.matches(&part.flows[0]), "ESTABLISHED stays");
        assert!(
            vip.matches(&part.flows[1]),
            "SYN_SENT to the removed backend goes"
        );
        let tcp = |state| Flow {
            proto: TCP,
            tcp_state: state,
            ..REMOVED
        };
        // SYN_RECV and SYN_SENT2 go; FIN_WAIT to CLOSE (a connection being closed) stay, and
        // so does an entry whose state the dump did not give.
        for (state, cut) in [
            (2, true),
            (9, true),
            (4, false),
            (5, false),
            (7, false),
            (8, false),
        ] {
            assert_eq!(vip.matches(&tcp(Some(state))), cut, "state {state}");
        }
        assert!(!vip.matches(&tcp(None)));
        assert!(vip.matches(&REMOVED), "UDP always goes");
    }

    #[test]
    fn requests_are_encoded_as_the_kernel_expects() {
        let dump = dump_request(7);
        assert_eq!(dump.len(), 20);
        assert_eq!(u32::from_ne_bytes([dump[0], dump[1], dump[2], dump[3]]), 20);
        assert_eq!(u16::from_ne_bytes([dump[4], dump[5]]), 0x0101, "CT_GET");
        assert_eq!(
            u16::from_ne_bytes([dump[6], dump[7]]),
            0x0301,
            "REQUEST|DUMP"
        );
        assert_eq!(
            u32::from_ne_bytes([dump[8], dump[9], dump[10], dump[11]]),
            7
        );
        assert_eq!(dump[16..], [2, 0, 0, 0], "AF_INET, version 0");

        let del = delete_request(9, &REMOVED);
        assert_eq!(u16::from_ne_bytes([del[4], del[5]]), 0x0102, "CT_DELETE");
        assert_eq!(u16::from_ne_bytes([del[6], del[7]]), 0x0005, "REQUEST|ACK");
        // The original tuple, as the dump carried it.
        let orig = &dumped_udp_flow()[20..20 + 52];
        assert_eq!(&del[20..], orig);
        assert_eq!(del.len(), 20 + 52);
    }

    #[test]
    fn acks_carry_their_errno() {
        let mut buf = ack(3, 0);
        buf.extend(ack(4, -2));
        assert_eq!(parse_acks(&buf), [(3, 0), (4, 2)]);
    }
}
