//! `shoal ca --rotate` on a lab (issue 10): a running cluster (two managers, a worker, a
//! service with a published port) moves to a new root CA twice, first one the manager makes
//! (`--detach`, with a rotation held in progress by a paused node), then one the user gives
//! (waiting, as docker does). The service answers throughout and no task restarts; every
//! node ends with a certificate from the last root, the old roots' certificates and join
//! tokens are refused, and the cluster goes on working (scale, a node joining).

mod common;
#[path = "common/pki.rs"]
mod pki;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::{Lab, SHOAL, text, wait_for};
use pki::{block_on, certs_dir, credentials, handshake_refused, heartbeat, outsider};
use shoal_pki::{ClusterCa, RootCa, Trust, Validity};

/// `shoal ARGS` on node N, killed after two minutes (a rotation that never ends fails the
/// test rather than hanging it).
fn shoal_bounded(lab: &Lab, node: u32, args: &[&str]) -> std::process::Output {
    Command::new("timeout")
        .args(["120", SHOAL, "-H", &lab.socket(node)])
        .args(args)
        .output()
        .unwrap()
}

/// The root CA a node keeps in its data directory.
fn root_on(lab: &Lab, node: u32) -> ClusterCa {
    shoal_pki::files::load_cluster_ca(&certs_dir(lab, node), SystemTime::now()).unwrap()
}

fn digest(lab: &Lab, node: u32) -> String {
    lab.ok(node, &["ca", "--digest"]).trim().to_string()
}

/// Every task id of the service, history included (a restarted task would add one).
fn task_ids(lab: &Lab) -> BTreeSet<String> {
    lab.ok(1, &["service", "ps", "-q", "--no-trunc", "web"])
        .lines()
        .map(str::to_string)
        .collect()
}

/// Every node's certificate is from `root`, every node keeps `root` as its only root, and
/// the managers hold its key.
fn all_on(lab: &Lab, root: &ClusterCa) {
    for node in 1..=3 {
        let dir = certs_dir(lab, node);
        wait_for(
            &format!("node{node} to keep only the new root"),
            Duration::from_secs(10),
            || match (root_on(lab, node), dir.join("root-ca-next.crt").exists()) {
                (r, false) if &r == root => Ok(()),
                (r, next) => Err(format!("root {}, next file: {next}", r.digest())),
            },
        );
        let cert = credentials(lab, node);
        assert!(
            root.issued(cert.cert()),
            "node{node}'s certificate is not from the new root"
        );
        if node <= 2 {
            let key = shoal_pki::files::load_root_ca(&dir, SystemTime::now()).unwrap();
            assert_eq!(key.cert(), root, "node{node}'s root-ca.key");
        }
    }
}

#[test]
fn ca_rotate_moves_a_running_cluster_to_a_new_root() {
    // node3 is paused for a moment below: a grace of 30 s (not the lab's 5) keeps it from
    // being marked Down however slow the machine is then.
    let lab = Lab::up_with("rot", 3, 2, &["--heartbeat-grace", "30"]);
    lab.create("--name web --replicas 3 -p 8080:80 SHOAL demo vote");
    lab.wait_running("web", 3);
    let (tasks, running) = (task_ids(&lab), lab.running_tasks("web"));
    let r1 = digest(&lab, 1);
    let r1_ca = root_on(&lab, 1);
    let old_token = lab
        .ok(1, &["join-token", "-q", "worker"])
        .trim()
        .to_string();
    let node3_r1 = credentials(&lab, 3);
    let m1 = format!(
        "{}:2377",
        lab.ok(
            1,
            &["node", "inspect", "--format", "{{.Status.Addr}}", "node1"]
        )
        .trim()
    );

    // The published port is asked all along, from node2.
    let (stop, asked, failed) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(Mutex::new(Vec::<String>::new())),
    );
    let client = {
        let (stop, asked, failed, name) = (
            Arc::clone(&stop),
            Arc::clone(&asked),
            Arc::clone(&failed),
            lab.name.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let out = Command::new(SHOAL)
                    .args(["lab", "exec", "--name", &name, "node2", "--"])
                    .args(["curl", "-sf", "--max-time", "3", "http://localhost:8080"])
                    .output()
                    .unwrap();
                asked.fetch_add(1, Ordering::Relaxed);
                if !out.status.success() {
                    failed.lock().unwrap().push(text(&out.stderr));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    // First rotation, detached, held in progress by node3: paused, it cannot renew (for a
    // few seconds only, well within the heartbeat grace, so it is not marked Down).
    let pid3 = lab.daemon_pid(3).expect("node3's shoald");
    let signal = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &pid3.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid3}");
    };
    signal("-STOP");
    let out = shoal_bounded(&lab, 1, &["ca", "--rotate", "--detach"]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("Root CA rotation to sha256:"), "{err}");
    assert_eq!(text(&out.stdout), "");
    let shown = wait_for(
        "node1 and node2 to renew from the new root",
        Duration::from_secs(8),
        || {
            let out = lab.shoal(1, &["ca", "--digest"]);
            let err = text(&out.stderr);
            match err.contains("2/3 nodes have a certificate from the new root") {
                true => Ok((err, text(&out.stdout))),
                false => Err(err),
            }
        },
    );
    assert!(
        shown.0.starts_with("A root CA rotation is in progress: ")
            && shown.0.contains("(waiting for node3)")
            && shown
                .0
                .contains("The root below stays current until it ends."),
        "{}",
        shown.0
    );
    assert_eq!(shown.1.trim(), r1, "the old root stays current meanwhile");
    let again = lab.fails(1, &["ca", "--rotate"]);
    signal("-CONT");
    assert!(
        again.contains("a root CA rotation is already in progress (2 of 3 nodes have a certificate from the new root); wait for it to finish: `shoal ca` shows its progress"),
        "{again}"
    );
    let r2 = wait_for("the first rotation to end", Duration::from_secs(30), || {
        let out = lab.shoal(1, &["ca", "--digest"]);
        let d = text(&out.stdout).trim().to_string();
        match text(&out.stderr).is_empty() && d != r1 {
            true => Ok(d),
            false => Err(format!("{d} {}", text(&out.stderr))),
        }
    });
    // The API answers from the state; the file follows once the manager has applied it.
    let r2_ca = wait_for(
        "node1 to keep the new root",
        Duration::from_secs(10),
        || match root_on(&lab, 1) {
            ca if ca.digest().to_string() == r2 => Ok(ca),
            ca => Err(ca.digest().to_string()),
        },
    );
    all_on(&lab, &r2_ca);

    // Second rotation, to a root the user gives, waiting for it as docker does.
    let dir = lab.dir().join("given-ca");
    std::fs::create_dir_all(&dir).unwrap();
    let now = SystemTime::now();
    let given =
        RootCa::generate("ops", Validity::starting(now, Duration::from_secs(86400))).unwrap();
    let (cert, key) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    std::fs::write(&cert, given.cert().pem()).unwrap();
    std::fs::write(&key, given.key_pem()).unwrap();
    let out = shoal_bounded(
        &lab,
        2,
        &[
            "ca",
            "--rotate",
            "--ca-cert",
            &cert.display().to_string(),
            "--ca-key",
            &key.display().to_string(),
        ],
    );
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("Root CA rotation done: every node has a certificate from the new root"),
        "{err}"
    );
    assert_eq!(text(&out.stdout), given.cert().pem());
    let r3 = given.cert().digest().to_string();
    for node in 1..=3 {
        wait_for(
            &format!("node{node} to show the new root"),
            Duration::from_secs(10),
            || match digest(&lab, node) {
                d if d == r3 => Ok(()),
                d => Err(d),
            },
        );
    }
    all_on(&lab, given.cert());

    // The service answered all along and no task restarted.
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    let failed = failed.lock().unwrap().clone();
    assert!(
        failed.is_empty(),
        "requests failed during the rotations: {failed:?}"
    );
    assert!(
        asked.load(Ordering::Relaxed) >= 5,
        "too few requests were made"
    );
    assert_eq!(task_ids(&lab), tasks);
    assert_eq!(lab.running_tasks("web"), running);
    let ls = lab.ok(1, &["node", "ls"]);
    assert!(!ls.contains("Down"), "{ls}");

    // A certificate from the first root is refused on 2377 now, while still valid.
    let (outsider, prefix) = outsider(&lab, &m1);
    {
        let (m1, trust) = (m1.clone(), Trust::from(given.cert().clone()));
        let log1 = lab.dir().join("node1/shoald.log");
        let me = format!("{prefix}.200:");
        outsider.run(move || {
            block_on(async move {
                let old = pki::member_trusting(&trust, &node3_r1);
                handshake_refused(
                    heartbeat(&old, &m1).await,
                    &log1,
                    &me,
                    "invalid peer certificate: UnknownIssuer",
                );
            })
        });
    }
    drop(r1_ca);

    // The cluster goes on: a scale, and a node joining with the new token (the old one
    // pins the first root and is refused by the joining node itself).
    lab.ok(1, &["service", "scale", "web=4"]);
    lab.wait_running("web", 4);
    lab.ok(3, &["leave"]);
    let err = lab.fails(3, &["join", "--token", &old_token, &m1]);
    assert!(
        err.contains("is not one of the token's cluster: its certificate does not chain to the root CA the token pins (the CA certificate does not match the join token: the token pins the CA with digest")
            && err.contains("(or its CA was rotated): check the manager address and get a current token)"),
        "{err}"
    );
    let token = lab
        .ok(1, &["join-token", "-q", "worker"])
        .trim()
        .to_string();
    assert_ne!(token, old_token);
    lab.ok(3, &["join", "--token", &token, &m1]);
    assert!(given.cert().issued(credentials(&lab, 3).cert()));
    assert_eq!(root_on(&lab, 3), *given.cert());
}

/// A node that is Down is not waited for: the rotation ends without it, and when it comes
/// back its certificate (from the old root) is no use. It says so and what to do, and
/// leaving and joining again with the new token brings it back.
#[test]
fn a_node_down_during_a_rotation_rejoins_after_it() {
    let lab = Lab::up("rotdown", 3, 1);
    let pid3 = lab.daemon_pid(3).expect("node3's shoald");
    let cmdline = std::fs::read(format!("/proc/{pid3}/cmdline")).unwrap();
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(text)
        .collect();
    assert!(
        Command::new("kill")
            .args(["-KILL", &pid3.to_string()])
            .status()
            .unwrap()
            .success()
    );
    wait_for("node3 to be Down", Duration::from_secs(30), || {
        let state = lab.ok(
            1,
            &["node", "inspect", "--format", "{{.Status.State}}", "node3"],
        );
        match state.trim() {
            "down" | "Down" => Ok(()),
            s => Err(s.to_string()),
        }
    });

    let out = shoal_bounded(&lab, 1, &["ca", "--rotate", "--digest"]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("Root CA rotation done"), "{err}");
    let root = text(&out.stdout).trim().to_string();
    assert_eq!(digest(&lab, 1), root);

    // node3 comes back with its old certificate and trust: no session, and its log says
    // what to do.
    let log = lab.dir().join("node3/restarted.log");
    let mut daemon = Command::new(SHOAL)
        .args(["lab", "exec", "--name", &lab.name, "node3", "--"])
        .args(&args)
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(lab.dir().join("node3/restarted.err")).unwrap())
        .spawn()
        .unwrap();
    wait_for(
        "node3 to say its certificate is refused",
        Duration::from_secs(30),
        || {
            let all = format!(
                "{}{}",
                std::fs::read_to_string(&log).unwrap_or_default(),
                std::fs::read_to_string(lab.dir().join("node3/restarted.err")).unwrap_or_default()
            );
            let plain = pki::strip_ansi(&all);
            match plain
                .lines()
                .find(|l| l.contains("cannot open a session: the TLS handshake failed"))
            {
                Some(l)
                    if l.contains(
                        "run `shoal leave --force` here and join again with a current token",
                    ) =>
                {
                    Ok(())
                }
                _ => Err(plain.lines().rev().take(5).collect::<Vec<_>>().join("\n")),
            }
        },
    );
    let state = lab.ok(
        1,
        &["node", "inspect", "--format", "{{.Status.State}}", "node3"],
    );
    assert!(state.trim().eq_ignore_ascii_case("down"), "{state}");

    lab.ok(3, &["leave", "--force"]);
    let token = lab
        .ok(1, &["join-token", "-q", "worker"])
        .trim()
        .to_string();
    let m1 = format!(
        "{}:2377",
        lab.ok(
            1,
            &["node", "inspect", "--format", "{{.Status.Addr}}", "node1"]
        )
        .trim()
    );
    lab.ok(3, &["join", "--token", &token, &m1]);
    assert!(root_on(&lab, 1).issued(credentials(&lab, 3).cert()));
    lab.create("--name after --replicas 3 --mode replicated sleep 600");
    lab.wait_running("after", 3);
    // `lab down` would end it too; wait for it here so no zombie is left.
    let _ = daemon.kill();
    let _ = daemon.wait();
}
