//! Raft messages between managers over the `shoal.v1.Raft` gRPC service.
//!
//! Each request is openraft's own request type as JSON in a `Json` message; each reply is the
//! JSON of `Result<response, RaftError>`, so a remote Raft error comes back as openraft's
//! `RemoteError` rather than as a gRPC status. gRPC statuses mean transport trouble.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RPCTypes, RaftNetwork, RaftNetworkFactory};
use serde::Serialize;
use serde::de::DeserializeOwned;
use shoal_rpc::raft_client::RaftClient;
use shoal_rpc::{Json, json};
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

use crate::{RaftId, TypeConfig};

/// Largest gRPC message either side accepts. Append batches of large commands and snapshot
/// chunks (bytes as JSON arrays) can pass tonic's 4 MiB default.
pub(crate) const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// Most bytes of entries one AppendEntries carries (one entry is sent whatever its size):
/// what a busy follower takes in well within openraft's 250 ms for the call.
pub(crate) const APPEND_BUDGET: usize = 1024 * 1024;

/// How many of the first entries, of these serialized sizes, fit in `budget` bytes: at least
/// one (an entry is never split), all of them if they fit.
pub(crate) fn prefix_within(sizes: &[usize], budget: usize) -> usize {
    let mut total = 0usize;
    for (i, s) in sizes.iter().enumerate() {
        total = total.saturating_add(*s);
        if total > budget {
            return i.max(1);
        }
    }
    sizes.len()
}

/// When each peer last answered an RPC from this node. Only a leader sends to every voter
/// (heartbeats), so only a leader's view is meaningful.
#[derive(Default)]
pub(crate) struct Peers {
    last_ok: Mutex<HashMap<RaftId, Instant>>,
}

impl Peers {
    fn mark_ok(&self, id: RaftId) {
        if let Ok(mut m) = self.last_ok.lock() {
            m.insert(id, Instant::now());
        }
    }

    /// Whether `id` answered within `window`.
    pub(crate) fn answered_within(&self, id: RaftId, window: Duration) -> bool {
        self.last_ok
            .lock()
            .ok()
            .and_then(|m| m.get(&id).map(|t| t.elapsed() <= window))
            .unwrap_or(false)
    }
}

pub(crate) struct NetworkFactory {
    pub(crate) id: RaftId,
    pub(crate) peers: Arc<Peers>,
    pub(crate) dialer: shoal_rpc::Dialer,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: RaftId, node: &BasicNode) -> PeerClient {
        PeerClient {
            id: self.id,
            target,
            node: node.clone(),
            client: None,
            peers: self.peers.clone(),
            dialer: self.dialer.clone(),
        }
    }
}

/// One peer; the gRPC channel is made on first use and reconnects by itself.
pub(crate) struct PeerClient {
    id: RaftId,
    target: RaftId,
    node: BasicNode,
    client: Option<RaftClient<Channel>>,
    peers: Arc<Peers>,
    dialer: shoal_rpc::Dialer,
}

impl PeerClient {
    fn client(&mut self) -> Result<RaftClient<Channel>, Unreachable> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let channel = self
            .dialer
            .manager(&self.node.addr)
            .map_err(|e| Unreachable::new(&e))?;
        let client = RaftClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        self.client = Some(client.clone());
        Ok(client)
    }

    /// Sends one request and decodes the peer's `Result`.
    async fn call<Req, Resp, E>(
        &mut self,
        kind: RPCTypes,
        req: &Req,
        ttl: Duration,
    ) -> Result<Resp, RPCError<RaftId, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let data = serde_json::to_vec(req).map_err(|e| NetworkError::new(&e))?;
        let mut client = self.client()?;
        let request = json(data);
        let fut = async move {
            match kind {
                RPCTypes::AppendEntries => client.append_entries(request).await,
                RPCTypes::Vote => client.vote(request).await,
                RPCTypes::InstallSnapshot => client.install_snapshot(request).await,
            }
        };
        let reply = match tokio::time::timeout(ttl, fut).await {
            Err(_elapsed) => {
                return Err(Timeout {
                    action: kind,
                    id: self.id,
                    target: self.target,
                    timeout: ttl,
                }
                .into());
            }
            Ok(Err(status)) => return Err(status_to_rpc_error(status)),
            Ok(Ok(reply)) => reply.into_inner(),
        };
        self.peers.mark_ok(self.target);
        let res: Result<Resp, E> =
            serde_json::from_slice(&reply.data).map_err(|e| NetworkError::new(&e))?;
        res.map_err(|e| RemoteError::new_with_node(self.target, self.node.clone(), e).into())
    }
}

fn status_to_rpc_error<E: std::error::Error>(status: Status) -> RPCError<RaftId, BasicNode, E> {
    match status.code() {
        // Connection refused or reset, peer gone: openraft backs off before retrying.
        Code::Unavailable | Code::Unknown => Unreachable::new(&status).into(),
        _ => NetworkError::new(&status).into(),
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<RaftId>, RPCError<RaftId, BasicNode, RaftError<RaftId>>> {
        // openraft sends up to `max_payload_entries` (300) entries at once and gives the call
        // one heartbeat interval (250 ms), whatever their size: a follower that fell behind
        // by a few hundred large entries (1,000 tasks made in one) was sent the same batch of
        // hundreds of MiB again and again, each time out of time, and never caught up (with
        // two such followers the leader lost its quorum for good). A batch is cut to
        // APPEND_BUDGET bytes instead, at least one entry, and the cut reported as a partial
        // success (openraft's way for a network to send a prefix): the next call carries on.
        // Sized one by one, only up to the budget (what is past it is not sent anyway).
        let mut sizes = Vec::new();
        if rpc.entries.len() > 1 {
            for e in &rpc.entries {
                sizes.push(serde_json::to_vec(e).map_or(0, |b| b.len()));
                if sizes.iter().sum::<usize>() > APPEND_BUDGET {
                    break;
                }
            }
        }
        let keep = match sizes.iter().sum::<usize>() > APPEND_BUDGET {
            true => prefix_within(&sizes, APPEND_BUDGET),
            false => rpc.entries.len(),
        };
        let mut rpc = rpc;
        let cut = keep < rpc.entries.len();
        rpc.entries.truncate(keep);
        let last = rpc.entries.last().map(|e| e.log_id);
        // Below openraft's own (hard) timeout, so a slow peer shows as our Timeout error.
        let r = self
            .call(RPCTypes::AppendEntries, &rpc, option.soft_ttl())
            .await?;
        Ok(match r {
            AppendEntriesResponse::Success if cut => AppendEntriesResponse::PartialSuccess(last),
            other => other,
        })
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<RaftId>,
        RPCError<RaftId, BasicNode, RaftError<RaftId, InstallSnapshotError>>,
    > {
        self.call(RPCTypes::InstallSnapshot, &rpc, option.soft_ttl())
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<RaftId>,
        option: RPCOption,
    ) -> Result<VoteResponse<RaftId>, RPCError<RaftId, BasicNode, RaftError<RaftId>>> {
        self.call(RPCTypes::Vote, &rpc, option.soft_ttl()).await
    }
}

/// The server side: hands each request to the local Raft.
pub(crate) struct RaftService {
    pub(crate) raft: openraft::Raft<TypeConfig>,
    /// The snapshot being received and the offset its next chunk must have.
    pub(crate) chunks: Mutex<Option<(String, u64)>>,
}

#[tonic::async_trait]
impl shoal_rpc::raft_server::Raft for RaftService {
    async fn append_entries(&self, request: Request<Json>) -> Result<Response<Json>, Status> {
        let rpc = decode(request)?;
        reply(&self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<Json>) -> Result<Response<Json>, Status> {
        let rpc = decode(request)?;
        reply(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(&self, request: Request<Json>) -> Result<Response<Json>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(request)?;
        self.check_chunk(&rpc)?;
        let res = self.raft.install_snapshot(rpc).await;
        if res.is_err() {
            self.chunks.lock().unwrap_or_else(|p| p.into_inner()).take();
        }
        reply(&res)
    }
}

impl RaftService {
    /// A snapshot's chunks arrive in order from offset 0: a chunk at any other offset is
    /// refused before openraft sees it (an offset far past the data would make it allocate
    /// or seek there).
    fn check_chunk(&self, rpc: &InstallSnapshotRequest<TypeConfig>) -> Result<(), Status> {
        let id = rpc.meta.snapshot_id.clone();
        let mut chunks = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
        let expected = match chunks.as_ref() {
            _ if rpc.offset == 0 => 0,
            Some((current, next)) if *current == id => *next,
            _ => {
                return Err(Status::invalid_argument(format!(
                    "snapshot {id}: a chunk at offset {} before the chunk at offset 0",
                    rpc.offset
                )));
            }
        };
        if rpc.offset != expected {
            return Err(Status::invalid_argument(format!(
                "snapshot {id}: a chunk at offset {}, expected {expected}",
                rpc.offset
            )));
        }
        *chunks = (!rpc.done).then(|| (id, expected + rpc.data.len() as u64));
        Ok(())
    }
}

fn decode<T: DeserializeOwned>(request: Request<Json>) -> Result<T, Status> {
    serde_json::from_slice(&request.into_inner().data)
        .map_err(|e| Status::invalid_argument(format!("malformed raft request: {e}")))
}

fn reply<T: Serialize>(res: &T) -> Result<Response<Json>, Status> {
    let data = serde_json::to_vec(res)
        .map_err(|e| Status::internal(format!("failed to encode raft reply: {e}")))?;
    Ok(Response::new(json(data)))
}

#[cfg(test)]
mod append_tests {
    use super::prefix_within;

    #[test]
    fn an_append_is_cut_to_the_budget_but_never_below_one_entry() {
        assert_eq!(prefix_within(&[], 100), 0);
        assert_eq!(prefix_within(&[10, 20, 30], 100), 3);
        assert_eq!(prefix_within(&[40, 40, 40], 100), 2);
        assert_eq!(prefix_within(&[40, 60, 1], 100), 2);
        assert_eq!(prefix_within(&[500, 1], 100), 1);
        assert_eq!(prefix_within(&[50, 500], 100), 1);
    }
}
