//! One helper for every lab test: a cluster of network namespaces with a real shoald in
//! each, driven through the real `shoal` binary. Dropping a `Lab` tears it down, also when
//! the test fails.
#![allow(dead_code)]

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
