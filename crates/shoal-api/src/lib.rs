//! shoal's HTTP/JSON API, versioned under `/v1`, served by shoald on a Unix socket and, with
//! TLS client certificates, over TCP.
//!
//! # Layout
//! - `types`: request and response bodies (docker's PascalCase field names).
//! - `error`: [`ApiError`] — a status and a message, `{"message": ...}` on the wire.
//! - `backend`: the [`Backend`] trait shoald implements.
//! - `server`: [`router`] (every route also described in [`openapi`]) and [`serve`].
//! - `client`: [`Client`], what the CLI talks through.
//! - `events`: the event streams of `/v1/events` and docker's `/events`.
//! - `logs`: following a service's log (new lines of a later read), for both sides.
//! - `tls`: the TLS configs of both sides (`--tlsverify`) and [`tls::TlsListener`].
//!
//! API boundary: this crate knows nothing of Raft, gRPC or the agent; it turns HTTP into
//! [`Backend`] calls and back.
#![forbid(unsafe_code)]

mod backend;
mod client;
mod docker;
mod error;
mod events;
pub mod logs;
mod server;
pub mod tls;
mod types;

pub use backend::Backend;
pub use client::{Client, ClientError, ClientResult, DEFAULT_HOST, Host};
pub use error::{ApiError, ApiResult, ErrorBody};
pub use server::{openapi, router, serve, serve_with_shutdown};
pub use types::*;
