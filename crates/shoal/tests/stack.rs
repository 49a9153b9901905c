//! `shoal stack deploy` (issue 13): the same compose file deployed by `docker stack deploy`
//! (Debian's docker CLI, 20.10) and by shoal gives the same service specs as the docker CLI
//! reads them back; names resolve between the services; a redeploy leaves unchanged services
//! alone and rolls only the changed one (an image tag from `.env`); `--prune`; `stack rm`;
//! a key shoal does not act on and an unset `${VAR:?msg}` are refused by name.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

const DOCKER: &str = "/usr/bin/docker";

const COMPOSE: &str = r#"version: "3.8"
services:
  front:
    image: ${REG}/anoy/vote:${TAG:-latest}
    ports:
      - "8082:80"
    networks: [frontnet, backnet]
    environment:
      MODE: ${MODE:-front}
    deploy:
      replicas: 2
      labels:
        tier: front
      update_config:
        order: start-first
        parallelism: 2
      restart_policy:
        condition: on-failure
        max_attempts: 3
      resources:
        limits:
          memory: 64M
  back:
    image: ${REG}/anoy/client:latest
    networks:
      backnet:
        aliases: [db]
    healthcheck:
      test: ["CMD", "true"]
      interval: 1s
    deploy:
      endpoint_mode: dnsrr
      placement:
        constraints: ["node.role == manager"]
networks:
  frontnet:
    driver: overlay
  backnet:
    driver: overlay
    labels:
      purpose: data
"#;

fn docker(lab: &Lab, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(DOCKER)
        .args(args)
        .env("DOCKER_HOST", lab.socket(1))
        .env("DOCKER_CONFIG", lab.dir().join("docker-config"))
        .envs(env.iter().copied())
        .output()
        .expect("run docker")
}

fn docker_ok(lab: &Lab, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = docker(lab, args, env);
    assert!(
        out.status.success(),
        "`docker {}` failed:\n{}{}",
        args.join(" "),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// `shoal ARGS` on node1, from `dir`, with `env` on top of a clean environment.
fn shoal(lab: &Lab, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(SHOAL)
        .arg("-H")
        .arg(lab.socket(1))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .output()
        .expect("run shoal")
}

fn shoal_ok(lab: &Lab, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = shoal(lab, dir, args, env);
    assert!(
        out.status.success(),
        "`shoal {}` failed:\n{}{}",
        args.join(" "),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Each service's `Spec` as the docker CLI reads it, network ids replaced by names (each
/// deploy makes its own networks).
fn specs(lab: &Lab) -> BTreeMap<String, serde_json::Value> {
    let nets: BTreeMap<String, String> = docker_ok(
        lab,
        &[
            "network",
            "ls",
            "--no-trunc",
            "--format",
            "{{.ID}} {{.Name}}",
        ],
        &[],
    )
    .lines()
    .filter_map(|l| l.split_once(' '))
    .map(|(id, name)| (id.to_string(), name.to_string()))
    .collect();
    ["app_front", "app_back"]
        .iter()
        .map(|name| {
            let out = docker_ok(
                lab,
                &["service", "inspect", "--format", "{{json .Spec}}", name],
                &[],
            );
            let mut spec: serde_json::Value = serde_json::from_str(&out).expect("JSON");
            for n in spec["TaskTemplate"]["Networks"]
                .as_array_mut()
                .expect("networks")
            {
                let id = n["Target"].as_str().unwrap().to_string();
                n["Target"] = nets.get(&id).cloned().unwrap_or(id).into();
            }
            (name.to_string(), spec)
        })
        .collect()
}

fn version(lab: &Lab, service: &str) -> u64 {
    docker_ok(
        lab,
        &[
            "service",
            "inspect",
            "--format",
            "{{.Version.Index}}",
            service,
        ],
        &[],
    )
    .trim()
    .parse()
    .expect("a version")
}

fn stack_gone(lab: &Lab) {
    wait_for("the stack to go", Duration::from_secs(30), || {
        let ls = lab.ok(1, &["stack", "ls"]);
        let nets = lab.ok(1, &["network", "ls", "--format", "{{.Name}}"]);
        if !ls.contains("app") && !nets.contains("app_") {
            Ok(())
        } else {
            Err(format!("{ls}{nets}"))
        }
    });
}

#[test]
fn shoal_stack_deploy_matches_docker_and_redeploys_only_what_changed() {
    let lab = Lab::up_with("stack", 2, 1, &["--registry"]);
    let reg = registry(&lab);
    retag(&lab, "anoy/vote", "2");
    let dir = lab.dir().join("app");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("docker-compose.yml");
    std::fs::write(&file, COMPOSE).unwrap();
    let f = file.to_str().unwrap();
    let env = [("REG", reg.as_str())];

    // docker's deploy, read back, then removed.
    docker_ok(&lab, &["stack", "deploy", "-c", f, "app"], &env);
    let by_docker = specs(&lab);
    docker_ok(&lab, &["stack", "rm", "app"], &[]);
    stack_gone(&lab);

    // shoal's deploy of the same file gives the same specs.
    let out = shoal_ok(&lab, &dir, &["stack", "deploy", "-c", f, "app"], &env);
    for line in [
        "Creating network app_backnet",
        "Creating network app_frontnet",
        "Creating service app_back",
        "Creating service app_front",
    ] {
        assert!(out.contains(line), "{out}");
    }
    let by_shoal = specs(&lab);
    assert_eq!(
        by_shoal,
        by_docker,
        "docker service inspect shows the same specs:\nshoal: {}\ndocker: {}",
        serde_json::to_string_pretty(&by_shoal).unwrap(),
        serde_json::to_string_pretty(&by_docker).unwrap()
    );
    assert_eq!(
        by_shoal["app_front"]["TaskTemplate"]["Resources"]["Limits"]["MemoryBytes"],
        64 << 20,
        "64M in docker's binary units"
    );
    let ls = docker_ok(&lab, &["stack", "ls"], &[]);
    assert!(
        ls.lines()
            .any(|l| l.split_whitespace().take(2).eq(["app", "2"])),
        "docker stack ls sees shoal's stack: {ls}"
    );
    let ls = lab.ok(1, &["stack", "ls"]);
    assert!(
        ls.lines().any(|l| l.split_whitespace().eq(["app", "2"])),
        "{ls}"
    );
    let nets = lab.ok(
        1,
        &[
            "network",
            "inspect",
            "--format",
            "{{json .Labels}}",
            "app_backnet",
        ],
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&nets).unwrap(),
        serde_json::json!({"com.docker.stack.namespace": "app", "purpose": "data"})
    );

    // Running, and names resolve between the services.
    wait_for(
        "the stack's services to run",
        Duration::from_secs(90),
        || {
            let s = lab.ok(1, &["stack", "services", "app"]);
            let row = |n: &str| s.lines().find(|l| l.contains(n)).unwrap_or("").to_string();
            if row("app_front").contains("2/2") && row("app_back").contains("1/1") {
                Ok(())
            } else {
                Err(s)
            }
        },
    );
    let (bnode, btask) = lab.wait_running("app_back", 1)[0].clone();
    let mut fronts: Vec<String> = lab
        .wait_running("app_front", 2)
        .iter()
        .map(|(_, id)| lab.task_addr(id))
        .collect();
    fronts.sort();
    assert_eq!(
        lab.dig(bnode, &btask, &["front"]).len(),
        1,
        "`front` answers its VIP"
    );
    let mut tasks = lab.dig(bnode, &btask, &["tasks.front"]);
    tasks.sort();
    assert_eq!(tasks, fronts, "tasks.front answers the front end's tasks");
    // The back end has a health check: its names answer once it is healthy.
    let baddr = lab.task_addr(&btask);
    wait_for(
        "the alias `db` to answer the back end's task (dnsrr)",
        Duration::from_secs(30),
        || {
            let got = lab.dig(bnode, &btask, &["db"]);
            if got == [baddr.clone()] {
                Ok(())
            } else {
                Err(got.join(" "))
            }
        },
    );
    let ps = lab.ok(
        1,
        &[
            "stack",
            "ps",
            "--format",
            "{{.Name}} {{.CurrentState}}",
            "app",
        ],
    );
    assert_eq!(
        ps.lines().filter(|l| l.contains(" Running")).count(),
        3,
        "{ps}"
    );

    // The same file again changes nothing: no update, no new version.
    let (vf, vb) = (version(&lab, "app_front"), version(&lab, "app_back"));
    let out = shoal_ok(&lab, &dir, &["stack", "deploy", "-c", f, "app"], &env);
    assert!(
        out.contains("Service app_front is unchanged")
            && out.contains("Service app_back is unchanged")
            && !out.contains("Updating"),
        "{out}"
    );
    assert_eq!(
        (version(&lab, "app_front"), version(&lab, "app_back")),
        (vf, vb)
    );

    // TAG from the `.env` beside the file: the front end rolls, the back end keeps its task.
    std::fs::write(dir.join(".env"), "TAG=2\n").unwrap();
    let out = shoal_ok(&lab, &dir, &["stack", "deploy", "-c", f, "app"], &env);
    assert!(
        out.contains("Updating service app_front") && out.contains("Service app_back is unchanged"),
        "{out}"
    );
    wait_for("the front end on :2", Duration::from_secs(90), || {
        let ps = lab.ok(
            1,
            &[
                "stack",
                "ps",
                "--format",
                "{{.Image}}|{{.CurrentState}}|{{.DesiredState}}",
                "app",
            ],
        );
        let new = ps
            .lines()
            .filter(|l| {
                let f: Vec<&str> = l.split('|').collect();
                f.len() == 3
                    && f[0].ends_with("/anoy/vote:2")
                    && f[1].starts_with("Running")
                    && f[2] == "Running"
            })
            .count();
        if new == 2 { Ok(()) } else { Err(ps) }
    });
    assert_eq!(lab.wait_running("app_back", 1), [(bnode, btask.clone())]);
    assert_eq!(version(&lab, "app_back"), vb);

    // A file without the back end: kept unless --prune.
    let only_front = dir.join("front.yml");
    let front_text = COMPOSE[..COMPOSE.find("  back:").unwrap()].to_string()
        + &COMPOSE[COMPOSE.find("networks:\n  frontnet").unwrap()..];
    std::fs::write(&only_front, front_text).unwrap();
    let of = only_front.to_str().unwrap();
    let out = shoal_ok(&lab, &dir, &["stack", "deploy", "-c", of, "app"], &env);
    assert!(!out.contains("Removing"), "{out}");
    assert!(
        lab.ok(1, &["stack", "services", "app"])
            .contains("app_back")
    );
    let out = shoal_ok(
        &lab,
        &dir,
        &["stack", "deploy", "--prune", "-c", of, "app"],
        &env,
    );
    assert!(out.contains("Removing service app_back"), "{out}");
    assert!(
        !lab.ok(1, &["stack", "services", "app"])
            .contains("app_back")
    );

    // Refused by name, and nothing deployed.
    let bad = dir.join("docker-compose.yml");
    std::fs::write(
        &bad,
        COMPOSE.replace("    ports:\n", "    privileged: true\n    ports:\n"),
    )
    .unwrap();
    let out = shoal(&lab, &dir, &["stack", "deploy", "-c", f, "app"], &env);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(&format!(
            "{f}: services.front.privileged is not supported by shoal"
        )),
        "{}",
        text(&out.stderr)
    );
    std::fs::write(
        &bad,
        COMPOSE.replace(
            "${TAG:-latest}",
            "${RELEASE:?set RELEASE to the tag to deploy}",
        ),
    )
    .unwrap();
    let out = shoal(&lab, &dir, &["stack", "deploy", "-c", f, "app"], &env);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(&format!(
            "{f}: services.front.image: required variable RELEASE is missing a value: set RELEASE to the tag to deploy"
        )),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !lab.ok(1, &["stack", "services", "app"])
            .contains("app_back")
    );

    // stack rm removes the services and the networks.
    let out = lab.ok(1, &["stack", "rm", "app"]);
    assert!(
        out.contains("Removing service app_front")
            && out.contains("Removing network app_backnet")
            && out.contains("Removing network app_frontnet"),
        "{out}"
    );
    stack_gone(&lab);
    let err = lab.fails(1, &["stack", "rm", "app"]);
    assert!(err.contains("nothing found in stack: app"), "{err}");
}
