use std::collections::BTreeMap;
use std::path::Path;

use shoal_types::service::{EndpointMode, Protocol, PublishMode, RestartCondition, ServiceMode};
use shoal_types::update::{FailureAction, UpdateOrder};

use super::*;

/// The lab test's stack, with more of what shoal reads.
const STACK: &str = r#"version: "3.8"
x-common: &common
  TZ: UTC
services:
  front:
    image: ${REG}/anoy/vote:${TAG:-latest}
    command: serve --port "80"
    ports:
      - "8081:80"
      - target: 53
        published: 5353
        protocol: udp
        mode: host
    networks: [frontnet, backnet]
    environment:
      <<: *common
      MODE: front
      FROM_ENV:
    env_file: front.env
    labels: [tier=front]
    deploy:
      replicas: ${REPLICAS:-2}
      labels: {team: web}
      update_config:
        order: start-first
        parallelism: 2
        delay: 1s
        failure_action: rollback
        max_failure_ratio: 0.25
      rollback_config:
        order: stop-first
      resources:
        limits: {cpus: "0.5", memory: 64M}
        reservations: {memory: 1024}
      restart_policy: {condition: on-failure, delay: 2s, max_attempts: 3}
      placement:
        constraints: [node.role == worker]
    stop_grace_period: 3s
    volumes:
      - data:/data
      - ./conf:/etc/app:ro
      - /scratch
  back:
    image: ${REG}/anoy/client:latest
    entrypoint: ["sleep"]
    command: ["infinity"]
    networks:
      backnet:
        aliases: [db]
    healthcheck:
      test: ["CMD", "true"]
      interval: 1s
      retries: 2
    deploy:
      mode: global
      endpoint_mode: dnsrr
  solo:
    image: busybox
    healthcheck:
      test: curl -f http://localhost/
networks:
  frontnet:
    driver: overlay
    attachable: true
    ipam:
      config: [{subnet: 10.20.0.0/24}]
  backnet:
    labels: {purpose: data}
volumes:
  data:
"#;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load_with(
    files: &[(&str, &str)],
    vars: &BTreeMap<String, String>,
) -> Result<Stack, ComposeError> {
    let files: Vec<File> = files
        .iter()
        .map(|(n, t)| File {
            name: n.to_string(),
            text: t.to_string(),
        })
        .collect();
    let mut read = |p: &Path| -> Result<Vec<(String, String)>, String> {
        match p.to_str() {
            Some("/srv/app/front.env") => Ok(vec![
                ("MODE".into(), "from-file".into()),
                ("FILE_ONLY".into(), "1".into()),
            ]),
            _ => Err(format!("no such file: {}", p.display())),
        }
    };
    load(
        &files,
        Context {
            namespace: "app",
            env: vars,
            base_dir: Path::new("/srv/app"),
            read_env_file: &mut read,
        },
    )
}

fn stack() -> Stack {
    load_with(
        &[("docker-compose.yml", STACK)],
        &env(&[("REG", "r:5000"), ("FROM_ENV", "yes")]),
    )
    .unwrap()
}

fn service<'a>(s: &'a Stack, name: &str) -> &'a ServiceSpec {
    s.services.iter().find(|x| x.name == name).unwrap()
}

#[test]
fn services_read_as_docker_stack_deploy_sends_them() {
    let s = stack();
    let names: Vec<_> = s.services.iter().map(|x| x.name.as_str()).collect();
    assert_eq!(names, ["app_back", "app_front", "app_solo"]);

    let front = service(&s, "app_front");
    let c = &front.task_template.container_spec;
    assert_eq!(c.image.as_deref(), Some("r:5000/anoy/vote:latest"));
    assert_eq!(c.command, ["serve", "--port", "80"]);
    assert_eq!(
        c.env,
        ["FILE_ONLY=1", "FROM_ENV=yes", "MODE=front", "TZ=UTC"],
        "env_file under environment, sorted; a bare key from the environment"
    );
    assert_eq!(
        c.labels,
        [("com.docker.stack.namespace", "app"), ("tier", "front")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    );
    assert_eq!(front.labels.get("team").map(String::as_str), Some("web"));
    assert_eq!(
        front.labels.get(IMAGE_LABEL).map(String::as_str),
        Some("r:5000/anoy/vote:latest")
    );
    assert_eq!(
        front.labels.get(NAMESPACE_LABEL).map(String::as_str),
        Some("app")
    );
    assert_eq!(front.mode, ServiceMode::Replicated { replicas: 2 });
    assert_eq!(c.limits.nano_cpus, Some(500_000_000));
    assert_eq!(
        c.limits.memory_bytes,
        Some(64 << 20),
        "docker's binary units"
    );
    assert_eq!(c.reservations.memory_bytes, Some(1024));
    assert_eq!(c.stop_grace_period_ms, 3000);
    let u = &front.update_config;
    assert_eq!(
        (u.parallelism, u.delay_ms, u.failure_action, u.order),
        (2, 1000, FailureAction::Rollback, UpdateOrder::StartFirst)
    );
    assert_eq!(u.max_failure_ratio.0, 0.25);
    assert_eq!(front.rollback_config.order, UpdateOrder::StopFirst);
    let r = &front.task_template.restart_policy;
    assert_eq!(
        (r.condition, r.delay_ms, r.max_attempts),
        (RestartCondition::OnFailure, 2000, 3)
    );
    assert_eq!(
        front.task_template.placement.constraints[0].to_string(),
        "node.role==worker"
    );
    let nets: Vec<_> = front
        .task_template
        .networks
        .iter()
        .map(|n| (n.target.as_str(), n.aliases.clone()))
        .collect();
    assert_eq!(
        nets,
        [
            ("app_backnet", vec!["front".to_string()]),
            ("app_frontnet", vec!["front".to_string()])
        ]
    );
    let ports: Vec<_> = front
        .endpoint_spec
        .ports
        .iter()
        .map(|p| (p.published_port, p.target_port, p.protocol, p.publish_mode))
        .collect();
    assert_eq!(
        ports,
        [
            (Some(5353), 53, Protocol::Udp, PublishMode::Host),
            (Some(8081), 80, Protocol::Tcp, PublishMode::Ingress)
        ]
    );
    let mounts: Vec<_> = c
        .mounts
        .iter()
        .map(|m| (m.source.as_deref(), m.target.as_str(), m.read_only))
        .collect();
    assert_eq!(
        mounts,
        [
            (Some("app_data"), "/data", false),
            (Some("/srv/app/conf"), "/etc/app", true),
            (None, "/scratch", false)
        ]
    );

    let back = service(&s, "app_back");
    let c = &back.task_template.container_spec;
    assert_eq!(c.entrypoint.as_deref(), Some(&["sleep".to_string()][..]));
    assert_eq!(c.command, ["infinity"]);
    assert_eq!(back.mode, ServiceMode::Global {});
    assert_eq!(back.endpoint_spec.mode, EndpointMode::Dnsrr);
    let h = c.healthcheck.as_ref().unwrap();
    assert_eq!(
        (h.test.clone(), h.interval, h.retries),
        (vec!["CMD".to_string(), "true".into()], 1_000_000_000, 2)
    );
    assert_eq!(
        back.task_template.networks[0].aliases,
        ["db".to_string(), "back".into()]
    );
    assert_eq!(back.update_config, UpdateConfig::default());

    let solo = service(&s, "app_solo");
    assert_eq!(
        solo.task_template
            .container_spec
            .healthcheck
            .as_ref()
            .unwrap()
            .test,
        ["CMD-SHELL", "curl -f http://localhost/"]
    );
    assert_eq!(solo.task_template.networks[0].target, "app_default");
    assert_eq!(solo.mode, ServiceMode::Replicated { replicas: 1 });
}

use shoal_types::update::UpdateConfig;

#[test]
fn networks_are_made_per_stack_with_its_label() {
    let s = stack();
    let nets: Vec<_> = s
        .networks
        .iter()
        .map(|n| (n.name.as_str(), n.attachable, n.subnet.as_deref()))
        .collect();
    assert_eq!(
        nets,
        [
            ("app_backnet", false, None),
            ("app_default", false, None),
            ("app_frontnet", true, Some("10.20.0.0/24"))
        ]
    );
    let back = &s.networks[0];
    assert_eq!(back.labels.get("purpose").map(String::as_str), Some("data"));
    assert_eq!(
        back.labels.get(NAMESPACE_LABEL).map(String::as_str),
        Some("app")
    );
}

#[test]
fn variables_interpolate_and_a_later_file_overrides() {
    let over = "services:\n  front:\n    image: ${REG}/anoy/vote:2\n    hostname: web${NOT_SET}\n    deploy:\n      replicas: ${N}\n";
    let s = load_with(
        &[("a.yml", STACK), ("b.yml", over)],
        &env(&[("REG", "r:5000"), ("N", "5")]),
    )
    .unwrap();
    let front = service(&s, "app_front");
    assert_eq!(
        front.task_template.container_spec.image.as_deref(),
        Some("r:5000/anoy/vote:2")
    );
    assert_eq!(front.mode, ServiceMode::Replicated { replicas: 5 });
    // Kept from the first file.
    assert_eq!(front.update_config.parallelism, 2);
    assert_eq!(
        front.task_template.container_spec.hostname.as_deref(),
        Some("web")
    );
    assert_eq!(s.unset, ["NOT_SET"]);
}

#[test]
fn refusals_name_the_file_and_the_key() {
    let e = |text: &str| {
        load_with(&[("docker-compose.yml", text)], &env(&[]))
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        e("services:\n  web:\n    image: a\n    privileged: true\n"),
        "docker-compose.yml: services.web.privileged is not supported by shoal"
    );
    assert_eq!(
        e(
            "services:\n  web:\n    image: a\n    deploy:\n      placement:\n        max_replicas_per_node: 1\n"
        ),
        "docker-compose.yml: services.web.deploy.placement.max_replicas_per_node is not supported by shoal"
    );
    assert_eq!(
        e("services:\n  web:\n    image: ${TAG:?set TAG to the release}\n"),
        "docker-compose.yml: services.web.image: required variable TAG is missing a value: set TAG to the release"
    );
    assert_eq!(
        e("services:\n  web:\n    build: .\n"),
        "docker-compose.yml: services.web.build is not supported by shoal"
    );
    assert_eq!(
        e("services:\n  web:\n    command: [a]\n"),
        "docker-compose.yml: services.web.image is required: shoal runs images (build is not supported)"
    );
    assert_eq!(
        e("services:\n  web:\n    image: a\n    networks: [nope]\n"),
        "docker-compose.yml: services.web.networks: network nope is not declared under the top-level networks"
    );
    assert_eq!(
        e("services:\n  web:\n    image: a\n    networks: [n]\nnetworks:\n  n: {driver: bridge}\n"),
        "docker-compose.yml: networks.n.driver: bridge is not supported by shoal: a stack's networks are overlay networks"
    );
    assert_eq!(
        e("services:\n  web:\n    image: a\n    deploy: {mode: global, replicas: 2}\n"),
        "docker-compose.yml: services.web.deploy: replicas can only be used with replicated mode"
    );
    let typed = e("services:\n  web:\n    image: a\n    deploy: {replicas: lots}\n");
    assert!(
        typed.starts_with("docker-compose.yml: services.web.deploy.replicas: invalid type"),
        "{typed}"
    );
    assert_eq!(
        e(
            "services:\n  web:\n    image: a\n    deploy:\n      resources:\n        limits: {memory: lots}\n"
        ),
        "docker-compose.yml: services.web.deploy.resources.limits.memory: not a size (e.g. 512M, 1.5G or a number of bytes)"
    );
}

#[test]
fn memory_sizes_are_binary_as_docker_reads_them() {
    use crate::convert::memory_for_test as m;
    assert_eq!(m("512m"), Ok(Some(512 << 20)));
    assert_eq!(m("1.5G"), Ok(Some(3 << 29)));
    assert_eq!(m("64MiB"), Ok(Some(64 << 20)));
    assert_eq!(m("100kb"), Ok(Some(100 << 10)));
    assert_eq!(m("2048"), Ok(Some(2048)));
    assert!(m("12x").is_err());
}

fn svc(id: &str, spec: ServiceSpec) -> shoal_types::Service {
    shoal_types::fixtures::service(id, spec)
}

#[test]
fn a_redeploy_touches_only_what_changed() {
    let s = stack();
    let same = |want: &str, have: &str| plan::unpinned(have) == want;
    let pinned = |spec: &ServiceSpec| {
        let mut spec = spec.clone();
        let c = &mut spec.task_template.container_spec;
        c.image = c.image.clone().map(|i| format!("{i}@sha256:abc"));
        spec
    };
    let front = service(&s, "app_front").clone();
    let back = service(&s, "app_back").clone();
    let mut old = svc("id-old", back.clone());
    old.spec.name = "app_old".into();
    let current = vec![
        svc("id-front", pinned(&front)),
        svc("id-back", pinned(&back)),
        old,
    ];
    let mut changed = front.clone();
    changed.task_template.container_spec.image = Some("r:5000/anoy/vote:2".into());

    let steps = plan(vec![changed.clone(), back.clone()], &current, false, &same);
    assert_eq!(
        steps,
        [
            Step::Update {
                id: "id-front".into(),
                version: current[0].version,
                spec: changed.clone()
            },
            Step::Unchanged {
                id: "id-back".into(),
                name: "app_back".into()
            },
        ]
    );
    let steps = plan(vec![front.clone(), back.clone()], &current, true, &same);
    assert_eq!(
        steps,
        [
            Step::Unchanged {
                id: "id-front".into(),
                name: "app_front".into()
            },
            Step::Unchanged {
                id: "id-back".into(),
                name: "app_back".into()
            },
            Step::Remove {
                id: "id-old".into(),
                name: "app_old".into()
            },
        ]
    );
    let steps = plan(vec![service(&s, "app_solo").clone()], &[], false, &same);
    assert!(matches!(&steps[..], [Step::Create(x)] if x.name == "app_solo"));
}
