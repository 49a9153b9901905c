//! Request and response bodies. Where a type mirrors a docker object its fields use docker's
//! PascalCase names, so `--format '{{.Spec.Name}}'` and scripts written for docker carry over.
//!
//! Objects of the model (`Node`, `Service`, `Task`, `ServiceSpec`) come from shoal-types; the
//! OpenAPI document describes them as plain objects (`value_type = Object`) because
//! shoal-types knows nothing of HTTP.

use serde::{Deserialize, Serialize};
use shoal_types::{Availability, NodeRole, Service, Task};
use utoipa::{IntoParams, ToSchema};

/// What the local daemon is: `GET /v1/info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct Info {
    #[serde(rename = "NodeID")]
    pub node_id: String,
    pub hostname: String,
    /// `manager`, `worker`, or empty while the node is not part of a swarm.
    pub role: String,
    #[serde(rename = "ClusterID")]
    pub cluster_id: String,
    /// The node's own address (what `--advertise-addr` chose).
    pub node_addr: String,
    /// `ip:port` of every manager known to this node.
    pub managers: Vec<String>,
}

impl Info {
    /// Whether this node is part of a swarm.
    pub fn is_active(&self) -> bool {
        !self.role.is_empty()
    }

    pub fn is_manager(&self) -> bool {
        self.role == "manager"
    }
}

/// `POST /v1/swarm/init`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct InitRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise_addr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_addr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_period_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct InitResponse {
    #[serde(rename = "NodeID")]
    pub node_id: String,
    pub worker_token: String,
    pub manager_token: String,
    /// `ip:port` that joining nodes dial.
    pub manager_addr: String,
}

/// `POST /v1/swarm/join`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct JoinRequest {
    pub token: String,
    /// `ip:port` of a manager.
    pub remote_addr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise_addr: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct JoinResponse {
    #[serde(rename = "NodeID")]
    pub node_id: String,
    #[schema(value_type = String, example = "worker")]
    pub role: NodeRole,
}

/// `GET /v1/swarm/join-token/{role}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct JoinToken {
    pub token: String,
    pub manager_addr: String,
}

/// `POST /v1/nodes/{key}/update`: only what is given changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct NodeUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "drain")]
    pub availability: Option<Availability>,
    /// `key=value` labels to add or replace.
    #[serde(default)]
    pub label_add: Vec<String>,
    /// Label keys to remove.
    #[serde(default)]
    pub label_rm: Vec<String>,
}

/// A service with the count of its tasks, as `GET /v1/services` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ServiceView {
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub service: Service,
    #[serde(rename = "ServiceStatus")]
    pub status: ServiceStatus,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceStatus {
    pub running_tasks: u64,
    pub desired_tasks: u64,
}

/// `POST /v1/services`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreateResponse {
    #[serde(rename = "ID")]
    pub id: String,
}

/// Query of `GET /v1/tasks`: both filters take a name or an id (prefix).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TaskFilter {
    /// Only tasks of this service (name or id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Only tasks on this node (hostname or id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// A task with the hostname of its node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TaskView {
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub task: Task,
    /// Empty while the task is not assigned.
    #[serde(rename = "NodeHostname", default)]
    pub node_hostname: String,
}

/// One line a task wrote to stdout or stderr.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct LogLine {
    /// The task's name: `vote.1.<task id>`.
    pub task: String,
    /// The hostname of the node that ran it.
    pub node: String,
    pub line: String,
}

/// `GET /v1/tasks/{key}/pid`: the host pid of a task running on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Pid {
    #[serde(rename = "PID")]
    pub pid: u32,
}

/// Query of `POST /v1/swarm/leave` and `DELETE /v1/nodes/{key}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ForceQuery {
    /// Leave or remove even when that is unsafe (a manager, a node that is not down).
    /// `?force`, `?force=1` and `?force=true` all count.
    #[serde(default, deserialize_with = "query_flag")]
    pub force: bool,
}

fn query_flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let s = String::deserialize(d)?;
    match s.as_str() {
        "" | "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        other => Err(serde::de::Error::custom(format!(
            "invalid flag value {other:?}: use true or false"
        ))),
    }
}
