//! The compose keys shoal acts on. A key outside this list is refused by its path
//! (`services.web.privileged`) rather than dropped: docker's `stack deploy` warns
//! "Ignoring unsupported options" and goes on, which deploys something other than the file.
//! `x-` extension keys are allowed anywhere, as the specification says.

use serde_yaml::Value;

/// What a value may hold.
enum Shape {
    /// Anything (a scalar, a list, a map of the user's keys).
    Any,
    /// A map with only these keys; a scalar or list in its place is short syntax and
    /// passes (compose_spec checks its form).
    Keys(&'static [(&'static str, Shape)]),
    /// A map of the user's names (services, networks), each value of this shape; a list
    /// in its place (of names) passes.
    Named(&'static Shape),
    /// A list whose items have this shape.
    Items(&'static Shape),
}

use Shape::*;

const UPDATE: Shape = Keys(&[
    ("parallelism", Any),
    ("delay", Any),
    ("failure_action", Any),
    ("monitor", Any),
    ("max_failure_ratio", Any),
    ("order", Any),
]);

const LIMITS: Shape = Keys(&[("cpus", Any), ("memory", Any)]);

const DEPLOY: Shape = Keys(&[
    ("mode", Any),
    ("replicas", Any),
    ("endpoint_mode", Any),
    ("labels", Any),
    ("placement", Keys(&[("constraints", Any)])),
    (
        "resources",
        Keys(&[("limits", LIMITS), ("reservations", LIMITS)]),
    ),
    ("update_config", UPDATE),
    ("rollback_config", UPDATE),
    (
        "restart_policy",
        Keys(&[("condition", Any), ("delay", Any), ("max_attempts", Any)]),
    ),
]);

const SERVICE: Shape = Keys(&[
    ("image", Any),
    ("command", Any),
    ("entrypoint", Any),
    ("environment", Any),
    ("env_file", Any),
    ("labels", Any),
    ("hostname", Any),
    ("user", Any),
    ("working_dir", Any),
    ("read_only", Any),
    ("stop_grace_period", Any),
    ("cap_add", Any),
    ("cap_drop", Any),
    (
        "ports",
        Items(&Keys(&[
            ("target", Any),
            ("published", Any),
            ("protocol", Any),
            ("mode", Any),
            ("name", Any),
        ])),
    ),
    ("networks", Named(&Keys(&[("aliases", Any)]))),
    ("deploy", DEPLOY),
    (
        "healthcheck",
        Keys(&[
            ("test", Any),
            ("interval", Any),
            ("timeout", Any),
            ("retries", Any),
            ("start_period", Any),
            ("start_interval", Any),
            ("disable", Any),
        ]),
    ),
    (
        "volumes",
        Items(&Keys(&[
            ("type", Any),
            ("source", Any),
            ("target", Any),
            ("read_only", Any),
            ("tmpfs", Keys(&[("size", Any)])),
        ])),
    ),
]);

const NETWORK: Shape = Keys(&[
    ("driver", Any),
    ("attachable", Any),
    ("labels", Any),
    ("name", Any),
    ("external", Any),
    (
        "ipam",
        Keys(&[("config", Items(&Keys(&[("subnet", Any), ("gateway", Any)])))]),
    ),
]);

const FILE: Shape = Keys(&[
    // Only informative: every version reads the same here, as in docker's loader.
    ("version", Any),
    ("services", Named(&SERVICE)),
    ("networks", Named(&NETWORK)),
    ("volumes", Named(&Keys(&[("name", Any), ("external", Any)]))),
]);

/// The path of the first key of `file` that shoal does not act on, if any.
pub fn first_unsupported(file: &Value) -> Option<String> {
    let mut path = Vec::new();
    walk(file, &FILE, &mut path).then(|| path.join(""))
}

/// True when `v` has an unsupported key; `path` is then its path.
fn walk(v: &Value, shape: &Shape, path: &mut Vec<String>) -> bool {
    let seg = |path: &Vec<String>, key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!(".{key}")
        }
    };
    match (shape, v) {
        (Any, _) => false,
        (Keys(keys), Value::Mapping(m)) => m.iter().any(|(k, child)| {
            let key = key_text(k);
            if key.starts_with("x-") {
                return false;
            }
            path.push(seg(path, &key));
            let bad = match keys.iter().find(|(name, _)| *name == key) {
                None => true,
                Some((_, inner)) => walk(child, inner, path),
            };
            if !bad {
                path.pop();
            }
            bad
        }),
        (Named(inner), Value::Mapping(m)) => m.iter().any(|(k, child)| {
            path.push(seg(path, &key_text(k)));
            let bad = walk(child, inner, path);
            if !bad {
                path.pop();
            }
            bad
        }),
        (Items(inner), Value::Sequence(items)) => items.iter().enumerate().any(|(i, child)| {
            path.push(format!("[{i}]"));
            let bad = walk(child, inner, path);
            if !bad {
                path.pop();
            }
            bad
        }),
        _ => false,
    }
}

pub(crate) fn key_text(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(yaml: &str) -> Option<String> {
        first_unsupported(&serde_yaml::from_str(yaml).unwrap())
    }

    #[test]
    fn supported_keys_pass_and_others_are_named_by_path() {
        assert_eq!(
            first(
                "version: '3.8'\nx-common: {a: 1}\nservices:\n  web:\n    image: a\n    x-note: 1\n    ports: ['80:80', {target: 81, published: 8081}]\n    networks: {n: {aliases: [w]}}\n    deploy: {replicas: 2, update_config: {order: start-first}}\nnetworks:\n  n: {driver: overlay}\n"
            ),
            None
        );
        assert_eq!(
            first("services:\n  web:\n    image: a\n    privileged: true\n").as_deref(),
            Some("services.web.privileged")
        );
        assert_eq!(
            first("services:\n  web:\n    deploy:\n      placement:\n        preferences: []\n")
                .as_deref(),
            Some("services.web.deploy.placement.preferences")
        );
        assert_eq!(
            first("services:\n  web:\n    ports: ['80', {target: 81, host_ip: 1.2.3.4}]\n")
                .as_deref(),
            Some("services.web.ports[1].host_ip")
        );
        assert_eq!(
            first("services: {}\nsecrets: {s: {file: x}}\n").as_deref(),
            Some("secrets")
        );
        assert_eq!(
            first("services: {}\nnetworks: {n: {internal: true}}\n").as_deref(),
            Some("networks.n.internal")
        );
    }
}
