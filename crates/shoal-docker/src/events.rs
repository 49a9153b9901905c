//! `GET /events` in docker's shape: shoal's events as the Engine API's `EventMessage`
//! (`scope` `swarm`), docker's `since`/`until` timestamps and its `filters`.

use std::collections::BTreeMap;

use shoal_types::{Event, EventFilter, EventType, Millis};

use crate::DockerError;
use crate::filters::Filters;
use crate::models::{EventActor, EventMessage, EventMessageScopeEnum, EventMessageTypeEnum};

/// The Engine API's message for `e`; none for task events, which docker does not show.
pub fn message(e: &Event) -> Option<EventMessage> {
    let typ = match e.kind {
        EventType::Service => EventMessageTypeEnum::SERVICE,
        EventType::Node => EventMessageTypeEnum::NODE,
        EventType::Network => EventMessageTypeEnum::NETWORK,
        EventType::Task => return None,
    };
    let ms = i64::try_from(e.time.0).unwrap_or(i64::MAX);
    Some(EventMessage {
        typ: Some(typ),
        action: Some(e.action.as_str().to_string()),
        actor: Some(EventActor {
            id: Some(e.actor.id.clone()),
            attributes: Some(
                e.actor
                    .attributes
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
        }),
        scope: Some(EventMessageScopeEnum::SWARM),
        time: Some(ms / 1000),
        time_nano: Some(ms.saturating_mul(1_000_000)),
    })
}

/// docker's `since`/`until`: seconds since the epoch with an optional fraction
/// (`1700000000.123456789`, as the docker CLI sends them), to milliseconds.
pub fn timestamp(s: &str) -> Result<Millis, DockerError> {
    let bad = || {
        DockerError::Invalid(format!(
            "invalid timestamp {s:?}: expected seconds since the epoch, such as 1700000000.5"
        ))
    };
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: u64 = secs.parse().map_err(|_| bad())?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    // The first three digits of the fraction are the milliseconds.
    let ms: u64 = format!("{frac:0<3}")[..3].parse().map_err(|_| bad())?;
    secs.checked_mul(1000)
        .and_then(|m| m.checked_add(ms))
        .map(Millis)
        .ok_or_else(bad)
}

/// The filter keys `docker events` takes. Those of objects a swarm has no events for
/// (containers, images, volumes, ...) match nothing here.
const ACCEPTED: &[&str] = &[
    "config",
    "container",
    "daemon",
    "event",
    "image",
    "label",
    "network",
    "node",
    "plugin",
    "scope",
    "secret",
    "service",
    "type",
    "volume",
];

/// docker's `filters` for `/events`; `None` when they can match no swarm event (a
/// container filter, `type=container`, `scope=local`).
pub fn filters(json: Option<&str>) -> Result<Option<EventFilter>, DockerError> {
    let f = Filters::parse(json, ACCEPTED)?;
    let mut out: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for key in ACCEPTED {
        let Some(values) = f.get(key) else { continue };
        match *key {
            "type" | "event" | "scope" | "service" | "node" | "network" => {
                out.insert(key.to_string(), values.iter().cloned().collect());
            }
            // A label filter: swarm events carry no labels, as dockerd's.
            _ => return Ok(None),
        }
    }
    Ok(Some(EventFilter(out)))
}

#[cfg(test)]
mod tests {
    use shoal_types::{Action, Actor};

    use super::*;

    #[test]
    fn events_in_dockers_shape() {
        let e = Event {
            kind: EventType::Service,
            action: Action::Create,
            actor: Actor {
                id: "abc".into(),
                attributes: [("name".to_string(), "web".to_string())].into(),
            },
            time: Millis(1_700_000_000_123),
        };
        let json = serde_json::to_value(message(&e).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "Type": "service", "Action": "create",
                "Actor": {"ID": "abc", "Attributes": {"name": "web"}},
                "scope": "swarm", "time": 1_700_000_000i64, "timeNano": 1_700_000_000_123_000_000i64
            })
        );
        let task = Event {
            kind: EventType::Task,
            ..e
        };
        assert!(message(&task).is_none());
    }

    #[test]
    fn timestamps_and_filters_as_the_docker_cli_sends_them() {
        assert_eq!(timestamp("1700000000").unwrap(), Millis(1_700_000_000_000));
        assert_eq!(
            timestamp("1700000000.5").unwrap(),
            Millis(1_700_000_000_500)
        );
        assert_eq!(
            timestamp("1700000000.123456789").unwrap(),
            Millis(1_700_000_000_123)
        );
        assert!(timestamp("yesterday").is_err());
        assert!(timestamp("1.x").is_err());
        let f = filters(Some(r#"{"scope":{"swarm":true},"type":{"service":true}}"#))
            .unwrap()
            .unwrap();
        assert_eq!(
            f,
            EventFilter::parse(["scope=swarm", "type=service"]).unwrap()
        );
        assert_eq!(filters(Some(r#"{"container":{"x":true}}"#)).unwrap(), None);
        assert_eq!(
            filters(Some(r#"{"colour":{"x":true}}"#))
                .unwrap_err()
                .to_string(),
            "invalid filter 'colour'"
        );
        assert_eq!(filters(None).unwrap(), Some(EventFilter::default()));
    }
}
