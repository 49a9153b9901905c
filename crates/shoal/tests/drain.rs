//! Tasks that stop without cutting anything, on a real cluster: a keep-alive connection
//! through a published port outlives its task's removal until the task's own SIGTERM
//! handling closes it, and a node drain stops each task only once its replacement is ready.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A line server: answers each line with the task's hostname (its short id). On SIGTERM it
/// stops accepting, serves the connections it has for 4 s more, then closes them and exits:
/// what a server that drains on SIGTERM does. With DELAY set it listens only after DELAY
/// seconds (its readiness, a TCP connect to the target port, waits for that).
const SERVER: &str = r#"
import os, signal, socket, threading, time
time.sleep(float(os.environ.get("DELAY", "0")))
name = socket.gethostname()
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 7000))
srv.listen(64)
conns = []
def serve(c):
    for line in c.makefile("rb"):
        c.sendall((name + "\n").encode())
def drain():
    srv.close()
    time.sleep(4)
    for c in conns:
        c.shutdown(socket.SHUT_RDWR)
    os._exit(0)
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=drain).start())
while True:
    try:
        c, _ = srv.accept()
    except OSError:
        time.sleep(60)
        continue
    conns.append(c)
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

fn node_addr(lab: &Lab, node: u32) -> String {
    lab.ok(
        1,
        &[
            "node",
            "inspect",
            "--format",
            "{{.Status.Addr}}",
            &format!("node{node}"),
        ],
    )
    .trim()
    .to_string()
}

/// A connection opened from inside lab node `node`'s namespace (a client on that host).
fn connect_from(lab: &Lab, node: u32, to: SocketAddr) -> BufReader<TcpStream> {
    let path = format!("/run/netns/{}", lab.netns(node));
    let conn = std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).expect("the node's namespace");
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        TcpStream::connect_timeout(&to, Duration::from_secs(5))
    })
    .join()
    .unwrap()
    .unwrap_or_else(|e| panic!("connect to {to}: {e}"));
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    BufReader::new(conn)
}

/// The hostname of the task that answers one line on `conn`; Ok("") when it was closed.
fn ask(conn: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    conn.get_ref().write_all(b"hi\n")?;
    let mut line = String::new();
    conn.read_line(&mut line)?;
    Ok(line.trim().to_string())
}

/// Every task of `service`, as the API lists them.
fn tasks(lab: &Lab, service: &str) -> Vec<Value> {
    tasks_at(&lab.socket(1), service)
}

fn tasks_at(sock: &str, service: &str) -> Vec<Value> {
    try_tasks_at(sock, service).unwrap_or_else(|e| panic!("{e}"))
}

fn try_tasks_at(sock: &str, service: &str) -> Result<Vec<Value>, String> {
    let out = std::process::Command::new("curl")
        .args([
            "-sf",
            "--unix-socket",
            sock.trim_start_matches("unix://"),
            &format!("http://shoal/v1/tasks?service={service}"),
        ])
        .output()
        .map_err(|e| format!("run curl: {e}"))?;
    if !out.status.success() {
        return Err(format!("GET /v1/tasks: {}", text(&out.stderr)));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("tasks JSON: {e}"))
}

fn short(t: &Value) -> String {
    t["ID"].as_str().unwrap()[..12].to_string()
}

fn ready(t: &Value) -> bool {
    t["Status"]["State"] == "running" && t["Status"]["Ready"] != false
}

fn create(lab: &Lab, name: &str, extra: &[&str]) {
    let mut args = vec![
        "service",
        "create",
        "--runtime",
        "host",
        "--name",
        name,
        "-p",
        "7000:7000",
        "--stop-grace-period",
        "30s",
    ];
    args.extend_from_slice(extra);
    args.extend(["python3", "-u", "-c", SERVER]);
    lab.ok(1, &args);
}

#[test]
fn a_keep_alive_connection_outlives_a_scale_down_until_its_task_closes_it() {
    let lab = Lab::up("keep", 2, 1);
    create(
        &lab,
        "kept",
        &["--replicas", "2", "--constraint", "node.hostname==node2"],
    );
    // From node1, which runs no task: the mesh forwards to node2.
    let port: SocketAddr = format!("{}:7000", node_addr(&lab, 1)).parse().unwrap();
    let slot2 = tasks(&lab, "kept")
        .iter()
        .find(|t| t["Slot"] == 2 && t["DesiredState"] == "running")
        .map(short)
        .expect("slot 2's task");
    // Keep-alive connections until one is to slot 2's task, the one a scale to 1 removes.
    let mut kept = None;
    for _ in 0..8 {
        let mut conn = connect_from(&lab, 1, port);
        if ask(&mut conn).expect("a first answer") == slot2 {
            kept = Some(conn);
            break;
        }
    }
    let mut kept = kept.expect("a connection to slot 2's task in 8 tries");

    // Scaled down in the background: the CLI waits for the task to stop.
    let scale = {
        let sock = lab.socket(1);
        std::thread::spawn(move || {
            std::process::Command::new(SHOAL)
                .args(["-H", &sock, "service", "scale", "kept=1"])
                .output()
                .expect("run shoal service scale")
        })
    };
    // Out of the mesh: new connections all reach the task left.
    let started = Instant::now();
    let mut in_a_row = 0;
    while in_a_row < 4 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "slot 2's task still takes new connections"
        );
        let answer = ask(&mut connect_from(&lab, 1, port)).expect("a new connection");
        in_a_row = if answer == slot2 { 0 } else { in_a_row + 1 };
    }
    // The connection opened before goes on with its task, until its SIGTERM handling
    // (4 s after the signal) closes it: a clean end, not a reset or a timeout.
    assert_eq!(
        ask(&mut kept).expect("the kept connection after the task left the mesh"),
        slot2
    );
    let mut answers = 0;
    let closed = loop {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the kept connection was never closed"
        );
        match ask(&mut kept) {
            Ok(a) if a == slot2 => answers += 1,
            Ok(a) if a.is_empty() => break started.elapsed(),
            Ok(a) => panic!("the kept connection reached another task: {a}"),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break started.elapsed(),
            Err(e) => panic!("the kept connection failed instead of being closed: {e}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        answers >= 5,
        "answered {answers} times before it was closed"
    );
    assert!(
        closed >= Duration::from_secs(4),
        "closed {closed:?} after the scale: before the task's own close"
    );
    let out = scale.join().unwrap();
    assert!(out.status.success(), "scale: {}", text(&out.stderr));
}

#[test]
fn a_drained_node_s_task_stops_once_its_replacement_is_ready() {
    let lab = Lab::up("drain", 2, 1);
    // Ready 3 s after it starts (it listens then): the drain must wait for that.
    create(
        &lab,
        "moved",
        &[
            "--replicas",
            "2",
            "--constraint",
            "node.role==worker",
            "-e",
            "DELAY=3",
        ],
    );
    // node2, the worker, runs both; without the constraint (which moves no task) node1
    // takes them once node2 drains.
    lab.ok(
        1,
        &[
            "service",
            "update",
            "--constraint-rm",
            "node.role==worker",
            "moved",
        ],
    );
    let old: Vec<String> = tasks(&lab, "moved")
        .iter()
        .filter(|t| t["DesiredState"] == "running")
        .map(|t| t["ID"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(old.len(), 2);

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = Arc::clone(&stop);
        let sock = lab.socket(1);
        let old = old.clone();
        std::thread::spawn(move || {
            let (mut overlap, mut samples) = (false, 0);
            while !stop.load(Ordering::Relaxed) {
                // The lab goes when the test fails: the sampler stops then.
                let Ok(ts) = try_tasks_at(&sock, "moved") else {
                    break;
                };
                let new_ready = ts
                    .iter()
                    .filter(|t| !old.contains(&t["ID"].as_str().unwrap().to_string()) && ready(t))
                    .count();
                let old_told: Vec<&Value> = ts
                    .iter()
                    .filter(|t| old.contains(&t["ID"].as_str().unwrap().to_string()))
                    .filter(|t| t["DesiredState"] != "running")
                    .collect();
                // One snapshot of the state: no old task is told to stop before as many
                // replacements are ready.
                assert!(
                    old_told.len() <= new_ready,
                    "{} drained tasks told to stop with {new_ready} replacements ready: {ts:#?}",
                    old_told.len()
                );
                let new_live = ts.len() > old.len();
                overlap |= new_live && old_told.is_empty();
                samples += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            (overlap, samples)
        })
    };
    lab.ok(1, &["node", "update", "--availability", "drain", "node2"]);
    wait_for(
        "both tasks on node1 and none on node2",
        Duration::from_secs(90),
        || {
            let by_node = lab.tasks_by_node("moved");
            let ts = tasks(&lab, "moved");
            let old_states: Vec<&Value> = ts
                .iter()
                .filter(|t| old.contains(&t["ID"].as_str().unwrap().to_string()))
                .map(|t| &t["Status"]["State"])
                .collect();
            let old_gone = old_states
                .iter()
                .all(|s| ["shutdown", "complete", "failed"].contains(&s.as_str().unwrap_or("")));
            if by_node.iter().all(|(n, _)| *n == 1) && by_node.len() == 2 && old_gone {
                Ok(())
            } else {
                Err(format!("running {by_node:?}, drained tasks {old_states:?}"))
            }
        },
    );
    stop.store(true, Ordering::Relaxed);
    let (overlap, samples) = sampler.join().unwrap();
    assert!(samples >= 10, "only {samples} samples");
    assert!(
        overlap,
        "no sample saw a replacement beside the drained tasks"
    );
}
