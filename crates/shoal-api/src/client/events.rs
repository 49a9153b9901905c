//! `GET /v1/events`: a response read as it comes, one event a line.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};

use super::{Client, ClientResult, api_error, encode};
use crate::types::EventQuery;

impl Client {
    /// `shoal events`: calls `on_event` with each event as it arrives, until the daemon
    /// ends the stream (`until` passed) or `on_event` returns false.
    pub async fn events(
        &self,
        query: &EventQuery,
        mut on_event: impl FnMut(shoal_types::Event) -> bool,
    ) -> ClientResult<()> {
        let mut params = Vec::new();
        if let Some(s) = query.since {
            params.push(format!("since={s}"));
        }
        if let Some(u) = query.until {
            params.push(format!("until={u}"));
        }
        if let Some(f) = &query.filters {
            params.push(format!("filters={}", encode(f)));
        }
        let path = if params.is_empty() {
            "/v1/events".to_string()
        } else {
            format!("/v1/events?{}", params.join("&"))
        };
        let req = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header(hyper::header::HOST, "shoal")
            .body(Full::new(Bytes::new()))
            .map_err(|e| self.protocol(format!("failed to build the request: {e}")))?;
        let (resp, _conn) = self.send(req).await?;
        let status = resp.status();
        let mut body = resp.into_body();
        if !status.is_success() {
            let bytes = body
                .collect()
                .await
                .map_err(|e| self.http_error(e))?
                .to_bytes();
            return Err(api_error(status, &bytes));
        }
        // One JSON object a line; a frame may hold several lines or part of one.
        let mut pending: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| self.http_error(e))?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            pending.extend_from_slice(data);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let event = serde_json::from_slice(&line)
                    .map_err(|e| self.protocol(format!("failed to decode an event: {e}")))?;
                if !on_event(event) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}
