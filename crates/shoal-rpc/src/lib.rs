//! shoal's node-to-node gRPC services, generated from `proto/shoal.proto`.
#![forbid(unsafe_code)]

#[allow(clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("shoal.v1");
}

pub use pb::*;

pub mod deadline;
pub mod transport;
pub use transport::{Dialer, Tls};

/// rustls's types that appear in this crate's API.
pub use rustls;

/// Wraps a JSON-encoded value.
pub fn json(data: Vec<u8>) -> pb::Json {
    pb::Json { data }
}

/// gRPC metadata key on a "not the leader" error that carries the leader's cluster address.
pub const LEADER_METADATA: &str = "shoal-leader";

/// The leader address carried by a "not the leader" status, if any.
pub fn leader_hint(status: &tonic::Status) -> Option<String> {
    status
        .metadata()
        .get(LEADER_METADATA)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}
