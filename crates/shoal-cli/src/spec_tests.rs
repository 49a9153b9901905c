use clap::Parser;
use shoal_types::{Protocol, PublishMode};

use super::*;
use crate::service::ServiceCmd;
use crate::{Cli, Command};

/// `service create ARGS`; host commands unless ARGS give a `--runtime`.
fn create_args(args: &[&str]) -> CreateArgs {
    let host: &[&str] = if args.contains(&"--runtime") {
        &[]
    } else {
        &["--runtime", "host"]
    };
    let argv = ["shoal", "service", "create"]
        .iter()
        .chain(host)
        .chain(args);
    match Cli::try_parse_from(argv).map(|c| c.command) {
        Ok(Command::Service(ServiceCmd::Create(a))) => a,
        Ok(other) => panic!("parsed as {other:?}"),
        Err(e) => panic!("{e}"),
    }
}

fn create(args: &[&str]) -> Result<ServiceSpec> {
    build_spec(&create_args(args))
}

fn update_args(args: &[&str]) -> UpdateArgs {
    let argv = ["shoal", "service", "update"].iter().chain(args);
    match Cli::try_parse_from(argv).map(|c| c.command) {
        Ok(Command::Service(ServiceCmd::Update(a))) => a,
        Ok(other) => panic!("parsed as {other:?}"),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn defaults_are_dockers() {
    let spec = create(&["--name", "vote", "sleep", "100"]).unwrap();
    assert_eq!(spec.name, "vote");
    assert_eq!(spec.mode, ServiceMode::Replicated { replicas: 1 });
    let cs = &spec.task_template.container_spec;
    assert_eq!(cs.command, ["sleep", "100"]);
    assert_eq!(cs.stop_grace_period_ms, 10_000);
    assert_eq!(cs.dir, None);
    assert_eq!(
        spec.task_template.restart_policy,
        RestartPolicy {
            condition: RestartCondition::Any,
            delay_ms: 5_000,
            max_attempts: 0
        }
    );
    assert_eq!(
        spec.endpoint_spec,
        EndpointSpec {
            mode: EndpointMode::Vip,
            ports: vec![],
            dns_ttl: None,
            publish_not_ready: false
        }
    );
    assert!(spec.labels.is_empty() && spec.task_template.networks.is_empty());
    let a = create_args(&["sleep", "1"]);
    assert!(!a.detach);
    assert_eq!(timeout(&a.timeout).unwrap(), Duration::from_secs(60));
}

#[test]
fn every_flag() {
    let spec = create(&[
        "--name",
        "vote",
        "--replicas",
        "3",
        "-e",
        "A=1",
        "--env",
        "B=x=y",
        "-w",
        "/srv",
        "--network",
        "front",
        "--network",
        "name=back,alias=api,alias=v",
        "--endpoint-mode",
        "vip",
        "--dns-ttl",
        "5",
        "-p",
        "8080:80",
        "--publish",
        "published=53,target=53,protocol=udp,mode=host",
        "--constraint",
        "node.role==worker",
        "--restart-condition",
        "on-failure",
        "--restart-delay",
        "1m30s",
        "--restart-max-attempts",
        "4",
        "--stop-grace-period",
        "500ms",
        "--label",
        "tier=front",
        "-d",
        "shoal",
        "demo",
        "vote",
        "--listen",
        "0.0.0.0:80",
    ])
    .unwrap();
    assert_eq!(spec.mode, ServiceMode::Replicated { replicas: 3 });
    let cs = &spec.task_template.container_spec;
    assert_eq!(
        cs.command,
        ["shoal", "demo", "vote", "--listen", "0.0.0.0:80"]
    );
    assert_eq!(cs.env, ["A=1", "B=x=y"]);
    assert_eq!(cs.dir.as_deref(), Some("/srv"));
    assert_eq!(cs.stop_grace_period_ms, 500);
    let nets = &spec.task_template.networks;
    assert_eq!(
        nets[0],
        NetworkAttachment {
            target: "front".into(),
            aliases: vec![]
        }
    );
    assert_eq!(
        nets[1],
        NetworkAttachment {
            target: "back".into(),
            aliases: vec!["api".into(), "v".into()]
        }
    );
    assert_eq!(
        (spec.endpoint_spec.mode, spec.endpoint_spec.dns_ttl),
        (EndpointMode::Vip, Some(5))
    );
    let ports = &spec.endpoint_spec.ports;
    assert_eq!(
        (ports[0].published_port, ports[0].target_port),
        (Some(8080), 80)
    );
    assert_eq!(
        (ports[1].protocol, ports[1].publish_mode),
        (Protocol::Udp, PublishMode::Host)
    );
    assert_eq!(
        spec.task_template.placement.constraints[0].to_string(),
        "node.role==worker"
    );
    let rp = &spec.task_template.restart_policy;
    assert_eq!(
        (rp.condition, rp.delay_ms, rp.max_attempts),
        (RestartCondition::OnFailure, 90_000, 4)
    );
    assert_eq!(spec.labels.get("tier").map(String::as_str), Some("front"));
}

#[test]
fn global_mode() {
    let spec = create(&["--name", "agent", "--mode", "global", "sleep", "1"]).unwrap();
    assert_eq!(spec.mode, ServiceMode::Global {});
    assert_eq!(
        create(&["--mode", "global", "--replicas", "2", "sleep", "1"])
            .unwrap_err()
            .to_string(),
        "replicas can only be used with replicated mode"
    );
}

#[test]
fn flags_after_the_command_belong_to_it() {
    let spec = create(&["--name", "web", "sh", "-c", "echo hi", "--replicas", "3"]).unwrap();
    assert_eq!(
        spec.task_template.container_spec.command,
        ["sh", "-c", "echo hi", "--replicas", "3"]
    );
    assert_eq!(spec.replicas(), Some(1));
}

#[test]
fn a_name_is_made_when_none_is_given() {
    let spec = create(&["/usr/bin/sleep", "1"]).unwrap();
    assert!(
        spec.name.starts_with("sleep-") && spec.name.len() == "sleep-".len() + 6,
        "{}",
        spec.name
    );
}

#[test]
fn bad_values_say_what_to_do() {
    let err = |args: &[&str]| create(args).unwrap_err().to_string();
    assert_eq!(
        err(&["-e", "NOVALUE", "sleep", "1"]),
        "invalid env \"NOVALUE\": expected KEY=VALUE"
    );
    assert_eq!(
        err(&["--label", "x", "sleep", "1"]),
        "invalid label \"x\": expected KEY=VALUE"
    );
    assert!(err(&["-p", "0:80", "sleep", "1"]).starts_with("invalid publish \"0:80\""));
    assert!(
        err(&["--constraint", "node.colour==red", "sleep", "1"]).starts_with("invalid constraint")
    );
    assert!(err(&["--restart-delay", "5x", "sleep", "1"]).starts_with("invalid --restart-delay: "));
    assert!(
        err(&["--stop-grace-period", "soon", "sleep", "1"])
            .starts_with("invalid --stop-grace-period: ")
    );
    assert!(err(&["--network", "alias=x", "sleep", "1"]).contains("name=NAME is required"));
    assert!(err(&["--name", "-bad", "sleep", "1"]).starts_with("invalid service name"));
    // Names the resolver gives another meaning, and aliases that are not one label.
    assert_eq!(
        err(&["--name", "tasks", "sleep", "1"]),
        "invalid service name \"tasks\": the name is reserved in DNS (tasks.<service> lists a \
         service's tasks); pick another name"
    );
    assert_eq!(
        err(&["--network", "name=x,alias=example.com", "sleep", "1"]),
        "invalid network alias \"example.com\": it must be one DNS label, without dots"
    );
    assert!(
        err(&["--network", "name=x,alias=localhost", "sleep", "1"])
            .starts_with("invalid network alias \"localhost\": the name is reserved")
    );
    assert!(err(&["-p", "80:80", "-p", "80:81", "sleep", "1"]).contains("given twice"));
    // Usage errors are clap's.
    assert!(Cli::try_parse_from(["shoal", "service", "create", "--name", "x"]).is_err());
    assert!(
        Cli::try_parse_from([
            "shoal",
            "service",
            "create",
            "--endpoint-mode",
            "lb",
            "sleep"
        ])
        .is_err()
    );
    assert!(Cli::try_parse_from(["shoal", "service", "create", "--mode", "job", "sleep"]).is_err());
}

#[test]
fn updates() {
    let base = create(&[
        "--name", "vote", "-e", "A=1", "-e", "B=2", "-p", "8080:80", "prog", "--old",
    ])
    .unwrap();
    let spec = apply_update(
        base.clone(),
        &update_args(&[
            "--replicas",
            "4",
            "--env-add",
            "A=9",
            "--env-add",
            "C=3",
            "--env-rm",
            "B",
            "--args",
            "--new 'two words'",
            "--publish-add",
            "9090:90",
            "--publish-rm",
            "80",
            "--label-add",
            "k=v",
            "--constraint-add",
            "node.hostname==node2",
            "vote",
        ]),
    )
    .unwrap();
    assert_eq!(spec.replicas(), Some(4));
    let cs = &spec.task_template.container_spec;
    assert_eq!(cs.env, ["A=9", "C=3"]);
    assert_eq!(cs.command, ["prog", "--new", "two words"]);
    assert_eq!(spec.endpoint_spec.ports.len(), 1);
    assert_eq!(spec.endpoint_spec.ports[0].target_port, 90);
    assert_eq!(spec.labels.get("k").map(String::as_str), Some("v"));
    assert_eq!(spec.task_template.placement.constraints.len(), 1);

    let spec = apply_update(
        base.clone(),
        &update_args(&["--command", "sleep 5", "vote"]),
    )
    .unwrap();
    assert_eq!(spec.task_template.container_spec.command, ["sleep", "5"]);
    assert_eq!(
        apply_update(base.clone(), &update_args(&["vote"])).unwrap(),
        base
    );
    let err =
        apply_update(base.clone(), &update_args(&["--publish-rm", "81", "vote"])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no published port with target 81/tcp to remove"
    );

    let mut global = base;
    global.mode = ServiceMode::Global {};
    let err = apply_update(global, &update_args(&["--replicas", "2", "vote"])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "replicas can only be used with replicated mode"
    );
}

#[test]
fn words() {
    assert_eq!(
        split_words(r#"a "b c" 'd e' f\ g"#).unwrap(),
        ["a", "b c", "d e", "f g"]
    );
    assert_eq!(split_words("").unwrap(), Vec::<String>::new());
    assert!(split_words("'open").is_err());
}

#[test]
fn network_long_form() {
    let att = |target: &str, aliases: &[&str]| NetworkAttachment {
        target: target.into(),
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
    };
    assert_eq!(network("front").unwrap(), att("front", &[]));
    assert_eq!(network("name=x,alias=y").unwrap(), att("x", &["y"]));
    assert_eq!(
        network("alias=a,target=x,alias=b").unwrap(),
        att("x", &["a", "b"])
    );
    // What the user typed is kept: an id (prefix) is as good as a name.
    assert_eq!(
        network("name=3c4d5e6f7a8b").unwrap(),
        att("3c4d5e6f7a8b", &[])
    );
    let spec = create(&["--network", "name=x,alias=y", "sleep", "1"]).unwrap();
    assert_eq!(spec.task_template.networks, [att("x", &["y"])]);
    for bad in [
        "",
        "name=",
        "name=x,alias=",
        "name=x,colour=red",
        "name=x,alias",
    ] {
        assert!(network(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn runtime_oci_takes_an_image_then_its_command() {
    let spec = create(&[
        "--runtime",
        "oci",
        "--name",
        "bb",
        "--entrypoint",
        "sh -c",
        "-u",
        "1000",
        "--read-only",
        "--limit-memory",
        "64m",
        "--limit-cpu",
        "0.5",
        "127.0.0.1:5000/lab/busybox:1",
        "httpd",
        "-f",
    ])
    .unwrap();
    let cs = &spec.task_template.container_spec;
    assert_eq!(cs.runtime, Runtime::Oci);
    assert_eq!(cs.image.as_deref(), Some("127.0.0.1:5000/lab/busybox:1"));
    assert_eq!(cs.command, ["httpd", "-f"]);
    assert_eq!(cs.entrypoint, Some(vec!["sh".into(), "-c".into()]));
    assert_eq!(cs.user.as_deref(), Some("1000"));
    assert!(cs.read_only);
    assert_eq!(cs.limits.memory_bytes, Some(64 << 20));
    assert_eq!(cs.limits.nano_cpus, Some(500_000_000));
    let named = create(&["--runtime", "oci", "docker.io/library/nginx:1.27"]).unwrap();
    assert!(named.name.starts_with("nginx-"), "{}", named.name);
    assert!(named.task_template.container_spec.command.is_empty());
}

#[test]
fn a_bad_reference_and_container_flags_on_host_are_refused() {
    let err = create(&["--runtime", "oci", "Lab/BusyBox"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid reference format \"Lab/BusyBox\": repository name must be lowercase"
    );
    let err = create(&["--runtime", "host", "--read-only", "sleep", "1"]).unwrap_err();
    assert!(
        err.to_string().starts_with("--read-only is for containers"),
        "{err}"
    );
    let host = create(&["--runtime", "host", "sleep", "1"]).unwrap();
    assert_eq!(host.task_template.container_spec.runtime, Runtime::Host);
    assert!(memory_bytes("lots").is_err());
    assert_eq!(memory_bytes("512k").unwrap(), 512 << 10);
    assert!(nano_cpus("-1").is_err());
}

#[test]
fn oci_is_the_default_runtime() {
    let argv = [
        "shoal",
        "service",
        "create",
        "--name",
        "web",
        "nginx",
        "-g",
        "daemon off;",
    ];
    let a = match Cli::try_parse_from(argv).map(|c| c.command) {
        Ok(Command::Service(ServiceCmd::Create(a))) => a,
        other => panic!("parsed as {other:?}"),
    };
    let cs = build_spec(&a).unwrap().task_template.container_spec;
    assert_eq!(cs.runtime, Runtime::Oci);
    assert_eq!(cs.image.as_deref(), Some("nginx"));
    assert_eq!(cs.command, ["-g", "daemon off;"]);
}

#[test]
fn health_flags_as_docker() {
    use shoal_types::health::HealthConfig;
    let spec = create(&[
        "--health-cmd",
        "curl -f localhost || exit 1",
        "--health-interval",
        "2s",
        "--health-timeout",
        "500ms",
        "--health-retries",
        "2",
        "--health-start-period",
        "1m",
        "sleep",
        "100",
    ])
    .unwrap();
    let h = spec.task_template.container_spec.healthcheck.unwrap();
    assert_eq!(h.test, ["CMD-SHELL", "curl -f localhost || exit 1"]);
    assert_eq!(
        (h.interval, h.timeout, h.retries, h.start_period),
        (2_000_000_000, 500_000_000, 2, 60_000_000_000)
    );
    // None given: none set (the image's applies).
    let spec = create(&["sleep", "100"]).unwrap();
    assert_eq!(spec.task_template.container_spec.healthcheck, None);
    let spec = create(&["--no-healthcheck", "sleep", "100"]).unwrap();
    assert_eq!(
        spec.task_template.container_spec.healthcheck,
        Some(HealthConfig::none())
    );
    assert_eq!(
        create(&["--no-healthcheck", "--health-retries", "1", "sleep", "1"])
            .unwrap_err()
            .to_string(),
        "--no-healthcheck conflicts with --health-* options"
    );
    assert_eq!(
        create(&[
            "--health-interval",
            "100us",
            "--health-cmd",
            "true",
            "sleep",
            "1"
        ])
        .unwrap_err()
        .to_string(),
        "Interval in Healthcheck cannot be less than 1ms"
    );
    assert!(
        create(&["--health-interval", "soon", "sleep", "1"])
            .unwrap_err()
            .to_string()
            .starts_with("invalid argument \"soon\" for \"--health-interval\" flag")
    );
}

#[test]
fn health_updates_as_docker() {
    use shoal_types::health::HealthConfig;
    let base = create(&[
        "--health-cmd",
        "true",
        "--health-retries",
        "5",
        "sleep",
        "1",
    ])
    .unwrap();
    // One field changes; the rest stays.
    let s = apply_update(
        base.clone(),
        &update_args(&["--health-interval", "3s", "web"]),
    )
    .unwrap();
    let h = s.task_template.container_spec.healthcheck.unwrap();
    assert_eq!((h.test.len(), h.retries, h.interval), (2, 5, 3_000_000_000));
    // An empty command goes back to the image's.
    let s = apply_update(base.clone(), &update_args(&["--health-cmd", "", "web"])).unwrap();
    assert!(
        s.task_template
            .container_spec
            .healthcheck
            .unwrap()
            .test
            .is_empty()
    );
    // --no-healthcheck, then a command again.
    let s = apply_update(base, &update_args(&["--no-healthcheck", "web"])).unwrap();
    assert_eq!(
        s.task_template.container_spec.healthcheck,
        Some(HealthConfig::none())
    );
    let s = apply_update(s, &update_args(&["--health-retries", "1", "web"])).unwrap();
    let h = s.task_template.container_spec.healthcheck.unwrap();
    assert!(!h.is_none() && h.test.is_empty() && h.retries == 1);
}

#[test]
fn publish_not_ready_on_create_and_update() {
    let s = create(&["--endpoint-publish-not-ready", "sleep", "1"]).unwrap();
    assert!(s.endpoint_spec.publish_not_ready);
    // A flag, not a value: the next word is the command.
    assert_eq!(s.task_template.container_spec.command, ["sleep", "1"]);
    let s = apply_update(
        s,
        &update_args(&["--endpoint-publish-not-ready=false", "web"]),
    )
    .unwrap();
    assert!(!s.endpoint_spec.publish_not_ready);
}
