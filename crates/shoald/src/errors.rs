//! The daemon's own failures (`DaemonError`) and how they reach its two edges: the HTTP API
//! (`ApiError`: a status and a message that says what to do) and the cluster port (a gRPC
//! `Status`). Only those two conversions know HTTP and gRPC codes; inside the daemon
//! (roles, joins, networks, images, the CA) every failure is a `DaemonError`, and callers
//! that retry ask it whether that can help (`DaemonError::is_retryable`).

use shoal_api::ApiError;
use shoal_types::ApplyError;

/// What went wrong in the daemon: a change that did not commit, a request it cannot
/// serve, a peer that did not answer, or a failure of its own.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The request is wrong (an address, a token, a subnet, a flag): fix it and ask again.
    #[error("{0}")]
    Invalid(String),
    /// What the request names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// This node is not in a swarm.
    #[error("this node is not part of a swarm; run `shoal init` or `shoal join` first")]
    NotInSwarm,
    /// What was asked needs a manager.
    #[error("this node is not a manager; run it on a manager")]
    NotManager,
    /// Another node that was needed did not answer, or did not do its part yet (a manager
    /// to join through, to renew a certificate, the leader to add a voter): nothing was
    /// done here, and a later try may succeed.
    #[error("{0}")]
    Unavailable(String),
    /// The cluster's state refused it (no such service, name in use, ...).
    #[error(transparent)]
    Refused(#[from] ApplyError),
    /// The leader refused it before proposing: it would break the cluster (a demotion
    /// that would lose the quorum, `Manager::refusal`).
    #[error("{0}")]
    Conflict(String),
    /// No leader took it before the deadline (an election that does not end, a majority
    /// gone): `last` is why the last try failed, if one was made.
    #[error(
        "no manager leads: this manager hears from {reachable} of {voters} managers and a change needs {}; changes are refused until enough managers are back (reads still answer){}",
        .voters / 2 + 1,
        .last.as_ref().map(|w| format!(" (last try: {w})")).unwrap_or_default()
    )]
    NoLeader {
        reachable: usize,
        voters: usize,
        last: Option<String>,
    },
    /// The leader hears from no majority (its own words, or shoal-store's).
    #[error("{0}")]
    NoQuorum(String),
    /// It never reached a leader: nothing was sent, so it cannot have applied.
    #[error("cannot reach the leader at {addr}: {why}")]
    Unreachable { addr: String, why: String },
    /// It was sent and no answer came: it may have applied.
    #[error("{0}; the change may still be applied, so check before trying again")]
    Unknown(String),
    /// Raft or this daemon failed.
    #[error("{what}: {why}")]
    Internal { what: String, why: String },
}

impl DaemonError {
    /// Whether the same change may be tried again, later or elsewhere, and succeed without
    /// applying twice: it did not reach a leader that could commit it.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            DaemonError::NoLeader { .. }
                | DaemonError::NoQuorum(_)
                | DaemonError::Unreachable { .. }
                | DaemonError::Unavailable(_)
        )
    }

    fn http_status(&self) -> u16 {
        match self {
            DaemonError::Invalid(_) => 400,
            DaemonError::NotFound(_) => 404,
            DaemonError::Refused(e) => apply_status(e),
            DaemonError::Conflict(_) => 409,
            DaemonError::NotInSwarm | DaemonError::NotManager | DaemonError::Unavailable(_) => 503,
            DaemonError::NoLeader { .. }
            | DaemonError::NoQuorum(_)
            | DaemonError::Unreachable { .. }
            | DaemonError::Unknown(_) => 503,
            DaemonError::Internal { .. } => 500,
        }
    }
}

impl From<DaemonError> for ApiError {
    fn from(e: DaemonError) -> ApiError {
        ApiError::new(e.http_status(), e.to_string())
    }
}

impl From<DaemonError> for tonic::Status {
    fn from(e: DaemonError) -> tonic::Status {
        let message = e.to_string();
        match e {
            DaemonError::Refused(a) => match apply_status(&a) {
                400 => tonic::Status::invalid_argument(message),
                404 => tonic::Status::not_found(message),
                409 => tonic::Status::already_exists(message),
                _ => tonic::Status::unavailable(message),
            },
            DaemonError::Invalid(_) => tonic::Status::invalid_argument(message),
            DaemonError::NotFound(_) => tonic::Status::not_found(message),
            DaemonError::Conflict(_) | DaemonError::NotInSwarm | DaemonError::NotManager => {
                tonic::Status::failed_precondition(message)
            }
            // The caller may try again (an agent keeps its reports; a joining node retries).
            DaemonError::NoLeader { .. }
            | DaemonError::NoQuorum(_)
            | DaemonError::Unreachable { .. }
            | DaemonError::Unavailable(_) => tonic::Status::unavailable(message),
            DaemonError::Unknown(_) => tonic::Status::unknown(message),
            DaemonError::Internal { .. } => tonic::Status::internal(message),
        }
    }
}

/// The HTTP status of a refusal by the state.
fn apply_status(e: &ApplyError) -> u16 {
    match e {
        ApplyError::NoSuchService(_)
        | ApplyError::NoSuchNode(_)
        | ApplyError::NoSuchTask(_)
        | ApplyError::NoSuchNetwork(_) => 404,
        ApplyError::ServiceNameInUse(_)
        | ApplyError::AlreadyInitialized
        | ApplyError::NodeNotDown(_)
        | ApplyError::NodeIsManager(_)
        | ApplyError::LastManager(_)
        | ApplyError::NetworkNameInUse(_)
        | ApplyError::NetworkInUse { .. }
        | ApplyError::AddressInUse { .. }
        | ApplyError::PortInUse { .. }
        | ApplyError::CaRotationInProgress { .. }
        | ApplyError::OutOfSequence { .. } => 409,
        ApplyError::NotInitialized => 503,
        ApplyError::Invalid(_) => 400,
    }
}

pub fn not_manager() -> DaemonError {
    DaemonError::NotManager
}

pub fn not_in_swarm() -> DaemonError {
    DaemonError::NotInSwarm
}

/// A failure of this daemon's own: `what` it was doing, and the error.
pub fn internal(what: impl Into<String>, e: impl std::fmt::Display) -> DaemonError {
    DaemonError::Internal {
        what: what.into(),
        why: e.to_string(),
    }
}

/// A join refused or failed, as the user should read it.
pub fn join_error(remote: &str, s: &tonic::Status) -> DaemonError {
    match s.code() {
        tonic::Code::PermissionDenied
        | tonic::Code::InvalidArgument
        | tonic::Code::ResourceExhausted
        | tonic::Code::AlreadyExists
        | tonic::Code::FailedPrecondition => DaemonError::Invalid(s.message().to_string()),
        // The TLS handshake: the manager's certificate does not chain to the token's CA.
        tonic::Code::Unavailable | tonic::Code::Unknown
            if s.message().contains("certificate") || format!("{s:?}").contains("certificate") =>
        {
            DaemonError::Invalid(format!(
                "the manager at {remote} is not one of the token's cluster: its certificate does not chain to the root CA the token pins ({}); check the address and the token",
                pki_refusal(s).unwrap_or_else(|| source_chain(s))
            ))
        }
        tonic::Code::Unavailable => DaemonError::Unavailable(format!(
            "cannot reach a manager at {remote}: {}",
            source_chain(s)
        )),
        _ => DaemonError::Unavailable(format!("join failed: {}", s.message())),
    }
}

/// shoal-pki's reason when the join's TLS verifier refused the manager (the token pins
/// another root: a wrong address, or a token from before a root rotation), found under the
/// transport and I/O errors, so the user reads it rather than rustls's debug form.
fn pki_refusal(s: &tonic::Status) -> Option<String> {
    use shoal_pki::rustls::{CertificateError, Error as TlsError};
    let mut src = std::error::Error::source(s);
    while let Some(e) = src {
        // An I/O error's `source` skips the error it wraps: look inside.
        let inner = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|i| i as &(dyn std::error::Error + 'static));
        for candidate in [Some(e), inner].into_iter().flatten() {
            if let Some(TlsError::InvalidCertificate(CertificateError::Other(o))) =
                candidate.downcast_ref::<TlsError>()
                && let Some(pki) = o.0.downcast_ref::<shoal_pki::PkiError>()
            {
                return Some(pki.to_string());
            }
        }
        src = e.source();
    }
    None
}

/// A status's message with the transport errors under it (tonic keeps the TLS error there).
pub fn source_chain(s: &tonic::Status) -> String {
    let mut out = s.message().to_string();
    let mut src = std::error::Error::source(s);
    while let Some(e) = src {
        out.push_str(": ");
        out.push_str(&e.to_string());
        src = e.source();
    }
    out
}

/// An error and the ones under it ("transport error: tcp connect error: Connection
/// refused"), each said once.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let text = inner.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        src = inner.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changes_that_reached_no_leader_are_retryable() {
        let no_leader = DaemonError::NoLeader {
            reachable: 1,
            voters: 3,
            last: Some("cannot reach the leader at 10.0.0.1:2377: connection refused".into()),
        };
        assert!(no_leader.is_retryable());
        assert!(DaemonError::NoQuorum("quorum lost".into()).is_retryable());
        let unreachable = DaemonError::Unreachable {
            addr: "10.0.0.1:2377".into(),
            why: "connection refused".into(),
        };
        assert!(unreachable.is_retryable());
        assert!(!DaemonError::Unknown("no answer".into()).is_retryable());
        assert!(!DaemonError::Conflict("it would lose the quorum".into()).is_retryable());
        assert!(!DaemonError::Refused(ApplyError::ServiceNameInUse("web".into())).is_retryable());
        let api = ApiError::from(no_leader);
        assert_eq!(api.status, 503);
        assert_eq!(
            api.message,
            "no manager leads: this manager hears from 1 of 3 managers and a change needs 2; changes are refused until enough managers are back (reads still answer) (last try: cannot reach the leader at 10.0.0.1:2377: connection refused)"
        );
    }

    #[test]
    fn each_edge_gets_its_own_code() {
        let refused = || DaemonError::Refused(ApplyError::ServiceNameInUse("web".into()));
        assert_eq!(ApiError::from(refused()).status, 409);
        assert_eq!(
            tonic::Status::from(refused()).code(),
            tonic::Code::AlreadyExists
        );
        let conflict = || DaemonError::Conflict("it would lose the quorum".into());
        assert_eq!(ApiError::from(conflict()).status, 409);
        assert_eq!(
            tonic::Status::from(conflict()).code(),
            tonic::Code::FailedPrecondition
        );
        let unknown = DaemonError::Unknown("the leader at 10.0.0.1:2377 did not answer".into());
        assert_eq!(
            ApiError::from(DaemonError::Unknown("x".into())).message,
            "x; the change may still be applied, so check before trying again"
        );
        assert_eq!(tonic::Status::from(unknown).code(), tonic::Code::Unknown);
        let internal = internal("failed to commit the change", "raft storage failed");
        assert_eq!(tonic::Status::from(internal).code(), tonic::Code::Internal);
    }
}
