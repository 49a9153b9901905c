//! Service specs: what a user asks for with `shoal service create`. Field names follow
//! docker's `ServiceSpec` so that `--format` paths such as `{{.Spec.Name}}` carry over.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Constraint;
use crate::node::display_lowercase;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceSpec {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub task_template: TaskTemplate,
    pub mode: ServiceMode,
    pub endpoint_spec: EndpointSpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskTemplate {
    pub container_spec: ContainerSpec,
    pub restart_policy: RestartPolicy,
    #[serde(default)]
    pub placement: Placement,
    #[serde(default)]
    pub networks: Vec<NetworkAttachment>,
}

/// What a task runs. There is no image: the command comes from the host's filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerSpec {
    pub command: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    /// Milliseconds between SIGTERM and SIGKILL.
    pub stop_grace_period_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RestartPolicy {
    pub condition: RestartCondition,
    pub delay_ms: u64,
    /// 0 means no limit.
    #[serde(default)]
    pub max_attempts: u64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        // docker's defaults: restart on any exit, 5 s apart, forever.
        RestartPolicy {
            condition: RestartCondition::Any,
            delay_ms: 5_000,
            max_attempts: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartCondition {
    None,
    OnFailure,
    Any,
}
display_lowercase!(RestartCondition { None => "none", OnFailure => "on-failure", Any => "any" });

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Placement {
    #[serde(default)]
    pub constraints: Vec<Constraint>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkAttachment {
    /// Network name or id as the user gave it.
    pub target: String,
    #[serde(default)]
    pub aliases: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceMode {
    Replicated {
        #[serde(rename = "Replicas")]
        replicas: u64,
    },
    Global {},
}

impl ServiceMode {
    pub fn name(&self) -> &'static str {
        match self {
            ServiceMode::Replicated { .. } => "replicated",
            ServiceMode::Global {} => "global",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointSpec {
    pub mode: EndpointMode,
    #[serde(default)]
    pub ports: Vec<PortConfig>,
    /// TTL of the service's DNS answers (`--dns-ttl`); defaults in `endpoint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_ttl: Option<u32>,
}

impl Default for EndpointSpec {
    fn default() -> Self {
        EndpointSpec {
            mode: EndpointMode::Vip,
            ports: Vec::new(),
            dns_ttl: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    Vip,
    Dnsrr,
}
display_lowercase!(EndpointMode { Vip => "vip", Dnsrr => "dnsrr" });

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub protocol: Protocol,
    pub target_port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_port: Option<u16>,
    pub publish_mode: PublishMode,
    /// Which tasks serve a node's published port: all of them (cluster), or only the
    /// node's own (local), which keeps the client's source address. Swarm has no such option.
    #[serde(default)]
    pub traffic: TrafficPolicy,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrafficPolicy {
    #[default]
    Cluster,
    Local,
}
display_lowercase!(TrafficPolicy { Cluster => "cluster", Local => "local" });

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}
display_lowercase!(Protocol { Tcp => "tcp", Udp => "udp" });

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    Ingress,
    Host,
}
display_lowercase!(PublishMode { Ingress => "ingress", Host => "host" });

impl PortConfig {
    /// Parses docker's short form `[published:]target[/proto]` and long form
    /// `published=8080,target=80,protocol=udp,mode=host`.
    pub fn parse(s: &str) -> Result<PortConfig, String> {
        let bad = |why: &str| format!("invalid publish {s:?}: {why}");
        let port = |v: &str| {
            v.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| bad("ports are 1-65535"))
        };
        let mut pc = PortConfig {
            name: None,
            protocol: Protocol::Tcp,
            target_port: 0,
            published_port: None,
            publish_mode: PublishMode::Ingress,
            traffic: TrafficPolicy::Cluster,
        };
        if s.contains('=') {
            for field in s.split(',') {
                let (k, v) = field
                    .split_once('=')
                    .ok_or_else(|| bad("expected key=value pairs"))?;
                match k.trim() {
                    "published" => pc.published_port = Some(port(v)?),
                    "target" => pc.target_port = port(v)?,
                    "protocol" => pc.protocol = v.parse().map_err(|e: String| bad(&e))?,
                    "mode" => pc.publish_mode = v.parse().map_err(|e: String| bad(&e))?,
                    "name" => pc.name = Some(v.to_string()),
                    "traffic" => pc.traffic = v.parse().map_err(|e: String| bad(&e))?,
                    other => return Err(bad(&format!("unknown field {other:?}"))),
                }
            }
        } else {
            let (ports, proto) = match s.split_once('/') {
                Some((p, proto)) => (p, proto.parse().map_err(|e: String| bad(&e))?),
                None => (s, Protocol::Tcp),
            };
            pc.protocol = proto;
            match ports.split_once(':') {
                Some((published, target)) => {
                    pc.published_port = Some(port(published)?);
                    pc.target_port = port(target)?;
                }
                None => pc.target_port = port(ports)?,
            }
        }
        if pc.target_port == 0 {
            return Err(bad("a target port is required"));
        }
        if pc.publish_mode == PublishMode::Host && pc.published_port.is_none() {
            return Err(bad("mode=host needs a published port"));
        }
        if pc.traffic == TrafficPolicy::Local && pc.publish_mode == PublishMode::Host {
            return Err(bad(
                "traffic=local applies to mode=ingress; mode=host is always local",
            ));
        }
        Ok(pc)
    }
}

impl std::fmt::Display for PortConfig {
    /// docker's PORTS column: `*:8080->80/tcp`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.published_port {
            Some(p) => write!(f, "*:{p}->{}/{}", self.target_port, self.protocol),
            None => write!(f, "{}/{}", self.target_port, self.protocol),
        }
    }
}

/// Service and network names: what DNS can carry as one label.
pub fn validate_name(kind: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid {kind} name {name:?}: use 1-63 letters, digits, '-' or '_', starting with a letter or digit"
        ))
    }
}

impl ServiceSpec {
    pub fn validate(&self) -> Result<(), String> {
        validate_name("service", &self.name)?;
        if self.task_template.container_spec.command.is_empty() {
            return Err("a service needs a command to run, e.g. `shoal service create --name web shoal demo vote`".into());
        }
        for env in &self.task_template.container_spec.env {
            if !env.contains('=') || env.starts_with('=') {
                return Err(format!("invalid env {env:?}: expected KEY=VALUE"));
            }
        }
        if self.endpoint_spec.mode == EndpointMode::Dnsrr
            && self
                .endpoint_spec
                .ports
                .iter()
                .any(|p| p.publish_mode == PublishMode::Ingress && p.published_port.is_some())
        {
            return Err("ports published in ingress mode need --endpoint-mode vip; with dnsrr publish with mode=host".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for p in &self.endpoint_spec.ports {
            if let Some(pp) = p.published_port
                && !seen.insert((pp, p.protocol))
            {
                return Err(format!("published port {pp}/{} is given twice", p.protocol));
            }
        }
        Ok(())
    }

    pub fn replicas(&self) -> Option<u64> {
        match self.mode {
            ServiceMode::Replicated { replicas } => Some(replicas),
            ServiceMode::Global {} => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_short_and_long_forms() {
        let p = PortConfig::parse("8080:80").unwrap();
        assert_eq!(
            (p.published_port, p.target_port, p.protocol),
            (Some(8080), 80, Protocol::Tcp)
        );
        assert_eq!(p.to_string(), "*:8080->80/tcp");
        let p = PortConfig::parse("53/udp").unwrap();
        assert_eq!(
            (p.published_port, p.target_port, p.protocol),
            (None, 53, Protocol::Udp)
        );
        let p = PortConfig::parse("published=8080,target=80,protocol=udp,mode=host").unwrap();
        assert_eq!(p.publish_mode, PublishMode::Host);
        assert_eq!(p.protocol, Protocol::Udp);
        let p = PortConfig::parse("published=8080,target=80,traffic=local").unwrap();
        assert_eq!(p.traffic, TrafficPolicy::Local);
        assert!(PortConfig::parse("target=80,mode=host").is_err());
        assert!(PortConfig::parse("0:80").is_err());
        assert!(PortConfig::parse("8080:80/sctp").is_err());
        assert!(PortConfig::parse("published=80").is_err());
    }

    #[test]
    fn names() {
        assert!(validate_name("service", "vote").is_ok());
        assert!(validate_name("service", "-vote").is_err());
        assert!(validate_name("service", "vo.te").is_err());
    }
}
