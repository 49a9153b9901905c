//! Errors the API returns: an HTTP status and a message for a person, on the wire as
//! `{"message": "..."}` like docker's API. Messages are lowercase and say what to do.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use utoipa::ToSchema;

/// What a [`crate::Backend`] call fails with, and what the client hands back.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct ApiError {
    /// 400, 404, 409, 500 or 503.
    pub status: u16,
    pub message: String,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// 400: the request is malformed or invalid.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, message)
    }

    /// 404: no such node, service or task.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(404, message)
    }

    /// 409: the request conflicts with the current state (name in use, already in a swarm).
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(409, message)
    }

    /// 500: something failed inside the daemon.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, message)
    }

    /// 503: this node can't answer now (not a manager, no leader, not in a swarm).
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(503, message)
    }

    /// 503 for calls that only a manager can serve.
    pub fn not_a_manager() -> ApiError {
        ApiError::unavailable("this node is not a manager; run it on a manager")
    }

    /// 503 for calls that need a swarm.
    pub fn not_in_swarm() -> ApiError {
        ApiError::unavailable(
            "this node is not part of a swarm; run `shoal init` or `shoal join` first",
        )
    }
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            status,
            Json(ErrorBody {
                message: self.message,
            }),
        )
            .into_response()
    }
}
