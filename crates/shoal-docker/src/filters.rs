//! The `filters` query parameter: `{"name":{"vote":true}}` (or the older
//! `{"name":["vote"]}`), keys checked against what each list accepts, as dockerd does.

use std::collections::BTreeMap;

use shoal_types::{Network, Node, NodeRole, Service, Task, TaskState};

use crate::DockerError;

/// Filter key to the values given for it (a task matches one of a key's values, and every
/// key).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters(BTreeMap<String, Vec<String>>);

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Values {
    Map(BTreeMap<String, bool>),
    List(Vec<String>),
}

impl Filters {
    /// Parses the query parameter's JSON and refuses a key not in `accepted`.
    pub fn parse(json: Option<&str>, accepted: &[&str]) -> Result<Filters, DockerError> {
        let Some(json) = json.filter(|j| !j.is_empty()) else {
            return Ok(Filters::default());
        };
        let raw: BTreeMap<String, Values> = serde_json::from_str(json)
            .map_err(|e| DockerError::Invalid(format!("invalid filter {json:?}: {e}")))?;
        let mut out = BTreeMap::new();
        for (key, values) in raw {
            if !accepted.contains(&key.as_str()) {
                return Err(DockerError::Invalid(format!("invalid filter '{key}'")));
            }
            let values = match values {
                Values::Map(m) => m
                    .into_iter()
                    .filter(|(_, on)| *on)
                    .map(|(v, _)| v)
                    .collect(),
                Values::List(l) => l,
            };
            out.insert(key, values);
        }
        Ok(Filters(out))
    }

    pub fn get(&self, key: &str) -> Option<&[String]> {
        self.0.get(key).map(Vec::as_slice)
    }

    /// Whether `key` is absent or one of its values satisfies `pred`.
    fn any(&self, key: &str, pred: impl Fn(&str) -> bool) -> bool {
        self.get(key).is_none_or(|vs| vs.iter().any(|v| pred(v)))
    }

    fn labels(&self, labels: &BTreeMap<String, String>) -> bool {
        // Every label filter must match (docker's semantics for `label`).
        self.get("label").is_none_or(|vs| {
            vs.iter().all(|v| match v.split_once('=') {
                Some((k, want)) => labels.get(k).is_some_and(|have| have == want),
                None => labels.contains_key(v.as_str()),
            })
        })
    }

    pub fn service(&self, s: &Service) -> bool {
        self.any("id", |v| s.id.starts_with(v))
            && self.any("name", |v| s.spec.name.starts_with(v))
            && self.any("mode", |v| v == s.spec.mode.name())
            && self.labels(&s.spec.labels)
    }

    pub fn node(&self, n: &Node) -> bool {
        self.any("id", |v| n.id.starts_with(v))
            && self.any("name", |v| n.description.hostname.starts_with(v))
            && self.any("role", |v| match n.spec.role {
                NodeRole::Manager => v == "manager",
                NodeRole::Worker => v == "worker",
            })
            && self.any("membership", |v| v == "accepted")
            && self.labels(&n.spec.labels)
    }

    pub fn network(&self, n: &Network) -> bool {
        self.any("id", |v| n.id.starts_with(v))
            && self.any("name", |v| n.name.contains(v))
            && self.any("driver", |v| v == n.driver)
            && self.any("scope", |v| v == "swarm")
            && self.any("type", |v| v == "custom" || (v == "builtin" && n.ingress))
            && self.labels(&n.labels)
    }

    /// `service` filters match by id or name; `services` are the ones the task's may be.
    /// `up_to_date` says whether the task runs its service's current spec (`_up-to-date`,
    /// which the docker CLI's progress asks for).
    pub fn task(
        &self,
        t: &Task,
        service: Option<&Service>,
        node_hostname: &str,
        up_to_date: bool,
    ) -> bool {
        self.any("id", |v| t.id.starts_with(v))
            && self.any("name", |v| {
                format!("{}.{}", t.service_name, t.slot).starts_with(v)
            })
            && self.any("service", |v| {
                v == t.service_id
                    || v == t.service_name
                    || service.is_some_and(|s| s.id.starts_with(v))
            })
            && self.any("node", |v| {
                t.node_id
                    .as_deref()
                    .is_some_and(|id| id == v || id.starts_with(v))
                    || (!node_hostname.is_empty() && v == node_hostname)
            })
            && self.any("desired-state", |v| match v {
                "running" => t.desired_state == TaskState::Running,
                "shutdown" => t.desired_state >= TaskState::Complete,
                "accepted" => t.desired_state == TaskState::Accepted,
                _ => false,
            })
            && self.any("_up-to-date", |v| v != "true" || up_to_date)
            && service.is_none_or(|s| self.labels(&s.spec.labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_json_forms_parse_and_unknown_keys_are_refused_by_name() {
        let a = Filters::parse(Some(r#"{"name":{"vote":true}}"#), &["name"]).unwrap();
        let b = Filters::parse(Some(r#"{"name":["vote"]}"#), &["name"]).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.get("name"), Some(&["vote".to_string()][..]));
        assert_eq!(
            Filters::parse(Some(r#"{"colour":["red"]}"#), &["name"])
                .unwrap_err()
                .to_string(),
            "invalid filter 'colour'"
        );
        assert_eq!(Filters::parse(None, &[]).unwrap(), Filters::default());
    }
}
