//! Health checks and readiness on a lab cluster (issue 11): `service ps` shows a task
//! `(starting)` then `(healthy)`; a task is in no DNS answer and behind no VIP until it is
//! ready (healthy, or listening on its target port); one whose check starts failing is
//! stopped, reported Failed ("unhealthy container") and replaced; `--endpoint-publish-not-ready`
//! lists a starting task in `tasks.<svc>` only. Real shoald, CLI, dig and curl.

mod common;

use std::time::Duration;

use common::*;

/// `service ps` CURRENT STATE of the service's newest task in slot 1.
fn current_state(lab: &Lab, service: &str) -> String {
    let out = lab.ok(
        1,
        &[
            "service",
            "ps",
            "--no-trunc",
            "--format",
            "{{.CurrentState}}|{{.Error}}",
            service,
        ],
    );
    out.lines().next().unwrap_or("").to_string()
}

fn wait_state(lab: &Lab, service: &str, want: &str, within: Duration) -> String {
    wait_for(&format!("{service} {want}"), within, || {
        let s = current_state(lab, service);
        if s.contains(want) { Ok(s) } else { Err(s) }
    })
}

/// `curl` from the client to `url`: the page's "Processed by" line, or curl's failure.
fn curl(lab: &Lab, client: &(u32, String), url: &str) -> Result<String, String> {
    let out = lab.in_task(
        client.0,
        &client.1,
        &["curl", "-sS", "--max-time", "3", url],
    );
    let body = text(&out.stdout);
    if out.status.success() && body.contains("Processed by container ID") {
        Ok(body)
    } else {
        Err(format!("{}{}", body, text(&out.stderr)))
    }
}

/// `curl` in a lab node's namespace.
fn curl_on_node(lab: &Lab, node: u32, url: &str) -> std::process::Output {
    let node = format!("node{node}");
    std::process::Command::new(SHOAL)
        .args([
            "lab",
            "exec",
            "--name",
            &lab.name,
            &node,
            "--",
            "curl",
            "-sS",
            "--max-time",
            "3",
            url,
        ])
        .output()
        .expect("run curl")
}

/// `sh -c "sleep N; exec shoal demo vote"`: a server that listens only after N seconds.
fn late_vote(seconds: u32) -> String {
    format!("sleep {seconds}; exec {SHOAL} demo vote")
}

#[test]
fn health_checks_and_readiness_gate_every_path() {
    let lab = Lab::up("health", 2, 1);
    lab.ok(1, &["network", "create", "ovl"]);
    lab.create("--name client --network ovl --constraint node.hostname==node1 SHOAL demo client");
    let client = lab.wait_running("client", 1)[0].clone();

    // An unknown flag before the command is refused by name, not run as the command.
    let err = lab.fails(
        1,
        &["service", "create", "--bogus", "--name", "x", "busybox"],
    );
    assert!(err.contains("unknown flag: --bogus"), "{err}");

    // A server that listens after 6 s, with a check that asks it; `--health-cmd` before the
    // command is a flag. The check also fails once a file exists (to make it unhealthy).
    let sick = lab.dir().join("sick");
    let check = format!(
        "curl -sf -o /dev/null localhost:80 && test ! -e {}",
        sick.display()
    );
    let late = late_vote(6);
    lab.ok(
        1,
        &[
            "service",
            "create",
            "-d",
            "--runtime",
            "host",
            "--name",
            "web",
            "--network",
            "ovl",
            "--health-cmd",
            &check,
            "--health-interval",
            "1s",
            "--health-retries",
            "2",
            "--health-start-period",
            "30s",
            "--restart-delay",
            "1s",
            "sh",
            "-c",
            &late,
        ],
    );
    let starting = wait_state(&lab, "web", "(starting)", Duration::from_secs(30));
    assert!(starting.starts_with("Running "), "{starting}");
    // Running but starting: no record, and the VIP refuses (it has no ready task).
    assert_eq!(
        lab.dig(client.0, &client.1, &["tasks.web"]),
        Vec::<String>::new()
    );
    let refused = curl(&lab, &client, "web").unwrap_err();
    assert!(refused.contains("curl: (7) Failed to connect"), "{refused}");
    assert_eq!(
        lab.task_json("web.1")["Status"]["Health"].as_str(),
        Some("starting")
    );

    let healthy = wait_state(&lab, "web", "(healthy)", Duration::from_secs(30));
    assert!(healthy.starts_with("Running "), "{healthy}");
    let web = lab.wait_running("web", 1)[0].1.clone();
    let addr = lab.task_addr(&web);
    wait_for("tasks.web to list the task", Duration::from_secs(5), || {
        let got = lab.dig(client.0, &client.1, &["tasks.web"]);
        if got == [addr.clone()] {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    });
    let page = curl(&lab, &client, "web").expect("the VIP reaches the healthy task");
    assert!(page.contains(&web[..12]), "{page}");
    assert_eq!(
        lab.ok(
            1,
            &[
                "service",
                "inspect",
                "--format",
                "{{json .Spec.TaskTemplate.ContainerSpec.Healthcheck}}",
                "web"
            ]
        )
        .trim(),
        format!(
            r#"{{"Test":["CMD-SHELL",{}],"Interval":1000000000,"StartPeriod":30000000000,"Retries":2}}"#,
            serde_json::to_string(&check).unwrap()
        )
    );

    // The check starts failing: unhealthy after 2 probes, out of DNS, stopped, reported as
    // Swarm does, and replaced.
    std::fs::write(&sick, "").unwrap();
    let failed = wait_for(
        "the unhealthy task to fail",
        Duration::from_secs(30),
        || {
            let out = lab.ok(
                1,
                &[
                    "service",
                    "ps",
                    "--no-trunc",
                    "--format",
                    "{{.ID}}|{{.CurrentState}}|{{.Error}}",
                    "web",
                ],
            );
            out.lines()
                .find(|l| l.starts_with(&web) && l.contains("Failed"))
                .map(str::to_string)
                .ok_or(out)
        },
    );
    assert!(failed.contains("unhealthy container"), "{failed}");
    wait_for("a replacement task", Duration::from_secs(30), || {
        let ids = lab.ok(1, &["service", "ps", "-q", "--no-trunc", "web"]);
        let newer = ids.lines().filter(|l| *l != web).count();
        if newer >= 1 { Ok(()) } else { Err(ids) }
    });
    std::fs::remove_file(&sick).unwrap();
    wait_state(&lab, "web", "(healthy)", Duration::from_secs(60));

    // No health check, a target port: ready once it listens (the agent connects to it).
    lab.ok(
        1,
        &[
            "service",
            "create",
            "-d",
            "--runtime",
            "host",
            "--name",
            "late",
            "--network",
            "ovl",
            "-p",
            "8081:80",
            "sh",
            "-c",
            &late_vote(5),
        ],
    );
    let late = wait_for("late to run", Duration::from_secs(30), || {
        let t = lab.tasks_by_node("late");
        t.first().cloned().ok_or(format!("{t:?}"))
    });
    assert_eq!(
        lab.dig(client.0, &client.1, &["tasks.late"]),
        Vec::<String>::new()
    );
    assert!(curl(&lab, &client, "late").is_err());
    let out = curl_on_node(&lab, 2, "127.0.0.1:8081");
    assert!(
        !out.status.success(),
        "the published port waits too: {}",
        text(&out.stdout)
    );
    assert_eq!(
        lab.task_json(&late.1)["Status"]["Ready"].as_bool(),
        Some(false)
    );
    let late_addr = lab.task_addr(&late.1);
    wait_for("late to be ready", Duration::from_secs(30), || {
        let got = lab.dig(client.0, &client.1, &["tasks.late"]);
        if got == [late_addr.clone()] {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    });
    curl(&lab, &client, "late").expect("the VIP reaches it once it listens");
    // The routing mesh too, from the other node.
    let page = text(&curl_on_node(&lab, 2, "127.0.0.1:8081").stdout);
    assert!(page.contains(&late.1[..12]), "{page}");

    // A clustered app's members find each other before they are ready: tasks.<svc> lists a
    // starting task, the service's own name (dnsrr) does not.
    lab.ok(
        1,
        &[
            "service",
            "create",
            "-d",
            "--runtime",
            "host",
            "--name",
            "peers",
            "--network",
            "ovl",
            "--endpoint-mode",
            "dnsrr",
            "--endpoint-publish-not-ready",
            "--health-cmd",
            "false",
            "--health-interval",
            "1s",
            "--health-start-period",
            "5m",
            SHOAL,
            "demo",
            "vote",
        ],
    );
    wait_state(&lab, "peers", "(starting)", Duration::from_secs(30));
    let peer = lab.tasks_by_node("peers")[0].1.clone();
    let peer_addr = lab.task_addr(&peer);
    wait_for(
        "tasks.peers to list the starting task",
        Duration::from_secs(10),
        || {
            let got = lab.dig(client.0, &client.1, &["tasks.peers"]);
            if got == [peer_addr.clone()] {
                Ok(())
            } else {
                Err(format!("{got:?}"))
            }
        },
    );
    assert_eq!(
        lab.dig(client.0, &client.1, &["peers"]),
        Vec::<String>::new()
    );
    assert_eq!(
        lab.ok(
            1,
            &[
                "service",
                "inspect",
                "--format",
                "{{.Spec.EndpointSpec.PublishNotReadyAddresses}}",
                "peers"
            ]
        )
        .trim(),
        "true"
    );
}

/// A container's health check: the image's HEALTHCHECK (in its config as docker writes it)
/// runs inside the container (`runc exec`), `--no-healthcheck` turns it off, and a service's
/// failing check gets the container stopped and reported as Swarm does.
#[test]
fn an_image_healthcheck_runs_in_the_container() {
    let lab = Lab::up("hcimg", 1, 1);
    let _runcs = common::oci::Runcs::of(&lab);
    let registries = common::oci::registries(&lab);
    let check = r#"{"Test":["CMD-SHELL","busybox test -e /ok"],"Interval":1000000000,"Retries":2,"StartPeriod":60000000000}"#;
    for r in &registries {
        r.push_busybox_with_healthcheck("lab/hc:1", check);
    }
    let image = "127.0.0.1:5000/lab/hc:1";
    // /ok appears in the container's own filesystem after 4 s.
    let script = "busybox sleep 4; busybox touch /ok; exec busybox sleep 1000";
    lab.ok(
        1,
        &[
            "service", "create", "-d", "--name", "hc", image, "sh", "-c", script,
        ],
    );
    let starting = wait_state(&lab, "hc", "(starting)", Duration::from_secs(60));
    assert!(starting.starts_with("Running "), "{starting}");
    wait_state(&lab, "hc", "(healthy)", Duration::from_secs(30));

    // --no-healthcheck: no check at all, the task is ready as it runs.
    lab.ok(
        1,
        &[
            "service",
            "create",
            "--name",
            "nohc",
            "--no-healthcheck",
            image,
            "sh",
            "-c",
            script,
        ],
    );
    let state = current_state(&lab, "nohc");
    assert!(
        state.starts_with("Running ") && !state.contains('('),
        "{state}"
    );

    // A service's check on an image without one: fails at once, no start period: unhealthy
    // after one probe, stopped (PID 1 ignores SIGTERM: killed after the 1 s grace).
    lab.ok(
        1,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "bad",
            "--health-cmd",
            "busybox false",
            "--health-retries",
            "1",
            "--stop-grace-period",
            "1s",
            "--restart-condition",
            "none",
            common::oci::IMAGE,
            "busybox",
            "sleep",
            "1000",
        ],
    );
    let failed = wait_state(&lab, "bad", "Failed", Duration::from_secs(60));
    assert!(
        failed.ends_with("|\"task: non-zero exit (137): unhealthy container\""),
        "{failed}"
    );
}
