//! Names that become DNS names in every task's resolver: service names, network aliases and
//! network names. Each must be one DNS label, and none may take a name that tasks need to
//! reach elsewhere.
//!
//! These checks run where a request comes in (the API backend, and the CLI first), not in
//! `ClusterState::apply`: a log written before a rule existed must replay to the same state
//! on every manager, whatever version it runs.

use crate::ServiceSpec;

/// Names no service, alias or network may take, and why.
const RESERVED: &[(&str, &str)] = &[
    ("tasks", "tasks.<service> lists a service's tasks"),
    ("localhost", "it is the task's own address"),
    ("localdomain", "resolvers treat it as the local host"),
    ("local", "it is the mDNS domain"),
    ("arpa", "reverse lookups live under it"),
    ("invalid", "it is reserved for names that never resolve"),
];

/// Network names also name a DNS suffix (`<service>.<network>`), and the resolver answers
/// NXDOMAIN for any unknown name under a network's: a network named like a top-level domain
/// would hide that whole domain from its tasks. Not every TLD: the generic ones people use
/// and the special-use ones (RFC 6761, 6762, 8375), which covers the names one would pick.
const TOP_LEVEL: &[&str] = &[
    "com", "net", "org", "edu", "gov", "mil", "int", "info", "biz", "io", "dev", "app", "ai", "co",
    "me", "cloud", "internal", "home", "lan", "corp", "test", "example", "onion",
];

/// One DNS label as swarmkit accepts it for names: 1-63 letters, digits, '-' or '_', starting
/// and ending with a letter or digit.
fn check_label(kind: &str, name: &str) -> Result<(), String> {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && alnum(name.chars().next())
        && alnum(name.chars().last());
    if ok {
        return Ok(());
    }
    let why = if name.contains('.') {
        "it must be one DNS label, without dots"
    } else {
        "use 1-63 letters, digits, '-' or '_', starting and ending with a letter or digit"
    };
    Err(format!("invalid {kind} {name:?}: {why}"))
}

fn check_reserved(kind: &str, name: &str) -> Result<(), String> {
    let lower = name.to_ascii_lowercase();
    match RESERVED.iter().find(|(r, _)| *r == lower) {
        Some((_, why)) => Err(format!(
            "invalid {kind} {name:?}: the name is reserved in DNS ({why}); pick another name"
        )),
        None => Ok(()),
    }
}

/// A service's name and its aliases on every network.
pub fn check_service(spec: &ServiceSpec) -> Result<(), String> {
    check_label("service name", &spec.name)?;
    check_reserved("service name", &spec.name)?;
    for attachment in &spec.task_template.networks {
        for alias in &attachment.aliases {
            check_label("network alias", alias)?;
            check_reserved("network alias", alias)?;
        }
    }
    Ok(())
}

/// A network's name (also a DNS suffix for its tasks).
pub fn check_network(name: &str) -> Result<(), String> {
    check_label("network name", name)?;
    check_reserved("network name", name)?;
    let lower = name.to_ascii_lowercase();
    if TOP_LEVEL.contains(&lower.as_str()) {
        return Err(format!(
            "invalid network name {name:?}: it is a top-level domain, and its tasks could no \
             longer resolve names under .{lower}; pick another name, e.g. {lower}-net"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NetworkAttachment;

    fn spec(name: &str, aliases: &[&str]) -> ServiceSpec {
        let mut s = crate::fixtures::spec(name, 1);
        s.task_template.networks = vec![NetworkAttachment {
            target: "front".into(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
        }];
        s
    }

    #[test]
    fn service_names_and_aliases_are_dns_labels() {
        assert_eq!(
            check_service(&spec("web", &["www", "web_1", "a-b"])),
            Ok(())
        );
        assert_eq!(
            check_service(&spec("web-", &[])).unwrap_err(),
            "invalid service name \"web-\": use 1-63 letters, digits, '-' or '_', starting and \
             ending with a letter or digit"
        );
        assert_eq!(
            check_service(&spec("web", &["google.com"])).unwrap_err(),
            "invalid network alias \"google.com\": it must be one DNS label, without dots"
        );
        for bad in ["", "-a", "a b", "é", &"a".repeat(64)] {
            assert!(check_service(&spec("web", &[bad])).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reserved_names_are_refused() {
        assert_eq!(
            check_service(&spec("tasks", &[])).unwrap_err(),
            "invalid service name \"tasks\": the name is reserved in DNS (tasks.<service> lists \
             a service's tasks); pick another name"
        );
        assert!(
            check_service(&spec("web", &["LocalHost"]))
                .unwrap_err()
                .starts_with("invalid network alias \"LocalHost\": the name is reserved")
        );
        assert!(check_network("tasks").is_err());
        assert_eq!(
            check_network("com").unwrap_err(),
            "invalid network name \"com\": it is a top-level domain, and its tasks could no \
             longer resolve names under .com; pick another name, e.g. com-net"
        );
        // Services may carry TLD-like names: a single label shadows no real domain.
        assert_eq!(check_service(&spec("app", &["dev"])), Ok(()));
        assert_eq!(check_network("front"), Ok(()));
    }
}
