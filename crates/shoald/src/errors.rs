//! How the daemon's failures reach the API: an HTTP status and a message that says what to do.

use shoal_api::ApiError;
use shoal_types::ApplyError;

pub fn apply_error(e: ApplyError) -> ApiError {
    let status = match e {
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
        | ApplyError::CaRotationInProgress { .. } => 409,
        ApplyError::NotInitialized => 503,
        ApplyError::Invalid(_) => 400,
    };
    ApiError::new(status, e.to_string())
}

pub fn not_manager() -> ApiError {
    ApiError::new(503, "this node is not a manager; run it on a manager")
}

pub fn not_in_swarm() -> ApiError {
    ApiError::new(
        503,
        "this node is not part of a swarm; run `shoal init` or `shoal join` first",
    )
}

pub fn internal(what: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::new(500, format!("{what}: {e}"))
}

/// A join refused or failed, as the user should read it.
pub fn join_error(remote: &str, s: &tonic::Status) -> ApiError {
    match s.code() {
        tonic::Code::PermissionDenied
        | tonic::Code::InvalidArgument
        | tonic::Code::ResourceExhausted
        | tonic::Code::AlreadyExists
        | tonic::Code::FailedPrecondition => ApiError::bad_request(s.message().to_string()),
        // The TLS handshake: the manager's certificate does not chain to the token's CA.
        tonic::Code::Unavailable | tonic::Code::Unknown
            if s.message().contains("certificate") || format!("{s:?}").contains("certificate") =>
        {
            ApiError::bad_request(format!(
                "the manager at {remote} is not one of the token's cluster: its certificate does not chain to the root CA the token pins ({}); check the address and the token",
                pki_refusal(s).unwrap_or_else(|| source_chain(s))
            ))
        }
        tonic::Code::Unavailable => ApiError::new(
            503,
            format!("cannot reach a manager at {remote}: {}", source_chain(s)),
        ),
        _ => ApiError::new(503, format!("join failed: {}", s.message())),
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
