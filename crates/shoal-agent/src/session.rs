//! The agent's session with the managers: follow the leader, take assignments, send
//! heartbeats and status reports. Reconnects (to the next manager, or the leader it was
//! pointed to) until the daemon stops.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use shoal_rpc::cluster_client::ClusterClient;
use shoal_rpc::{EndpointAck, HeartbeatRequest, SessionRequest, StatusReport};
use shoal_types::endpoint::{EndpointDelta, EndpointView};
use shoal_types::{Task, TaskStatus};
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tracing::{debug, info, warn};

use crate::worker::{Report, Worker};

/// Managers to try, shared with the daemon (which persists it for restarts).
pub type Managers = Arc<RwLock<Vec<String>>>;

pub struct Session {
    pub node_id: String,
    pub managers: Managers,
    pub worker: Arc<Worker>,
}

const RETRY: Duration = Duration::from_millis(300);

impl Session {
    /// Runs until the process ends. Reports queue up while no manager is reachable.
    pub async fn run(self, mut reports: mpsc::UnboundedReceiver<Report>) {
        let mut pending: BTreeMap<String, TaskStatus> = BTreeMap::new();
        let mut next = 0usize;
        let mut hint: Option<String> = None;
        loop {
            let addr = match hint.take() {
                Some(a) => a,
                None => {
                    let list = self.managers.read().map(|m| m.clone()).unwrap_or_default();
                    if list.is_empty() {
                        tokio::time::sleep(RETRY).await;
                        continue;
                    }
                    next = (next + 1) % list.len();
                    list[next].clone()
                }
            };
            match self.connected(&addr, &mut reports, &mut pending).await {
                Ok(()) => {}
                Err(status) => {
                    hint = shoal_rpc::leader_hint(&status).filter(|h| h != &addr);
                    debug!(manager = %addr, "session ended: {}", status.message());
                }
            }
            if hint.is_none() {
                tokio::time::sleep(RETRY).await;
            }
        }
    }

    async fn connected(
        &self,
        addr: &str,
        reports: &mut mpsc::UnboundedReceiver<Report>,
        pending: &mut BTreeMap<String, TaskStatus>,
    ) -> Result<(), tonic::Status> {
        let channel =
            shoal_rpc::channel(addr).map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let mut client = ClusterClient::new(channel);
        let mut stream = client
            .session(SessionRequest {
                node_id: self.node_id.clone(),
            })
            .await?
            .into_inner();
        info!(manager = %addr, "session established");
        // Each session starts from a full table (the manager's first delta is from 0).
        let mut view = EndpointView::default();
        let mut period = Duration::from_secs(1);
        let mut beat = tokio::time::interval(period);
        loop {
            tokio::select! {
                msg = stream.message() => {
                    let Some(a) = msg? else { return Err(tonic::Status::unavailable("session closed by the manager")) };
                    if !a.managers.is_empty() && let Ok(mut m) = self.managers.write() {
                        *m = a.managers.clone();
                    }
                    if a.heartbeat_period_ms > 0 && Duration::from_millis(a.heartbeat_period_ms) != period {
                        period = Duration::from_millis(a.heartbeat_period_ms);
                        beat = tokio::time::interval(period);
                    }
                    if !a.endpoints.is_empty() {
                        let delta: EndpointDelta = serde_json::from_slice(&a.endpoints)
                            .map_err(|e| tonic::Status::data_loss(format!("endpoint delta does not parse: {e}")))?;
                        // A delta for another base version means we missed one: reconnect
                        // and start again from a full table.
                        view.apply(&delta).map_err(tonic::Status::data_loss)?;
                        self.worker.apply_endpoints(Arc::new(view.clone())).await;
                        client.ack_endpoints(EndpointAck { node_id: self.node_id.clone(), version: view.version }).await?;
                    }
                    // Tasks after endpoints: a new task's networks are then known here.
                    match serde_json::from_slice::<Vec<Task>>(&a.tasks) {
                        Ok(tasks) => self.worker.apply(tasks),
                        Err(e) => warn!("ignoring assignments that do not parse: {e}"),
                    }
                }
                _ = beat.tick() => {
                    client.heartbeat(HeartbeatRequest { node_id: self.node_id.clone() }).await?;
                }
                Some((id, st)) = reports.recv() => {
                    pending.insert(id, st);
                    while let Ok((id, st)) = reports.try_recv() {
                        pending.insert(id, st);
                    }
                    send_reports(&mut client, &self.node_id, pending).await?;
                }
            }
            if !pending.is_empty() {
                send_reports(&mut client, &self.node_id, pending).await?;
            }
        }
    }
}

/// Sends queued reports; keeps them queued if the manager cannot take them now.
async fn send_reports(
    client: &mut ClusterClient<Channel>,
    node_id: &str,
    pending: &mut BTreeMap<String, TaskStatus>,
) -> Result<(), tonic::Status> {
    let updates: Vec<(&String, &TaskStatus)> = pending.iter().collect();
    let data = serde_json::to_vec(&updates).map_err(|e| tonic::Status::internal(e.to_string()))?;
    client
        .report_status(StatusReport {
            node_id: node_id.to_string(),
            updates: data,
        })
        .await?;
    pending.clear();
    Ok(())
}
