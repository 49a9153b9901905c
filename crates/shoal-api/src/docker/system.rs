//! `/_ping`, `/version`, `/info`, `/swarm`, `/nodes` and `/networks`.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use shoal_docker::filters::Filters;
use shoal_docker::models as d;
use shoal_docker::{objects, version};
use shoal_types::{Availability, NodeRole};

use super::{Key, QueryMap, Shared, flag};
use crate::error::{ApiError, ApiResult};
use crate::types::{NetworkCreate, NodeUpdate};

/// `Swarm: active/manager` and the version the client negotiates down to.
pub(super) async fn ping(State(b): State<Shared>) -> impl IntoResponse {
    let swarm = match b.info().await {
        Ok(i) if i.is_manager() => "active/manager",
        Ok(i) if i.is_active() => "active/worker",
        _ => "inactive",
    };
    let mut h = HeaderMap::new();
    h.insert("api-version", HeaderValue::from_static(version::MAX));
    h.insert("ostype", HeaderValue::from_static("linux"));
    h.insert("docker-experimental", HeaderValue::from_static("false"));
    h.insert("swarm", HeaderValue::from_static(swarm));
    h.insert(
        "cache-control",
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert("pragma", HeaderValue::from_static("no-cache"));
    (h, "OK")
}

fn kernel_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub(super) async fn version() -> Json<d::SystemVersion> {
    Json(objects::system_version(&kernel_version()))
}

fn mem_total() -> i64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        .map_or(0, |kb| kb * 1024)
}

pub(super) async fn info(State(b): State<Shared>) -> ApiResult<Json<d::SystemInfo>> {
    let i = b.info().await?;
    let nodes = if i.is_manager() {
        b.nodes().await.ok()
    } else {
        None
    };
    let managers = nodes
        .iter()
        .flatten()
        .filter_map(|n| {
            n.manager_status
                .as_ref()
                .map(|m| (n.id.clone(), m.addr.clone()))
        })
        .collect();
    let facts = objects::InfoFacts {
        node_id: i.node_id.clone(),
        hostname: i.hostname.clone(),
        node_addr: i.node_addr.clone(),
        cluster_id: i.cluster_id.clone(),
        is_manager: i.is_manager(),
        managers,
        nodes: nodes.as_ref().map(Vec::len),
        kernel_version: kernel_version(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as i64),
        memory_bytes: mem_total(),
    };
    Ok(Json(objects::info(&facts)))
}

pub(super) async fn swarm_inspect(State(b): State<Shared>) -> ApiResult<Json<serde_json::Value>> {
    let i = b.info().await?;
    if !i.is_manager() {
        return Err(ApiError::unavailable(
            "This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. Please run this command on a manager node.",
        ));
    }
    let worker = b.join_token(NodeRole::Worker).await?;
    let manager = b.join_token(NodeRole::Manager).await?;
    Ok(Json(serde_json::json!({
        "ID": i.cluster_id,
        "Version": {"Index": 1},
        "Spec": {"Name": "default", "Labels": {}},
        "JoinTokens": {"Worker": worker.token, "Manager": manager.token},
        "RootRotationInProgress": false,
        "DataPathPort": 4789,
    })))
}

pub(super) async fn swarm_leave(
    State(b): State<Shared>,
    Query(q): Query<QueryMap>,
) -> ApiResult<StatusCode> {
    b.leave(flag(&q, "force")).await.map(|_| StatusCode::OK)
}

/// `swarm init|join|update|unlock`: shoal's own CLI does these (`shoal init`, `shoal join`):
/// they take options docker's requests do not carry (the data dir, the lab's addresses).
///
/// The body is read before the answer: a reply sent while the client still writes its body
/// ends in a reset, which the CLI reports as "broken pipe" instead of this message.
pub(super) async fn unsupported_swarm(_body: axum::body::Bytes) -> ApiError {
    ApiError::new(
        501,
        "this swarm operation is not served through the Docker Engine API by shoal: use `shoal init`, `shoal join` or `shoal swarm …` (autolock and swarm updates are not implemented)",
    )
}

pub(super) async fn unsupported_secret() -> ApiError {
    ApiError::new(501, "secrets are not supported by shoal")
}

pub(super) async fn unsupported_config() -> ApiError {
    ApiError::new(501, "configs are not supported by shoal")
}

/// `GET /secrets` and `/configs`: shoal has none (stacks list them).
pub(super) async fn empty_list() -> Json<Vec<serde_json::Value>> {
    Json(vec![])
}

/// The docker CLI asks before `service create` so it can pin the digest itself; shoal's
/// manager pins it when the service is created, so the CLI's warning is harmless.
pub(super) async fn no_distribution() -> ApiError {
    ApiError::new(
        501,
        "shoal does not serve image distribution queries: the manager resolves and pins the image's digest itself when the service is created",
    )
}

pub(super) async fn list_nodes(
    State(b): State<Shared>,
    Query(q): Query<QueryMap>,
) -> ApiResult<Json<Vec<d::Node>>> {
    let f = Filters::parse(
        q.get("filters").map(String::as_str),
        &["id", "label", "membership", "name", "node.label", "role"],
    )?;
    let nodes = b.nodes().await?;
    Ok(Json(
        nodes
            .iter()
            .filter(|n| f.node(n))
            .map(objects::node)
            .collect(),
    ))
}

pub(super) async fn get_node(State(b): State<Shared>, Key(id): Key) -> ApiResult<Json<d::Node>> {
    b.node(id).await.map(|n| Json(objects::node(&n)))
}

pub(super) async fn remove_node(
    State(b): State<Shared>,
    Key(id): Key,
    Query(q): Query<QueryMap>,
) -> ApiResult<StatusCode> {
    b.remove_node(id, flag(&q, "force"))
        .await
        .map(|_| StatusCode::OK)
}

/// `docker node update|promote|demote`: availability, labels and role.
pub(super) async fn update_node(
    State(b): State<Shared>,
    Key(id): Key,
    body: axum::body::Bytes,
) -> ApiResult<StatusCode> {
    let spec: d::NodeSpec = shoal_docker::parse(&body)?;
    let node = b.node(id.clone()).await?;
    let role = match spec.role {
        Some(d::NodeSpecRoleEnum::MANAGER) => Some(NodeRole::Manager),
        Some(d::NodeSpecRoleEnum::WORKER) => Some(NodeRole::Worker),
        _ => None,
    };
    let labels = spec.labels.unwrap_or_default();
    let update = NodeUpdate {
        availability: match spec.availability {
            Some(d::NodeSpecAvailabilityEnum::ACTIVE) => Some(Availability::Active),
            Some(d::NodeSpecAvailabilityEnum::PAUSE) => Some(Availability::Pause),
            Some(d::NodeSpecAvailabilityEnum::DRAIN) => Some(Availability::Drain),
            _ => None,
        },
        label_add: labels
            .iter()
            .filter(|(k, v)| node.spec.labels.get(*k) != Some(v))
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        label_rm: node
            .spec
            .labels
            .keys()
            .filter(|k| !labels.contains_key(*k))
            .cloned()
            .collect(),
        role: role.filter(|r| *r != node.spec.role),
    };
    b.update_node(id, update).await.map(|_| StatusCode::OK)
}

pub(super) async fn list_networks(
    State(b): State<Shared>,
    Query(q): Query<QueryMap>,
) -> ApiResult<Json<Vec<d::Network>>> {
    let f = Filters::parse(
        q.get("filters").map(String::as_str),
        &["dangling", "driver", "id", "label", "name", "scope", "type"],
    )?;
    let nets = b.networks().await?;
    Ok(Json(
        nets.iter()
            .filter(|n| f.network(n))
            .map(objects::network)
            .collect(),
    ))
}

pub(super) async fn get_network(
    State(b): State<Shared>,
    Key(id): Key,
) -> ApiResult<Json<d::Network>> {
    b.network(id).await.map(|n| Json(objects::network(&n)))
}

pub(super) async fn remove_network(State(b): State<Shared>, Key(id): Key) -> ApiResult<StatusCode> {
    b.remove_network(id).await.map(|_| StatusCode::NO_CONTENT)
}

pub(super) async fn create_network(
    State(b): State<Shared>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let r = objects::network_create(shoal_docker::parse(&body)?)?;
    let create = NetworkCreate {
        name: r.name,
        driver: r.driver,
        subnet: r.subnet,
        gateway: r.gateway,
        attachable: r.attachable,
        labels: r.labels,
    };
    let r = b.create_network(create).await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({"Id": r.id, "Warning": ""})),
    ))
}
