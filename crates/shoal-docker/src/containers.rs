//! A node's tasks as containers (`docker ps`, `docker inspect`): one container per task,
//! named as Swarm names them (`<service>.<slot>.<task id>`) and labelled the same way.

use std::collections::{BTreeMap, HashMap};

use bollard_stubs::models as d;
use shoal_types::{Task, TaskState};

use crate::objects::rfc3339;

/// `<service>.<slot>.<task id>`.
pub fn name(t: &Task) -> String {
    format!("{}.{}.{}", t.service_name, t.slot, t.id)
}

/// The spec's container labels and Swarm's own.
fn labels(t: &Task) -> HashMap<String, String> {
    let own = t.spec.labels.iter().map(|(k, v)| (k.clone(), v.clone()));
    [
        ("com.docker.swarm.service.id", t.service_id.clone()),
        ("com.docker.swarm.service.name", t.service_name.clone()),
        ("com.docker.swarm.task.id", t.id.clone()),
        (
            "com.docker.swarm.task.name",
            format!("{}.{}", t.service_name, t.slot),
        ),
        (
            "com.docker.swarm.node.id",
            t.node_id.clone().unwrap_or_default(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .chain(own)
    .collect()
}

/// What the task runs, as one line (`docker ps`'s COMMAND).
fn command(t: &Task) -> String {
    let s = &t.spec;
    s.entrypoint
        .iter()
        .flatten()
        .chain(s.command.iter())
        .cloned()
        .collect::<Vec<_>>()
        .join(" ")
}

fn image(t: &Task) -> String {
    t.spec
        .image
        .clone()
        .unwrap_or_else(|| "(host command)".into())
}

/// The task's networks by name (`names`: network id to name).
fn networks(t: &Task, names: &BTreeMap<String, String>) -> HashMap<String, d::EndpointSettings> {
    t.networks
        .iter()
        .map(|a| {
            let name = names
                .get(&a.network_id)
                .cloned()
                .unwrap_or_else(|| a.network_id.clone());
            let settings = d::EndpointSettings {
                network_id: Some(a.network_id.clone()),
                ip_address: Some(a.addr.addr().to_string()),
                ip_prefix_len: Some(i64::from(a.addr.prefix_len())),
                aliases: (!a.aliases.is_empty()).then(|| a.aliases.clone()),
                ..Default::default()
            };
            (name, settings)
        })
        .collect()
}

fn state(t: &Task) -> d::ContainerSummaryStateEnum {
    match t.status.state {
        TaskState::Running => d::ContainerSummaryStateEnum::RUNNING,
        s if s < TaskState::Running => d::ContainerSummaryStateEnum::CREATED,
        _ => d::ContainerSummaryStateEnum::EXITED,
    }
}

/// `docker ps`'s STATUS: how long ago the state began, as `now_ms` sees it.
fn status(t: &Task, now_ms: u64) -> String {
    let ago = shoal_types::time::human_duration(now_ms.saturating_sub(t.status.timestamp.0));
    match t.status.state {
        TaskState::Running => format!("Up {ago}"),
        s if s < TaskState::Running => "Created".into(),
        _ => format!(
            "Exited ({}) {ago} ago",
            t.status.exit_code.unwrap_or_default()
        ),
    }
}

pub fn summary(t: &Task, names: &BTreeMap<String, String>, now_ms: u64) -> d::ContainerSummary {
    d::ContainerSummary {
        id: Some(t.id.clone()),
        names: Some(vec![format!("/{}", name(t))]),
        image: Some(image(t)),
        command: Some(command(t)),
        created: Some((t.created_at.0 / 1000) as i64),
        ports: Some(vec![]),
        labels: Some(labels(t)),
        state: Some(state(t)),
        status: Some(status(t, now_ms)),
        host_config: Some(d::ContainerSummaryHostConfig {
            network_mode: Some("default".into()),
            annotations: None,
        }),
        network_settings: Some(d::ContainerSummaryNetworkSettings {
            networks: Some(networks(t, names)),
        }),
        mounts: Some(vec![]),
        ..Default::default()
    }
}

pub fn inspect(t: &Task, names: &BTreeMap<String, String>) -> d::ContainerInspectResponse {
    let s = &t.spec;
    let argv: Vec<String> = s
        .entrypoint
        .iter()
        .flatten()
        .chain(s.command.iter())
        .cloned()
        .collect();
    let running = t.status.state == TaskState::Running;
    d::ContainerInspectResponse {
        id: Some(t.id.clone()),
        created: Some(rfc3339(t.created_at)),
        path: argv.first().cloned(),
        args: Some(argv.iter().skip(1).cloned().collect()),
        state: Some(d::ContainerState {
            status: Some(match state(t) {
                d::ContainerSummaryStateEnum::RUNNING => d::ContainerStateStatusEnum::RUNNING,
                d::ContainerSummaryStateEnum::CREATED => d::ContainerStateStatusEnum::CREATED,
                _ => d::ContainerStateStatusEnum::EXITED,
            }),
            running: Some(running),
            paused: Some(false),
            restarting: Some(false),
            oom_killed: Some(false),
            dead: Some(false),
            pid: Some(t.status.pid.map_or(0, i64::from)),
            exit_code: Some(t.status.exit_code.map_or(0, i64::from)),
            error: Some(t.status.err.clone()),
            started_at: t.started_at.map(rfc3339),
            finished_at: (!running && t.status.state > TaskState::Running)
                .then(|| rfc3339(t.status.timestamp)),
            health: None,
        }),
        image: Some(image(t)),
        name: Some(format!("/{}", name(t))),
        restart_count: Some(t.restarts as i64),
        driver: Some("overlayfs".into()),
        platform: Some("linux".into()),
        config: Some(d::ContainerConfig {
            hostname: s.hostname.clone(),
            user: s.user.clone(),
            env: Some(s.env.clone()),
            cmd: (!s.command.is_empty()).then(|| s.command.clone()),
            image: Some(image(t)),
            working_dir: s.dir.clone(),
            entrypoint: s.entrypoint.clone(),
            labels: Some(labels(t)),
            ..Default::default()
        }),
        network_settings: Some(d::NetworkSettings {
            networks: Some(networks(t, names)),
            ..Default::default()
        }),
        mounts: Some(vec![]),
        ..Default::default()
    }
}
