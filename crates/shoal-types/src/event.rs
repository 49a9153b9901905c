//! Cluster events as `docker events` shows them (`service create`, `node update` with
//! `state.old=down state.new=ready`, ...), and the `--filter` that narrows them.
//!
//! Managers derive events from the difference between two applied states
//! (`shoal_manager::events`); this module is what travels: the event and its filter.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::Millis;

/// What an event is about: docker's `Type`, plus `task` (docker shows no task events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    Service,
    Node,
    Task,
    Network,
}

impl EventType {
    pub const ALL: [EventType; 4] = [
        EventType::Service,
        EventType::Node,
        EventType::Task,
        EventType::Network,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Service => "service",
            EventType::Node => "node",
            EventType::Task => "task",
            EventType::Network => "network",
        }
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// docker's `Action` for swarm objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Remove,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Remove => "remove",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The object an event is about: its id and what changed (`name`, `replicas.old`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Actor {
    #[serde(rename = "ID")]
    pub id: String,
    pub attributes: BTreeMap<String, String>,
}

/// One event, with docker's field names (`{{.Type}} {{.Action}} {{.Actor.ID}}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Event {
    #[serde(rename = "Type")]
    pub kind: EventType,
    pub action: Action,
    pub actor: Actor,
    /// When the manager that reports it applied the change (ms since the epoch).
    pub time: Millis,
}

impl Event {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.actor.attributes.get(key).map(String::as_str)
    }

    /// docker's default line: `TIME TYPE ACTION ID (k=v, k=v)`, the time given already
    /// formatted by the caller (the clock's formatting is not this crate's).
    pub fn line(&self, time: &str) -> String {
        let attrs: Vec<String> = self
            .actor
            .attributes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mut s = format!("{time} {} {} {}", self.kind, self.action, self.actor.id);
        if !attrs.is_empty() {
            s.push_str(&format!(" ({})", attrs.join(", ")));
        }
        s
    }
}

/// `--filter key=value`: values of one key are alternatives, keys must all match (docker's
/// rule). Keys: `type`, `event` (the action), `scope` (only `swarm` matches), and `service`,
/// `node`, `network`, `task` (an id prefix or a name; a task event also matches the
/// `service` and `node` it belongs to).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventFilter(pub BTreeMap<String, BTreeSet<String>>);

/// The filter keys [`EventFilter`] knows.
pub const FILTER_KEYS: [&str; 7] = [
    "type", "event", "scope", "service", "node", "network", "task",
];

impl EventFilter {
    /// Parses `key=value` words; an unknown key or type is refused by name.
    pub fn parse<'a>(words: impl IntoIterator<Item = &'a str>) -> Result<EventFilter, String> {
        let mut f = EventFilter::default();
        for w in words {
            let Some((k, v)) = w.split_once('=') else {
                return Err(format!("bad format of filter (expected name=value): {w:?}"));
            };
            f.insert(k, v)?;
        }
        Ok(f)
    }

    /// Adds one value for `key`, checked.
    pub fn insert(&mut self, key: &str, value: &str) -> Result<(), String> {
        if !FILTER_KEYS.contains(&key) {
            return Err(format!(
                "invalid filter '{key}': use one of {}",
                FILTER_KEYS.join(", ")
            ));
        }
        if key == "type" && !EventType::ALL.iter().any(|t| t.as_str() == value) {
            return Err(format!(
                "invalid filter 'type={value}': events are of type service, node, task or network"
            ));
        }
        if key == "event" && !["create", "update", "remove"].contains(&value) {
            return Err(format!(
                "invalid filter 'event={value}': swarm events are create, update or remove"
            ));
        }
        self.0
            .entry(key.to_string())
            .or_default()
            .insert(value.to_string());
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, e: &Event) -> bool {
        let any = |key: &str, pred: &dyn Fn(&str) -> bool| {
            self.0.get(key).is_none_or(|vs| vs.iter().any(|v| pred(v)))
        };
        // An object filter matches its own events by id prefix or name, and a task's
        // events by the service or node the task belongs to.
        let object = |kind: EventType, owner: &str, v: &str| {
            let own = e.kind == kind && (e.actor.id.starts_with(v) || e.attr("name") == Some(v));
            let via_task = e.kind == EventType::Task
                && (e
                    .attr(&format!("{owner}.id"))
                    .is_some_and(|id| id.starts_with(v))
                    || e.attr(&format!("{owner}.name")) == Some(v));
            own || via_task
        };
        any("type", &|v| v == e.kind.as_str())
            && any("event", &|v| v == e.action.as_str())
            && any("scope", &|v| v == "swarm")
            && any("service", &|v| object(EventType::Service, "service", v))
            && any("node", &|v| object(EventType::Node, "node", v))
            && any("network", &|v| {
                e.kind == EventType::Network
                    && (e.actor.id.starts_with(v) || e.attr("name") == Some(v))
            })
            && any("task", &|v| {
                e.kind == EventType::Task
                    && (e.actor.id.starts_with(v) || e.attr("name") == Some(v))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: EventType, id: &str, attrs: &[(&str, &str)]) -> Event {
        Event {
            kind,
            action: Action::Update,
            actor: Actor {
                id: id.into(),
                attributes: attrs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
            time: Millis(1),
        }
    }

    #[test]
    fn filters_match_type_object_and_task_owner() {
        let svc = ev(EventType::Service, "s1abc", &[("name", "web")]);
        let task = ev(
            EventType::Task,
            "t1",
            &[
                ("name", "web.1"),
                ("service.id", "s1abc"),
                ("service.name", "web"),
                ("node.id", "n1"),
                ("node.name", "node1"),
            ],
        );
        let node = ev(EventType::Node, "n1", &[("name", "node1")]);
        let f = EventFilter::parse(["type=service"]).unwrap();
        assert!(f.matches(&svc) && !f.matches(&task) && !f.matches(&node));
        let f = EventFilter::parse(["type=service", "type=node"]).unwrap();
        assert!(f.matches(&svc) && f.matches(&node) && !f.matches(&task));
        let f = EventFilter::parse(["service=web"]).unwrap();
        assert!(f.matches(&svc) && f.matches(&task) && !f.matches(&node));
        let f = EventFilter::parse(["service=s1"]).unwrap();
        assert!(f.matches(&svc) && f.matches(&task));
        let f = EventFilter::parse(["service=other"]).unwrap();
        assert!(!f.matches(&svc) && !f.matches(&task));
        let f = EventFilter::parse(["node=node1", "type=task"]).unwrap();
        assert!(f.matches(&task) && !f.matches(&node) && !f.matches(&svc));
        let f = EventFilter::parse(["event=create"]).unwrap();
        assert!(!f.matches(&svc));
        let f = EventFilter::parse(["scope=local"]).unwrap();
        assert!(!f.matches(&svc));
        assert!(EventFilter::default().matches(&task));
    }

    #[test]
    fn bad_filters_are_refused_by_name() {
        assert_eq!(
            EventFilter::parse(["type=container"]).unwrap_err(),
            "invalid filter 'type=container': events are of type service, node, task or network"
        );
        assert_eq!(
            EventFilter::parse(["colour=red"]).unwrap_err(),
            "invalid filter 'colour': use one of type, event, scope, service, node, network, task"
        );
        assert_eq!(
            EventFilter::parse(["type"]).unwrap_err(),
            "bad format of filter (expected name=value): \"type\""
        );
    }

    #[test]
    fn the_default_line_is_dockers() {
        let e = Event {
            kind: EventType::Service,
            action: Action::Update,
            actor: Actor {
                id: "abc".into(),
                attributes: [
                    ("name", "web"),
                    ("replicas.new", "3"),
                    ("replicas.old", "1"),
                ]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            },
            time: Millis(0),
        };
        assert_eq!(
            e.line("T"),
            "T service update abc (name=web, replicas.new=3, replicas.old=1)"
        );
    }
}
