//! `/services`, `/tasks` and this node's tasks as `/containers`.

use std::collections::BTreeMap;
use std::convert::Infallible;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use shoal_docker::filters::Filters;
use shoal_docker::models as d;
use shoal_docker::{containers, objects, spec};
use shoal_types::{Service, TaskState};

use super::{Key, QueryMap, Shared, flag};
use crate::error::{ApiError, ApiResult};
use crate::logs::Follow;
use crate::server::registry_options;
use crate::types::{LogLine, ServiceView, TaskFilter, TaskView};

fn filters(q: &QueryMap, accepted: &[&str]) -> ApiResult<Filters> {
    Ok(Filters::parse(
        q.get("filters").map(String::as_str),
        accepted,
    )?)
}

fn docker_service(v: &ServiceView) -> d::Service {
    objects::service(&v.service, v.status.running_tasks, v.status.desired_tasks)
}

pub(super) async fn list(
    State(b): State<Shared>,
    Query(q): Query<QueryMap>,
) -> ApiResult<Json<Vec<d::Service>>> {
    let f = filters(&q, &["id", "label", "mode", "name"])?;
    let services = b.services().await?;
    Ok(Json(
        services
            .iter()
            .filter(|v| f.service(&v.service))
            .map(docker_service)
            .collect(),
    ))
}

pub(super) async fn inspect(State(b): State<Shared>, Key(id): Key) -> ApiResult<Json<d::Service>> {
    b.service(id).await.map(|v| Json(docker_service(&v)))
}

pub(super) async fn remove(State(b): State<Shared>, Key(id): Key) -> ApiResult<StatusCode> {
    b.remove_service(id).await.map(|_| StatusCode::OK)
}

pub(super) async fn create(
    State(b): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let spec = spec::from_docker(shoal_docker::parse(&body)?, None)?;
    let r = b
        .create_service_with(spec, registry_options(true, &headers))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({"ID": r.id, "Warnings": r.warnings})),
    ))
}

/// `POST /services/{id}/update?version=N`: refused when the service changed since the
/// client read version N, as Swarm does ("update out of sequence"). The manager checks N
/// when it applies the update, so two clients that read the same version cannot both win.
pub(super) async fn update(
    State(b): State<Shared>,
    Key(id): Key,
    Query(q): Query<QueryMap>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Json<serde_json::Value>> {
    let current = b.service(id.clone()).await?.service;
    let version: u64 = q
        .get("version")
        .ok_or_else(|| ApiError::bad_request("the update needs the version it was made from (?version=N, the service's Version.Index)"))?
        .parse()
        .map_err(|_| ApiError::bad_request("version must be a number (the service's Version.Index)"))?;
    if q.get("rollback").is_some_and(|r| r == "previous") {
        // A rollback names no spec to check against later: checked here.
        if version != current.version {
            return Err(ApiError::conflict(format!(
                "update out of sequence: service {} is at version {} and this update was made from version {version}; read it again and retry",
                current.spec.name, current.version
            )));
        }
        b.rollback_service(current.id).await?;
        return Ok(Json(serde_json::json!({"Warnings": []})));
    }
    let spec = spec::from_docker(shoal_docker::parse(&body)?, Some(&current.spec))?;
    let opts = crate::ServiceOptions {
        version: Some(version),
        ..registry_options(true, &headers)
    };
    let r = b.update_service_with(current.id, spec, opts).await?;
    Ok(Json(serde_json::json!({"Warnings": r.warnings})))
}

/// How often a followed log is read again for new lines.
const FOLLOW_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// How log lines are written to docker's stream: each framed with its stream (1, stdout)
/// and length, after the time (`?timestamps=1`) and the details the CLI reads to name the
/// task and node (`?details=1`).
struct Framing {
    service_id: String,
    /// Node hostname to id.
    nodes: BTreeMap<String, String>,
    details: bool,
    timestamps: bool,
}

impl Framing {
    fn frames<'a>(&self, lines: impl IntoIterator<Item = &'a LogLine>) -> Vec<u8> {
        let mut body = Vec::new();
        for l in lines {
            let mut text = String::new();
            if self.timestamps
                && let Some(ts) = &l.timestamp
            {
                text.push_str(ts);
                text.push(' ');
            }
            if self.details {
                let task_id = l.task.rsplit('.').next().unwrap_or_default();
                let node_id = self.nodes.get(&l.node).cloned().unwrap_or_default();
                text.push_str(&format!(
                    "com.docker.swarm.node.id={node_id},com.docker.swarm.service.id={},com.docker.swarm.task.id={task_id} ",
                    self.service_id
                ));
            }
            text.push_str(&l.line);
            text.push('\n');
            body.push(1u8);
            body.extend_from_slice(&[0, 0, 0]);
            body.extend_from_slice(&(text.len() as u32).to_be_bytes());
            body.extend_from_slice(text.as_bytes());
        }
        body
    }
}

/// `GET /services/{id}/logs`: the tasks' logs as docker's multiplexed stream; with
/// `?follow=1` the stream stays open and carries each new line (the logs are read again
/// every second, as `shoal service logs -f` does) until the client goes or the service is
/// removed.
pub(super) async fn logs(
    State(b): State<Shared>,
    Key(id): Key,
    Query(q): Query<QueryMap>,
) -> ApiResult<Response> {
    let svc = b.service(id.clone()).await?.service;
    let lines = b.service_logs(id.clone()).await?;
    let nodes: BTreeMap<String, String> = b
        .nodes()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|n| (n.description.hostname.clone(), n.id))
        .collect();
    let framing = Framing {
        service_id: svc.id,
        nodes,
        details: flag(&q, "details"),
        timestamps: flag(&q, "timestamps"),
    };
    let first = framing.frames(&lines);
    let content_type = [(
        header::CONTENT_TYPE,
        "application/vnd.docker.multiplexed-stream",
    )];
    if !flag(&q, "follow") {
        return Ok((content_type, first).into_response());
    }
    // Everything read so far is sent; later reads send only what is new.
    let mut seen = Follow::default();
    seen.new_lines(&lines);
    let first = (!first.is_empty()).then_some(first);
    let stream = futures::stream::unfold(
        (b, id, seen, framing, first),
        |(b, id, mut seen, framing, first)| async move {
            if let Some(chunk) = first {
                let next = (b, id, seen, framing, None);
                return Some((Ok::<_, Infallible>(Bytes::from(chunk)), next));
            }
            loop {
                tokio::time::sleep(FOLLOW_POLL).await;
                // The service is gone (or this node can no longer read it): the stream
                // ends, as dockerd's does when a service is removed.
                let lines = b.service_logs(id.clone()).await.ok()?;
                let new = seen.new_lines(&lines);
                if !new.is_empty() {
                    let chunk = Bytes::from(framing.frames(new));
                    return Some((Ok(chunk), (b, id, seen, framing, None)));
                }
            }
        },
    );
    Ok((content_type, Body::from_stream(stream)).into_response())
}

/// Tasks with their services' specs, for the filters and the task spec docker shows.
async fn tasks_and_services(
    b: &Shared,
    filter: TaskFilter,
) -> ApiResult<(Vec<TaskView>, BTreeMap<String, Service>)> {
    let tasks = b.tasks(filter).await?;
    let services = b
        .services()
        .await?
        .into_iter()
        .map(|v| (v.service.id.clone(), v.service))
        .collect();
    Ok((tasks, services))
}

fn up_to_date(t: &shoal_types::Task, s: Option<&Service>) -> bool {
    s.is_some_and(|s| {
        t.spec == s.spec.task_template.container_spec && t.spec_version >= s.force_version
    })
}

pub(super) async fn list_tasks(
    State(b): State<Shared>,
    Query(q): Query<QueryMap>,
) -> ApiResult<Json<Vec<d::Task>>> {
    let f = filters(
        &q,
        &[
            "_up-to-date",
            "desired-state",
            "id",
            "label",
            "name",
            "node",
            "service",
        ],
    )?;
    // One service named: ask the backend for its tasks only.
    let service = f
        .get("service")
        .filter(|s| s.len() == 1)
        .map(|s| s[0].clone());
    let (tasks, services) = tasks_and_services(
        &b,
        TaskFilter {
            service,
            node: None,
        },
    )
    .await?;
    Ok(Json(
        tasks
            .iter()
            .filter(|v| {
                let s = services.get(&v.task.service_id);
                f.task(&v.task, s, &v.node_hostname, up_to_date(&v.task, s))
            })
            .map(|v| objects::task(&v.task, services.get(&v.task.service_id).map(|s| &s.spec)))
            .collect(),
    ))
}

pub(super) async fn get_task(State(b): State<Shared>, Key(id): Key) -> ApiResult<Json<d::Task>> {
    let v = b.task(id).await?;
    let s = b.service(v.task.service_id.clone()).await.ok();
    Ok(Json(objects::task(
        &v.task,
        s.as_ref().map(|s| &s.service.spec),
    )))
}

/// This node's tasks (`docker ps`): running ones, every one with `?all=1`.
pub(super) async fn list_containers(
    State(b): State<Shared>,
    Query(q): Query<QueryMap>,
) -> ApiResult<Json<Vec<d::ContainerSummary>>> {
    let all = flag(&q, "all");
    let mut tasks = b.local_tasks().await?;
    tasks.sort_by_key(|t| std::cmp::Reverse(t.created_at));
    let names = network_names(&b).await;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Ok(Json(
        tasks
            .iter()
            .filter(|t| all || t.status.state == TaskState::Running)
            .map(|t| containers::summary(t, &names, now_ms))
            .collect(),
    ))
}

/// One of this node's tasks by id, id prefix or container name (`vote.1.<id>`).
pub(super) async fn inspect_container(
    State(b): State<Shared>,
    Key(id): Key,
) -> ApiResult<Json<d::ContainerInspectResponse>> {
    let key = id.trim_start_matches('/');
    let tasks = b.local_tasks().await?;
    let mut hits = tasks
        .iter()
        .filter(|t| t.id.starts_with(key) || containers::name(t) == key);
    match (hits.next(), hits.next()) {
        (Some(t), None) => Ok(Json(containers::inspect(t, &network_names(&b).await))),
        (Some(_), Some(_)) => Err(ApiError::bad_request(format!(
            "{key} names more than one container on this node: give more of its id"
        ))),
        (None, _) => Err(ApiError::not_found(format!("No such container: {key}"))),
    }
}

/// Network id to name, for the containers' network settings (ids where the list fails).
async fn network_names(b: &Shared) -> BTreeMap<String, String> {
    b.networks()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|n| (n.id, n.name))
        .collect()
}
