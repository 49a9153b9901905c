//! docker's `ServiceSpec` to shoal's and back.
//!
//! Durations are nanoseconds in docker's JSON and milliseconds in most of shoal's (health
//! checks are nanoseconds in both). docker's `ContainerSpec.Command` overrides the image's
//! entrypoint and `Args` its command; shoal names them `entrypoint` and `command`.
//!
//! What a docker spec sets and shoal cannot do is refused by field name. What shoal's spec
//! holds and docker's cannot say (a host-command runtime, `traffic=local`, the DNS TTL,
//! publishing not-ready tasks) is kept from the service's current spec on update: the docker
//! CLI sends back what it read, less what it does not know.

use std::collections::{BTreeMap, HashMap};

use bollard_stubs::models as d;
use shoal_types::Constraint;
use shoal_types::health::HealthConfig;
use shoal_types::mount::{Mount, MountType};
use shoal_types::service::{
    ContainerSpec, EndpointMode, EndpointSpec, Limits, NetworkAttachment, Placement, PortConfig,
    Protocol, PublishMode, RestartCondition, RestartPolicy, Runtime, ServiceMode, ServiceSpec,
    TaskTemplate, TrafficPolicy,
};
use shoal_types::update::{FailureAction, FailureRatio, UpdateConfig, UpdateOrder};

use crate::DockerError;

const NS_PER_MS: i64 = 1_000_000;

fn ms(ns: Option<i64>, field: &str) -> Result<u64, DockerError> {
    match ns {
        None => Ok(0),
        Some(n) if n < 0 => Err(DockerError::Invalid(format!(
            "{field} must not be negative (got {n} ns)"
        ))),
        Some(n) => Ok((n / NS_PER_MS) as u64),
    }
}

fn ns(ms: u64) -> i64 {
    (ms as i64).saturating_mul(NS_PER_MS)
}

fn count(v: Option<i64>, field: &str) -> Result<Option<u64>, DockerError> {
    match v {
        None => Ok(None),
        Some(n) if n < 0 => Err(DockerError::Invalid(format!(
            "{field} must not be negative (got {n})"
        ))),
        Some(n) => Ok(Some(n as u64)),
    }
}

/// Refuses `field` when `set`: a docker option shoal does not implement.
fn refuse_if(set: bool, field: &str) -> Result<(), DockerError> {
    if set {
        Err(DockerError::unsupported(field))
    } else {
        Ok(())
    }
}

fn some_nonempty<T>(v: &Option<Vec<T>>) -> bool {
    v.as_ref().is_some_and(|v| !v.is_empty())
}

fn some_nonempty_map<K, V>(v: &Option<HashMap<K, V>>) -> bool {
    v.as_ref().is_some_and(|v| !v.is_empty())
}

/// shoal's spec from docker's. `current` is the service's spec on update: what docker's
/// spec cannot express is kept from it.
pub fn from_docker(
    spec: d::ServiceSpec,
    current: Option<&ServiceSpec>,
) -> Result<ServiceSpec, DockerError> {
    let name = spec.name.filter(|n| !n.is_empty()).ok_or_else(|| {
        DockerError::Invalid(
            "a service needs a name: shoal does not make one up (docker service create --name NAME)"
                .into(),
        )
    })?;
    let template = spec.task_template.unwrap_or_default();
    refuse_if(template.plugin_spec.is_some(), "TaskTemplate.PluginSpec")?;
    refuse_if(
        template.network_attachment_spec.is_some(),
        "TaskTemplate.NetworkAttachmentSpec",
    )?;
    refuse_if(
        template.log_driver.is_some(),
        "TaskTemplate.LogDriver (--log-driver)",
    )?;
    let host_now = current.is_some_and(|c| c.task_template.container_spec.runtime.is_host());
    match template.runtime.as_deref() {
        None | Some("" | "container") => {}
        // As shown for a host-command service, sent back unchanged.
        Some("host") if host_now => {}
        Some("host") => {
            return Err(DockerError::Invalid(
                "TaskTemplate.Runtime host: a host-command service is made with `shoal service create --runtime host`".into(),
            ));
        }
        Some(r) => {
            return Err(DockerError::unsupported(&format!(
                "TaskTemplate.Runtime {r:?}"
            )));
        }
    }
    let container = container_from_docker(
        template.container_spec.unwrap_or_default(),
        template.resources.unwrap_or_default(),
        current.map(|c| &c.task_template.container_spec),
    )?;
    let networks = template
        .networks
        .filter(|n| !n.is_empty())
        .or(spec.networks)
        .unwrap_or_default()
        .into_iter()
        .map(network_from_docker)
        .collect::<Result<Vec<_>, _>>()?;
    let endpoint_spec = endpoint_from_docker(
        spec.endpoint_spec.unwrap_or_default(),
        current.map(|c| &c.endpoint_spec),
    )?;
    let shoal = ServiceSpec {
        name,
        labels: spec.labels.unwrap_or_default().into_iter().collect(),
        task_template: TaskTemplate {
            container_spec: container,
            restart_policy: restart_from_docker(template.restart_policy)?,
            placement: placement_from_docker(template.placement)?,
            networks,
            force_update: template.force_update.unwrap_or(0),
        },
        mode: mode_from_docker(spec.mode)?,
        endpoint_spec,
        update_config: update_from_docker(
            spec.update_config.map(UpdateFields::from),
            "UpdateConfig",
        )?,
        rollback_config: update_from_docker(
            spec.rollback_config.map(UpdateFields::from),
            "RollbackConfig",
        )?,
    };
    shoal.validate().map_err(DockerError::Invalid)?;
    Ok(shoal)
}

/// `current`: the service's container spec on update. A host-command service shows no image
/// through the Engine API; sent back without one, it stays a host command.
fn container_from_docker(
    c: d::TaskSpecContainerSpec,
    resources: d::TaskSpecResources,
    current: Option<&ContainerSpec>,
) -> Result<ContainerSpec, DockerError> {
    const P: &str = "TaskTemplate.ContainerSpec";

    refuse_if(some_nonempty(&c.groups), &format!("{P}.Groups (--group)"))?;
    if let Some(field) = c.privileges.as_ref().and_then(privilege_set) {
        return Err(DockerError::unsupported(&format!("{P}.Privileges.{field}")));
    }

    refuse_if(c.tty == Some(true), &format!("{P}.TTY (--tty)"))?;
    refuse_if(c.open_stdin == Some(true), &format!("{P}.OpenStdin"))?;
    refuse_if(
        c.stop_signal.as_deref().is_some_and(|s| !s.is_empty()),
        &format!("{P}.StopSignal (--stop-signal)"),
    )?;
    refuse_if(some_nonempty(&c.hosts), &format!("{P}.Hosts (--host)"))?;
    refuse_if(
        c.dns_config.as_ref().is_some_and(|d| {
            some_nonempty(&d.nameservers) || some_nonempty(&d.search) || some_nonempty(&d.options)
        }),
        &format!("{P}.DNSConfig (--dns, --dns-search, --dns-option)"),
    )?;
    refuse_if(
        some_nonempty(&c.secrets),
        &format!("{P}.Secrets (--secret)"),
    )?;
    refuse_if(
        some_nonempty(&c.configs),
        &format!("{P}.Configs (--config)"),
    )?;
    refuse_if(c.init == Some(true), &format!("{P}.Init (--init)"))?;
    refuse_if(
        some_nonempty_map(&c.sysctls),
        &format!("{P}.Sysctls (--sysctl)"),
    )?;
    refuse_if(
        some_nonempty(&c.ulimits),
        &format!("{P}.Ulimits (--ulimit)"),
    )?;
    refuse_if(
        c.oom_score_adj.is_some_and(|o| o != 0),
        &format!("{P}.OomScoreAdj (--oom-score-adj)"),
    )?;
    if let Some(iso) = c.isolation
        && iso != d::TaskSpecContainerSpecIsolationEnum::DEFAULT
        && iso != d::TaskSpecContainerSpecIsolationEnum::EMPTY
    {
        return Err(DockerError::unsupported(&format!("{P}.Isolation {iso}")));
    }
    let limits = resources.limits.unwrap_or_default();
    refuse_if(
        limits.pids.is_some_and(|p| p != 0),
        "TaskTemplate.Resources.Limits.Pids (--limit-pids)",
    )?;
    let reservations = resources.reservations.unwrap_or_default();
    refuse_if(
        reservations
            .generic_resources
            .as_ref()
            .is_some_and(|g| !g.is_empty()),
        "TaskTemplate.Resources.Reservations.GenericResources (--generic-resource)",
    )?;
    refuse_if(
        resources.swap_bytes.is_some(),
        "TaskTemplate.Resources.SwapBytes",
    )?;
    refuse_if(
        resources.memory_swappiness.is_some(),
        "TaskTemplate.Resources.MemorySwappiness",
    )?;
    let image = c.image.filter(|i| !i.is_empty());
    let runtime = match (&image, current) {
        (None, Some(cur)) if cur.runtime.is_host() => cur.runtime,
        (None, _) => {
            return Err(DockerError::Invalid(
                "a service needs an image (docker service create IMAGE)".into(),
            ));
        }
        (Some(_), _) => Runtime::Oci,
    };
    let mounts = c
        .mounts
        .unwrap_or_default()
        .into_iter()
        .map(mount_from_docker)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ContainerSpec {
        runtime,
        image,
        command: c.args.unwrap_or_default(),
        entrypoint: c.command.filter(|c| !c.is_empty()),
        user: c.user.filter(|u| !u.is_empty()),
        read_only: c.read_only.unwrap_or(false),
        limits: Limits {
            nano_cpus: count(limits.nano_cpus, "Limits.NanoCPUs")?.filter(|n| *n > 0),
            memory_bytes: limits.memory_bytes.filter(|m| *m > 0),
        },
        reservations: Limits {
            nano_cpus: count(reservations.nano_cpus, "Reservations.NanoCPUs")?.filter(|n| *n > 0),
            memory_bytes: reservations.memory_bytes.filter(|m| *m > 0),
        },
        mounts,
        cap_add: c.capability_add.unwrap_or_default(),
        cap_drop: c.capability_drop.unwrap_or_default(),
        hostname: c.hostname.filter(|h| !h.is_empty()),
        env: c.env.unwrap_or_default(),
        dir: c.dir.filter(|d| !d.is_empty()),
        stop_grace_period_ms: match c.stop_grace_period {
            None => ContainerSpec::host(vec![]).stop_grace_period_ms,
            grace => ms(grace, "StopGracePeriod")?,
        },
        healthcheck: c.health_check.map(health_from_docker).transpose()?,
        labels: c.labels.unwrap_or_default().into_iter().collect(),
    })
}

/// The first privilege setting that asks for more than the defaults shoal runs with (the
/// CLI and stacks send the object with its parts empty).
fn privilege_set(p: &d::TaskSpecContainerSpecPrivileges) -> Option<&'static str> {
    use d::TaskSpecContainerSpecPrivilegesAppArmorModeEnum as AppArmor;
    use d::TaskSpecContainerSpecPrivilegesSeccompModeEnum as Seccomp;
    if p.credential_spec.is_some() {
        return Some("CredentialSpec");
    }
    if p.se_linux_context.is_some() {
        return Some("SELinuxContext (--selinux-*)");
    }
    if p.seccomp.as_ref().is_some_and(|s| {
        !matches!(s.mode, None | Some(Seccomp::DEFAULT | Seccomp::EMPTY)) || s.profile.is_some()
    }) {
        return Some("Seccomp");
    }
    if p.app_armor
        .as_ref()
        .is_some_and(|a| !matches!(a.mode, None | Some(AppArmor::DEFAULT | AppArmor::EMPTY)))
    {
        return Some("AppArmor");
    }
    if p.no_new_privileges == Some(true) {
        return Some("NoNewPrivileges");
    }
    None
}

fn health_from_docker(h: d::HealthConfig) -> Result<HealthConfig, DockerError> {
    let nonneg =
        |v: Option<i64>, f: &str| count(v, &format!("HealthCheck.{f}")).map(|v| v.unwrap_or(0));
    Ok(HealthConfig {
        test: h.test.unwrap_or_default(),
        interval: nonneg(h.interval, "Interval")?,
        timeout: nonneg(h.timeout, "Timeout")?,
        start_period: nonneg(h.start_period, "StartPeriod")?,
        start_interval: nonneg(h.start_interval, "StartInterval")?,
        retries: nonneg(h.retries, "Retries")?,
    })
}

fn mount_from_docker(m: d::Mount) -> Result<Mount, DockerError> {
    let kind = match m.typ {
        Some(d::MountType::BIND) => MountType::Bind,
        Some(d::MountType::VOLUME) | None => MountType::Volume,
        Some(d::MountType::TMPFS) => MountType::Tmpfs,
        Some(other) => {
            return Err(DockerError::unsupported(&format!("mount type {other}")));
        }
    };
    refuse_if(
        m.bind_options
            .as_ref()
            .is_some_and(|b| b.propagation.is_some() || b.non_recursive == Some(true)),
        "Mounts.BindOptions",
    )?;
    refuse_if(
        m.volume_options.as_ref().is_some_and(|v| {
            v.no_copy == Some(true)
                || some_nonempty_map(&v.labels)
                || v.driver_config.is_some()
                || v.subpath.as_deref().is_some_and(|s| !s.is_empty())
        }),
        "Mounts.VolumeOptions",
    )?;
    refuse_if(
        m.tmpfs_options
            .as_ref()
            .is_some_and(|t| t.mode.is_some() || some_nonempty(&t.options)),
        "Mounts.TmpfsOptions.Mode",
    )?;
    let target = m
        .target
        .filter(|t| !t.is_empty())
        .ok_or_else(|| DockerError::Invalid("a mount needs a target".into()))?;
    Ok(Mount {
        kind,
        source: m.source.filter(|s| !s.is_empty()),
        target,
        read_only: m.read_only.unwrap_or(false),
        tmpfs_size_bytes: count(
            m.tmpfs_options.and_then(|t| t.size_bytes),
            "Mounts.TmpfsOptions.SizeBytes",
        )?
        .filter(|s| *s > 0),
    })
}

fn network_from_docker(n: d::NetworkAttachmentConfig) -> Result<NetworkAttachment, DockerError> {
    refuse_if(some_nonempty_map(&n.driver_opts), "Networks.DriverOpts")?;
    let target = n
        .target
        .filter(|t| !t.is_empty())
        .ok_or_else(|| DockerError::Invalid("a network attachment needs a target".into()))?;
    Ok(NetworkAttachment {
        target,
        aliases: n.aliases.unwrap_or_default(),
    })
}

fn restart_from_docker(r: Option<d::TaskSpecRestartPolicy>) -> Result<RestartPolicy, DockerError> {
    let Some(r) = r else {
        return Ok(RestartPolicy::default());
    };
    refuse_if(
        r.window.is_some_and(|w| w != 0),
        "RestartPolicy.Window (--restart-window)",
    )?;
    let default = RestartPolicy::default();
    Ok(RestartPolicy {
        condition: match r.condition {
            Some(d::TaskSpecRestartPolicyConditionEnum::NONE) => RestartCondition::None,
            Some(d::TaskSpecRestartPolicyConditionEnum::ON_FAILURE) => RestartCondition::OnFailure,
            _ => RestartCondition::Any,
        },
        delay_ms: match r.delay {
            None => default.delay_ms,
            delay => ms(delay, "RestartPolicy.Delay")?,
        },
        max_attempts: count(r.max_attempts, "RestartPolicy.MaxAttempts")?.unwrap_or(0),
    })
}

fn placement_from_docker(p: Option<d::TaskSpecPlacement>) -> Result<Placement, DockerError> {
    let Some(p) = p else {
        return Ok(Placement::default());
    };
    refuse_if(
        some_nonempty(&p.preferences),
        "Placement.Preferences (--placement-pref)",
    )?;
    refuse_if(
        p.max_replicas.is_some_and(|m| m != 0),
        "Placement.MaxReplicas (--replicas-max-per-node)",
    )?;
    // The image's platforms (the CLI adds them when it resolves the image): every shoal node
    // is linux/amd64, so a list that has it places anywhere; one that lacks it nowhere.
    if let Some(platforms) = p.platforms.filter(|p| !p.is_empty())
        && !platforms.iter().any(|p| {
            p.os.as_deref() == Some("linux")
                && matches!(p.architecture.as_deref(), Some("amd64" | "x86_64"))
        })
    {
        return Err(DockerError::Invalid(
            "the image has no linux/amd64 variant, the only platform shoal's nodes run".into(),
        ));
    }
    let constraints = p
        .constraints
        .unwrap_or_default()
        .iter()
        .map(|c| Constraint::parse(c).map_err(DockerError::Invalid))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Placement { constraints })
}

fn mode_from_docker(m: Option<d::ServiceSpecMode>) -> Result<ServiceMode, DockerError> {
    let Some(m) = m else {
        return Ok(ServiceMode::Replicated { replicas: 1 });
    };
    refuse_if(
        m.replicated_job.is_some(),
        "Mode.ReplicatedJob (--mode replicated-job)",
    )?;
    refuse_if(m.global_job.is_some(), "Mode.GlobalJob (--mode global-job)")?;
    if m.global.is_some() {
        return Ok(ServiceMode::Global {});
    }
    let replicas = m.replicated.and_then(|r| r.replicas);
    Ok(ServiceMode::Replicated {
        replicas: count(replicas, "Mode.Replicated.Replicas")?.unwrap_or(1),
    })
}

fn endpoint_from_docker(
    e: d::EndpointSpec,
    current: Option<&EndpointSpec>,
) -> Result<EndpointSpec, DockerError> {
    let mode = match e.mode {
        Some(d::EndpointSpecModeEnum::DNSRR) => EndpointMode::Dnsrr,
        _ => EndpointMode::Vip,
    };
    let ports = e
        .ports
        .unwrap_or_default()
        .into_iter()
        .map(|p| port_from_docker(p, current.map(|c| c.ports.as_slice()).unwrap_or(&[])))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(EndpointSpec {
        mode,
        ports,
        dns_ttl: current.and_then(|c| c.dns_ttl),
        publish_not_ready: current.is_some_and(|c| c.publish_not_ready),
    })
}

fn port_from_docker(
    p: d::EndpointPortConfig,
    current: &[PortConfig],
) -> Result<PortConfig, DockerError> {
    let protocol = match p.protocol {
        Some(d::EndpointPortConfigProtocolEnum::UDP) => Protocol::Udp,
        Some(d::EndpointPortConfigProtocolEnum::SCTP) => {
            return Err(DockerError::unsupported(
                "the sctp protocol of a published port",
            ));
        }
        _ => Protocol::Tcp,
    };
    let port = |v: Option<i64>, what: &str| -> Result<Option<u16>, DockerError> {
        match v {
            None | Some(0) => Ok(None),
            Some(n) => u16::try_from(n).map(Some).map_err(|_| {
                DockerError::Invalid(format!("{what} {n} is not a port number (1-65535)"))
            }),
        }
    };
    let target_port = port(p.target_port, "TargetPort")?
        .ok_or_else(|| DockerError::Invalid("a published port needs a target port".into()))?;
    let publish_mode = match p.publish_mode {
        Some(d::EndpointPortConfigPublishModeEnum::HOST) => PublishMode::Host,
        _ => PublishMode::Ingress,
    };
    let published_port = port(p.published_port, "PublishedPort")?;
    // `traffic=local` has no docker field: the same port keeps it.
    let traffic = current
        .iter()
        .find(|c| {
            c.target_port == target_port
                && c.protocol == protocol
                && c.published_port == published_port
        })
        .map(|c| c.traffic)
        .unwrap_or(TrafficPolicy::Cluster);
    Ok(PortConfig {
        name: p.name.filter(|n| !n.is_empty()),
        protocol,
        target_port,
        published_port,
        publish_mode,
        traffic,
    })
}

/// docker's update and rollback configs have the same fields under two types.
struct UpdateFields {
    parallelism: Option<i64>,
    delay: Option<i64>,
    failure_action: Option<String>,
    monitor: Option<i64>,
    max_failure_ratio: Option<f64>,
    order: Option<String>,
}

/// Moves the same six fields between docker's two update-config types and
/// [`UpdateFields`] (the generated types share no trait to write this once with).
macro_rules! same_fields {
    ($from:expr, $to:ident, $how:ident(|$v:ident| $conv:expr)) => {{
        let u = $from;
        $to {
            parallelism: u.parallelism,
            delay: u.delay,
            failure_action: u.failure_action.$how(|$v| $conv),
            monitor: u.monitor,
            max_failure_ratio: u.max_failure_ratio,
            order: u.order.$how(|$v| $conv),
        }
    }};
}

impl From<d::ServiceSpecUpdateConfig> for UpdateFields {
    fn from(u: d::ServiceSpecUpdateConfig) -> Self {
        same_fields!(u, UpdateFields, map(|v| v.to_string()))
    }
}

impl From<d::ServiceSpecRollbackConfig> for UpdateFields {
    fn from(u: d::ServiceSpecRollbackConfig) -> Self {
        same_fields!(u, UpdateFields, map(|v| v.to_string()))
    }
}

fn update_from_docker(u: Option<UpdateFields>, what: &str) -> Result<UpdateConfig, DockerError> {
    let default = UpdateConfig::default();
    let Some(u) = u else {
        return Ok(default);
    };
    let failure_action = match u.failure_action.as_deref() {
        None | Some("") => default.failure_action,
        Some("pause") => FailureAction::Pause,
        Some("continue") => FailureAction::Continue,
        Some("rollback") => FailureAction::Rollback,
        Some(other) => {
            return Err(DockerError::Invalid(format!(
                "{what}.FailureAction {other:?} is none of pause, continue, rollback"
            )));
        }
    };
    let order = match u.order.as_deref() {
        None | Some("") => default.order,
        Some("stop-first") => UpdateOrder::StopFirst,
        Some("start-first") => UpdateOrder::StartFirst,
        Some(other) => {
            return Err(DockerError::Invalid(format!(
                "{what}.Order {other:?} is neither stop-first nor start-first"
            )));
        }
    };
    let ratio = u.max_failure_ratio.unwrap_or(0.0);
    if !(0.0..=1.0).contains(&ratio) {
        return Err(DockerError::Invalid(format!(
            "{what}.MaxFailureRatio {ratio} is not between 0 and 1"
        )));
    }
    Ok(UpdateConfig {
        parallelism: count(u.parallelism, &format!("{what}.Parallelism"))?
            .unwrap_or(default.parallelism),
        delay_ms: ms(u.delay, &format!("{what}.Delay"))?,
        failure_action,
        monitor_ms: match u.monitor {
            None | Some(0) => default.monitor_ms,
            m => ms(m, &format!("{what}.Monitor"))?,
        },
        max_failure_ratio: FailureRatio(ratio as f32),
        order,
    })
}

/// docker's spec from shoal's, as `GET /services/{id}` shows it.
pub fn to_docker(s: &ServiceSpec) -> d::ServiceSpec {
    let t = &s.task_template;
    let c = &t.container_spec;
    let limits = |l: &Limits| (l.nano_cpus.map(|n| n as i64), l.memory_bytes);
    let (lim_cpu, lim_mem) = limits(&c.limits);
    let (res_cpu, res_mem) = limits(&c.reservations);
    d::ServiceSpec {
        name: Some(s.name.clone()),
        labels: Some(to_hash(&s.labels)),
        task_template: Some(d::TaskSpec {
            container_spec: Some(d::TaskSpecContainerSpec {
                // A host command has no image: the Engine API shows none.
                image: c.image.clone(),
                command: c.entrypoint.clone(),
                args: (!c.command.is_empty()).then(|| c.command.clone()),
                hostname: c.hostname.clone(),
                env: (!c.env.is_empty()).then(|| c.env.clone()),
                dir: c.dir.clone(),
                user: c.user.clone(),
                read_only: c.read_only.then_some(true),
                mounts: (!c.mounts.is_empty())
                    .then(|| c.mounts.iter().map(mount_to_docker).collect()),
                stop_grace_period: Some(ns(c.stop_grace_period_ms)),
                health_check: c.healthcheck.as_ref().map(|h| d::HealthConfig {
                    test: Some(h.test.clone()),
                    interval: Some(h.interval as i64),
                    timeout: Some(h.timeout as i64),
                    retries: Some(h.retries as i64),
                    start_period: Some(h.start_period as i64),
                    start_interval: Some(h.start_interval as i64),
                }),
                capability_add: (!c.cap_add.is_empty()).then(|| c.cap_add.clone()),
                capability_drop: (!c.cap_drop.is_empty()).then(|| c.cap_drop.clone()),
                isolation: Some(d::TaskSpecContainerSpecIsolationEnum::DEFAULT),
                labels: Some(to_hash(&c.labels)),
                ..Default::default()
            }),
            resources: Some(d::TaskSpecResources {
                limits: Some(d::Limit {
                    nano_cpus: lim_cpu,
                    memory_bytes: lim_mem,
                    pids: None,
                }),
                reservations: Some(d::ResourceObject {
                    nano_cpus: res_cpu,
                    memory_bytes: res_mem,
                    generic_resources: None,
                }),
                ..Default::default()
            }),
            restart_policy: Some(d::TaskSpecRestartPolicy {
                condition: Some(match t.restart_policy.condition {
                    RestartCondition::None => d::TaskSpecRestartPolicyConditionEnum::NONE,
                    RestartCondition::OnFailure => {
                        d::TaskSpecRestartPolicyConditionEnum::ON_FAILURE
                    }
                    RestartCondition::Any => d::TaskSpecRestartPolicyConditionEnum::ANY,
                }),
                delay: Some(ns(t.restart_policy.delay_ms)),
                max_attempts: Some(t.restart_policy.max_attempts as i64),
                window: Some(0),
            }),
            placement: Some(d::TaskSpecPlacement {
                constraints: (!t.placement.constraints.is_empty()).then(|| {
                    t.placement
                        .constraints
                        .iter()
                        .map(|c| c.to_string())
                        .collect()
                }),
                ..Default::default()
            }),
            force_update: Some(t.force_update),
            runtime: Some(
                if c.runtime.is_host() {
                    "host"
                } else {
                    "container"
                }
                .into(),
            ),
            networks: (!t.networks.is_empty()).then(|| {
                t.networks
                    .iter()
                    .map(|n| d::NetworkAttachmentConfig {
                        target: Some(n.target.clone()),
                        aliases: (!n.aliases.is_empty()).then(|| n.aliases.clone()),
                        driver_opts: None,
                    })
                    .collect()
            }),
            ..Default::default()
        }),
        mode: Some(match s.mode {
            ServiceMode::Replicated { replicas } => d::ServiceSpecMode {
                replicated: Some(d::ServiceSpecModeReplicated {
                    replicas: Some(replicas as i64),
                }),
                ..Default::default()
            },
            ServiceMode::Global {} => d::ServiceSpecMode {
                global: Some(HashMap::new()),
                ..Default::default()
            },
        }),
        update_config: Some({
            use d::ServiceSpecUpdateConfig as U;
            same_fields!(
                update_to_docker(&s.update_config),
                U,
                and_then(|v| v.parse().ok())
            )
        }),
        rollback_config: Some({
            use d::ServiceSpecRollbackConfig as R;
            same_fields!(
                update_to_docker(&s.rollback_config),
                R,
                and_then(|v| v.parse().ok())
            )
        }),
        networks: None,
        endpoint_spec: Some(endpoint_to_docker(&s.endpoint_spec)),
    }
}

fn update_to_docker(u: &UpdateConfig) -> UpdateFields {
    UpdateFields {
        parallelism: Some(u.parallelism as i64),
        delay: Some(ns(u.delay_ms)),
        failure_action: Some(u.failure_action.to_string()),
        monitor: Some(ns(u.monitor_ms)),
        max_failure_ratio: Some(f64::from(u.max_failure_ratio.0)),
        order: Some(u.order.to_string()),
    }
}

/// The endpoint spec as docker shows it (also `Endpoint.Spec`).
pub fn endpoint_to_docker(e: &EndpointSpec) -> d::EndpointSpec {
    d::EndpointSpec {
        mode: Some(match e.mode {
            EndpointMode::Vip => d::EndpointSpecModeEnum::VIP,
            EndpointMode::Dnsrr => d::EndpointSpecModeEnum::DNSRR,
        }),
        ports: (!e.ports.is_empty()).then(|| e.ports.iter().map(port_to_docker).collect()),
    }
}

pub fn port_to_docker(p: &PortConfig) -> d::EndpointPortConfig {
    d::EndpointPortConfig {
        name: p.name.clone(),
        protocol: Some(match p.protocol {
            Protocol::Tcp => d::EndpointPortConfigProtocolEnum::TCP,
            Protocol::Udp => d::EndpointPortConfigProtocolEnum::UDP,
        }),
        target_port: Some(i64::from(p.target_port)),
        published_port: p.published_port.map(i64::from),
        publish_mode: Some(match p.publish_mode {
            PublishMode::Ingress => d::EndpointPortConfigPublishModeEnum::INGRESS,
            PublishMode::Host => d::EndpointPortConfigPublishModeEnum::HOST,
        }),
    }
}

fn mount_to_docker(m: &Mount) -> d::Mount {
    d::Mount {
        typ: Some(match m.kind {
            MountType::Bind => d::MountType::BIND,
            MountType::Volume => d::MountType::VOLUME,
            MountType::Tmpfs => d::MountType::TMPFS,
        }),
        source: m.source.clone(),
        target: Some(m.target.clone()),
        read_only: m.read_only.then_some(true),
        tmpfs_options: m.tmpfs_size_bytes.map(|s| d::MountTmpfsOptions {
            size_bytes: Some(s as i64),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(crate) fn to_hash(m: &BTreeMap<String, String>) -> HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[cfg(test)]
mod tests;
