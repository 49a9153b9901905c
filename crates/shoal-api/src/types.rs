//! Request and response bodies. Where a type mirrors a docker object its fields use docker's
//! PascalCase names, so `--format '{{.Spec.Name}}'` and scripts written for docker carry over.
//!
//! Objects of the model (`Node`, `Service`, `Task`, `ServiceSpec`) come from shoal-types; the
//! OpenAPI document describes them as plain objects (`value_type = Object`) because
//! shoal-types knows nothing of HTTP.

use std::collections::BTreeMap;

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
    /// Heartbeat periods a node may miss before it is marked Down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_grace: Option<u32>,
    /// Subnet of the ingress network (`10.0.0.0/24`); the daemon picks one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_subnet: Option<String>,
    /// How long node certificates are valid (`--cert-expiry`; 90 days when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_expiry_ms: Option<u64>,
    /// A root CA to use instead of a new one (`--ca-cert`/`--ca-key`): its certificate and
    /// its PKCS#8 key, PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_key: Option<String>,
    /// `--force-new-cluster`: on a manager that lost its quorum, start a new cluster of this
    /// manager alone, with its state.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force_new_cluster: bool,
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
    /// The subnet the ingress network got.
    #[serde(default)]
    pub ingress_subnet: String,
    /// Things the daemon chose that the user should know, one sentence each; `shoal init`
    /// prints them after its usual text.
    #[serde(default)]
    pub notes: Vec<String>,
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

/// `GET /v1/swarm/ca`: the cluster's root CA, as `shoal ca` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ClusterCa {
    /// PEM.
    pub certificate: String,
    /// `sha256:<hex>` of the certificate's DER: what join tokens pin.
    pub digest: String,
    /// RFC 3339.
    pub not_after: String,
    /// `ca --rotate` in progress (managers only): the certificate above stays the root
    /// until it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<CaRotationStatus>,
}

/// How far a root CA rotation is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct CaRotationStatus {
    #[serde(rename = "ID")]
    pub id: String,
    /// The new root's digest.
    pub digest: String,
    /// Nodes (not Down) with a certificate from the new root, and how many it waits for.
    pub renewed: usize,
    pub total: usize,
    /// Hostnames of the nodes still to renew.
    pub waiting: Vec<String>,
}

/// `POST /v1/swarm/ca/rotate`: a new root (made by the manager), or the one given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct CaRotateRequest {
    /// PEM of the new root's certificate (`--ca-cert`), with `ca_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
    /// PEM of its PKCS#8 key (`--ca-key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_key: Option<String>,
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
    /// `node promote` (manager) or `node demote` (worker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "manager")]
    pub role: Option<NodeRole>,
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
    /// Ready nodes that have applied this service's latest endpoint change (DNS records,
    /// load-balancer forwarding).
    #[serde(default)]
    pub endpoint_nodes_synced: usize,
    /// Ready nodes that must apply it; 0 when the service has no endpoint to sync.
    #[serde(default)]
    pub endpoint_nodes: usize,
}

impl ServiceStatus {
    /// Whether every node has applied the service's latest endpoint change.
    pub fn endpoints_synced(&self) -> bool {
        self.endpoint_nodes_synced >= self.endpoint_nodes
    }
}

/// `POST /v1/services` and `POST /v1/networks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreateResponse {
    #[serde(rename = "ID")]
    pub id: String,
}

/// `POST /v1/services`: the new service's id and what the user should know (docker's
/// `Warnings`, e.g. an image whose digest could not be recorded).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceCreated {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// `POST /v1/services/{key}/update`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceUpdated {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// How `service create|update` treat the image: `queryRegistry=false` (the CLI's
/// `--no-resolve-image`) keeps a tag unpinned; `X-Registry-Auth` (base64url JSON of
/// `{"username","password","serveraddress"}`, as docker sends it) is
/// `--with-registry-auth`'s login for the image's registry.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceOptions {
    pub query_registry: bool,
    pub registry_auth: Option<String>,
    /// `update` only: the service's version the new spec was made from (`?version=N`, as
    /// docker's); the manager refuses the update if the service changed since.
    pub version: Option<u64>,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions {
            query_registry: true,
            registry_auth: None,
            version: None,
        }
    }
}

impl std::fmt::Debug for ServiceOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceOptions")
            .field("query_registry", &self.query_registry)
            .field("version", &self.version)
            .field(
                "registry_auth",
                &self.registry_auth.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// The query of `service create|update`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct RegistryQuery {
    /// Resolve the image's tag to a digest and pin the service to it (default true).
    #[serde(default = "yes")]
    pub query_registry: bool,
    /// `update` only: the service's version (`Version.Index`) the spec was made from; the
    /// update is refused ("update out of sequence") if the service changed since.
    #[serde(default)]
    pub version: Option<u64>,
}

fn yes() -> bool {
    true
}

/// One image of the local node: `GET /v1/images` (what `image ls` shows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ImageSummary {
    /// `repo:tag` names (familiar form), empty for an image no tag names any more.
    pub repo_tags: Vec<String>,
    /// `repo@sha256:…`: what the registry called it.
    pub repo_digests: Vec<String>,
    /// The config digest (`sha256:…`), docker's image id.
    #[serde(rename = "ID")]
    pub id: String,
    /// The image config's `created` (RFC 3339), empty when it has none.
    pub created: String,
    /// Bytes of its layers as stored (compressed).
    pub size: u64,
    /// The local tasks whose container uses it.
    pub containers: Vec<String>,
}

/// `POST /v1/images/prune`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ImagesPruned {
    /// `Untagged: …` and `Deleted: …` lines, as docker prints them.
    pub images_deleted: Vec<String>,
    pub space_reclaimed: u64,
}

/// `POST /v1/networks`: a new overlay network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkCreate {
    pub name: String,
    /// Only `overlay` is supported.
    #[serde(default = "overlay")]
    #[schema(default = "overlay")]
    pub driver: String,
    /// IPv4 subnet (`10.0.1.0/24`); the daemon picks a free one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    /// Gateway address inside the subnet; the subnet's first host when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Whether standalone processes may attach, besides services' tasks.
    #[serde(default)]
    pub attachable: bool,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

fn overlay() -> String {
    "overlay".into()
}

impl NetworkCreate {
    /// A request for an overlay network named `name` with every default.
    pub fn new(name: impl Into<String>) -> NetworkCreate {
        NetworkCreate {
            name: name.into(),
            driver: overlay(),
            subnet: None,
            gateway: None,
            attachable: false,
            labels: BTreeMap::new(),
        }
    }
}

/// `GET /v1/endpoints/stats`: how long endpoint-table changes took to be applied by every
/// node, over the samples since the daemon started or the last `DELETE`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointStats {
    /// How many changes were measured.
    pub count: usize,
    pub p50_ms: u64,
    pub p99_ms: u64,
    pub max_ms: u64,
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
    /// When the container wrote it (RFC 3339); none for a host command's output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
}

/// `GET /v1/tasks/{key}/pid`: the host pid of a task running on this node, and for a
/// container, its runc id and root (`shoal exec` runs `runc exec` there).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Pid {
    #[serde(rename = "PID")]
    pub pid: u32,
    #[serde(rename = "Container", default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(rename = "RuncRoot", default, skip_serializing_if = "Option::is_none")]
    pub runc_root: Option<String>,
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

/// Query of `GET /v1/events`, as `shoal events` sends it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Also the kept events from this time on (ms since the epoch); without it or `until`,
    /// only events from now on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
    /// End the stream once this time has passed (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
    /// `{"type":["service"],"event":["create"]}`: values of one key are alternatives, every
    /// key must match (keys: type, event, scope, service, node, network, task).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<String>,
}

/// What a daemon's event feed gives a subscriber: the events it keeps, oldest first, and
/// the ones after them as they happen (none lost or repeated between the two).
pub struct EventFeed {
    pub past: Vec<shoal_types::Event>,
    pub live: tokio::sync::broadcast::Receiver<shoal_types::Event>,
}
