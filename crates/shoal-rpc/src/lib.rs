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

/// A lazily connecting channel to a node's cluster port, with timeouts suited to a LAN.
pub fn channel(addr: &str) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let uri = if addr.starts_with("http://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    Ok(tonic::transport::Endpoint::from_shared(uri)?
        .connect_timeout(std::time::Duration::from_secs(2))
        .tcp_nodelay(true)
        .connect_lazy())
}
