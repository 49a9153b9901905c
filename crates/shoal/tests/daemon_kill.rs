//! A worker's shoald killed with SIGKILL while it runs host-command tasks and a container,
//! then started again: the tasks it left are adopted (same tasks, same processes, same
//! addresses, no replacement), what the cluster removed meanwhile is stopped, and nothing
//! is left behind (processes, namespaces, run directories) once the services are removed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::oci::{IMAGE, Runcs, data_dir, registries, runc_ids};
use common::{Lab, text, wait_for};

const SLOW: Duration = Duration::from_secs(60);
const ON2: &str = "node.hostname==node2";

fn pid_of(lab: &Lab, id: &str) -> u32 {
    lab.task_json(id)["Status"]["PID"].as_u64().expect("a pid") as u32
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn netns_of(id: &str) -> String {
    format!("shoal-task-{}", &id[..12])
}

/// The processes in a task's network namespace (`ip netns pids`).
fn netns_pids(id: &str) -> Vec<u32> {
    let out = Command::new("ip")
        .args(["netns", "pids", &netns_of(id)])
        .output()
        .unwrap();
    let mut p: Vec<u32> = text(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    p.sort();
    p
}

/// Which of `ids` still have a namespace in `ip netns list`.
fn namespaces_left(ids: &[String]) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let list = text(&out.stdout);
    ids.iter()
        .filter(|id| {
            list.lines()
                .any(|l| l.split(' ').next() == Some(&netns_of(id)))
        })
        .cloned()
        .collect()
}

fn run_dirs(lab: &Lab) -> Vec<String> {
    let dir: PathBuf = data_dir(lab, 2).join("tasks");
    let mut d: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    d.sort();
    d
}

/// The running tasks of a service: (id, address on its first network).
fn addresses(lab: &Lab, service: &str) -> Vec<(String, String)> {
    lab.tasks_by_node(service)
        .into_iter()
        .map(|(_, id)| {
            let addr = lab.task_addr(&id);
            (id, addr)
        })
        .collect()
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

#[test]
fn a_killed_worker_daemon_adopts_its_tasks_and_leaves_nothing_behind() {
    // A longer grace than the lab's 5 s: node2 must not be marked Down while its daemon
    // is away (that replaces its tasks, which is the failures tests' business).
    let lab = Lab::up_with("kill", 2, 1, &["--heartbeat-grace", "15"]);
    let _runcs = Runcs::of(&lab);
    let _logs = KeepLogs(lab.dir());
    let _registries = registries(&lab);
    let mut daemons = Vec::new();
    lab.ok(1, &["network", "create", "--driver", "overlay", "ovl"]);
    lab.create(&format!(
        "--name web --network ovl --replicas 2 --constraint {ON2} sleep 1000"
    ));
    lab.create(&format!(
        "--runtime oci --name box --network ovl --constraint {ON2} {IMAGE} busybox sleep 1000"
    ));
    lab.create(&format!(
        "--name gone --network ovl --constraint {ON2} sleep 1000"
    ));
    // Ends on its own (a file in the lab's directory tells it) while no daemon watches.
    let go = lab.dir().join("go");
    lab.ok(
        1,
        &[
            "service",
            "create",
            "--runtime",
            "host",
            "--name",
            "ends",
            "--network",
            "ovl",
            "--restart-condition",
            "none",
            "--constraint",
            ON2,
            "sh",
            "-c",
            &format!("while [ ! -e {} ]; do sleep 0.2; done", go.display()),
        ],
    );
    lab.wait_running("ends", 1);
    lab.create("--name client --network ovl --constraint node.hostname==node1 sleep 1000");
    let client = lab.wait_running("client", 1)[0].1.clone();

    let web_before = lab.task_states("web");
    let web = addresses(&lab, "web");
    let box_before = lab.task_states("box");
    let boxed = addresses(&lab, "box");
    let gone = lab.tasks_by_node("gone")[0].1.clone();
    let ends = lab.tasks_by_node("ends")[0].1.clone();
    let pids: Vec<u32> = web
        .iter()
        .chain(&boxed)
        .map(|(id, _)| pid_of(&lab, id))
        .collect();
    let (gone_pid, ends_pid) = (pid_of(&lab, &gone), pid_of(&lab, &ends));
    for (id, _) in &web {
        assert_eq!(netns_pids(id), vec![pid_of(&lab, id)], "web task {id}");
    }

    // SIGKILL: no daemon stops anything; the processes outlive it.
    let args = lab.stop_daemon(2, "-KILL");
    for pid in pids.iter().chain([&gone_pid, &ends_pid]) {
        assert!(alive(*pid), "pid {pid} ended with its daemon");
    }
    std::fs::write(&go, "").unwrap();
    wait_for("ends' process to end", SLOW, || match alive(ends_pid) {
        true => Err("running".into()),
        false => Ok(()),
    });
    lab.ok(1, &["service", "rm", "gone"]);
    daemons.push(lab.start_daemon(2, &args, "shoald-killed.log"));

    // What the cluster removed meanwhile is stopped, with its namespace and run dir.
    wait_for("gone's process, namespace and run dir to go", SLOW, || {
        let state = (
            alive(gone_pid),
            namespaces_left(std::slice::from_ref(&gone)),
            run_dirs(&lab).contains(&gone),
        );
        match state {
            (false, ns, false) if ns.is_empty() => Ok(()),
            s => Err(format!("alive, namespace, run dir: {s:?}")),
        }
    });
    // What ended unseen is reported so (its code is gone with its parent), not replaced
    // (`--restart-condition none`), and its namespace is deleted.
    let ends_ps = wait_for("ends' end to be reported", SLOW, || {
        let t = lab.task_states("ends");
        match t.first() {
            Some(l) if l.ends_with("|Failed") => Ok(t),
            _ => Err(format!("{t:?}")),
        }
    });
    assert_eq!(ends_ps.len(), 1, "{ends_ps:?}");
    let error = lab.ok(
        1,
        &[
            "service",
            "ps",
            "--no-trunc",
            "--format",
            "{{.Error}}",
            "ends",
        ],
    );
    assert_eq!(
        error.trim(),
        "\"the task's process is gone: the node's daemon restarted\""
    );
    assert_eq!(
        namespaces_left(std::slice::from_ref(&ends)),
        Vec::<String>::new()
    );

    // The rest is adopted: the same tasks (no replacement), processes and addresses, and
    // one process per host task's namespace (it runs once).
    wait_for("node2 to be ready again", SLOW, || {
        let ls = lab.ok(1, &["node", "ls"]);
        match ls.lines().find(|l| l.contains("node2")) {
            Some(l) if l.contains("Ready") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    // Give a wrong decision (a lost report, a replacement) time to show.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(lab.task_states("web"), web_before);
    assert_eq!(lab.task_states("box"), box_before);
    assert_eq!(addresses(&lab, "web"), web);
    assert_eq!(addresses(&lab, "box"), boxed);
    let now: Vec<u32> = web
        .iter()
        .chain(&boxed)
        .map(|(id, _)| pid_of(&lab, id))
        .collect();
    assert_eq!(now, pids);
    for (id, _) in &web {
        assert_eq!(netns_pids(id), vec![pid_of(&lab, id)], "web task {id}");
    }

    // New tasks take addresses no live task holds, and DNS on another node names every
    // task, the adopted ones included.
    lab.ok(1, &["service", "scale", "web=4"]);
    let all = wait_for("4 web tasks", SLOW, || {
        let a = addresses(&lab, "web");
        match a.len() {
            4 => Ok(a),
            _ => Err(format!("{a:?}")),
        }
    });
    let client_addr = lab.task_addr(&client);
    let mut held: Vec<&String> = all.iter().chain(&boxed).map(|(_, a)| a).collect();
    held.push(&client_addr);
    let mut distinct = held.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        held.len(),
        "an address held twice: {held:?}"
    );
    let mut want: Vec<String> = all.iter().map(|(_, a)| a.clone()).collect();
    want.sort();
    wait_for("tasks.web to name the 4 tasks", SLOW, || {
        let mut got = lab.dig(1, &client, &["tasks.web"]);
        got.sort();
        if got == want {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    });

    // A stop through the new daemon reaches the adopted processes, and nothing is left:
    // processes, namespaces, containers, run directories.
    lab.ok(1, &["service", "rm", "web", "box", "ends"]);
    let ids: Vec<String> = all
        .iter()
        .chain(&boxed)
        .map(|(id, _)| id.clone())
        .chain([gone.clone(), ends.clone()])
        .collect();
    wait_for("node2's tasks to be gone", SLOW, || {
        let state = (
            pids.iter().filter(|p| alive(**p)).count(),
            namespaces_left(&ids),
            runc_ids(&data_dir(&lab, 2).join("runc")),
            run_dirs(&lab),
        );
        match &state {
            (0, ns, runc, dirs) if ns.is_empty() && runc.is_empty() && dirs.is_empty() => Ok(()),
            s => Err(format!(
                "processes, namespaces, containers, run dirs: {s:?}"
            )),
        }
    });
    drop(lab);
    for mut d in daemons {
        let _ = d.wait();
    }
}
