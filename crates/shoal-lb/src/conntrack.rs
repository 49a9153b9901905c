//! Conntrack inside a sandbox: forgetting flows to backends that left, and the timeout that
//! keeps idle connections alive.
//!
//! A DNATed flow keeps its conntrack entry, and with it its backend, after the backend leaves
//! the rules: UDP "connections" would keep going to a dead task for as long as packets flow.
//! Only the entries of (VIP, removed backend) are deleted, so established connections to
//! backends that stay are never cut.

use std::process::Command;

use crate::apply::{TCP_ESTABLISHED_SYSCTL, in_netns, read_sysctl, write_sysctl};
use crate::error::LbError;
use crate::plan::StaleFlows;

/// The least idle timeout of established TCP accepted in a sandbox. Swarm's IPVS drops idle
/// connections after 900 s; conntrack's default is 5 days, and shoal keeps at least a day.
pub const MIN_TCP_ESTABLISHED_SECS: u64 = 86_400;

/// What [`ensure_tcp_timeout`] sets when a sandbox has less: the kernel's default.
pub const TCP_ESTABLISHED_SECS: u64 = 432_000;

/// The `conntrack` arguments that select the flows of `flows`: original destination the VIP,
/// reply source the backend (the address DNAT chose).
pub fn conntrack_filter(flows: &StaleFlows) -> Vec<String> {
    vec![
        "-d".to_string(),
        flows.vip.to_string(),
        "-r".to_string(),
        flows.backend.to_string(),
    ]
}

/// Deletes the conntrack entries of each of `flows` in sandbox `netns` (one `conntrack -D`
/// each, from one thread inside the namespace) and returns how many entries went.
pub async fn flush_conntrack(netns: &str, flows: &[StaleFlows]) -> Result<usize, LbError> {
    if flows.is_empty() {
        return Ok(0);
    }
    let name = netns.to_string();
    let filters: Vec<Vec<String>> = flows.iter().map(conntrack_filter).collect();
    in_netns(netns, move || {
        let mut deleted = 0;
        for filter in filters {
            deleted += conntrack_delete(&name, &filter)?;
        }
        Ok(deleted)
    })
    .await
}

/// `conntrack -D FILTER`. It exits 1 when nothing matched, which is no error here: the count
/// on stderr tells the two apart.
fn conntrack_delete(netns: &str, filter: &[String]) -> Result<usize, LbError> {
    let out = Command::new("conntrack")
        .arg("-D")
        .args(filter)
        .output()
        .map_err(|source| LbError::Spawn {
            program: "conntrack",
            package: "conntrack",
            netns: netns.to_string(),
            source,
        })?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let count = stderr.lines().find_map(|line| {
        let (_, rest) = line.split_once("): ")?;
        rest.strip_suffix(" flow entries have been deleted.")?
            .parse::<usize>()
            .ok()
    });
    match count {
        Some(n) => Ok(n),
        None => Err(LbError::Conntrack {
            filter: filter.join(" "),
            netns: netns.to_string(),
            stderr: stderr.trim().to_string(),
        }),
    }
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
