//! The Docker Engine API's swarm subset, beside shoal's `/v1` routes on the same listeners,
//! so that `DOCKER_HOST=unix:///run/shoal/shoal.sock docker node ls` works.
//!
//! Paths are served bare (`/services`) and under a version (`/v1.41/services`), checked
//! against the range shoal serves (`shoal_docker::version`). The shapes and the spec
//! conversions are shoal-docker's; this module calls the backend and answers in docker's
//! status codes and `{"message"}` errors.

mod events;
mod services;
mod system;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use shoal_docker::DockerError;

use crate::backend::DynBackend;
use crate::error::ApiError;

type Shared = Arc<dyn DynBackend>;

impl From<DockerError> for ApiError {
    fn from(e: DockerError) -> ApiError {
        ApiError::bad_request(e.to_string())
    }
}

/// docker's routes, bare and under `/{version}`.
pub(crate) fn router() -> Router<Shared> {
    let routes = || {
        Router::new()
            .route("/_ping", get(system::ping).head(system::ping))
            .route("/version", get(system::version))
            .route("/info", get(system::info))
            .route("/swarm", get(system::swarm_inspect))
            .route("/swarm/init", post(system::unsupported_swarm))
            .route("/swarm/join", post(system::unsupported_swarm))
            .route("/swarm/leave", post(system::swarm_leave))
            .route("/swarm/update", post(system::unsupported_swarm))
            .route("/swarm/unlockkey", get(system::unsupported_swarm))
            .route("/swarm/unlock", post(system::unsupported_swarm))
            .route("/nodes", get(system::list_nodes))
            .route(
                "/nodes/{id}",
                get(system::get_node).delete(system::remove_node),
            )
            .route("/nodes/{id}/update", post(system::update_node))
            .route("/networks", get(system::list_networks))
            .route("/networks/create", post(system::create_network))
            .route(
                "/networks/{id}",
                get(system::get_network).delete(system::remove_network),
            )
            .route("/services", get(services::list))
            .route("/services/create", post(services::create))
            .route(
                "/services/{id}",
                get(services::inspect).delete(services::remove),
            )
            .route("/services/{id}/update", post(services::update))
            .route("/services/{id}/logs", get(services::logs))
            .route("/tasks", get(services::list_tasks))
            .route("/tasks/{id}", get(services::get_task))
            .route("/containers/json", get(services::list_containers))
            .route("/containers/{id}/json", get(services::inspect_container))
            .route("/events", get(events::events))
            .route("/distribution/{*name}", get(system::no_distribution))
            .route("/secrets", get(system::empty_list))
            .route("/configs", get(system::empty_list))
            .route("/secrets/create", post(system::unsupported_secret))
            .route("/configs/create", post(system::unsupported_config))
    };
    Router::new()
        .merge(routes())
        .nest("/{version}", routes())
        .layer(middleware::from_fn(check_version))
}

/// Refuses a version outside the range shoal serves, by name, as dockerd does.
async fn check_version(req: Request, next: Next) -> Response {
    let first = req
        .uri()
        .path()
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("");
    if let Err(e) = shoal_docker::version::from_segment(first) {
        return ApiError::from(e).into_response();
    }
    next.run(req).await
}

/// The `filters` and other query parameters, as given.
type QueryMap = BTreeMap<String, String>;

fn flag(q: &QueryMap, key: &str) -> bool {
    q.get(key)
        .is_some_and(|v| matches!(v.as_str(), "1" | "true" | "True" | ""))
}

/// The object a path names (`/services/{id}`), under a version or not: the version is a
/// path parameter too when the routes are nested under `/{version}`.
pub(super) struct Key(pub(super) String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Key {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        let axum::extract::Path(params) =
            axum::extract::Path::<BTreeMap<String, String>>::from_request_parts(parts, state)
                .await
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
        params
            .get("id")
            .cloned()
            .map(Key)
            .ok_or_else(|| ApiError::bad_request("the path names no object"))
    }
}
