//! The real docker CLI drives a shoal cluster through the Engine API shoald serves beside
//! its own: the seed's three scenarios, scale, update, logs (`-f` too), `docker ps`, and a
//! compose stack deployed, redeployed with a new image and removed. Debian's docker.io CLI (20.10,
//! API 1.41; `scripts/setup.sh` installs it, its daemons never run) is required; a newer
//! CLI at /usr/local/bin/docker (which negotiates down) runs the same steps when present.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

const DEBIAN_DOCKER: &str = "/usr/bin/docker";
const NEWER_DOCKER: &str = "/usr/local/bin/docker";

fn clis() -> Vec<&'static str> {
    assert!(
        std::path::Path::new(DEBIAN_DOCKER).exists(),
        "{DEBIAN_DOCKER} is missing: run scripts/setup.sh (it installs Debian's docker.io for its CLI)"
    );
    let mut v = vec![DEBIAN_DOCKER];
    if std::path::Path::new(NEWER_DOCKER).exists() {
        v.push(NEWER_DOCKER);
    }
    v
}

/// One docker CLI pointed at the lab's nodes.
struct Docker<'a> {
    lab: &'a Lab,
    bin: &'a str,
}

impl Docker<'_> {
    fn run(&self, node: u32, args: &[&str]) -> Output {
        Command::new(self.bin)
            .args(args)
            .env("DOCKER_HOST", self.lab.socket(node))
            // No config of the machine's user: a clean CLI, as on a fresh host.
            .env("DOCKER_CONFIG", self.lab.dir().join("docker-config"))
            .current_dir(self.lab.dir())
            .output()
            .expect("run docker")
    }

    fn ok(&self, node: u32, args: &[&str]) -> String {
        let out = self.run(node, args);
        assert!(
            out.status.success(),
            "`{} {}` on node{node} failed:\n{}{}",
            self.bin,
            args.join(" "),
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    fn fails(&self, node: u32, args: &[&str]) -> String {
        let out = self.run(node, args);
        assert!(
            !out.status.success(),
            "`{} {}` should have failed but printed:\n{}",
            self.bin,
            args.join(" "),
            text(&out.stdout)
        );
        text(&out.stderr)
    }

    /// `docker ARGS` left running, its stdout piped (a follower).
    fn spawn(&self, node: u32, args: &[&str]) -> Child {
        Command::new(self.bin)
            .args(args)
            .env("DOCKER_HOST", self.lab.socket(node))
            .env("DOCKER_CONFIG", self.lab.dir().join("docker-config"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn docker")
    }

    /// The line of a table that names `name` in a column of its own.
    fn row(table: &str, name: &str) -> String {
        table
            .lines()
            .find(|l| l.split_whitespace().any(|w| w == name))
            .unwrap_or_else(|| panic!("no row for {name} in:\n{table}"))
            .to_string()
    }
}

/// The lines `child` prints, gathered by a thread as they come.
fn follow_lines(child: &mut Child) -> Arc<Mutex<Vec<String>>> {
    let out = child.stdout.take().expect("piped stdout");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

/// The container ids `curl URL` sees over `tries` requests, from node `from`'s namespace.
fn container_ids(lab: &Lab, from: u32, url: &str, tries: usize) -> BTreeSet<String> {
    (0..tries)
        .filter_map(|_| {
            let out = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &lab.netns(from),
                    "curl",
                    "-s",
                    "-m",
                    "3",
                    url,
                ])
                .output()
                .ok()?;
            text(&out.stdout)
                .split("Processed by container ID ")
                .nth(1)
                .map(|r| {
                    r.split(|c: char| !c.is_ascii_alphanumeric())
                        .next()
                        .unwrap_or("")
                        .to_string()
                })
        })
        .collect()
}

#[test]
fn the_seed_scenarios_through_the_docker_cli() {
    let lab = Lab::up_with("dcli", 2, 1, &["--registry"]);
    let reg = registry(&lab);
    let vote = format!("{reg}/anoy/vote:latest");
    let client = format!("{reg}/anoy/client:latest");
    for bin in clis() {
        let d = Docker { lab: &lab, bin };

        let nodes = d.ok(1, &["node", "ls"]);
        let n1 = Docker::row(&nodes, "node1");
        assert!(
            n1.contains('*')
                && n1.contains("Ready")
                && n1.contains("Active")
                && n1.contains("Leader"),
            "{bin}: {nodes}"
        );
        let n2 = Docker::row(&nodes, "node2");
        assert!(
            n2.contains("Ready") && n2.contains("Active") && !n2.contains("Leader"),
            "{bin}: {nodes}"
        );
        let version = d.ok(
            1,
            &[
                "version",
                "--format",
                "{{.Server.APIVersion}} {{.Server.Version}}",
            ],
        );
        assert_eq!(version.trim(), "1.47 shoal 0.1.0", "{bin}");

        d.ok(1, &["network", "create", "--driver", "overlay", "overlay1"]);
        let nets = d.ok(1, &["network", "ls"]);
        assert!(
            Docker::row(&nets, "overlay1").contains("swarm"),
            "{bin}: {nets}"
        );
        let net_id = d
            .ok(
                1,
                &["network", "inspect", "--format", "{{.Id}}", "overlay1"],
            )
            .trim()
            .to_string();

        // 1: dnsrr. `vote` answers the two tasks' addresses.
        d.ok(
            1,
            &[
                "service",
                "create",
                "--endpoint-mode",
                "dnsrr",
                "--replicas",
                "1",
                "--name",
                "client",
                "--network",
                "overlay1",
                &client,
            ],
        );
        d.ok(
            1,
            &[
                "service",
                "create",
                "--endpoint-mode",
                "dnsrr",
                "--name",
                "vote",
                "--network",
                "overlay1",
                "--replicas",
                "2",
                &vote,
            ],
        );
        let ls = d.ok(1, &["service", "ls"]);
        assert!(Docker::row(&ls, "client").contains("1/1"), "{bin}: {ls}");
        assert!(Docker::row(&ls, "vote").contains("2/2"), "{bin}: {ls}");
        let ps = d.ok(1, &["service", "ps", "vote"]);
        for slot in ["vote.1", "vote.2"] {
            assert!(Docker::row(&ps, slot).contains("Running"), "{bin}: {ps}");
        }
        let (cnode, ctask) = lab.wait_running("client", 1)[0].clone();
        let addrs: BTreeSet<String> = lab
            .wait_running("vote", 2)
            .iter()
            .map(|(_, id)| lab.task_addr(id))
            .collect();
        let answered: BTreeSet<String> = lab.dig(cnode, &ctask, &["vote"]).into_iter().collect();
        assert_eq!(
            answered, addrs,
            "{bin}: dig vote answers the tasks' addresses"
        );
        d.ok(1, &["service", "rm", "vote", "client"]);

        // 2: a VIP. `vote` answers it alone and curl reaches both tasks.
        d.ok(
            1,
            &[
                "service",
                "create",
                "--replicas",
                "1",
                "--name",
                "client",
                "--network",
                "overlay1",
                &client,
            ],
        );
        d.ok(
            1,
            &[
                "service",
                "create",
                "--name",
                "vote",
                "--network",
                "overlay1",
                "--replicas",
                "2",
                &vote,
            ],
        );
        let vips = d.ok(
            1,
            &[
                "service",
                "inspect",
                "--format",
                "{{.Endpoint.VirtualIPs}}",
                "vote",
            ],
        );
        let vip = vips
            .trim()
            .strip_prefix(&format!("[{{{net_id} "))
            .and_then(|r| r.strip_suffix("}]"))
            .unwrap_or_else(|| panic!("{bin}: one VIP on overlay1 ({net_id}) expected: {vips}"));
        let (cnode, ctask) = lab.wait_running("client", 1)[0].clone();
        assert_eq!(
            lab.dig(cnode, &ctask, &["vote"]),
            [vip.split('/').next().unwrap().to_string()],
            "{bin}"
        );
        let seen: BTreeSet<String> = (0..20)
            .filter_map(|_| {
                let out = lab.in_task(cnode, &ctask, &["curl", "-s", "-m", "3", "http://vote/"]);
                text(&out.stdout)
                    .split("Processed by container ID ")
                    .nth(1)
                    .map(|r| r.split_whitespace().next().unwrap_or("").to_string())
            })
            .collect();
        assert_eq!(
            seen.len(),
            2,
            "{bin}: curl vote reaches both tasks: {seen:?}"
        );
        d.ok(1, &["service", "rm", "vote"]);

        // 3: the routing mesh, then scale, update --image, logs, ps and inspect.
        d.ok(
            1,
            &[
                "service",
                "create",
                "--name",
                "vote",
                "--network",
                "overlay1",
                "--replicas",
                "2",
                "-p",
                "8080:80",
                &vote,
            ],
        );
        let ls = d.ok(1, &["service", "ls"]);
        assert!(
            Docker::row(&ls, "vote").contains("*:8080->80/tcp"),
            "{bin}: {ls}"
        );
        lab.wait_running("vote", 2);
        let a1 = lab.node_addr(1);
        let a2 = lab.node_addr(2);
        assert_eq!(
            container_ids(&lab, 1, &format!("http://{a2}:8080/"), 20).len(),
            2,
            "{bin}: node2:8080 from node1"
        );
        assert_eq!(
            container_ids(&lab, 2, &format!("http://{a1}:8080/"), 20).len(),
            2,
            "{bin}: node1:8080 from node2"
        );

        // `service logs -f` follows: the task a scale-up starts shows up in the stream.
        let mut follow = d.spawn(1, &["service", "logs", "-f", "vote"]);
        let lines = follow_lines(&mut follow);
        d.ok(1, &["service", "scale", "vote=3"]);
        let seen = wait_for(
            "the new task's line in `service logs -f`",
            Duration::from_secs(60),
            || {
                let got = lines.lock().unwrap().clone();
                if got
                    .iter()
                    .any(|l| l.starts_with("vote.3.") && l.contains("| vote: serving on port 80"))
                {
                    Ok(got)
                } else {
                    Err(got.join("\n"))
                }
            },
        );
        assert!(
            seen.iter().any(|l| l.starts_with("vote.1.")),
            "{bin}: the lines before the scale came first: {seen:?}"
        );
        assert!(
            follow.try_wait().unwrap().is_none(),
            "{bin}: `service logs -f` is still following"
        );
        follow.kill().unwrap();
        follow.wait().unwrap();
        assert!(
            Docker::row(&d.ok(1, &["service", "ls"]), "vote").contains("3/3"),
            "{bin}"
        );
        retag(&lab, "anoy/vote", "2");
        let v2 = format!("{reg}/anoy/vote:2");
        d.ok(1, &["service", "update", "--image", &v2, "vote"]);
        let running = d.ok(
            1,
            &[
                "service",
                "ps",
                "--filter",
                "desired-state=running",
                "--format",
                "{{.Image}} {{.CurrentState}}",
                "vote",
            ],
        );
        assert_eq!(
            running
                .lines()
                .filter(|l| l.starts_with(&format!("{v2} Running")))
                .count(),
            3,
            "{bin}: {running}"
        );
        let all = d.ok(
            1,
            &[
                "service",
                "ps",
                "--format",
                "{{.Image}} {{.DesiredState}}",
                "vote",
            ],
        );
        assert!(
            all.lines().any(|l| l == format!("{vote} Shutdown")),
            "{bin}: the old tasks were replaced: {all}"
        );

        let logs = d.ok(1, &["service", "logs", "vote"]);
        assert!(
            logs.lines().any(|l| l.starts_with("vote.")
                && l.contains("@node")
                && l.contains("| vote: serving on port 80")),
            "{bin}: {logs}"
        );

        let on2: Vec<(u32, String)> = lab
            .wait_running("vote", 3)
            .into_iter()
            .filter(|(n, _)| *n == 2)
            .collect();
        let ps2 = d.ok(2, &["ps", "--format", "{{.ID}} {{.Names}} {{.Image}}"]);
        for (_, id) in &on2 {
            let row = Docker::row(&ps2, &id[..12]);
            assert!(
                row.contains("vote.") && row.contains(id.as_str()) && row.contains(&v2),
                "{bin}: {ps2}"
            );
            assert_eq!(
                d.ok(2, &["inspect", "--format", "{{.State.Status}}", id])
                    .trim(),
                "running",
                "{bin}"
            );
        }

        // Refused by name, not dropped.
        let tty = d.fails(1, &["service", "create", "--name", "t", "--tty", &vote]);
        assert!(tty.contains("Error response from daemon: TaskTemplate.ContainerSpec.TTY (--tty) is not supported by shoal"), "{bin}: {tty}");
        let init = d.fails(1, &["swarm", "init"]);
        assert!(init.contains("use `shoal init`"), "{bin}: {init}");

        // docker node promote|demote, as `shoal node promote|demote`.
        let out = d.ok(1, &["node", "promote", "node2"]);
        assert!(
            out.contains("Node node2 promoted to a manager in the swarm."),
            "{bin}: {out}"
        );
        wait_for(
            "node2 to be a reachable manager",
            Duration::from_secs(60),
            || {
                let row = Docker::row(&d.ok(1, &["node", "ls"]), "node2");
                if row.contains("Reachable") {
                    Ok(())
                } else {
                    Err(row)
                }
            },
        );
        let out = d.ok(1, &["node", "demote", "node2"]);
        assert!(
            out.contains("Manager node2 demoted in the swarm."),
            "{bin}: {out}"
        );
        wait_for(
            "node2 to be a worker again",
            Duration::from_secs(60),
            || {
                let role = d.ok(
                    1,
                    &[
                        "node",
                        "inspect",
                        "--format",
                        "{{.Spec.Role}} {{.ManagerStatus}}",
                        "node2",
                    ],
                );
                if role.trim() == "worker <nil>" {
                    Ok(())
                } else {
                    Err(role)
                }
            },
        );

        d.ok(1, &["service", "rm", "vote", "client"]);
        d.ok(1, &["network", "rm", "overlay1"]);
        assert_eq!(d.ok(1, &["service", "ls", "-q"]).trim(), "", "{bin}");
    }

    // A client older than the oldest API shoal serves is told so.
    let old = Command::new(DEBIAN_DOCKER)
        .args(["version"])
        .env("DOCKER_HOST", lab.socket(1))
        .env("DOCKER_API_VERSION", "1.12")
        .output()
        .expect("run docker");
    assert!(
        text(&old.stderr)
            .contains("client version 1.12 is too old. Minimum supported API version is 1.24"),
        "{}",
        text(&old.stderr)
    );
}

const STACK: &str = r#"version: "3.8"
services:
  front:
    image: REG/anoy/vote:TAG
    ports:
      - "8081:80"
    networks: [frontnet, backnet]
    deploy:
      replicas: 2
      update_config:
        order: start-first
  back:
    image: REG/anoy/client:latest
    networks:
      backnet:
        aliases: [db]
    healthcheck:
      test: ["CMD", "true"]
      interval: 1s
networks:
  frontnet:
    driver: overlay
  backnet:
    driver: overlay
"#;

#[test]
fn a_compose_stack_through_docker_stack_deploy() {
    let lab = Lab::up_with("dstack", 2, 1, &["--registry"]);
    let reg = registry(&lab);
    retag(&lab, "anoy/vote", "2");
    let file = lab.dir().join("docker-compose.yml");
    for bin in clis() {
        let d = Docker { lab: &lab, bin };
        std::fs::write(&file, STACK.replace("REG", &reg).replace("TAG", "latest")).unwrap();
        let out = d.ok(1, &["stack", "deploy", "-c", file.to_str().unwrap(), "app"]);
        assert!(
            out.contains("Creating service app_front") && out.contains("Creating service app_back"),
            "{bin}: {out}"
        );
        assert!(
            Docker::row(&d.ok(1, &["stack", "ls"]), "app").contains('2'),
            "{bin}"
        );
        let services = wait_for(
            "the stack's services to run",
            Duration::from_secs(60),
            || {
                let s = d.ok(1, &["stack", "services", "app"]);
                if Docker::row(&s, "app_front").contains("2/2")
                    && Docker::row(&s, "app_back").contains("1/1")
                {
                    Ok(s)
                } else {
                    Err(s)
                }
            },
        );
        assert!(
            Docker::row(&services, "app_front").contains("*:8081->80/tcp"),
            "{bin}: {services}"
        );
        let a2 = lab.node_addr(2);
        assert_eq!(
            container_ids(&lab, 1, &format!("http://{a2}:8081/"), 20).len(),
            2,
            "{bin}: the front end through the mesh"
        );
        // The back end finds the front end by its compose name on the shared network.
        let (bnode, btask) = lab.wait_running("app_back", 1)[0].clone();
        assert_eq!(
            lab.dig(bnode, &btask, &["front"]).len(),
            1,
            "{bin}: `front` answers its VIP"
        );

        // A redeploy with a new image rolls the front end, and only it.
        let back_before = lab.wait_running("app_back", 1);
        std::fs::write(&file, STACK.replace("REG", &reg).replace("TAG", "2")).unwrap();
        let out = d.ok(1, &["stack", "deploy", "-c", file.to_str().unwrap(), "app"]);
        assert!(out.contains("Updating service app_front"), "{bin}: {out}");
        wait_for("the front end on :2", Duration::from_secs(90), || {
            let ps = d.ok(
                1,
                &[
                    "stack",
                    "ps",
                    "--filter",
                    "desired-state=running",
                    "--format",
                    "{{.Name}} {{.Image}} {{.CurrentState}}",
                    "app",
                ],
            );
            let new = ps
                .lines()
                .filter(|l| l.starts_with("app_front.") && l.contains("/anoy/vote:2 Running"))
                .count();
            if new == 2 { Ok(()) } else { Err(ps) }
        });
        assert_eq!(
            lab.wait_running("app_back", 1),
            back_before,
            "{bin}: the unchanged back end kept its task"
        );

        let out = d.ok(1, &["stack", "rm", "app"]);
        assert!(
            out.contains("Removing service app_front")
                && out.contains("Removing network app_backnet"),
            "{bin}: {out}"
        );
        wait_for("the stack to go", Duration::from_secs(30), || {
            let ls = d.ok(1, &["stack", "ls"]);
            let nets = d.ok(1, &["network", "ls", "--format", "{{.Name}}"]);
            if !ls.contains("app") && !nets.contains("app_") {
                Ok(())
            } else {
                Err(format!("{ls}{nets}"))
            }
        });
    }
}
