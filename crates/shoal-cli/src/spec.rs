//! From `service create` / `service update` flags to a [`ServiceSpec`]: pure, so that every
//! default and every error is unit-tested.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;
use shoal_types::service::{ContainerSpec, Limits, Placement, Runtime, TaskTemplate};
use shoal_types::time::parse_duration_ms;
use shoal_types::{
    Constraint, EndpointMode, EndpointSpec, NetworkAttachment, PortConfig, RestartCondition,
    RestartPolicy, ServiceMode, ServiceSpec,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Replicated,
    Global,
}

/// `--runtime`: what a task runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeArg {
    /// IMAGE [COMMAND] [ARG...]: the image's container, run by runc.
    Oci,
    /// COMMAND [ARG...]: a command from the host's filesystem, in the task's namespaces.
    Host,
}

/// `shoal service create [OPTIONS] IMAGE [COMMAND] [ARG...]` (`--runtime host`: COMMAND
/// [ARG...]): flags come before the image.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// What the tasks run: oci (an image's container) or host (a command from the host).
    #[arg(long, value_enum, default_value = "oci")]
    pub runtime: RuntimeArg,
    /// Overwrite the image's ENTRYPOINT (oci).
    #[arg(long, allow_hyphen_values = true)]
    pub entrypoint: Option<String>,
    /// Username or UID[:GID] the container's process runs as (oci).
    #[arg(short, long)]
    pub user: Option<String>,
    /// Mount the container's root filesystem read-only (oci).
    #[arg(long)]
    pub read_only: bool,
    /// Memory limit (oci): bytes, or with a unit b, k, m, g (1024-based, as docker).
    #[arg(long, value_name = "BYTES")]
    pub limit_memory: Option<String>,
    /// CPU limit (oci): a number of CPUs, e.g. 0.5.
    #[arg(long, value_name = "CPUS")]
    pub limit_cpu: Option<String>,
    /// Service name.
    #[arg(long, allow_hyphen_values = true)]
    pub name: Option<String>,
    /// Number of tasks (replicated mode; default 1).
    #[arg(long)]
    pub replicas: Option<u64>,
    /// Service mode.
    #[arg(long, value_enum, default_value = "replicated")]
    pub mode: Mode,
    /// Set environment variables (KEY=VALUE).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory inside the task.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Attach to a network: NAME, or name=NAME,alias=ALIAS...
    #[arg(long = "network", value_name = "NETWORK")]
    pub networks: Vec<String>,
    /// Endpoint mode: vip or dnsrr.
    #[arg(long, default_value = "vip")]
    pub endpoint_mode: EndpointMode,
    /// TTL in seconds of the service's DNS answers (default: the daemon's).
    #[arg(long, value_name = "SECONDS")]
    pub dns_ttl: Option<u32>,
    /// Publish a port: [PUBLISHED:]TARGET[/PROTO] or published=P,target=T,protocol=udp,mode=host.
    #[arg(short, long = "publish", value_name = "PORT")]
    pub publish: Vec<String>,
    /// Placement constraint, e.g. node.hostname==node2.
    #[arg(long = "constraint")]
    pub constraints: Vec<String>,
    /// Restart when: none, on-failure or any.
    #[arg(long, default_value = "any")]
    pub restart_condition: RestartCondition,
    /// Delay between restart attempts.
    #[arg(long, default_value = "5s", value_name = "DURATION")]
    pub restart_delay: String,
    /// Maximum number of restarts before giving up (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub restart_max_attempts: u64,
    /// Time to wait before force killing a task.
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub stop_grace_period: String,
    /// Service labels (KEY=VALUE).
    #[arg(short, long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Exit immediately instead of waiting for the service to converge.
    #[arg(short, long)]
    pub detach: bool,
    /// How long to wait for the service to converge.
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub timeout: String,
    #[command(flatten)]
    pub image_opts: crate::image::ImageOpts,
    #[command(flatten)]
    pub container_opts: crate::container_opts::ContainerOpts,
    #[command(flatten)]
    pub policy: crate::update_opts::PolicyOpts,
    #[command(flatten)]
    pub health_opts: crate::health_opts::HealthOpts,
    /// IMAGE [COMMAND] [ARG...] (`--runtime host`: COMMAND [ARG...]). Flags go before it:
    /// an unknown one there is refused by name; from IMAGE on, every word is the command's.
    #[arg(
        required = true,
        trailing_var_arg = true,
        value_name = "IMAGE [COMMAND] [ARG...]"
    )]
    pub command: Vec<String>,
}

/// `shoal service update [OPTIONS] SERVICE`: what is not given stays as it is.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Number of tasks.
    #[arg(long)]
    pub replicas: Option<u64>,
    /// The image tasks run (resolved to a digest again unless --no-resolve-image).
    #[arg(long)]
    pub image: Option<String>,
    #[command(flatten)]
    pub image_opts: crate::image::ImageOpts,
    #[command(flatten)]
    pub container_opts: crate::container_opts::ContainerUpdateOpts,
    #[command(flatten)]
    pub policy: crate::update_opts::PolicyOpts,
    /// Replace every task even if nothing else changed.
    #[arg(long)]
    pub force: bool,
    /// Go back to the previous spec (as `service rollback`); takes no other flag.
    #[arg(long)]
    pub rollback: bool,
    #[command(flatten)]
    pub health_opts: crate::health_opts::HealthOpts,
    /// Add or update environment variables (KEY=VALUE).
    #[arg(long, value_name = "KEY=VALUE")]
    pub env_add: Vec<String>,
    /// Remove an environment variable.
    #[arg(long, value_name = "KEY")]
    pub env_rm: Vec<String>,
    /// Replace the command's arguments (keeps the program): --args "-p 80 --verbose".
    #[arg(long, allow_hyphen_values = true)]
    pub args: Option<String>,
    /// Replace the whole command: --command "sleep 100".
    #[arg(long, allow_hyphen_values = true)]
    pub command: Option<String>,
    /// Working directory inside the task.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Add or update a published port.
    #[arg(long, value_name = "PORT")]
    pub publish_add: Vec<String>,
    /// Remove a published port by its target port (80 or 80/udp).
    #[arg(long, value_name = "PORT")]
    pub publish_rm: Vec<String>,
    /// Add a placement constraint.
    #[arg(long, value_name = "CONSTRAINT")]
    pub constraint_add: Vec<String>,
    /// Remove a placement constraint.
    #[arg(long, value_name = "CONSTRAINT")]
    pub constraint_rm: Vec<String>,
    /// Add or update a service label.
    #[arg(long, value_name = "KEY=VALUE")]
    pub label_add: Vec<String>,
    /// Remove a service label.
    #[arg(long, value_name = "KEY")]
    pub label_rm: Vec<String>,
    /// Restart when: none, on-failure or any.
    #[arg(long)]
    pub restart_condition: Option<RestartCondition>,
    /// Time to wait before force killing a task.
    #[arg(long, value_name = "DURATION")]
    pub stop_grace_period: Option<String>,
    /// Exit immediately instead of waiting for the service to converge.
    #[arg(short, long)]
    pub detach: bool,
    /// How long to wait for the service to converge.
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub timeout: String,
    #[arg(value_name = "SERVICE")]
    pub service: String,
}

pub fn build_spec(a: &CreateArgs) -> Result<ServiceSpec> {
    let mode = match (a.mode, a.replicas) {
        (Mode::Global, Some(_)) => bail!("replicas can only be used with replicated mode"),
        (Mode::Global, None) => ServiceMode::Global {},
        (Mode::Replicated, r) => ServiceMode::Replicated {
            replicas: r.unwrap_or(1),
        },
    };
    let container_spec = container_spec(a)?;
    let mut spec = ServiceSpec {
        name: match &a.name {
            Some(n) => n.clone(),
            None => match &container_spec.image {
                Some(image) => default_name(&[image_base(image)]),
                None => default_name(&a.command),
            },
        },
        labels: key_values("label", &a.labels)?,
        task_template: TaskTemplate {
            container_spec,
            restart_policy: RestartPolicy {
                condition: a.restart_condition,
                delay_ms: duration("--restart-delay", &a.restart_delay)?,
                max_attempts: a.restart_max_attempts,
            },
            placement: Placement {
                constraints: a
                    .constraints
                    .iter()
                    .map(|c| Constraint::parse(c))
                    .collect::<Result<_, _>>()
                    .map_err(anyhow::Error::msg)?,
            },
            networks: a
                .networks
                .iter()
                .map(|n| network(n))
                .collect::<Result<_>>()?,
            force_update: 0,
        },
        mode,
        endpoint_spec: EndpointSpec {
            mode: a.endpoint_mode,
            ports: ports(&a.publish)?,
            dns_ttl: a.dns_ttl,
            publish_not_ready: false,
        },
        update_config: Default::default(),
        rollback_config: Default::default(),
    };
    a.policy.apply(&mut spec)?;
    a.health_opts.apply_create(
        &mut spec.task_template.container_spec,
        &mut spec.endpoint_spec,
    )?;
    spec.validate().map_err(anyhow::Error::msg)?;
    shoal_types::dns_name::check_service(&spec).map_err(anyhow::Error::msg)?;
    Ok(spec)
}

/// The task's runtime and what it runs, from IMAGE [COMMAND] [ARG...] or, with `--runtime
/// host`, COMMAND [ARG...]. An image reference that does not parse is refused here, naming
/// it, as docker does.
fn container_spec(a: &CreateArgs) -> Result<ContainerSpec> {
    let mut oci_only = vec![
        ("--entrypoint", a.entrypoint.is_some()),
        ("--user", a.user.is_some()),
        ("--read-only", a.read_only),
        ("--limit-memory", a.limit_memory.is_some()),
        ("--limit-cpu", a.limit_cpu.is_some()),
    ];
    oci_only.extend(a.container_opts.oci_only());
    let mut cs = ContainerSpec::host(a.command.clone());
    cs.env = checked_env(&a.env)?;
    a.container_opts.apply(&mut cs)?;
    cs.dir = a.workdir.clone();
    cs.stop_grace_period_ms = duration("--stop-grace-period", &a.stop_grace_period)?;
    match a.runtime {
        RuntimeArg::Host => {
            if let Some((flag, _)) = oci_only.iter().find(|(_, given)| *given) {
                bail!(
                    "{flag} is for containers (--runtime oci); a host command runs as the daemon's user on the host's filesystem"
                );
            }
        }
        RuntimeArg::Oci => {
            let (image, command) = a
                .command
                .split_first()
                .ok_or_else(|| anyhow::anyhow!("service create needs an IMAGE"))?;
            shoal_image::ImageRef::parse(image).map_err(|e| anyhow::anyhow!("{e}"))?;
            cs.runtime = Runtime::Oci;
            cs.image = Some(image.clone());
            cs.command = command.to_vec();
            cs.entrypoint = a
                .entrypoint
                .as_ref()
                .map(|e| e.split_whitespace().map(String::from).collect());
            cs.user = a.user.clone();
            cs.read_only = a.read_only;
            cs.limits = Limits {
                memory_bytes: a.limit_memory.as_deref().map(memory_bytes).transpose()?,
                nano_cpus: a.limit_cpu.as_deref().map(nano_cpus).transpose()?,
            };
        }
    }
    Ok(cs)
}

/// The repository's last path component, for a generated service name.
fn image_base(image: &str) -> String {
    let path = image.split(['@']).next().unwrap_or(image);
    let last = path.rsplit('/').next().unwrap_or(path);
    last.split(':').next().unwrap_or(last).to_string()
}

/// docker's memory sizes: a number with an optional unit b, k, m, g or t (1024-based).
pub fn memory_bytes(s: &str) -> Result<i64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').filter(|r| !r.is_empty()).unwrap_or(&t);
    let (num, shift) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 10),
        Some('m') => (&t[..t.len() - 1], 20),
        Some('g') => (&t[..t.len() - 1], 30),
        Some('t') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: f64 = num
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n > 0.0)
        .ok_or_else(|| {
            anyhow::anyhow!("invalid --limit-memory {s:?}: expected a size such as 64m or 1g")
        })?;
    Ok((n * (1u64 << shift) as f64) as i64)
}

/// `--limit-cpu 0.5` as Swarm keeps it: CPUs × 10⁹.
pub fn nano_cpus(s: &str) -> Result<u64> {
    let n: f64 = s
        .trim()
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n > 0.0)
        .ok_or_else(|| {
            anyhow::anyhow!("invalid --limit-cpu {s:?}: expected a number of CPUs such as 0.5")
        })?;
    Ok((n * 1e9).round() as u64)
}

/// A name for a service created without `--name`: the program's file name and a random
/// suffix, like docker's generated names.
fn default_name(command: &[String]) -> String {
    let program = command.first().map(String::as_str).unwrap_or("service");
    let base: String = program
        .rsplit('/')
        .next()
        .unwrap_or(program)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let base = base.trim_start_matches(['-', '_']);
    let base = if base.is_empty() { "service" } else { base };
    let base: String = base.chars().take(50).collect();
    format!("{base}-{}", &shoal_types::new_id()[..6])
}

pub fn duration(flag: &str, s: &str) -> Result<u64> {
    parse_duration_ms(s).map_err(|e| anyhow::anyhow!("invalid {flag}: {e}"))
}

pub fn timeout(s: &str) -> Result<Duration> {
    Ok(Duration::from_millis(duration("--timeout", s)?))
}

fn checked_env(env: &[String]) -> Result<Vec<String>> {
    for e in env {
        if !e.contains('=') || e.starts_with('=') {
            bail!("invalid env {e:?}: expected KEY=VALUE");
        }
    }
    Ok(env.to_vec())
}

fn key_values(what: &str, items: &[String]) -> Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("invalid {what} {kv:?}: expected KEY=VALUE"),
        })
        .collect()
}

fn ports(publish: &[String]) -> Result<Vec<PortConfig>> {
    publish
        .iter()
        .map(|p| PortConfig::parse(p).map_err(anyhow::Error::msg))
        .collect()
}

/// `--network NAME` or the long form `name=NAME,alias=A,alias=B` (`target=` works too).
pub fn network(s: &str) -> Result<NetworkAttachment> {
    if !s.contains('=') {
        if s.is_empty() {
            bail!("invalid --network: empty name");
        }
        return Ok(NetworkAttachment {
            target: s.to_string(),
            aliases: Vec::new(),
        });
    }
    let mut target = None;
    let mut aliases = Vec::new();
    for field in s.split(',') {
        match field.split_once('=') {
            Some(("name" | "target", v)) if !v.is_empty() => target = Some(v.to_string()),
            Some(("alias", v)) if !v.is_empty() => aliases.push(v.to_string()),
            _ => bail!("invalid --network {s:?}: expected NAME or name=NAME,alias=ALIAS"),
        }
    }
    let target =
        target.ok_or_else(|| anyhow::anyhow!("invalid --network {s:?}: name=NAME is required"))?;
    Ok(NetworkAttachment { target, aliases })
}

/// Applies `service update` flags to the current spec.
pub fn apply_update(mut spec: ServiceSpec, a: &UpdateArgs) -> Result<ServiceSpec> {
    if let Some(r) = a.replicas {
        match &mut spec.mode {
            ServiceMode::Replicated { replicas } => *replicas = r,
            ServiceMode::Global {} => bail!("replicas can only be used with replicated mode"),
        }
    }
    let cs = &mut spec.task_template.container_spec;
    a.container_opts.apply(cs)?;
    if let Some(image) = &a.image {
        if cs.runtime != Runtime::Oci {
            bail!("--image is for services that run an image; this one runs a host command");
        }
        shoal_image::ImageRef::parse(image).map_err(|e| anyhow::anyhow!("{e}"))?;
        cs.image = Some(image.clone());
    }
    if let Some(cmd) = &a.command {
        cs.command = split_words(cmd)?;
        if cs.command.is_empty() {
            bail!("--command needs a command, e.g. --command \"sleep 100\"");
        }
    }
    if let Some(args) = &a.args {
        let program = cs.command.first().cloned().unwrap_or_default();
        cs.command = std::iter::once(program).chain(split_words(args)?).collect();
    }
    if let Some(dir) = &a.workdir {
        cs.dir = Some(dir.clone()).filter(|d| !d.is_empty());
    }
    if let Some(g) = &a.stop_grace_period {
        cs.stop_grace_period_ms = duration("--stop-grace-period", g)?;
    }
    for e in checked_env(&a.env_add)? {
        let key = e.split_once('=').map(|(k, _)| k).unwrap_or(&e).to_string();
        cs.env
            .retain(|x| x.split_once('=').map(|(k, _)| k) != Some(key.as_str()));
        cs.env.push(e);
    }
    cs.env.retain(|x| {
        let key = x.split_once('=').map(|(k, _)| k).unwrap_or(x);
        !a.env_rm.iter().any(|r| r == key)
    });
    for p in ports(&a.publish_add)? {
        spec.endpoint_spec
            .ports
            .retain(|q| !(q.target_port == p.target_port && q.protocol == p.protocol));
        spec.endpoint_spec.ports.push(p);
    }
    for rm in &a.publish_rm {
        let p = PortConfig::parse(rm).map_err(anyhow::Error::msg)?;
        let before = spec.endpoint_spec.ports.len();
        spec.endpoint_spec
            .ports
            .retain(|q| !(q.target_port == p.target_port && q.protocol == p.protocol));
        if spec.endpoint_spec.ports.len() == before {
            bail!(
                "no published port with target {}/{} to remove",
                p.target_port,
                p.protocol
            );
        }
    }
    let constraints = &mut spec.task_template.placement.constraints;
    for c in &a.constraint_add {
        let c = Constraint::parse(c).map_err(anyhow::Error::msg)?;
        if !constraints.contains(&c) {
            constraints.push(c);
        }
    }
    for c in &a.constraint_rm {
        let c = Constraint::parse(c).map_err(anyhow::Error::msg)?;
        constraints.retain(|x| *x != c);
    }
    spec.labels.extend(key_values("label", &a.label_add)?);
    for k in &a.label_rm {
        spec.labels.remove(k);
    }
    if let Some(c) = a.restart_condition {
        spec.task_template.restart_policy.condition = c;
    }
    a.policy.apply(&mut spec)?;
    if a.force {
        spec.task_template.force_update += 1;
    }
    a.health_opts.apply_update(&mut spec)?;
    spec.validate().map_err(anyhow::Error::msg)?;
    shoal_types::dns_name::check_service(&spec).map_err(anyhow::Error::msg)?;
    Ok(spec)
}

/// Splits a command line like a shell would for simple cases: whitespace, '...' and "...".
pub fn split_words(s: &str) -> Result<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some(q) if q == c => break,
                        Some('\\') if c == '"' => cur.extend(chars.next()),
                        Some(o) => cur.push(o),
                        None => bail!("unterminated quote in {s:?}"),
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.extend(chars.next());
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
