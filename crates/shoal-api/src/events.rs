//! Event streams, shoal's (`GET /v1/events`) and docker's (`GET /events`): the kept events
//! in the asked range, then the live ones, one JSON object a line, until `until` passes or
//! the client goes away (the body is dropped with the connection: nothing lingers).

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use shoal_types::{Event, EventFilter, Millis};
use tokio::sync::broadcast::error::RecvError;

use crate::types::EventFeed;

/// How one event is written; `None` leaves it out (docker shows no task events).
pub(crate) type Encode = fn(&Event) -> Option<Vec<u8>>;

pub(crate) fn json_line<T: serde::Serialize>(v: &T) -> Option<Vec<u8>> {
    let mut line = serde_json::to_vec(v).ok()?;
    line.push(b'\n');
    Some(line)
}

/// The stream's response: kept events from `since` (or, with only `until`, all kept ones
/// before it; with neither, none), then live ones until `until`.
pub(crate) fn respond(
    feed: EventFeed,
    since: Option<Millis>,
    until: Option<Millis>,
    filter: EventFilter,
    encode: Encode,
) -> Response {
    let past: VecDeque<Event> = if since.is_some() || until.is_some() {
        let from = since.unwrap_or(Millis(0));
        feed.past
            .into_iter()
            .filter(|e| e.time >= from && until.is_none_or(|u| e.time <= u))
            .collect()
    } else {
        VecDeque::new()
    };
    let stream = Stream {
        past,
        live: feed.live,
        // When `until` is now or past, only the kept events are sent.
        deadline: until.map(|u| {
            tokio::time::Instant::now() + Duration::from_millis(u.0.saturating_sub(wall_ms()))
        }),
        until,
        filter,
        encode,
    };
    let body = futures::stream::unfold(stream, |mut s| async move {
        let line = s.next().await?;
        Some((Ok::<_, std::io::Error>(line), s))
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(body),
    )
        .into_response()
}

struct Stream {
    past: VecDeque<Event>,
    live: tokio::sync::broadcast::Receiver<Event>,
    deadline: Option<tokio::time::Instant>,
    until: Option<Millis>,
    filter: EventFilter,
    encode: Encode,
}

impl Stream {
    /// The next line to send, or `None` at the end of the stream.
    async fn next(&mut self) -> Option<Vec<u8>> {
        loop {
            let e = match self.past.pop_front() {
                Some(e) => e,
                None => {
                    let recv = self.live.recv();
                    let got = match self.deadline {
                        Some(d) => tokio::select! {
                            r = recv => r,
                            _ = tokio::time::sleep_until(d) => return None,
                        },
                        None => recv.await,
                    };
                    match got {
                        Ok(e) if self.until.is_some_and(|u| e.time > u) => return None,
                        Ok(e) => e,
                        // A subscriber that fell this far behind has lost events: ending
                        // the stream says so, where skipping them would not.
                        Err(RecvError::Lagged(n)) => {
                            tracing::warn!(lost = n, "an event stream fell behind; ending it");
                            return None;
                        }
                        Err(RecvError::Closed) => return None,
                    }
                }
            };
            if self.filter.matches(&e)
                && let Some(line) = (self.encode)(&e)
            {
                return Some(line);
            }
        }
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
