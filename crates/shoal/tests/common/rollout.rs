//! What the lab tests under load share (tests/rollout_load.rs, tests/rollout_kill.rs): a
//! 3-node lab with `web` (VIP, TCP 8000 published as 8080, UDP 9000 published as 9000) and
//! `webrr` (dnsrr, the same ports unpublished, a health check), 4 `shoal demo vote` tasks each
//! on node2 and node3, a `probe` task on every node to send from, the load's paths, and
//! events timed for the load's records (`load`).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::load::{Dest, Kind, Path, Report, lookup_in, now};
use super::{Lab, SHOAL, text, wait_for};

/// Between two requests of a path (~50 requests/s per path at most).
pub const PACE: Duration = Duration::from_millis(20);
/// Bounds of one load run, in time and in requests per path.
pub const MOST: Duration = Duration::from_secs(300);
pub const MAX: usize = 50_000;

/// The lab with its services and where the load is sent from and to.
pub struct Setup {
    pub lab: Lab,
    /// The probe task's network namespace on each node (index 0: node1).
    pub probes: Vec<String>,
    pub node1_netns: String,
    pub vip: Ipv4Addr,
    pub node1: Ipv4Addr,
}

pub fn setup(name: &str) -> Setup {
    let lab = Lab::up(name, 3, 1);
    lab.ok(1, &["network", "create", "ovl"]);
    lab.create("--name probe --mode global --network ovl SHOAL demo client");
    let common = [
        "--runtime",
        "host",
        "--network",
        "ovl",
        "--replicas",
        "4",
        "--constraint",
        "node.hostname!=node1",
        "--update-monitor",
        "2s",
    ];
    let vote = [SHOAL, "demo", "vote", "--port", "8000", "--udp", "9000"];
    let mut web = vec!["service", "create", "--name", "web", "-p", "8080:8000"];
    web.extend(["-p", "9000:9000/udp"]);
    web.extend(common);
    web.extend(vote);
    lab.ok(1, &web);
    // dnsrr publishes no port: its readiness is its health check.
    let mut rr = vec![
        "service",
        "create",
        "--name",
        "webrr",
        "--endpoint-mode",
        "dnsrr",
    ];
    rr.extend(["--health-cmd", "curl -sf -o /dev/null localhost:8000"]);
    rr.extend(["--health-interval", "500ms", "--health-retries", "2"]);
    rr.extend(common);
    rr.extend(vote);
    lab.ok(1, &rr);
    lab.wait_running("web", 4);
    lab.wait_running("webrr", 4);
    let probes: Vec<String> = (1..=3)
        .map(|node| {
            let (_, id) = lab
                .tasks_by_node("probe")
                .into_iter()
                .find(|(n, _)| *n == node)
                .unwrap_or_else(|| panic!("no probe task on node{node}"));
            netns_of(&lab, &id)
        })
        .collect();
    let vip = lookup_in(&probes[0], "web").expect("web's VIP")[0];
    let node1 = lab
        .ok(
            1,
            &["node", "inspect", "--format", "{{.Status.Addr}}", "node1"],
        )
        .trim()
        .parse()
        .expect("node1's address");
    let node1_netns = format!("/run/netns/{}", lab.netns(1));
    Setup {
        lab,
        probes,
        node1_netns,
        vip,
        node1,
    }
}

pub fn netns_of(lab: &Lab, task: &str) -> String {
    let pid = lab.task_json(task)["Status"]["PID"]
        .as_u64()
        .unwrap_or_else(|| panic!("task {task} has no PID"));
    format!("/proc/{pid}/ns/net")
}

pub fn addr(ip: Ipv4Addr, port: u16) -> Dest {
    Dest::Addr(SocketAddrV4::new(ip, port))
}

pub fn name(n: &str, port: u16) -> Dest {
    Dest::Name(n.to_string(), port)
}

impl Setup {
    /// Connections kept from the start, one request on each every pace: through the VIP,
    /// to the dnsrr name and through the mesh, 8 of each (`Kind::TcpOneConnection`).
    pub fn kept_connections(&self) -> Vec<(String, Vec<Path>)> {
        let one = Kind::TcpOneConnection;
        let mut in_task = Vec::new();
        let mut on_node = Vec::new();
        for i in 0..8 {
            in_task.push(Path::new(
                &format!("kept vip {i}"),
                one,
                addr(self.vip, 8000),
            ));
            in_task.push(Path::new(
                &format!("kept dnsrr {i}"),
                one,
                name("webrr", 8000),
            ));
            on_node.push(Path::new(
                &format!("kept mesh {i}"),
                one,
                addr(self.node1, 8080),
            ));
        }
        vec![
            (self.probes[0].clone(), in_task),
            (self.node1_netns.clone(), on_node),
        ]
    }

    /// Every path, from node1: its probe task (VIP, dnsrr) and its own namespace (the mesh).
    pub fn every_path(&self) -> Vec<(String, Vec<Path>)> {
        let (vip, node1) = (self.vip, self.node1);
        let in_task = vec![
            Path::new("vip tcp new", Kind::TcpNew, addr(vip, 8000)),
            Path::new("vip tcp keep-alive", Kind::TcpKeepAlive, addr(vip, 8000)),
            Path::new("vip udp new", Kind::UdpNew, addr(vip, 9000)),
            Path::new("vip udp flow", Kind::UdpFlow, addr(vip, 9000)),
            Path::new("dnsrr tcp new", Kind::TcpNew, name("webrr", 8000)),
            Path::new(
                "dnsrr tcp keep-alive",
                Kind::TcpKeepAlive,
                name("webrr", 8000),
            ),
            // A dnsrr client that keeps one UDP flow talks to one task address with no name
            // between: shoal has nothing to move. Each datagram resolves the name again.
            Path::new("dnsrr udp new", Kind::UdpNew, name("webrr", 9000)),
        ];
        let on_node = vec![
            Path::new("mesh tcp new", Kind::TcpNew, addr(node1, 8080)),
            Path::new("mesh tcp keep-alive", Kind::TcpKeepAlive, addr(node1, 8080)),
            Path::new("mesh udp new", Kind::UdpNew, addr(node1, 9000)),
            Path::new("mesh udp flow", Kind::UdpFlow, addr(node1, 9000)),
        ];
        vec![
            (self.probes[0].clone(), in_task),
            (self.node1_netns.clone(), on_node),
        ]
    }
}

/// Every task of a service, as `GET /v1/tasks?service=NAME` returns them.
pub fn tasks(lab: &Lab, service: &str) -> Vec<Value> {
    let sock = lab.socket(1).trim_start_matches("unix://").to_string();
    let out = Command::new("curl")
        .args([
            "-sf",
            "--unix-socket",
            &sock,
            &format!("http://shoal/v1/tasks?service={service}"),
        ])
        .output()
        .expect("run curl");
    assert!(out.status.success(), "GET /v1/tasks: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("tasks JSON")
}

pub fn state(t: &Value) -> &str {
    t["Status"]["State"].as_str().unwrap_or("")
}

/// Waits until a service has `n` tasks, all running and meant to, and no other task that
/// has not ended: the event is over once the tasks it stops have stopped.
pub fn settle(lab: &Lab, service: &str, n: usize) {
    wait_for(
        &format!("{service} to settle at {n} running tasks"),
        Duration::from_secs(90),
        || {
            let live: Vec<(String, String)> = tasks(lab, service)
                .iter()
                .filter(|t| {
                    !matches!(
                        state(t),
                        "complete" | "shutdown" | "failed" | "rejected" | "remove" | "orphaned"
                    )
                })
                .map(|t| (state(t).to_string(), t["DesiredState"].to_string()))
                .collect();
            if live.len() == n
                && live
                    .iter()
                    .all(|(s, d)| s == "running" && d == "\"running\"")
            {
                Ok(())
            } else {
                Err(format!("{live:?}"))
            }
        },
    );
}

/// Events, each with its start and the time it was over.
#[derive(Default)]
pub struct Events(pub Vec<(String, f64, f64)>);

impl Events {
    pub fn run(&mut self, what: &str, f: impl FnOnce()) {
        let start = now();
        f();
        self.0.push((what.to_string(), start, now()));
    }

    /// Every event: covered by every path's load, and no request failed in the whole run.
    pub fn assert_nothing_failed(&self, report: &Report) {
        for (what, from, to) in &self.0 {
            report.assert_covered(what, *from, *to);
            eprintln!(
                "{what} ({from:.3}-{to:.3}, {:.1}s): failed/sent per path: {}",
                to - from,
                report.summary(*from, *to)
            );
        }
        let failed = report.failures(0.0, f64::MAX);
        assert!(
            failed.is_empty(),
            "{} of {} requests failed:\n{}",
            failed.len(),
            report.sent(0.0, f64::MAX),
            failed.join("\n")
        );
    }
}

/// Runs `f` for web and webrr at once (each on a thread of its own).
pub fn both(f: impl Fn(&str) + Sync) {
    std::thread::scope(|scope| {
        let f = &f;
        for svc in ["web", "webrr"] {
            scope.spawn(move || f(svc));
        }
    });
}

/// `shoal ARGS` must succeed and leave `service` settled at `n` tasks.
pub fn change(lab: &Lab, args: &[&str], service: &str, n: usize) {
    lab.ok(1, args);
    settle(lab, service, n);
}

/// The short ids of the running tasks of web and webrr.
pub fn running_short_ids(lab: &Lab) -> Vec<String> {
    ["web", "webrr"]
        .iter()
        .flat_map(|svc| lab.tasks_by_node(svc))
        .map(|(_, id)| short(&id))
        .collect()
}

/// The health check of each running task (as its spec has it), sorted.
pub fn running_checks(lab: &Lab, service: &str) -> Vec<String> {
    let mut v: Vec<String> = tasks(lab, service)
        .iter()
        .filter(|t| state(t) == "running" && t["DesiredState"] == "running")
        .map(|t| t["Spec"]["Healthcheck"].to_string())
        .collect();
    v.sort();
    v
}

/// The first 12 characters of a task id: what `shoal demo vote` answers as its container id.
pub fn short(id: &str) -> String {
    id[..12].to_string()
}
