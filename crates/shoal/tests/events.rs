//! `shoal events` and `docker events --filter scope=swarm` on a lab: a service created,
//! scaled and removed gives its events in order, live and from the manager's ring
//! (`--since`/`--until`), and filters narrow them.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::Value;

const DOCKER: &str = "/usr/bin/docker";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `1700000000.123`: how both CLIs take a time.
fn secs(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

/// `ACTION NAME` of a service's events, with `replicas OLD->NEW` when they changed.
fn service_story(events: &[Value], name: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["Type"] == "service" && e["Actor"]["Attributes"]["name"] == name)
        .map(|e| {
            let a = &e["Actor"]["Attributes"];
            match (a["replicas.old"].as_str(), a["replicas.new"].as_str()) {
                (Some(o), Some(n)) => {
                    format!("{} replicas {o}->{n}", e["Action"].as_str().unwrap())
                }
                _ => e["Action"].as_str().unwrap().to_string(),
            }
        })
        .collect()
}

/// The story with the updates that change nothing a user set (a VIP allocated, the
/// rollout's state) left out: create, the scale, remove.
fn user_story(events: &[Value], name: &str) -> Vec<String> {
    service_story(events, name)
        .into_iter()
        .filter(|s| s != "update")
        .collect()
}

fn spawn(cmd: &mut Command) -> Child {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn an event stream")
}

/// Ends a live stream (it never ends on its own without --until) and returns its output.
fn finish(mut child: Child) -> String {
    child.kill().expect("stop the stream");
    let out = child.wait_with_output().unwrap();
    text(&out.stdout)
}

#[test]
fn service_lifecycle_events_in_order_live_bounded_and_filtered() {
    assert!(
        std::path::Path::new(DOCKER).exists(),
        "{DOCKER} is missing: run scripts/setup.sh (it installs Debian's docker.io for its CLI)"
    );
    let lab = Lab::up("events", 2, 1);
    let t0 = now_ms();
    // Live streams from t0 on (the ring gives what happened before they subscribed, so
    // there is no race with the commands below).
    let live = spawn(
        Command::new(SHOAL)
            .args(["-H", &lab.socket(1), "events", "--since", &secs(t0)])
            .args(["--format", "json"]),
    );
    let docker_live = spawn(
        Command::new(DOCKER)
            .args(["events", "--since", &secs(t0), "--filter", "scope=swarm"])
            .args(["--format", "{{json .}}"])
            .env("DOCKER_HOST", lab.socket(1))
            .env("DOCKER_CONFIG", lab.dir().join("docker-config")),
    );

    lab.create("--name web --replicas 1 SHOAL demo vote");
    std::thread::sleep(Duration::from_millis(50));
    let t_scale = now_ms();
    lab.ok(1, &["service", "scale", "web=3"]);
    lab.ok(1, &["service", "rm", "web"]);
    // The removal's task events come as the agents stop them.
    wait_for("web's tasks gone", Duration::from_secs(30), || {
        let out = lab.ok(1, &["service", "ls", "-q"]);
        if out.trim().is_empty() {
            Ok(())
        } else {
            Err(out)
        }
    });
    std::thread::sleep(Duration::from_secs(1));
    let t1 = now_ms();

    // Bounded: from the ring, and the command ends on its own.
    let all = json_lines(&lab.ok(
        1,
        &[
            "events",
            "--since",
            &secs(t0),
            "--until",
            &secs(t1),
            "--format",
            "json",
        ],
    ));
    assert_eq!(
        user_story(&all, "web"),
        ["create", "update replicas 1->3", "remove"],
        "{all:#?}"
    );
    let web_id = all
        .iter()
        .find(|e| e["Type"] == "service" && e["Action"] == "create")
        .map(|e| e["Actor"]["ID"].as_str().unwrap().to_string())
        .expect("service create");
    // Every task: created (after its service), then running, each later than the last.
    let pos = |pred: &dyn Fn(&Value) -> bool| all.iter().position(pred);
    let svc_create = pos(&|e| e["Type"] == "service" && e["Action"] == "create").unwrap();
    let svc_remove = pos(&|e| e["Type"] == "service" && e["Action"] == "remove").unwrap();
    for slot in 1..=3 {
        let name = format!("web.{slot}");
        let of_task = |e: &Value| e["Type"] == "task" && e["Actor"]["Attributes"]["name"] == name;
        let created = pos(&|e| of_task(e) && e["Action"] == "create")
            .unwrap_or_else(|| panic!("no create of {name}: {all:#?}"));
        let running = pos(&|e| of_task(e) && e["Actor"]["Attributes"]["state.new"] == "running")
            .unwrap_or_else(|| panic!("{name} never running: {all:#?}"));
        assert!(
            svc_create < created && created < running && running < svc_remove,
            "{name}: {all:#?}"
        );
        let task = &all[created];
        assert_eq!(task["Actor"]["Attributes"]["service.id"], web_id.as_str());
    }
    let times: Vec<u64> = all
        .iter()
        .map(|e| e["TimeNano"].as_u64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert!(
        times
            .iter()
            .all(|t| *t >= t0 * 1_000_000 && *t <= t1 * 1_000_000)
    );

    // --since and --until bound them.
    let later = json_lines(&lab.ok(
        1,
        &[
            "events",
            "--since",
            &secs(t_scale),
            "--until",
            &secs(t1),
            "--format",
            "json",
        ],
    ));
    assert_eq!(
        user_story(&later, "web"),
        ["update replicas 1->3", "remove"]
    );
    let earlier = json_lines(&lab.ok(
        1,
        &[
            "events",
            "--since",
            &secs(t0),
            "--until",
            &secs(t_scale),
            "--format",
            "json",
        ],
    ));
    assert_eq!(user_story(&earlier, "web"), ["create"]);

    // Filters narrow them.
    let services = json_lines(&lab.ok(
        1,
        &[
            "events",
            "--since",
            &secs(t0),
            "--until",
            &secs(t1),
            "--filter",
            "type=service",
            "--format",
            "json",
        ],
    ));
    assert!(!services.is_empty() && services.iter().all(|e| e["Type"] == "service"));
    assert_eq!(service_story(&services, "web"), service_story(&all, "web"));
    let removals = lab.ok(
        1,
        &[
            "events",
            "--since",
            &secs(t0),
            "--until",
            &secs(t1),
            "--filter",
            "type=service",
            "--filter",
            "event=remove",
            "--format",
            "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}",
        ],
    );
    assert_eq!(removals, "service remove web\n");
    let tasks_of_web = json_lines(&lab.ok(
        1,
        &[
            "events",
            "--since",
            &secs(t0),
            "--until",
            &secs(t1),
            "--filter",
            "type=task",
            "--filter",
            "service=web",
            "--format",
            "json",
        ],
    ));
    assert!(tasks_of_web.len() >= 6, "{tasks_of_web:#?}");
    assert!(
        tasks_of_web
            .iter()
            .all(|e| e["Type"] == "task" && e["Actor"]["Attributes"]["service.name"] == "web")
    );
    // The default line is docker's.
    let line = lab.ok(
        1,
        &[
            "events",
            "--since",
            &secs(t0),
            "--until",
            &secs(t1),
            "--filter",
            "type=service",
            "--filter",
            "event=create",
        ],
    );
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        words[1..4],
        ["service", "create", web_id.as_str()],
        "{line}"
    );
    assert_eq!(words[4], "(name=web)", "{line}");
    assert!(
        words[0].ends_with('Z') && words[0].starts_with("20"),
        "{line}"
    );

    // What cannot be asked, by name.
    let err = lab.fails(1, &["events", "--filter", "type=container"]);
    assert!(
        err.contains(
            "invalid filter 'type=container': events are of type service, node, task or network"
        ),
        "{err}"
    );
    let err = lab.fails(2, &["events", "--since", &secs(t0), "--until", &secs(t1)]);
    assert!(err.contains("this node is not a manager"), "{err}");

    // The live streams saw the same story, in the same order.
    let live = json_lines(&finish(live));
    assert_eq!(
        user_story(&live, "web"),
        ["create", "update replicas 1->3", "remove"]
    );
    assert_eq!(service_story(&live, "web"), service_story(&all, "web"));

    // docker's CLI: live, and bounded (it ends on its own), with no task events (docker
    // has none).
    let docker_live = json_lines(&finish(docker_live));
    assert_eq!(
        user_story(&docker_live, "web"),
        ["create", "update replicas 1->3", "remove"]
    );
    assert!(
        docker_live
            .iter()
            .all(|e| e["scope"] == "swarm" && e["Type"] != "task")
    );
    let out = Command::new(DOCKER)
        .args(["events", "--since", &secs(t0), "--until", &secs(t1)])
        .args([
            "--filter",
            "scope=swarm",
            "--filter",
            "type=service",
            "--format",
            "{{json .}}",
        ])
        .env("DOCKER_HOST", lab.socket(1))
        .env("DOCKER_CONFIG", lab.dir().join("docker-config"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let bounded = json_lines(&text(&out.stdout));
    assert_eq!(service_story(&bounded, "web"), service_story(&all, "web"));
    assert!(bounded.iter().all(|e| e["Type"] == "service"));
    // docker's default line names the service.
    let out = Command::new(DOCKER)
        .args(["events", "--since", &secs(t0), "--until", &secs(t1)])
        .args(["--filter", "type=service", "--filter", "event=remove"])
        .env("DOCKER_HOST", lab.socket(1))
        .env("DOCKER_CONFIG", lab.dir().join("docker-config"))
        .output()
        .unwrap();
    let line = text(&out.stdout);
    assert!(
        line.contains(&format!("service remove {web_id} (name=web)")),
        "{line}{}",
        text(&out.stderr)
    );
}

#[test]
fn node_down_and_up() {
    // A worker cut off is Down after the grace, then Ready again: two node updates with
    // docker's state.old/state.new.
    let lab = Lab::up("evnode", 2, 1);
    let t0 = now_ms();
    let node2 = lab
        .ok(1, &["node", "inspect", "node2", "--format", "{{.ID}}"])
        .trim()
        .to_string();
    let ns = lab.netns(2);
    let ip = |args: &[&str]| {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns, "ip"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    ip(&["link", "set", "eth0", "down"]);
    wait_for("node2 down", Duration::from_secs(60), || {
        let s = lab.ok(
            1,
            &["node", "inspect", "node2", "--format", "{{.Status.State}}"],
        );
        if s.trim() == "down" { Ok(()) } else { Err(s) }
    });
    ip(&["link", "set", "eth0", "up"]);
    wait_for("node2 ready", Duration::from_secs(60), || {
        let s = lab.ok(
            1,
            &["node", "inspect", "node2", "--format", "{{.Status.State}}"],
        );
        if s.trim() == "ready" { Ok(()) } else { Err(s) }
    });
    let t1 = now_ms() + 1;
    let nodes = lab.ok(
        1,
        &[
            "events",
            "--since",
            &secs(t0),
            "--until",
            &secs(t1),
            "--filter",
            "type=node",
            "--filter",
            "node=node2",
            "--format",
            "{{.Action}} {{.Actor.ID}} {{json .Actor.Attributes}}",
        ],
    );
    let states: Vec<Value> = nodes
        .lines()
        .map(|l| {
            let (head, attrs) = l.split_at(l.find('{').expect("attributes"));
            assert_eq!(head.trim(), format!("update {node2}"), "{l}");
            serde_json::from_str(attrs).unwrap()
        })
        .filter(|a: &Value| a.get("state.new").is_some())
        .collect();
    let pairs: Vec<(String, String)> = states
        .iter()
        .map(|a| {
            (
                a["state.old"].as_str().unwrap().into(),
                a["state.new"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        [
            ("ready".to_string(), "down".to_string()),
            ("down".to_string(), "ready".to_string())
        ],
        "{nodes}"
    );
}
