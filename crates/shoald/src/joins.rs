//! Joins on the leader: the role a token admits to (`join_role`), and failed joins
//! rate-limited per source address: guessing a token's secret (25 base36 characters) is
//! hopeless anyway, but a flood of bad joins should not cost the leader a certificate check
//! each, nor fill its log.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use shoal_pki::{JoinToken, JoinTokens};
use shoal_types::NodeRole;
use tonic::Status;

/// Failures a source may have in one window before it is refused outright.
const MAX_FAILURES: u32 = 5;
const WINDOW: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct FailedJoins {
    by_source: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl FailedJoins {
    pub fn check(&self, source: Option<IpAddr>) -> Result<(), Status> {
        self.check_at(source, Instant::now())
    }

    pub fn failed(&self, source: Option<IpAddr>) {
        self.failed_at(source, Instant::now());
    }

    fn check_at(&self, source: Option<IpAddr>, now: Instant) -> Result<(), Status> {
        let Some(ip) = source else { return Ok(()) };
        let map = self.by_source.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&ip) {
            Some((since, n)) if *n >= MAX_FAILURES && now.duration_since(*since) < WINDOW => {
                let wait = WINDOW - now.duration_since(*since);
                Err(Status::resource_exhausted(format!(
                    "too many failed joins from {ip}: {n} in the last minute; check the token and try again in {}s",
                    wait.as_secs().max(1)
                )))
            }
            _ => Ok(()),
        }
    }

    fn failed_at(&self, source: Option<IpAddr>, now: Instant) {
        let Some(ip) = source else { return };
        let mut map = self.by_source.lock().unwrap_or_else(|p| p.into_inner());
        // Forget old windows so the map stays small.
        map.retain(|_, (since, _)| now.duration_since(*since) < WINDOW);
        let entry = map.entry(ip).or_insert((now, 0));
        entry.1 += 1;
    }
}

/// The role a join token admits to, or why it is refused (the secret compared in constant
/// time by shoal-pki).
pub fn join_role(cluster: &shoal_types::ClusterInfo, presented: &str) -> Result<NodeRole, Status> {
    let presented =
        JoinToken::parse(presented).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let current = |t: &str| {
        JoinToken::parse(t)
            .map_err(|e| Status::internal(format!("the cluster's join token is invalid: {e}")))
    };
    let tokens = JoinTokens {
        worker: current(&cluster.worker_token)?,
        manager: current(&cluster.manager_token)?,
    };
    match tokens.role_for(&presented) {
        Ok(shoal_pki::Role::Manager) => Ok(NodeRole::Manager),
        Ok(shoal_pki::Role::Worker) => Ok(NodeRole::Worker),
        Err(shoal_pki::PkiError::TokenSecretRefused) => Err(Status::permission_denied(
            "invalid join token: the secret does not match (it may have been rotated); run `shoal join-token worker` on a manager for a valid one",
        )),
        Err(e) => Err(Status::permission_denied(format!(
            "invalid join token: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_refused_after_five_failures_until_the_window_passes() {
        let joins = FailedJoins::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES {
            assert!(joins.check_at(Some(a), t0).is_ok());
            joins.failed_at(Some(a), t0);
        }
        let refused = joins
            .check_at(Some(a), t0 + Duration::from_secs(1))
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused
                .message()
                .starts_with("too many failed joins from 10.0.0.1: 5 in the last minute; check the token and try again in 59s"),
            "{refused:?}"
        );
        // Another source is not affected, and the first is let in again after the window.
        assert!(joins.check_at(Some(b), t0).is_ok());
        assert!(joins.check_at(Some(a), t0 + WINDOW).is_ok());
    }
}
