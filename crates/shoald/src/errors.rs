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
