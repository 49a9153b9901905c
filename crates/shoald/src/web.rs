//! The `--metrics-addr` listener (default 127.0.0.1:9323, as dockerd's `metrics-addr`):
//! `/metrics` for Prometheus and the read-only dashboard at `/`. Plain HTTP and no
//! authentication, like dockerd's: nothing here changes the cluster, and every route is GET.
//!
//! - `GET /metrics`: OpenMetrics when the scraper asks for it (`Accept:
//!   application/openmetrics-text`, as Prometheus does), else Prometheus' text format 0.0.4.
//!   What the data plane and Raft say is read at this moment (`crate::metrics::Scrape`).
//! - `GET /`, `/app.js`, `/style.css`: the dashboard (`crate::dashboard`).
//! - `GET /api/snapshot`: the dashboard's JSON; `GET /api/events`: the same as server-sent
//!   events, sent again when the state changes (and every few seconds for the connection
//!   counters, which change without the state), so the page never polls.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_stream::wrappers::ReceiverStream;

use crate::daemon::Daemon;
use crate::dashboard;
use crate::metrics::{Metrics, Scrape};

/// How often the events stream sends a snapshot though the state did not change: the
/// connection counts move on their own.
const COUNTERS_EVERY: Duration = Duration::from_secs(5);
/// Changes closer together than this go out as one snapshot (a scale-up is many commits).
const COALESCE: Duration = Duration::from_millis(150);

#[derive(Clone)]
struct Web {
    daemon: Arc<Daemon>,
    metrics: Arc<Metrics>,
}

/// The routes, on `daemon`.
pub fn router(daemon: Arc<Daemon>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route(
            "/",
            get(|| async { page("text/html; charset=utf-8", dashboard::INDEX_HTML) }),
        )
        .route(
            "/app.js",
            get(|| async { page("text/javascript; charset=utf-8", dashboard::APP_JS) }),
        )
        .route(
            "/style.css",
            get(|| async { page("text/css; charset=utf-8", dashboard::STYLE_CSS) }),
        )
        .route("/api/snapshot", get(snapshot))
        .route("/api/events", get(events))
        .with_state(Web { daemon, metrics })
}

/// Binds `addr` (at start: a port in use fails the daemon with the reason).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    use anyhow::Context;
    tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("failed to listen on --metrics-addr {addr}; choose a free address or port")
    })
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

impl Web {
    async fn scrape(&self) -> Scrape {
        let active = self.daemon.active();
        let dataplane = match &active {
            Some(a) => a.worker.dataplane_counts().await,
            None => Default::default(),
        };
        let manager = active.as_ref().and_then(|a| a.manager.clone());
        let raft = manager.as_ref().map(|m| m.raft_status());
        let leader = manager
            .as_ref()
            .filter(|m| m.is_leader())
            .map(|m| m.state());
        Scrape {
            dataplane,
            raft,
            leader,
        }
    }

    async fn snapshot(&self) -> dashboard::Snapshot {
        let node = self.daemon.cfg.hostname.clone();
        let Some(active) = self.daemon.active() else {
            return dashboard::unavailable(
                &node,
                "this node is not part of a cluster yet (shoal init or shoal join)".into(),
                Default::default(),
            );
        };
        let dataplane = active.worker.dataplane_counts().await;
        match &active.manager {
            Some(m) => {
                let recent = m.recent_convergence();
                let leader = m.leader().map(|(id, _)| id);
                dashboard::snapshot(&node, &m.state(), leader, &recent, dataplane)
            }
            None => dashboard::unavailable(
                &node,
                format!(
                    "this node is a worker and holds no copy of the cluster's state; open the dashboard of a manager ({})",
                    active
                        .managers
                        .read()
                        .map(|m| m.join(", "))
                        .unwrap_or_default()
                ),
                dataplane,
            ),
        }
    }
}

async fn scrape(State(web): State<Web>, headers: HeaderMap) -> Response {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let scrape = web.scrape().await;
    let body = web.metrics.encode(&scrape, openmetrics);
    let content_type = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        prometheus_client::encoding::prometheus_text::CONTENT_TYPE
    };
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn snapshot(State(web): State<Web>) -> Response {
    axum::Json(web.snapshot().await).into_response()
}

/// A snapshot now, then one after each state change (coalesced) or every
/// [`COUNTERS_EVERY`]; ends when the client goes.
async fn events(State(web): State<Web>) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(2);
    tokio::spawn(async move {
        loop {
            let snap = web.snapshot().await;
            let version = snap.version;
            let data = serde_json::to_string(&snap).unwrap_or_else(|_| "{}".into());
            if tx
                .send(Ok(Event::default().event("snapshot").data(data)))
                .await
                .is_err()
            {
                return;
            }
            let state = web
                .daemon
                .active()
                .and_then(|a| a.manager)
                .map(|m| m.watch_state());
            match state {
                Some(mut rx) => {
                    // A change made since the snapshot was taken goes out at once.
                    if rx.borrow_and_update().version == version {
                        let _ = tokio::time::timeout(COUNTERS_EVERY, rx.changed()).await;
                    }
                }
                None => tokio::time::sleep(COUNTERS_EVERY).await,
            }
            tokio::time::sleep(COALESCE).await;
        }
    });
    Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::default())
        .into_response()
}
