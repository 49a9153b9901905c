//! A merged compose file to shoal's specs, field by field as docker's CLI converts it
//! (`cli/compose/convert`): names scoped by the stack, the stack labels, each service's
//! compose name as an alias on each of its networks, environment sorted, ports sorted by
//! published port, networks by name.
//!
//! Where compose_spec reads a value otherwise than docker does, the value is taken out of
//! the file before compose_spec sees it and read here ([`Quirks`]): `failure_action:
//! rollback` (compose_spec knows only pause and continue), a fractional
//! `max_failure_ratio` (it reads an integer), memory sizes (it counts `512M` in powers
//! of 1000, docker in powers of 1024), and the image (it refuses `localhost:5000/app`, a
//! registry without a dot; the manager checks references as docker does).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use compose_spec::service::deploy::{
    EndpointMode as CEndpointMode, Mode as CMode, Order, RestartCondition as CRestartCondition,
    UpdateOrRollbackConfig,
};
use compose_spec::service::healthcheck::Test;
use compose_spec::service::network_config::NetworkConfig;
use compose_spec::service::ports::{Mode as PortMode, Protocol as CProtocol};
use compose_spec::service::volumes::Source;
use compose_spec::service::volumes::mount::Mount as CMount;
use compose_spec::service::{Command, Healthcheck};
use compose_spec::{Compose, Identifier, ListOrMap, Resource, ShortOrLong};
use serde_yaml::Value;
use shoal_types::Constraint;
use shoal_types::health::HealthConfig;
use shoal_types::mount::{Mount, MountType};
use shoal_types::service::{
    ContainerSpec, EndpointMode, EndpointSpec, Limits, NetworkAttachment, Placement, PortConfig,
    Protocol, PublishMode, RestartCondition, RestartPolicy, Runtime, ServiceMode, ServiceSpec,
    TaskTemplate, TrafficPolicy,
};
use shoal_types::update::{FailureAction, FailureRatio, UpdateConfig, UpdateOrder};

use crate::{ComposeError, Context, IMAGE_LABEL, NAMESPACE_LABEL, Stack, StackNetwork};

/// docker's name of the network a service without `networks` joins.
const DEFAULT_NETWORK: &str = "default";

/// Values read here instead of by compose_spec (see the module's doc), per service.
#[derive(Default)]
struct Quirks {
    image: Option<Value>,
    update_action: Option<Value>,
    update_ratio: Option<Value>,
    rollback_action: Option<Value>,
    rollback_ratio: Option<Value>,
    limit_memory: Option<Value>,
    reserve_memory: Option<Value>,
}

fn take(v: &mut Value, path: &[&str]) -> Option<Value> {
    let (last, parents) = path.split_last()?;
    let mut cur = v;
    for p in parents {
        cur = cur.get_mut(*p)?;
    }
    cur.as_mapping_mut()?.remove(*last)
}

fn take_quirks(file: &mut Value) -> BTreeMap<String, Quirks> {
    let mut out = BTreeMap::new();
    let Some(services) = file.get_mut("services").and_then(Value::as_mapping_mut) else {
        return out;
    };
    for (name, svc) in services.iter_mut() {
        let q = Quirks {
            image: take(svc, &["image"]),
            update_action: take(svc, &["deploy", "update_config", "failure_action"]),
            update_ratio: take(svc, &["deploy", "update_config", "max_failure_ratio"]),
            rollback_action: take(svc, &["deploy", "rollback_config", "failure_action"]),
            rollback_ratio: take(svc, &["deploy", "rollback_config", "max_failure_ratio"]),
            limit_memory: take(svc, &["deploy", "resources", "limits", "memory"]),
            reserve_memory: take(svc, &["deploy", "resources", "reservations", "memory"]),
        };
        out.insert(crate::keys::key_text(name), q);
    }
    out
}

/// The merged file (as YAML) to a stack; `file` names the file(s) in errors.
pub fn convert(mut merged: Value, file: &str, ctx: Context<'_>) -> Result<Stack, ComposeError> {
    let invalid = |message: String| ComposeError::Invalid {
        file: file.to_string(),
        message,
    };
    let mut quirks = take_quirks(&mut merged);
    let compose: Compose = serde_path_to_error::deserialize(merged).map_err(|e| {
        let path = e.path().to_string();
        invalid(format!("{path}: {}", e.inner()))
    })?;
    let ns = ctx.namespace;
    let scoped = |name: &str| format!("{ns}_{name}");
    let mut networks_used = BTreeSet::new();
    let mut services = Vec::new();
    let mut names: Vec<&Identifier> = compose.services.keys().collect();
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    for name in names {
        let svc = compose.services[name].clone();
        let at = |what: &str| format!("services.{name}.{what}");
        let q = quirks.remove(name.as_str()).unwrap_or_default();
        let image = match q.image {
            Some(Value::String(s)) if !s.is_empty() => Some(s),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        }
        .ok_or_else(|| {
            invalid(format!(
                "{} is required: shoal runs images (build is not supported)",
                at("image")
            ))
        })?;

        // Environment: env_file first, `environment` over it, unset entries from ctx.env.
        let mut env: BTreeMap<String, Option<String>> = BTreeMap::new();
        for f in svc
            .env_file
            .clone()
            .map(|e| e.into_list())
            .unwrap_or_default()
        {
            let (path, required) = match f {
                ShortOrLong::Short(p) => (p, true),
                ShortOrLong::Long(c) => (c.path, c.required),
            };
            let full = crate::resolve(ctx.base_dir, &path);
            match (ctx.read_env_file)(&full) {
                Ok(vars) => env.extend(vars.into_iter().map(|(k, v)| (k, Some(v)))),
                Err(_) if !required => {}
                Err(e) => {
                    return Err(invalid(format!(
                        "{}: cannot read {}: {e}",
                        at("env_file"),
                        full.display()
                    )));
                }
            }
        }
        let given = svc
            .environment
            .clone()
            .into_map()
            .map_err(|e| invalid(format!("{}: {e}", at("environment"))))?;
        for (k, v) in given {
            env.insert(k.to_string(), v.map(|v| v.to_string()));
        }
        // `KEY` with no value takes the deployer's KEY; unset there, the task has none
        // (docker sends the bare `KEY`, which sets nothing either).
        let env: Vec<String> = env
            .into_iter()
            .filter_map(|(k, v)| {
                v.or_else(|| ctx.env.get(&k).cloned())
                    .map(|v| format!("{k}={v}"))
            })
            .collect();

        let mut container_labels = labels(svc.labels.clone(), &at("labels"), &invalid)?;
        container_labels.insert(NAMESPACE_LABEL.into(), ns.into());

        let deploy = svc.deploy.clone().unwrap_or_default();
        let mut service_labels = labels(deploy.labels.clone(), &at("deploy.labels"), &invalid)?;
        service_labels.insert(NAMESPACE_LABEL.into(), ns.into());
        service_labels.insert(IMAGE_LABEL.into(), image.clone());

        let resources = deploy.resources.clone().unwrap_or_default();
        let limits = resources.limits.unwrap_or_default();
        let reservations = resources.reservations.unwrap_or_default();
        let cpus = |c: Option<compose_spec::service::Cpus>| {
            c.map(|c| (c.into_inner() * 1e9) as u64).filter(|n| *n > 0)
        };

        let container = ContainerSpec {
            runtime: Runtime::Oci,
            image: Some(image),
            command: match &svc.command {
                Some(c) => words(c, &at("command"), &invalid)?,
                None => vec![],
            },
            entrypoint: svc
                .entrypoint
                .as_ref()
                .map(|c| words(c, &at("entrypoint"), &invalid))
                .transpose()?,
            user: svc.user.as_ref().map(|u| u.to_string()),
            read_only: svc.read_only,
            limits: Limits {
                nano_cpus: cpus(limits.cpus),
                memory_bytes: memory(q.limit_memory, &at("deploy.resources.limits.memory"))
                    .map_err(&invalid)?,
            },
            reservations: Limits {
                nano_cpus: cpus(reservations.cpus),
                memory_bytes: memory(
                    q.reserve_memory,
                    &at("deploy.resources.reservations.memory"),
                )
                .map_err(&invalid)?,
            },
            mounts: svc
                .volumes
                .iter()
                .enumerate()
                .map(|(i, v)| mount(v, &compose, ns, ctx.base_dir, &at(&format!("volumes[{i}]"))))
                .collect::<Result<_, _>>()
                .map_err(&invalid)?,
            cap_add: svc.cap_add.iter().cloned().collect(),
            cap_drop: svc.cap_drop.iter().cloned().collect(),
            hostname: svc.hostname.as_ref().map(|h| h.to_string()),
            env,
            dir: svc
                .working_dir
                .as_ref()
                .map(|d| d.as_path().display().to_string()),
            stop_grace_period_ms: match svc.stop_grace_period {
                Some(d) => d.as_millis() as u64,
                // As a docker spec without StopGracePeriod (shoal-docker).
                None => ContainerSpec::host(vec![]).stop_grace_period_ms,
            },
            healthcheck: svc.healthcheck.as_ref().map(health),
            labels: container_labels,
        };

        // Networks: the compose name is an alias on each (docker's convertServiceNetworks).
        let mut attachments = Vec::new();
        let requested: Vec<(String, Vec<String>)> = match &svc.network_config {
            None => vec![(DEFAULT_NETWORK.to_string(), vec![])],
            Some(NetworkConfig::NetworkMode(_)) => {
                return Err(ComposeError::Unsupported {
                    file: file.into(),
                    path: at("network_mode"),
                });
            }
            Some(NetworkConfig::Networks(ShortOrLong::Short(list))) => {
                list.iter().map(|n| (n.to_string(), vec![])).collect()
            }
            Some(NetworkConfig::Networks(ShortOrLong::Long(map))) => map
                .iter()
                .map(|(n, cfg)| {
                    let aliases = cfg
                        .as_ref()
                        .map(|c| c.aliases.iter().map(|a| a.to_string()).collect())
                        .unwrap_or_default();
                    (n.to_string(), aliases)
                })
                .collect(),
        };
        for (net, mut aliases) in requested {
            let target = match compose.networks.iter().find(|(k, _)| k.as_str() == net) {
                Some((_, Some(Resource::External { name }))) => {
                    name.clone().unwrap_or_else(|| net.clone())
                }
                Some((_, Some(Resource::Compose(n)))) => {
                    n.name.clone().unwrap_or_else(|| scoped(&net))
                }
                Some((_, None)) => scoped(&net),
                None if net == DEFAULT_NETWORK => scoped(&net),
                None => {
                    return Err(invalid(format!(
                        "{}: network {net} is not declared under the top-level networks",
                        at("networks")
                    )));
                }
            };
            networks_used.insert(net);
            aliases.push(name.to_string());
            attachments.push(NetworkAttachment { target, aliases });
        }
        attachments.sort_by(|a, b| a.target.cmp(&b.target));

        let mut ports = Vec::new();
        for (i, p) in svc.ports.iter().enumerate() {
            let long: Vec<_> = match p.clone() {
                ShortOrLong::Short(s) => s.into_long_iter().collect(),
                ShortOrLong::Long(l) => vec![l],
            };
            for p in long {
                ports.push(port(p, &at(&format!("ports[{i}]"))).map_err(&invalid)?);
            }
        }
        // docker sorts by published port.
        ports.sort_by_key(|p| p.published_port.unwrap_or(0));

        let mode = match (deploy.mode, deploy.replicas) {
            (Some(CMode::Global), Some(_)) => {
                return Err(invalid(format!(
                    "{}: replicas can only be used with replicated mode",
                    at("deploy")
                )));
            }
            (Some(CMode::Global), None) => ServiceMode::Global {},
            (_, replicas) => ServiceMode::Replicated {
                replicas: replicas.unwrap_or(1),
            },
        };
        let endpoint_mode = match &deploy.endpoint_mode {
            None | Some(CEndpointMode::VIp) => EndpointMode::Vip,
            Some(CEndpointMode::DnsRR) => EndpointMode::Dnsrr,
            Some(CEndpointMode::Other(m)) => {
                return Err(invalid(format!(
                    "{}: {m:?} is neither vip nor dnsrr",
                    at("deploy.endpoint_mode")
                )));
            }
        };
        let constraints = deploy
            .placement
            .as_ref()
            .map(|p| p.constraints.clone())
            .unwrap_or_default()
            .iter()
            .map(|c| Constraint::parse(c))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("{}: {e}", at("deploy.placement.constraints"))))?;
        let restart = match &deploy.restart_policy {
            None => RestartPolicy::default(),
            Some(r) => RestartPolicy {
                condition: match r.condition {
                    Some(CRestartCondition::None) => RestartCondition::None,
                    Some(CRestartCondition::OnFailure) => RestartCondition::OnFailure,
                    Some(CRestartCondition::Any) | None => RestartCondition::Any,
                },
                delay_ms: r
                    .delay
                    .map_or(RestartPolicy::default().delay_ms, |d| d.as_millis() as u64),
                max_attempts: r.max_attempts.unwrap_or(0),
            },
        };
        let spec = ServiceSpec {
            name: scoped(name.as_str()),
            labels: service_labels,
            task_template: TaskTemplate {
                container_spec: container,
                restart_policy: restart,
                placement: Placement { constraints },
                networks: attachments,
                force_update: 0,
            },
            mode,
            endpoint_spec: EndpointSpec {
                mode: endpoint_mode,
                ports,
                dns_ttl: None,
                publish_not_ready: false,
            },
            update_config: update(
                deploy.update_config.as_ref(),
                q.update_action,
                q.update_ratio,
                &at("deploy.update_config"),
            )
            .map_err(&invalid)?,
            rollback_config: update(
                deploy.rollback_config.as_ref(),
                q.rollback_action,
                q.rollback_ratio,
                &at("deploy.rollback_config"),
            )
            .map_err(&invalid)?,
        };
        spec.validate()
            .map_err(|e| invalid(format!("services.{name}: {e}")))?;
        services.push(spec);
    }

    let mut networks = Vec::new();
    let mut external_networks = Vec::new();
    for net in networks_used {
        let declared = compose
            .networks
            .iter()
            .find(|(k, _)| k.as_str() == net)
            .and_then(|(_, v)| v.clone());
        let at = format!("networks.{net}");
        match declared {
            Some(Resource::External { name }) => external_networks.push(name.unwrap_or(net)),
            None => networks.push(StackNetwork {
                name: scoped(&net),
                attachable: false,
                labels: [(NAMESPACE_LABEL.to_string(), ns.to_string())].into(),
                subnet: None,
                gateway: None,
            }),
            Some(Resource::Compose(n)) => {
                if let Some(d) = &n.driver
                    && d.to_string() != "overlay"
                {
                    return Err(invalid(format!(
                        "{at}.driver: {d} is not supported by shoal: a stack's networks are overlay networks"
                    )));
                }
                let mut labels = labels(n.labels.clone(), &format!("{at}.labels"), &invalid)?;
                labels.insert(NAMESPACE_LABEL.into(), ns.into());
                let config = n
                    .ipam
                    .as_ref()
                    .map(|i| i.config.clone())
                    .unwrap_or_default();
                if config.len() > 1 {
                    return Err(invalid(format!(
                        "{at}.ipam.config: shoal's networks have one subnet, not {}",
                        config.len()
                    )));
                }
                let first = config.into_iter().next();
                networks.push(StackNetwork {
                    name: n.name.clone().unwrap_or_else(|| scoped(&net)),
                    attachable: n.attachable,
                    labels,
                    subnet: first.as_ref().and_then(|c| c.subnet).map(|s| s.to_string()),
                    gateway: first.and_then(|c| c.gateway).map(|g| g.to_string()),
                });
            }
        }
    }
    Ok(Stack {
        networks,
        external_networks,
        services,
        unset: vec![],
    })
}

fn labels(
    l: ListOrMap,
    at: &str,
    invalid: &dyn Fn(String) -> ComposeError,
) -> Result<BTreeMap<String, String>, ComposeError> {
    Ok(l.into_map()
        .map_err(|e| invalid(format!("{at}: {e}")))?
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.map(|v| v.to_string()).unwrap_or_default()))
        .collect())
}

/// docker's loader splits a string command into shell words (it is not run by `sh -c`).
fn words(
    c: &Command,
    at: &str,
    invalid: &dyn Fn(String) -> ComposeError,
) -> Result<Vec<String>, ComposeError> {
    match c {
        Command::List(v) => Ok(v.clone()),
        Command::String(s) => {
            shlex::split(s).ok_or_else(|| invalid(format!("{at}: {s:?} has an unclosed quote")))
        }
    }
}

fn health(h: &Healthcheck) -> HealthConfig {
    let ns = |d: Option<std::time::Duration>| d.map_or(0, |d| d.as_nanos() as u64);
    match h {
        Healthcheck::Disable => HealthConfig::none(),
        Healthcheck::Command(c) => HealthConfig {
            test: match &c.test {
                None => vec![],
                Some(Test::Command(args)) => std::iter::once("CMD".to_string())
                    .chain(args.iter().cloned())
                    .collect(),
                Some(Test::ShellCommand(line)) => vec!["CMD-SHELL".into(), line.clone()],
            },
            interval: ns(c.interval),
            timeout: ns(c.timeout),
            start_period: ns(c.start_period),
            start_interval: ns(c.start_interval),
            retries: c.retries.unwrap_or(0),
        },
    }
}

fn port(p: compose_spec::service::ports::Port, at: &str) -> Result<PortConfig, String> {
    if p.host_ip.is_some() {
        return Err(format!("{at}: a host IP is not supported by shoal"));
    }
    let published = match p.published {
        None => None,
        Some(r) if r.end().is_some() => {
            return Err(format!("{at}: port ranges are not supported by shoal"));
        }
        Some(r) => Some(r.start()),
    };
    Ok(PortConfig {
        name: p.name,
        protocol: match &p.protocol {
            None | Some(CProtocol::Tcp) => Protocol::Tcp,
            Some(CProtocol::Udp) => Protocol::Udp,
            Some(CProtocol::Other(o)) => {
                return Err(format!("{at}: protocol {o} is not supported by shoal"));
            }
        },
        target_port: p.target,
        published_port: published,
        publish_mode: match p.mode {
            Some(PortMode::Host) => PublishMode::Host,
            None | Some(PortMode::Ingress) => PublishMode::Ingress,
        },
        traffic: TrafficPolicy::Cluster,
    })
}

/// A volume's name on the nodes: scoped by the stack unless declared external or named.
fn volume_name(compose: &Compose, ns: &str, id: &Identifier, at: &str) -> Result<String, String> {
    match compose.volumes.iter().find(|(k, _)| *k == id) {
        Some((_, Some(Resource::External { name }))) => {
            Ok(name.clone().unwrap_or_else(|| id.to_string()))
        }
        Some((_, Some(Resource::Compose(v)))) => {
            Ok(v.name.clone().unwrap_or_else(|| format!("{ns}_{id}")))
        }
        Some((_, None)) => Ok(format!("{ns}_{id}")),
        None => Err(format!(
            "{at}: volume {id} is not declared under the top-level volumes"
        )),
    }
}

fn mount(
    v: &ShortOrLong<compose_spec::service::volumes::ShortVolume, CMount>,
    compose: &Compose,
    ns: &str,
    base: &Path,
    at: &str,
) -> Result<Mount, String> {
    let path = |p: &Path| crate::resolve(base, p).display().to_string();
    Ok(match v {
        ShortOrLong::Short(s) => {
            let target = s.container_path.as_path().display().to_string();
            match &s.options {
                None => Mount {
                    kind: MountType::Volume,
                    source: None,
                    target,
                    read_only: false,
                    tmpfs_size_bytes: None,
                },
                Some(o) => {
                    if o.selinux.is_some() {
                        return Err(format!(
                            "{at}: SELinux relabelling (:z, :Z) is not supported by shoal"
                        ));
                    }
                    let (kind, source) = match &o.source {
                        Source::HostPath(p) => (MountType::Bind, path(p.as_path())),
                        Source::Volume(id) => {
                            (MountType::Volume, volume_name(compose, ns, id, at)?)
                        }
                    };
                    Mount {
                        kind,
                        source: Some(source),
                        target,
                        read_only: o.read_only,
                        tmpfs_size_bytes: None,
                    }
                }
            }
        }
        ShortOrLong::Long(m) => match m {
            CMount::Volume(v) => Mount {
                kind: MountType::Volume,
                source: v
                    .source
                    .as_ref()
                    .map(|id| volume_name(compose, ns, id, at))
                    .transpose()?,
                target: v.common.target.as_path().display().to_string(),
                read_only: v.common.read_only,
                tmpfs_size_bytes: None,
            },
            CMount::Bind(b) => Mount {
                kind: MountType::Bind,
                source: Some(path(b.source.as_path())),
                target: b.common.target.as_path().display().to_string(),
                read_only: b.common.read_only,
                tmpfs_size_bytes: None,
            },
            CMount::Tmpfs(t) => Mount {
                kind: MountType::Tmpfs,
                source: None,
                target: t.common.target.as_path().display().to_string(),
                read_only: t.common.read_only,
                tmpfs_size_bytes: t
                    .tmpfs
                    .as_ref()
                    .and_then(|o| o.size)
                    .and_then(|s| s.into_bytes()),
            },
            _ => return Err(format!("{at}.type is not supported by shoal")),
        },
    })
}

fn update(
    u: Option<&UpdateOrRollbackConfig>,
    action: Option<Value>,
    ratio: Option<Value>,
    at: &str,
) -> Result<UpdateConfig, String> {
    let default = UpdateConfig::default();
    let failure_action = match action.as_ref() {
        None => default.failure_action,
        Some(Value::String(s)) => match s.as_str() {
            "pause" => FailureAction::Pause,
            "continue" => FailureAction::Continue,
            "rollback" => FailureAction::Rollback,
            other => {
                return Err(format!(
                    "{at}.failure_action: {other:?} is none of pause, continue, rollback"
                ));
            }
        },
        Some(other) => return Err(format!("{at}.failure_action: {other:?} is not a word")),
    };
    let ratio = match ratio {
        None => 0.0,
        Some(Value::Number(n)) => n.as_f64().unwrap_or(-1.0),
        Some(Value::String(s)) => s.parse().unwrap_or(-1.0),
        Some(_) => -1.0,
    };
    if !(0.0..=1.0).contains(&ratio) {
        return Err(format!(
            "{at}.max_failure_ratio must be a number between 0 and 1"
        ));
    }
    // No update_config at all: the cluster's defaults (docker sends none).
    let Some(u) = u else {
        return Ok(UpdateConfig {
            failure_action,
            max_failure_ratio: FailureRatio(ratio as f32),
            ..default
        });
    };
    Ok(UpdateConfig {
        // docker's convertUpdateConfig: 1 when unset.
        parallelism: u.parallelism.unwrap_or(1),
        delay_ms: u.delay.map_or(0, |d| d.as_millis() as u64),
        failure_action,
        monitor_ms: match u.monitor {
            None => default.monitor_ms,
            Some(d) if d.is_zero() => default.monitor_ms,
            Some(d) => d.as_millis() as u64,
        },
        max_failure_ratio: FailureRatio(ratio as f32),
        order: match u.order {
            None => default.order,
            Some(Order::StartFirst) => UpdateOrder::StartFirst,
            Some(Order::StopFirst) => UpdateOrder::StopFirst,
        },
    })
}

/// docker's RAMInBytes: a number of bytes, or a size with a binary unit (`512m`, `1.5G`,
/// `64MiB`, `100kb`).
fn memory(v: Option<Value>, at: &str) -> Result<Option<i64>, String> {
    let bad = || format!("{at}: not a size (e.g. 512M, 1.5G or a number of bytes)");
    let text = match v {
        None => return Ok(None),
        Some(Value::Number(n)) => return n.as_i64().filter(|b| *b > 0).map(Some).ok_or_else(bad),
        Some(Value::String(s)) => s,
        Some(_) => return Err(bad()),
    };
    let t = text.trim().to_ascii_lowercase();
    let digits = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let num: f64 = num.parse().map_err(|_| bad())?;
    let unit = unit.trim();
    let unit = unit.strip_suffix('b').unwrap_or(unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return Err(bad()),
    };
    let bytes = num * (1u64 << shift) as f64;
    if !(bytes >= 1.0 && bytes < i64::MAX as f64) {
        return Err(bad());
    }
    Ok(Some(bytes as i64))
}

#[cfg(test)]
pub(crate) fn memory_for_test(v: &str) -> Result<Option<i64>, String> {
    memory(Some(Value::String(v.into())), "m")
}
