//! shoal's node-to-node gRPC services, generated from `proto/shoal.proto`.
#![forbid(unsafe_code)]

#[allow(clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("shoal.v1");
}

pub use pb::*;

/// Wraps a JSON-encoded value.
pub fn json(data: Vec<u8>) -> pb::Json {
    pb::Json { data }
}
