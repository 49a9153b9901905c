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
        // A host command's output: the rotated file and the current one, at most
        // `LOG_MAX_BYTES` of their end (one gRPC answer stays under 4 MiB).
        let read = tokio::task::spawn_blocking(move || shoal_exec::read_logs(&run_dir, None))
            .await
            .map_err(|e| Status::internal(format!("reading the task's log failed: {e}")))?;
        match read {
            Ok(data) => Ok(Response::new(LogsResponse {
                data: last_bytes(data, crate::container::LOG_MAX_BYTES as usize),
                timestamped: false,
            })),
            Err(e) => Err(Status::internal(e.to_string())),
        }
    }
}

/// The whole lines within the last `max` bytes of `data`.
fn last_bytes(mut data: Vec<u8>, max: usize) -> Vec<u8> {
    if data.len() <= max {
        return data;
    }
    // The first line that starts at or after the cut (the byte before it is a newline).
    let cut = data.len() - max - 1;
    let start = data[cut..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(data.len(), |i| cut + i + 1);
    data.drain(..start);
    data
}

#[cfg(test)]
mod tests {
    use super::last_bytes;

    #[test]
    fn the_last_bytes_are_whole_lines() {
        assert_eq!(last_bytes(b"ab\ncd\n".to_vec(), 10), b"ab\ncd\n");
        assert_eq!(last_bytes(b"ab\ncd\nef\n".to_vec(), 5), b"ef\n");
        assert_eq!(last_bytes(b"ab\ncd\nef\n".to_vec(), 6), b"cd\nef\n");
        assert_eq!(last_bytes(b"abcdef".to_vec(), 3), b"");
    }
}
