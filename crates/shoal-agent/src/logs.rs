//! The `Agent` gRPC service: what managers ask of this node directly (task logs).

use std::sync::Arc;

use shoal_rpc::agent_server::Agent;
use shoal_rpc::{LogsRequest, LogsResponse};
use tonic::{Request, Response, Status};

use crate::worker::Worker;

pub struct AgentService {
    pub worker: Arc<Worker>,
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn task_logs(&self, req: Request<LogsRequest>) -> Result<Response<LogsResponse>, Status> {
        let id = req.into_inner().task_id;
        if id.is_empty() || id.contains('/') || id.contains("..") {
            return Err(Status::invalid_argument("invalid task id"));
        }
        let run_dir = self.worker.run_dir(&id);
        // A container's log is conmon's (k8s-file lines); a host command's is its output.
        let container_log = crate::container::log_path(&run_dir);
        if let Ok(text) = tokio::fs::read_to_string(&container_log).await {
            let mut data = String::new();
            for e in shoal_oci::logfile::parse(&text) {
                data.push_str(&e.time);
                data.push(' ');
                data.push_str(&e.text);
                data.push('\n');
            }
            return Ok(Response::new(LogsResponse {
                data: data.into_bytes(),
                timestamped: true,
            }));
        }
        let path = shoal_exec::log_path(&run_dir);
        match tokio::fs::read(&path).await {
            Ok(data) => Ok(Response::new(LogsResponse {
                data,
                timestamped: false,
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Response::new(LogsResponse {
                data: Vec::new(),
                timestamped: false,
            })),
            Err(e) => Err(Status::internal(format!(
                "failed to read {}: {e}",
                path.display()
            ))),
        }
    }
}
