//! `GET /events`: the cluster's service, node and network events in docker's shape, for
//! `docker events --filter scope=swarm`.

use axum::extract::{Query, State};
use axum::response::Response;
use shoal_docker::events;
use shoal_types::Event;

use super::{QueryMap, Shared};
use crate::error::ApiResult;

pub(super) async fn events(
    State(b): State<Shared>,
    Query(q): Query<QueryMap>,
) -> ApiResult<Response> {
    let time = |key: &str| {
        q.get(key)
            .filter(|v| !v.is_empty())
            .map(|v| events::timestamp(v))
            .transpose()
    };
    let (since, until) = (time("since")?, time("until")?);
    let filter = events::filters(q.get("filters").map(String::as_str))?;
    let feed = b.events().await?;
    // Filters no swarm event can match (`type=container`): the stream still runs until
    // `until`, with nothing in it, as dockerd's would.
    let (filter, encode): (_, crate::events::Encode) = match filter {
        Some(f) => (f, encode),
        None => (Default::default(), |_| None),
    };
    Ok(crate::events::respond(feed, since, until, filter, encode))
}

fn encode(e: &Event) -> Option<Vec<u8>> {
    crate::events::json_line(&events::message(e)?)
}
