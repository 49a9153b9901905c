//! Conntrack inside a sandbox or the node: forgetting flows to backends that left, and the
//! timeout that keeps idle connections alive.
//!
//! A DNATed flow keeps its conntrack entry, and with it its backend, after the backend leaves
//! the rules: UDP "connections" would keep going to a dead task for as long as packets flow.
//! Only the entries whose reply comes from a removed backend are deleted, and of those only UDP
//! flows and TCP flows still in their handshake ([`crate::ctnetlink::Flow::cuttable`]): an
//! established TCP connection, even to a removed backend, is never cut by shoal (its task is
//! told to stop after it left every path, and its application closes its connections). Over ctnetlink on a socket made in the
//! namespace (`ctnetlink` encodes it): no `conntrack` process per change.

use crate::apply::{NfSocket, TCP_ESTABLISHED_SYSCTL, in_netns, read_sysctl, write_sysctl};
use crate::ctnetlink::{self, FlowFilter};
use crate::error::{LbError, hint};
use crate::plan::StaleFlows;

/// The least idle timeout of established TCP accepted in a sandbox. Swarm's IPVS drops idle
/// connections after 900 s; conntrack's default is 5 days, and shoal keeps at least a day.
pub const MIN_TCP_ESTABLISHED_SECS: u64 = 86_400;

/// What [`ensure_tcp_timeout`] sets when a sandbox has less: the kernel's default.
pub const TCP_ESTABLISHED_SECS: u64 = 432_000;

/// The filter that selects the flows of `flows`: original destination the VIP, reply source
/// the backend (the address DNAT chose), any transport (established TCP never matches).
pub fn vip_filter(flows: &StaleFlows) -> FlowFilter {
    FlowFilter {
        reply_src: flows.backend,
        orig_dst: Some(flows.vip),
        proto: None,
        orig_dport: None,
    }
}

/// Deletes the conntrack entries of each of `flows` (VIP, removed backend) in sandbox
/// `netns`, established TCP connections excepted, and returns how many entries went.
pub async fn flush_conntrack(netns: &str, flows: &[StaleFlows]) -> Result<usize, LbError> {
    let filters: Vec<FlowFilter> = flows.iter().map(vip_filter).collect();
    delete_flows(Some(netns), &filters).await
}

/// Deletes the conntrack entries that match any of `filters` in namespace `netns`, or in the
/// caller's own with `None` (the node's, for the routing mesh), and returns how many went.
pub async fn delete_flows(netns: Option<&str>, filters: &[FlowFilter]) -> Result<usize, LbError> {
    if filters.is_empty() {
        return Ok(0);
    }
    let filters = filters.to_vec();
    match netns {
        Some(ns) => {
            let name = ns.to_string();
            in_netns(ns, move || delete_here(&name, &filters)).await
        }
        None => tokio::task::spawn_blocking(move || delete_here("(own)", &filters))
            .await
            .map_err(|_| LbError::NetnsThread("(own)".into()))?,
    }
}

/// One dump of the namespace's IPv4 entries, then one delete per match, all on one socket
/// made on this thread (so in its namespace).
fn delete_here(netns: &str, filters: &[FlowFilter]) -> Result<usize, LbError> {
    let refused = |action, errno: i32| LbError::Conntrack {
        action,
        netns: netns.to_string(),
        source: std::io::Error::from_raw_os_error(errno),
        hint: hint(errno),
    };
    let sock = NfSocket::open(netns)?;
    let mut buf = vec![0u8; 256 << 10];
    const DUMP_SEQ: u32 = 1;
    sock.send_raw(&ctnetlink::dump_request(DUMP_SEQ))?;
    let mut stale = Vec::new();
    loop {
        let n = sock.recv_raw(&mut buf)?;
        let part = ctnetlink::parse_dump(&buf[..n], DUMP_SEQ);
        if let Some(errno) = part.error {
            return Err(refused("list", errno));
        }
        stale.extend(
            part.flows
                .into_iter()
                .filter(|f| filters.iter().any(|flt| flt.matches(f))),
        );
        if part.done {
            break;
        }
    }
    if stale.is_empty() {
        return Ok(0);
    }
    // Many deletes per send (the kernel handles each message of a buffer in turn, and acks
    // each); sequence numbers follow the dump's.
    let first = DUMP_SEQ + 1;
    let last = first + stale.len() as u32 - 1;
    for (chunk_no, chunk) in stale.chunks(512).enumerate() {
        let mut bytes = Vec::new();
        for (i, f) in chunk.iter().enumerate() {
            let seq = first + (chunk_no * 512 + i) as u32;
            bytes.extend(ctnetlink::delete_request(seq, f));
        }
        sock.send_raw(&bytes)?;
    }
    let (mut deleted, mut answered) = (0, 0);
    while answered < stale.len() {
        let n = sock.recv_raw(&mut buf)?;
        for (seq, errno) in ctnetlink::parse_acks(&buf[..n]) {
            if seq < first || seq > last {
                continue;
            }
            answered += 1;
            match errno {
                0 => deleted += 1,
                // Gone meanwhile (expired, or closed): what we wanted.
                e if e == nix::errno::Errno::ENOENT as i32 => {}
                _ => return Err(refused("delete", errno)),
            }
        }
    }
    Ok(deleted)
}

/// The sandbox's idle timeout of established TCP flows, in seconds.
pub async fn tcp_established_timeout(netns: &str) -> Result<u64, LbError> {
    let name = netns.to_string();
    in_netns(netns, move || read_sysctl(&name, TCP_ESTABLISHED_SYSCTL)).await
}

/// Raises the sandbox's idle timeout of established TCP flows to the kernel default if it is
/// below [`MIN_TCP_ESTABLISHED_SECS`] (each namespace has its own value, normally that default).
/// Returns the value in force afterwards.
pub async fn ensure_tcp_timeout(netns: &str) -> Result<u64, LbError> {
    let name = netns.to_string();
    in_netns(netns, move || {
        let now = read_sysctl(&name, TCP_ESTABLISHED_SYSCTL)?;
        if now >= MIN_TCP_ESTABLISHED_SECS {
            return Ok(now);
        }
        write_sysctl(&name, TCP_ESTABLISHED_SYSCTL, TCP_ESTABLISHED_SECS)?;
        read_sysctl(&name, TCP_ESTABLISHED_SYSCTL)
    })
    .await
}
