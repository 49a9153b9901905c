//! The `/v1` routes, the OpenAPI document generated from the same handlers, and `serve`.
//!
//! Each handler is annotated with `#[utoipa::path]` and registered through utoipa-axum's
//! `routes!`, which takes the method and path from that annotation: a route can't exist
//! without appearing in `/v1/openapi.json`, and the document can't describe a route that
//! isn't served.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use axum::Json;
use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::serve::Listener;
use serde::de::DeserializeOwned;
use shoal_types::{NodeRole, ServiceSpec};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::backend::{Backend, DynBackend};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::types::*;

type Shared = Arc<dyn DynBackend>;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "shoal",
        description = "The shoal daemon's API: swarm membership, nodes, services, tasks and \
                       networks. \
                       Served on /run/shoal/shoal.sock, and over TCP with TLS client \
                       certificates where shoald is started with -H tcp://... --tlsverify; \
                       errors are {\"message\": ...}."
    ),
    components(schemas(ErrorBody)),
    tags(
        (name = "system", description = "This daemon and its swarm membership"),
        (name = "nodes"), (name = "services"), (name = "tasks"), (name = "networks"),
        (name = "images", description = "The local node's images"),
        (name = "endpoints", description = "The service endpoint tables nodes apply"),
        (name = "events", description = "The cluster's events, as `docker events`")
    )
)]
struct ApiDoc;

/// All `/v1` routes with their OpenAPI description; state is added by [`router`].
fn api_router() -> OpenApiRouter<Shared> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(info))
        .routes(routes!(swarm_init))
        .routes(routes!(swarm_join))
        .routes(routes!(swarm_leave))
        .routes(routes!(join_token))
        .routes(routes!(rotate_join_token))
        .routes(routes!(cluster_ca))
        .routes(routes!(rotate_ca))
        .routes(routes!(list_nodes))
        .routes(routes!(get_node, remove_node))
        .routes(routes!(update_node))
        .routes(routes!(list_services, create_service))
        .routes(routes!(get_service, remove_service))
        .routes(routes!(update_service))
        .routes(routes!(rollback_service))
        .routes(routes!(service_logs))
        .routes(routes!(list_images))
        .routes(routes!(remove_image))
        .routes(routes!(prune_images))
        .routes(routes!(list_tasks))
        .routes(routes!(get_task))
        .routes(routes!(task_pid))
        .routes(routes!(list_networks, create_network))
        .routes(routes!(get_network, remove_network))
        .routes(routes!(endpoint_stats, reset_endpoint_stats))
        .routes(routes!(events))
        .routes(routes!(openapi_json))
}

/// The OpenAPI 3.1 document of every route [`router`] serves.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_router().split_for_parts().1
}

/// The HTTP API over `backend`. Unknown routes answer 404 with a JSON message.
pub fn router<B: Backend>(backend: Arc<B>) -> Router {
    let shared: Shared = backend;
    let (router, _) = api_router().split_for_parts();
    router
        .merge(crate::docker::router())
        .fallback(|| async {
            ApiError::not_found("no such API route; is this shoal client newer than the daemon?")
        })
        .with_state(shared)
}

/// Serves `router` on `listener` (a Unix socket, a TCP listener, a
/// [`crate::tls::TlsListener`]) until it fails.
pub async fn serve<L>(listener: L, router: Router) -> std::io::Result<()>
where
    L: Listener,
    L::Addr: std::fmt::Debug,
{
    axum::serve(listener, router).await
}

/// Like [`serve`], and returns once `shutdown` resolves and open requests have finished.
pub async fn serve_with_shutdown<L>(
    listener: L,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: Listener,
    L::Addr: std::fmt::Debug,
{
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// A JSON body whose errors are [`ApiError`]s (400 with `{"message"}`), not axum's text.
struct Body<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(e) => Err(ApiError::bad_request(format!(
                "invalid request body: {}",
                e.body_text()
            ))),
        }
    }
}

/// A query string whose errors are [`ApiError`]s.
struct Query<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(e) => Err(ApiError::bad_request(format!(
                "invalid query: {}",
                e.body_text()
            ))),
        }
    }
}

type Done = ApiResult<StatusCode>;

fn done(_: ()) -> StatusCode {
    StatusCode::NO_CONTENT
}

#[utoipa::path(get, path = "/v1/info", tag = "system",
    responses((status = 200, description = "ok", body = Info), (status = 500, description = "the daemon failed", body = ErrorBody)))]
async fn info(State(b): State<Shared>) -> ApiResult<Json<Info>> {
    b.info().await.map(Json)
}

#[utoipa::path(post, path = "/v1/swarm/init", tag = "system", request_body = InitRequest,
    responses((status = 200, description = "ok", body = InitResponse), (status = 409, description = "conflicts with the current state", body = ErrorBody)))]
async fn swarm_init(
    State(b): State<Shared>,
    Body(req): Body<InitRequest>,
) -> ApiResult<Json<InitResponse>> {
    b.init(req).await.map(Json)
}

#[utoipa::path(post, path = "/v1/swarm/join", tag = "system", request_body = JoinRequest,
    responses((status = 200, description = "ok", body = JoinResponse), (status = 400, description = "invalid request", body = ErrorBody), (status = 409, description = "conflicts with the current state", body = ErrorBody)))]
async fn swarm_join(
    State(b): State<Shared>,
    Body(req): Body<JoinRequest>,
) -> ApiResult<Json<JoinResponse>> {
    b.join(req).await.map(Json)
}

#[utoipa::path(post, path = "/v1/swarm/leave", tag = "system", params(ForceQuery),
    responses((status = 204, description = "left the swarm"), (status = 503, description = "not available on this node", body = ErrorBody)))]
async fn swarm_leave(State(b): State<Shared>, Query(q): Query<ForceQuery>) -> Done {
    b.leave(q.force).await.map(done)
}

#[utoipa::path(get, path = "/v1/swarm/join-token/{role}", tag = "system",
    params(("role" = String, Path, description = "worker or manager")),
    responses((status = 200, description = "ok", body = JoinToken), (status = 400, description = "invalid request", body = ErrorBody), (status = 503, description = "not available on this node", body = ErrorBody)))]
async fn join_token(
    State(b): State<Shared>,
    Path(role): Path<String>,
) -> ApiResult<Json<JoinToken>> {
    let role: NodeRole = role.parse().map_err(|_| {
        ApiError::bad_request(format!("invalid role {role:?}: expected worker or manager"))
    })?;
    b.join_token(role).await.map(Json)
}

#[utoipa::path(post, path = "/v1/swarm/join-token/{role}/rotate", tag = "system",
    params(("role" = String, Path, description = "worker or manager")),
    responses((status = 200, description = "the new token; the old one no longer joins", body = JoinToken), (status = 400, description = "invalid request", body = ErrorBody), (status = 503, description = "not available on this node", body = ErrorBody)))]
async fn rotate_join_token(
    State(b): State<Shared>,
    Path(role): Path<String>,
) -> ApiResult<Json<JoinToken>> {
    let role: NodeRole = role.parse().map_err(|_| {
        ApiError::bad_request(format!("invalid role {role:?}: expected worker or manager"))
    })?;
    b.rotate_join_token(role).await.map(Json)
}

#[utoipa::path(get, path = "/v1/swarm/ca", tag = "system",
    responses((status = 200, description = "the cluster's root CA certificate", body = ClusterCa), (status = 503, description = "not available on this node", body = ErrorBody)))]
async fn cluster_ca(State(b): State<Shared>) -> ApiResult<Json<ClusterCa>> {
    b.ca().await.map(Json)
}

#[utoipa::path(post, path = "/v1/swarm/ca/rotate", tag = "system", request_body = CaRotateRequest,
    responses((status = 200, description = "the rotation started; the root stays current until every node has a certificate from the new one", body = ClusterCa), (status = 400, description = "invalid request", body = ErrorBody), (status = 409, description = "a rotation is already in progress", body = ErrorBody), (status = 503, description = "not available on this node", body = ErrorBody)))]
async fn rotate_ca(
    State(b): State<Shared>,
    Json(req): Json<CaRotateRequest>,
) -> ApiResult<Json<ClusterCa>> {
    b.rotate_ca(req).await.map(Json)
}

#[utoipa::path(get, path = "/v1/nodes", tag = "nodes",
    responses((status = 200, description = "docker-like Node objects", body = [Object]), (status = 503, description = "not available on this node", body = ErrorBody)))]
async fn list_nodes(State(b): State<Shared>) -> ApiResult<Json<Vec<shoal_types::Node>>> {
    b.nodes().await.map(Json)
}

#[utoipa::path(get, path = "/v1/nodes/{key}", tag = "nodes",
    params(("key" = String, Path, description = "node id, id prefix or hostname")),
    responses((status = 200, description = "a docker-like Node object", body = Object), (status = 404, description = "not found", body = ErrorBody)))]
async fn get_node(
    State(b): State<Shared>,
    Path(key): Path<String>,
) -> ApiResult<Json<shoal_types::Node>> {
    b.node(key).await.map(Json)
}

#[utoipa::path(delete, path = "/v1/nodes/{key}", tag = "nodes",
    params(("key" = String, Path, description = "node id, id prefix or hostname"), ForceQuery),
    responses((status = 204, description = "removed"), (status = 404, description = "not found", body = ErrorBody), (status = 409, description = "conflicts with the current state", body = ErrorBody)))]
async fn remove_node(
    State(b): State<Shared>,
    Path(key): Path<String>,
    Query(q): Query<ForceQuery>,
) -> Done {
    b.remove_node(key, q.force).await.map(done)
}

#[utoipa::path(post, path = "/v1/nodes/{key}/update", tag = "nodes", request_body = NodeUpdate,
    params(("key" = String, Path, description = "node id, id prefix or hostname")),
    responses((status = 204, description = "updated"), (status = 400, description = "invalid request", body = ErrorBody), (status = 404, description = "not found", body = ErrorBody)))]
async fn update_node(
    State(b): State<Shared>,
    Path(key): Path<String>,
    Body(u): Body<NodeUpdate>,
) -> Done {
    b.update_node(key, u).await.map(done)
}

#[utoipa::path(get, path = "/v1/services", tag = "services",
    responses((status = 200, description = "ok", body = [ServiceView]), (status = 503, description = "not available on this node", body = ErrorBody)))]
async fn list_services(State(b): State<Shared>) -> ApiResult<Json<Vec<ServiceView>>> {
    b.services().await.map(Json)
}

#[utoipa::path(post, path = "/v1/services", tag = "services",
    params(RegistryQuery, ("X-Registry-Auth" = Option<String>, Header, description = "base64url JSON {username, password, serveraddress}: the image registry's login for the nodes that run the tasks")),
    request_body(content = Object, description = "a docker-like ServiceSpec"),
    responses((status = 201, description = "created", body = ServiceCreated), (status = 400, description = "invalid request", body = ErrorBody), (status = 409, description = "conflicts with the current state", body = ErrorBody)))]
async fn create_service(
    State(b): State<Shared>,
    Query(q): Query<RegistryQuery>,
    headers: HeaderMap,
    Body(spec): Body<ServiceSpec>,
) -> ApiResult<(StatusCode, Json<ServiceCreated>)> {
    b.create_service_with(spec, registry_options(q.query_registry, &headers))
        .await
        .map(|r| (StatusCode::CREATED, Json(r)))
}

const REGISTRY_AUTH: &str = "x-registry-auth";

/// The image options of `service create|update`: the query and `X-Registry-Auth`.
pub(crate) fn registry_options(query_registry: bool, headers: &HeaderMap) -> ServiceOptions {
    ServiceOptions {
        query_registry,
        registry_auth: headers
            .get(REGISTRY_AUTH)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_string),
        version: None,
    }
}

#[utoipa::path(get, path = "/v1/services/{key}", tag = "services",
    params(("key" = String, Path, description = "service id, id prefix or name")),
    responses((status = 200, description = "ok", body = ServiceView), (status = 404, description = "not found", body = ErrorBody)))]
async fn get_service(
    State(b): State<Shared>,
    Path(key): Path<String>,
) -> ApiResult<Json<ServiceView>> {
    b.service(key).await.map(Json)
}

#[utoipa::path(delete, path = "/v1/services/{key}", tag = "services",
    params(("key" = String, Path, description = "service id, id prefix or name")),
    responses((status = 204, description = "removed"), (status = 404, description = "not found", body = ErrorBody)))]
async fn remove_service(State(b): State<Shared>, Path(key): Path<String>) -> Done {
    b.remove_service(key).await.map(done)
}

#[utoipa::path(post, path = "/v1/services/{key}/update", tag = "services",
    params(("key" = String, Path, description = "service id, id prefix or name"), RegistryQuery, ("X-Registry-Auth" = Option<String>, Header, description = "as for create; without it the service keeps its login")),
    request_body(content = Object, description = "the whole new docker-like ServiceSpec"),
    responses((status = 200, description = "updated", body = ServiceUpdated), (status = 400, description = "invalid request", body = ErrorBody), (status = 404, description = "not found", body = ErrorBody), (status = 409, description = "update out of sequence: the service changed since the given version", body = ErrorBody)))]
async fn update_service(
    State(b): State<Shared>,
    Path(key): Path<String>,
    Query(q): Query<RegistryQuery>,
    headers: HeaderMap,
    Body(spec): Body<ServiceSpec>,
) -> ApiResult<Json<ServiceUpdated>> {
    let opts = ServiceOptions {
        version: q.version,
        ..registry_options(q.query_registry, &headers)
    };
    b.update_service_with(key, spec, opts).await.map(Json)
}

#[utoipa::path(post, path = "/v1/services/{key}/rollback", tag = "services",
    params(("key" = String, Path, description = "service id, id prefix or name")),
    responses((status = 204, description = "rolling back to the previous spec (see UpdateStatus)"), (status = 400, description = "no previous spec", body = ErrorBody), (status = 404, description = "not found", body = ErrorBody)))]
async fn rollback_service(State(b): State<Shared>, Path(key): Path<String>) -> Done {
    b.rollback_service(key).await.map(done)
}

#[utoipa::path(get, path = "/v1/images", tag = "images",
    responses((status = 200, description = "the local node's images", body = [ImageSummary])))]
async fn list_images(State(b): State<Shared>) -> ApiResult<Json<Vec<ImageSummary>>> {
    b.images().await.map(Json)
}

#[utoipa::path(delete, path = "/v1/images/{name}", tag = "images",
    params(("name" = String, Path, description = "a reference, a digest or an id prefix")),
    responses((status = 200, description = "Untagged:/Deleted: lines", body = [String]), (status = 404, description = "not found", body = ErrorBody), (status = 409, description = "a task uses the image", body = ErrorBody)))]
async fn remove_image(
    State(b): State<Shared>,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<String>>> {
    b.remove_image(name).await.map(Json)
}

#[utoipa::path(post, path = "/v1/images/prune", tag = "images",
    responses((status = 200, description = "what was removed", body = ImagesPruned)))]
async fn prune_images(State(b): State<Shared>) -> ApiResult<Json<ImagesPruned>> {
    b.prune_images().await.map(Json)
}

#[utoipa::path(get, path = "/v1/services/{key}/logs", tag = "services",
    params(("key" = String, Path, description = "service id, id prefix or name")),
    responses((status = 200, description = "ok", body = [LogLine]), (status = 404, description = "not found", body = ErrorBody)))]
async fn service_logs(
    State(b): State<Shared>,
    Path(key): Path<String>,
) -> ApiResult<Json<Vec<LogLine>>> {
    b.service_logs(key).await.map(Json)
}

#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventQuery),
    responses((status = 200, description = "a stream of events, one JSON object a line (Type, Action, Actor.ID, Actor.Attributes, Time)", content_type = "application/x-ndjson"), (status = 400, description = "invalid filters", body = ErrorBody), (status = 503, description = "not a manager", body = ErrorBody)))]
async fn events(
    State(b): State<Shared>,
    Query(q): Query<EventQuery>,
) -> ApiResult<axum::response::Response> {
    let mut filter = shoal_types::EventFilter::default();
    if let Some(json) = q.filters.as_deref().filter(|j| !j.is_empty()) {
        let raw: std::collections::BTreeMap<String, Vec<String>> = serde_json::from_str(json)
            .map_err(|e| ApiError::bad_request(format!("invalid filters {json:?}: {e}")))?;
        for (k, vs) in raw {
            for v in vs {
                filter.insert(&k, &v).map_err(ApiError::bad_request)?;
            }
        }
    }
    let feed = b.events().await?;
    Ok(crate::events::respond(
        feed,
        q.since.map(shoal_types::Millis),
        q.until.map(shoal_types::Millis),
        filter,
        crate::events::json_line::<shoal_types::Event>,
    ))
}

#[utoipa::path(get, path = "/v1/tasks", tag = "tasks", params(TaskFilter),
    responses((status = 200, description = "docker-like Task objects with NodeHostname", body = [TaskView]), (status = 404, description = "not found", body = ErrorBody)))]
async fn list_tasks(
    State(b): State<Shared>,
    Query(f): Query<TaskFilter>,
) -> ApiResult<Json<Vec<TaskView>>> {
    b.tasks(f).await.map(Json)
}

#[utoipa::path(get, path = "/v1/tasks/{key}", tag = "tasks",
    params(("key" = String, Path, description = "task id, id prefix or name (vote.1)")),
    responses((status = 200, description = "ok", body = TaskView), (status = 404, description = "not found", body = ErrorBody)))]
async fn get_task(State(b): State<Shared>, Path(key): Path<String>) -> ApiResult<Json<TaskView>> {
    b.task(key).await.map(Json)
}

#[utoipa::path(get, path = "/v1/tasks/{key}/pid", tag = "tasks",
    params(("key" = String, Path, description = "task id, id prefix or name (vote.1)")),
    responses((status = 200, description = "ok", body = Pid), (status = 404, description = "not found", body = ErrorBody), (status = 409, description = "the task runs on another node", body = ErrorBody)))]
async fn task_pid(State(b): State<Shared>, Path(key): Path<String>) -> ApiResult<Json<Pid>> {
    b.local_task_pid(key).await.map(Json)
}

#[utoipa::path(get, path = "/v1/networks", tag = "networks",
    responses((status = 200, description = "docker-like Network objects", body = [Object]), (status = 503, description = "not available on this node", body = ErrorBody)))]
async fn list_networks(State(b): State<Shared>) -> ApiResult<Json<Vec<shoal_types::Network>>> {
    b.networks().await.map(Json)
}

#[utoipa::path(post, path = "/v1/networks", tag = "networks", request_body = NetworkCreate,
    responses((status = 201, description = "created", body = CreateResponse), (status = 400, description = "invalid request", body = ErrorBody), (status = 409, description = "conflicts with the current state", body = ErrorBody)))]
async fn create_network(
    State(b): State<Shared>,
    Body(req): Body<NetworkCreate>,
) -> ApiResult<(StatusCode, Json<CreateResponse>)> {
    b.create_network(req)
        .await
        .map(|r| (StatusCode::CREATED, Json(r)))
}

#[utoipa::path(get, path = "/v1/networks/{key}", tag = "networks",
    params(("key" = String, Path, description = "network id, id prefix or name")),
    responses((status = 200, description = "a docker-like Network object", body = Object), (status = 404, description = "not found", body = ErrorBody)))]
async fn get_network(
    State(b): State<Shared>,
    Path(key): Path<String>,
) -> ApiResult<Json<shoal_types::Network>> {
    b.network(key).await.map(Json)
}

#[utoipa::path(delete, path = "/v1/networks/{key}", tag = "networks",
    params(("key" = String, Path, description = "network id, id prefix or name")),
    responses((status = 204, description = "removed"), (status = 404, description = "not found", body = ErrorBody), (status = 409, description = "in use, or the ingress network", body = ErrorBody)))]
async fn remove_network(State(b): State<Shared>, Path(key): Path<String>) -> Done {
    b.remove_network(key).await.map(done)
}

#[utoipa::path(get, path = "/v1/endpoints/stats", tag = "endpoints",
    responses((status = 200, description = "how long endpoint changes took to reach every node", body = EndpointStats), (status = 503, description = "not available on this node", body = ErrorBody)))]
async fn endpoint_stats(State(b): State<Shared>) -> ApiResult<Json<EndpointStats>> {
    b.endpoint_stats().await.map(Json)
}

#[utoipa::path(delete, path = "/v1/endpoints/stats", tag = "endpoints",
    responses((status = 204, description = "samples forgotten"), (status = 503, description = "not available on this node", body = ErrorBody)))]
async fn reset_endpoint_stats(State(b): State<Shared>) -> Done {
    b.reset_endpoint_stats().await.map(done)
}

#[utoipa::path(get, path = "/v1/openapi.json", tag = "system",
    responses((status = 200, description = "this document, OpenAPI 3.1", body = Object)))]
async fn openapi_json() -> ([(axum::http::HeaderName, &'static str); 1], &'static str) {
    static DOC: OnceLock<String> = OnceLock::new();
    let doc = DOC.get_or_init(|| {
        openapi()
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"message\":\"failed to render the document: {e}\"}}"))
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        doc.as_str(),
    )
}
