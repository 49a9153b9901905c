//! Service specs: what a user asks for with `shoal service create`. Field names follow
//! docker's `ServiceSpec` so that `--format` paths such as `{{.Spec.Name}}` carry over.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Constraint;
use crate::node::display_lowercase;
use crate::update::UpdateConfig;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceSpec {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub task_template: TaskTemplate,
    pub mode: ServiceMode,
    pub endpoint_spec: EndpointSpec,
    /// `--update-*`: how a change of what tasks run rolls out. A spec stored before update
    /// policies existed reads the defaults.
    #[serde(default)]
    pub update_config: UpdateConfig,
    /// `--rollback-*`: how a rollback rolls out.
    #[serde(default)]
    pub rollback_config: UpdateConfig,
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
    /// Bumped by `service update --force`: every task is replaced though nothing else
    /// changed (docker's counter).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub force_update: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What a task runs: an image's container (`Runtime::Oci`), or a command from the host's
/// filesystem (`Runtime::Host`). Specs stored before runtimes existed have none and read as
/// `Host`, so a Raft log written then replays to the same state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerSpec {
    #[serde(default, skip_serializing_if = "Runtime::is_host")]
    pub runtime: Runtime,
    /// The image reference as the user gave it (`oci` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `host`: the command and its arguments. `oci`: COMMAND [ARG...], replacing the image's
    /// Cmd when not empty.
    pub command: Vec<String>,
    /// `--entrypoint` (`oci`): replaces the image's Entrypoint and clears its Cmd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// `-u name|uid[:group|gid]` (`oci`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `--read-only` (`oci`): the root filesystem is mounted read-only.
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
    /// `--limit-memory` / `--limit-cpu` (`oci`).
    #[serde(default, skip_serializing_if = "Limits::is_empty")]
    pub limits: Limits,
    /// `--reserve-memory` / `--reserve-cpu`: what the scheduler sets aside on the node.
    #[serde(default, skip_serializing_if = "Limits::is_empty")]
    pub reservations: Limits,
    /// `--mount` (`oci`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<crate::mount::Mount>,
    /// `--cap-add` / `--cap-drop` (`oci`), on docker's default set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    /// `--hostname` (`oci`; default: the task's short id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    /// Milliseconds between SIGTERM and SIGKILL.
    pub stop_grace_period_ms: u64,
    /// `--health-*` / `--no-healthcheck` (docker's `Healthcheck`); unset: the image's.
    #[serde(
        rename = "Healthcheck",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub healthcheck: Option<crate::health::HealthConfig>,
    /// `--container-label` (docker's `ContainerSpec.Labels`; stacks set
    /// `com.docker.stack.namespace`): shown on the task's container (`docker inspect`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl ContainerSpec {
    /// A host-command task's spec with the defaults (`--runtime host`).
    pub fn host(command: Vec<String>) -> ContainerSpec {
        ContainerSpec {
            runtime: Runtime::Host,
            image: None,
            command,
            entrypoint: None,
            user: None,
            read_only: false,
            limits: Limits::default(),
            reservations: Limits::default(),
            mounts: vec![],
            cap_add: vec![],
            cap_drop: vec![],
            hostname: None,
            env: vec![],
            dir: None,
            stop_grace_period_ms: 10_000,
            healthcheck: None,
            labels: BTreeMap::new(),
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// How a task runs (`service create --runtime`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// A command from the host's filesystem in the task's namespaces (what every task was
    /// before images).
    #[default]
    Host,
    /// An image's container, run by runc.
    Oci,
}
display_lowercase!(Runtime { Host => "host", Oci => "oci" });

impl Runtime {
    pub fn is_host(&self) -> bool {
        *self == Runtime::Host
    }
}

/// Resource limits, as Swarm keeps them (`Resources.Limits`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Limits {
    /// CPUs × 10⁹.
    #[serde(rename = "NanoCPUs", default, skip_serializing_if = "Option::is_none")]
    pub nano_cpus: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<i64>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        self.nano_cpus.is_none() && self.memory_bytes.is_none()
    }
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
    /// `--endpoint-publish-not-ready` (Kubernetes' publishNotReadyAddresses): `tasks.<svc>`
    /// also lists tasks that run but are not ready yet, so that the members of a clustered
    /// app find each other before they are healthy. `<svc>`, VIPs and the mesh still wait.
    #[serde(
        rename = "PublishNotReadyAddresses",
        default,
        skip_serializing_if = "is_false"
    )]
    pub publish_not_ready: bool,
}

impl Default for EndpointSpec {
    fn default() -> Self {
        EndpointSpec {
            mode: EndpointMode::Vip,
            ports: Vec::new(),
            dns_ttl: None,
            publish_not_ready: false,
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

/// The most replicas a service may ask for. The control plane is sized for 100,000 tasks in
/// all (issue 12); a service's tasks are created a bounded number per pass
/// (shoal-manager's `MAX_CREATE_PER_PASS`), but each pass still looks at every slot.
pub const MAX_REPLICAS: u64 = 100_000;

impl ServiceSpec {
    pub fn validate(&self) -> Result<(), String> {
        validate_name("service", &self.name)?;
        if let Some(n) = self.replicas()
            && n > MAX_REPLICAS
        {
            return Err(format!(
                "invalid replicas value {n}: a service runs at most {MAX_REPLICAS} replicas; \
                 split the work over several services"
            ));
        }
        let cs = &self.task_template.container_spec;
        match cs.runtime {
            Runtime::Host if cs.command.is_empty() => {
                return Err("a service needs a command to run, e.g. `shoal service create --runtime host --name web shoal demo vote`".into());
            }
            Runtime::Oci if cs.image.as_deref().unwrap_or("").is_empty() => {
                return Err(
                    "a service needs an image to run, e.g. `shoal service create --name web nginx`"
                        .into(),
                );
            }
            Runtime::Host if cs.image.is_some() => {
                return Err(
                    "--runtime host runs a command from the host's filesystem: it takes no image"
                        .into(),
                );
            }
            _ => {}
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
        self.update_config.validate("update")?;
        self.rollback_config.validate("rollback")?;
        if let Some(h) = &self.task_template.container_spec.healthcheck {
            h.validate()?;
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

    /// Whether tasks made from `self` must be replaced to run `other`: what they run, what
    /// they publish, or `--force`.
    pub fn tasks_differ(&self, other: &ServiceSpec) -> bool {
        self.task_template.container_spec != other.task_template.container_spec
            || self.endpoint_spec.ports != other.endpoint_spec.ports
            || self.task_template.force_update != other.task_template.force_update
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
    fn replicas_are_bounded() {
        assert!(
            crate::fixtures::spec("web", MAX_REPLICAS)
                .validate()
                .is_ok()
        );
        assert_eq!(
            crate::fixtures::spec("web", 200_000)
                .validate()
                .unwrap_err(),
            "invalid replicas value 200000: a service runs at most 100000 replicas; split the \
             work over several services"
        );
    }

    #[test]
    fn names() {
        assert!(validate_name("service", "vote").is_ok());
        assert!(validate_name("service", "-vote").is_err());
        assert!(validate_name("service", "vo.te").is_err());
    }
}

#[cfg(test)]
mod runtime_tests {
    use super::*;

    #[test]
    fn a_spec_stored_before_runtimes_reads_as_host() {
        let old = r#"{"Command":["sleep","100"],"Env":[],"StopGracePeriodMs":10000}"#;
        let cs: ContainerSpec = serde_json::from_str(old).unwrap();
        assert_eq!(cs, ContainerSpec::host(vec!["sleep".into(), "100".into()]));
    }

    #[test]
    fn an_oci_spec_keeps_its_image_and_settings() {
        let cs = ContainerSpec {
            runtime: Runtime::Oci,
            image: Some("127.0.0.1:5000/busybox".into()),
            entrypoint: Some(vec!["sh".into()]),
            read_only: true,
            limits: Limits {
                nano_cpus: Some(500_000_000),
                memory_bytes: Some(16 << 20),
            },
            ..ContainerSpec::host(vec!["-c".into(), "true".into()])
        };
        let json = serde_json::to_string(&cs).unwrap();
        assert!(json.contains(r#""Runtime":"oci""#), "{json}");
        assert!(json.contains(r#""NanoCPUs":500000000"#), "{json}");
        assert_eq!(serde_json::from_str::<ContainerSpec>(&json).unwrap(), cs);
    }
}
