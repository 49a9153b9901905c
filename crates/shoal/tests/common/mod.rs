//! One helper for every lab test: a cluster of network namespaces with a real shoald in
//! each, driven through the real `shoal` binary. Dropping a `Lab` tears it down, also when
//! the test fails.
#![allow(dead_code)]

pub mod load;
pub mod oci;
pub mod rollout;
pub mod upstream;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");
pub const SHOALD: &str = env!("CARGO_BIN_EXE_shoald");

pub struct Lab {
    pub name: String,
    pub nodes: u32,
}

impl Lab {
    /// `shoal lab up` with a name unique to this test run.
    pub fn up(test: &str, nodes: u32, managers: u32) -> Lab {
        Lab::up_with(test, nodes, managers, &[])
    }

    /// `shoal lab up` with extra flags.
    pub fn up_with(test: &str, nodes: u32, managers: u32, extra: &[&str]) -> Lab {
        let name = format!("t{}{}", std::process::id() % 100_000, test);
        let lab = Lab {
            name: name.clone(),
            nodes,
        };
        let out = Command::new(SHOAL)
            .args([
                "lab",
                "up",
                "--nodes",
                &nodes.to_string(),
                "--managers",
                &managers.to_string(),
                "--name",
                &name,
            ])
            .args(extra)
            .env("SHOALD_BIN", SHOALD)
            .output()
            .expect("run shoal lab up");
        assert!(
            out.status.success(),
            "shoal lab up failed:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        lab
    }

    pub fn dir(&self) -> PathBuf {
        PathBuf::from(format!("/run/shoal-lab/{}", self.name))
    }

    pub fn socket(&self, node: u32) -> String {
        format!("unix://{}/node{node}/shoal.sock", self.dir().display())
    }

    pub fn netns(&self, node: u32) -> String {
        format!("shoal-{}-node{node}", self.name)
    }

    /// What a node needs to join again: node1's join token for `role` ("worker" or
    /// "manager") and node1's cluster address.
    pub fn join_args(&self, role: &str) -> (String, String) {
        let token = self.ok(1, &["join-token", "-q", role]).trim().to_string();
        let manager = self
            .ok(
                1,
                &[
                    "node",
                    "inspect",
                    "--format",
                    "{{.ManagerStatus.Addr}}",
                    "node1",
                ],
            )
            .trim()
            .to_string();
        (token, manager)
    }

    /// Runs `shoal ARGS` against node N's daemon.
    pub fn shoal(&self, node: u32, args: &[&str]) -> Output {
        Command::new(SHOAL)
            .arg("-H")
            .arg(self.socket(node))
            .args(args)
            .output()
            .expect("run shoal")
    }

    /// Like `shoal`, but the command must succeed; returns stdout.
    pub fn ok(&self, node: u32, args: &[&str]) -> String {
        let out = self.shoal(node, args);
        assert!(
            out.status.success(),
            "`shoal {}` on node{node} failed:\n{}{}",
            args.join(" "),
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// The command must fail; returns stderr.
    pub fn fails(&self, node: u32, args: &[&str]) -> String {
        let out = self.shoal(node, args);
        assert!(
            !out.status.success(),
            "`shoal {}` should have failed but printed:\n{}",
            args.join(" "),
            text(&out.stdout)
        );
        text(&out.stderr)
    }

    /// `ID|DESIRED|STATE` of every task of a service, sorted (the state without its age).
    pub fn task_states(&self, service: &str) -> Vec<String> {
        let out = self.ok(
            1,
            &[
                "service",
                "ps",
                "--no-trunc",
                "--format",
                "{{.ID}}|{{.DesiredState}}|{{.CurrentState}}",
                service,
            ],
        );
        let mut t: Vec<String> = out
            .lines()
            .map(|l| l.split(' ').next().unwrap_or(l).to_string())
            .collect();
        t.sort();
        t
    }

    /// Node N's address on the lab network (`Status.Addr`).
    pub fn node_addr(&self, node: u32) -> String {
        self.ok(
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

    /// The pid of node N's shoald, found among the processes of its namespace.
    pub fn daemon_pid(&self, node: u32) -> Option<u32> {
        let out = Command::new("ip")
            .args(["netns", "pids", &self.netns(node)])
            .output()
            .ok()?;
        text(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().parse::<u32>().ok())
            .find(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() == "shoald")
            })
    }

    /// `NODE ID` of every task of a service that is meant to run and runs.
    pub fn running_tasks(&self, service: &str) -> Vec<String> {
        let format = "{{.DesiredState}}|{{.CurrentState}}|{{.Node}}|{{.ID}}";
        let out = self.ok(
            1,
            &["service", "ps", "--no-trunc", "--format", format, service],
        );
        out.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split('|').collect();
                (f.len() == 4 && f[0] == "Running" && f[1].starts_with("Running"))
                    .then(|| format!("{} {}", f[2], f[3]))
            })
            .collect()
    }

    /// A task as the API returns it (`GET /v1/tasks/{key}`), for fields the CLI's tables
    /// do not show, such as `.Status.PID`.
    pub fn task_json(&self, key: &str) -> serde_json::Value {
        let sock = self.socket(1).trim_start_matches("unix://").to_string();
        let out = Command::new("curl")
            .args([
                "-sf",
                "--unix-socket",
                &sock,
                &format!("http://shoal/v1/tasks/{key}"),
            ])
            .output()
            .expect("run curl");
        assert!(
            out.status.success(),
            "GET /v1/tasks/{key} failed: {}",
            text(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("task JSON")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // A failed test's cluster is gone once the lab is down: what its daemons logged last
        // is the only evidence of why (CI shows nothing else).
        if std::thread::panicking() {
            self.print_log_tails(80);
        }
        let out = Command::new(SHOAL)
            .args(["lab", "down", "--name", &self.name])
            .output();
        if let Ok(out) = out
            && !out.status.success()
        {
            eprintln!("shoal lab down {} failed: {}", self.name, text(&out.stderr));
        }
    }
}

impl Lab {
    /// The last `lines` lines of every node's shoald log, on stderr.
    pub fn print_log_tails(&self, lines: usize) {
        for node in 1..=self.nodes {
            let path = self.dir().join(format!("node{node}/shoald.log"));
            let Ok(log) = std::fs::read_to_string(&path) else {
                continue;
            };
            let all: Vec<&str> = log.lines().collect();
            let tail = &all[all.len().saturating_sub(lines)..];
            eprintln!("--- last {} lines of {} ---", tail.len(), path.display());
            for l in tail {
                eprintln!("{l}");
            }
        }
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Polls `f` until it returns Some, or panics with `what` and the last value seen.
pub fn wait_for<T: std::fmt::Debug>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) if start.elapsed() > timeout => {
                panic!("timed out after {timeout:?} waiting for {what}; last: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

impl Lab {
    /// Runs `CMD` inside a task (through `shoal exec` on the node that runs it).
    pub fn in_task(&self, node: u32, task: &str, cmd: &[&str]) -> Output {
        let mut args = vec!["exec", task, "--"];
        args.extend_from_slice(cmd);
        self.shoal(node, &args)
    }

    /// `dig +short` from inside a task: the answer lines.
    pub fn dig(&self, node: u32, task: &str, args: &[&str]) -> Vec<String> {
        let mut cmd = vec!["dig", "+short", "+tries=1", "+time=2"];
        cmd.extend_from_slice(args);
        let out = self.in_task(node, task, &cmd);
        assert!(
            out.status.success(),
            "dig {args:?} in {task} failed: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
            .lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// The status dig reports (NOERROR, NXDOMAIN, SERVFAIL...) for `dig ARGS`.
    pub fn dig_status(&self, node: u32, task: &str, args: &str) -> String {
        let mut cmd = vec!["dig", "+tries=1", "+time=3"];
        cmd.extend(args.split_whitespace());
        let out = self.in_task(node, task, &cmd);
        let s = text(&out.stdout);
        s.split("status: ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .unwrap_or("(no status)")
            .to_string()
    }

    /// The node (1-based) and full id of each running task of a service.
    pub fn tasks_by_node(&self, service: &str) -> Vec<(u32, String)> {
        self.running_tasks(service)
            .iter()
            .map(|t| {
                let (node, id) = t.split_once(' ').unwrap();
                (
                    node.trim_start_matches("node").parse().unwrap(),
                    id.to_string(),
                )
            })
            .collect()
    }

    /// A task's address on its first network.
    pub fn task_addr(&self, id: &str) -> String {
        let t = self.task_json(id);
        let addr = t["NetworksAttachments"][0]["Addr"]
            .as_str()
            .expect("an address")
            .to_string();
        addr.split('/').next().unwrap().to_string()
    }

    /// Waits until a service's replicas all run.
    pub fn wait_running(&self, service: &str, n: usize) -> Vec<(u32, String)> {
        wait_for(
            &format!("{n} running {service} tasks"),
            Duration::from_secs(60),
            || {
                let t = self.tasks_by_node(service);
                if t.len() == n {
                    Ok(t)
                } else {
                    Err(format!("{t:?}"))
                }
            },
        )
    }
}

impl Lab {
    /// `shoal service create ARGS` on node1 (`--runtime host` unless ARGS say), waiting (as the CLI does without -d) until the
    /// tasks run and their endpoints have reached every node. ARGS is split at spaces;
    /// `SHOAL` stands for the shoal binary (the demo apps' command).
    pub fn create(&self, args: &str) {
        let mut a = vec!["service", "create"];
        // The lab tests run the demo apps from the host: `--runtime host` unless a test
        // chooses.
        if !args.contains("--runtime") {
            a.extend(["--runtime", "host"]);
        }
        a.extend(
            args.split_whitespace()
                .map(|w| if w == "SHOAL" { SHOAL } else { w }),
        );
        self.ok(1, &a);
    }
}

impl Lab {
    /// Stops node N's shoald with `signal` (`-KILL`, `-TERM`) and waits until it is gone;
    /// returns its command line (for `start_daemon`).
    pub fn stop_daemon(&self, node: u32, signal: &str) -> Vec<String> {
        let pid = self.daemon_pid(node).expect("the node's shoald");
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let args = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(text)
            .collect();
        let killed = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        wait_for(
            "the daemon to exit",
            Duration::from_secs(60),
            || match std::path::Path::new(&format!("/proc/{pid}")).exists() {
                true => Err("running".into()),
                false => Ok(()),
            },
        );
        args
    }

    /// Starts node N's shoald again with `args`, through `lab exec` (in the node's
    /// namespace and the lab's cgroup, so `lab down` ends it); its output goes to `log` in
    /// the node's directory.
    pub fn start_daemon(&self, node: u32, args: &[String], log: &str) -> std::process::Child {
        let log = std::fs::File::create(self.dir().join(format!("node{node}/{log}"))).unwrap();
        Command::new(SHOAL)
            .args([
                "lab",
                "exec",
                "--name",
                &self.name,
                &format!("node{node}"),
                "--",
            ])
            .args(args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    }
}

/// The lab registry's address (`shoal lab up --registry`).
pub fn registry(lab: &Lab) -> String {
    let info: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(lab.dir().join("lab.json")).expect("lab.json"),
    )
    .expect("lab.json is JSON");
    info["registry"]
        .as_str()
        .expect("a lab registry")
        .to_string()
}

/// Tags the lab registry's `repo:latest` as `repo:tag` too (the same manifest), from node1.
pub fn retag(lab: &Lab, repo: &str, tag: &str) {
    let reg = registry(lab);
    let manifest = lab
        .dir()
        .join(format!("{}.manifest", repo.replace('/', "_")));
    let media = "application/vnd.oci.image.manifest.v1+json";
    let curl = |args: &[&str]| {
        let out = Command::new("ip")
            .args(["netns", "exec", &lab.netns(1), "curl", "-sSf"])
            .args(args)
            .output()
            .expect("run curl");
        assert!(out.status.success(), "curl {args:?}: {}", text(&out.stderr));
    };
    let m = manifest.to_str().unwrap();
    curl(&[
        "-H",
        &format!("Accept: {media}"),
        "-o",
        m,
        &format!("http://{reg}/v2/{repo}/manifests/latest"),
    ]);
    curl(&[
        "-X",
        "PUT",
        "-H",
        &format!("Content-Type: {media}"),
        "--data-binary",
        &format!("@{m}"),
        &format!("http://{reg}/v2/{repo}/manifests/{tag}"),
    ]);
}
