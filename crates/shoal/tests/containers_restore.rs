//! Live restore on a 3-node lab with real runc, conmon and a real registry: node2's shoald
//! is killed (SIGKILL) and later stopped (SIGTERM), each time started again, while a client
//! on node1 requests a service of node2's containers through its VIP.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::oci::{IMAGE, Runcs, data_dir, registries, runc_ids};
use common::{Lab, SHOAL, text, wait_for};

const SLOW: Duration = Duration::from_secs(60);

/// Ends the curl loop when the test ends, also by failing.
struct StopFile(String);

impl Drop for StopFile {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.0, "");
    }
}

/// Copies the lab's daemon logs to /tmp when the test fails (`lab down` removes them).
struct KeepLogs(PathBuf);

impl Drop for KeepLogs {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let to = format!(
                "/tmp/{}-logs",
                self.0.file_name().unwrap().to_string_lossy()
            );
            let _ = Command::new("cp").arg("-r").arg(&self.0).arg(&to).output();
            eprintln!("the lab's files are in {to}");
        }
    }
}

fn pid_of(lab: &Lab, id: &str) -> u64 {
    lab.task_json(id)["Status"]["PID"].as_u64().expect("a pid")
}

/// `service create -d ARGS` on node1, then the one task once it runs.
fn create_one(lab: &Lab, args: &[&str]) -> String {
    let mut a = vec!["service", "create", "-d"];
    a.extend_from_slice(args);
    lab.ok(1, &a);
    let name = args[args.iter().position(|a| *a == "--name").unwrap() + 1];
    lab.wait_running(name, 1)[0].1.clone()
}

/// The answers the curl loop has written so far.
fn answers(file: &str) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits until the curl loop has written `more` answers after the `seen` ones.
fn wait_answers(file: &str, seen: usize, more: usize) -> usize {
    wait_for("answers through the VIP", SLOW, || {
        let n = answers(file).len();
        if n >= seen + more {
            Ok(n)
        } else {
            Err(n.to_string())
        }
    })
}

#[test]
fn containers_keep_running_while_the_daemon_restarts() {
    // Node2's daemon is down for a few seconds at a time, and more on a loaded machine: a
    // longer grace than the lab's 5 s keeps the leader from marking it Down meanwhile
    // (which would replace its tasks: not what this test is about).
    let lab = Lab::up_with("ocilr", 3, 1, &["--heartbeat-grace", "15"]);
    let _runcs = Runcs::of(&lab);
    let _logs = KeepLogs(lab.dir());
    let _registries = registries(&lab);
    let mut daemons: Vec<Child> = Vec::new();
    lab.ok(1, &["network", "create", "--driver", "overlay", "ovl"]);
    let on2 = ["--constraint", "node.hostname==node2"];
    lab.create(&format!(
        "--runtime oci --name web --network ovl --replicas 2 {} {} {IMAGE} busybox httpd -f -p 80",
        on2[0], on2[1]
    ));
    // One that ends (exit 3) while node2's daemon is down, when a file tells it to.
    let short = create_one(
        &lab,
        &[
            "--name",
            "short",
            "--restart-condition",
            "none",
            on2[0],
            on2[1],
            IMAGE,
            "busybox",
            "sh",
            "-c",
            "while [ ! -e /go ]; do sleep 1; done; exit 3",
        ],
    );
    // One removed from the cluster while node2's daemon is down.
    let gone = create_one(
        &lab,
        &[
            "--name", "gone", on2[0], on2[1], IMAGE, "busybox", "sleep", "1000",
        ],
    );
    lab.create("--name client --network ovl --constraint node.hostname==node1 sleep 1000");
    let client = lab.wait_running("client", 1)[0].1.clone();

    let web_tasks = lab.task_states("web");
    let web_pids = |lab: &Lab| -> Vec<u64> {
        let mut p: Vec<u64> = lab
            .tasks_by_node("web")
            .iter()
            .map(|(_, id)| pid_of(lab, id))
            .collect();
        p.sort();
        p
    };
    let pids = web_pids(&lab);
    let runc2 = data_dir(&lab, 2).join("runc");
    let web_ids: Vec<String> = lab.tasks_by_node("web").into_iter().map(|t| t.1).collect();
    let short_pid = pid_of(&lab, &short);
    let gone_pid = pid_of(&lab, &gone);

    // curl through web's VIP from node1 until a file says stop (a host-command task sees
    // the host's files), one line per request: busybox httpd's 404, or curl's failure.
    // In the lab's directory, which `lab down` removes.
    let (log, stop) = (
        lab.dir().join("answers").display().to_string(),
        lab.dir().join("stop").display().to_string(),
    );
    let script = format!(
        "while [ ! -e {stop} ]; do curl -s -m 5 -o /dev/null -w '%{{http_code}}\\n' \
         http://web/ >>{log} || echo curl-failed-$? >>{log}; sleep 0.05; done"
    );
    let curl = Command::new(SHOAL)
        .args([
            "-H",
            &lab.socket(1),
            "exec",
            &client,
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the curl loop");
    let stop_curl = StopFile(stop.clone());
    let seen = wait_answers(&log, 0, 5);

    // SIGKILL: while node2's daemon is down, `short` ends and `gone` is removed.
    let args = lab.stop_daemon(2, "-KILL");
    std::fs::write(format!("/proc/{short_pid}/root/go"), "").unwrap();
    wait_for("short's container to end", SLOW, || {
        match Path::new(&format!("/proc/{short_pid}")).exists() {
            true => Err("running".into()),
            false => Ok(()),
        }
    });
    lab.ok(1, &["service", "rm", "gone"]);
    let seen = wait_answers(&log, seen, 5);
    daemons.push(lab.start_daemon(2, &args, "shoald-killed.log"));

    // `short`'s exit code, from its monitor's exit file.
    let short_ps = wait_for("short's exit to be reported", SLOW, || {
        let t = lab.task_states("short");
        match t.first() {
            Some(l) if l.ends_with("|Failed") => Ok(t),
            _ => Err(format!("{t:?}")),
        }
    });
    assert_eq!(
        short_ps.len(),
        1,
        "{}",
        lab.ok(1, &["service", "ps", "--no-trunc", "short"])
    );
    let error = lab.ok(
        1,
        &[
            "service",
            "ps",
            "--no-trunc",
            "--format",
            "{{.Error}}",
            "short",
        ],
    );
    assert_eq!(error.trim(), "\"task: non-zero exit (3)\"");
    // `gone`'s container is stopped and removed with its writable layer and namespace.
    wait_for("gone's container to be removed", SLOW, || {
        let ids = runc_ids(&runc2);
        let layer = data_dir(&lab, 2).join("images/containers").join(&gone);
        let netns = Path::new("/run/netns").join(format!("shoal-task-{}", &gone[..12]));
        match (
            ids.contains(&gone),
            Path::new(&format!("/proc/{gone_pid}")).exists(),
            layer.exists(),
            netns.exists(),
        ) {
            (false, false, false, false) => Ok(()),
            state => Err(format!("runc, process, writable layer, netns: {state:?}")),
        }
    });
    let seen = wait_answers(&log, seen, 5);

    // SIGTERM: the daemon stops, its containers do not.
    let args = lab.stop_daemon(2, "-TERM");
    for pid in &pids {
        assert!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "web's pid {pid} ended"
        );
    }
    let seen = wait_answers(&log, seen, 5);
    daemons.push(lab.start_daemon(2, &args, "shoald-stopped.log"));
    wait_for("node2 to be ready again", SLOW, || {
        let ls = lab.ok(1, &["node", "ls"]);
        match ls.lines().find(|l| l.contains("node2")) {
            Some(l) if l.contains("Ready") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    wait_answers(&log, seen, 5);
    drop(stop_curl);
    let out = curl.wait_with_output().unwrap();
    assert!(out.status.success(), "the curl loop: {}", text(&out.stderr));
    let all = answers(&log);
    assert!(all.len() >= 20, "{all:?}");
    let failed: Vec<&String> = all.iter().filter(|a| *a != "404").collect();
    assert!(
        failed.is_empty(),
        "requests that failed: {failed:?} of {}",
        all.len()
    );

    // The same tasks and the same containers (runc ids, pids) as before.
    assert_eq!(lab.task_states("web"), web_tasks);
    assert_eq!(web_pids(&lab), pids);
    let ids = runc_ids(&runc2);
    for id in &web_ids {
        assert!(ids.contains(id), "{id} not in {ids:?}");
    }
    // The adopted containers are plugged in again: their DNS answers, and a stop through
    // the new daemon reaches them.
    lab.ok(1, &["service", "rm", "web", "short", "client"]);
    wait_for("web's containers to be removed", SLOW, || {
        let ids = runc_ids(&runc2);
        match web_ids.iter().any(|id| ids.contains(id)) {
            false => Ok(()),
            true => Err(format!("{ids:?}")),
        }
    });
    drop(lab);
    for mut d in daemons {
        let _ = d.wait();
    }
}
