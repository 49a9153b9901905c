//! The kernel's part of a task's life on a crowded node (run it with
//! `bench/scale/lifecycle.sh`): start a task in a fresh network namespace exactly as the
//! agent does (`prepare_netns`, `start`, wait for it, `cleanup`), with 0, 300 and 900 other
//! named namespaces on the machine (a bind mount each under `/run/netns`, as a lab of 3 nodes
//! at 300 tasks per node has), and print the CPU time per task: this process's (every thread,
//! the short-lived namespace threads included) and the task's own (reaped children, what the
//! child does between its creation and exec included), beside the first count's figures
//! (the same-run baseline; the target is flat).
//!
//! Knobs (environment): `PADS="0 300 900"` (other namespaces), `TASKS=200` (tasks per count),
//! `ROUNDS=3` (the counts are visited this many times, interleaved, and the median is
//! printed, so that load from other work on the machine hits every count alike),
//! `BALLAST_MB=0` (this many MiB allocated and written before measuring, so that the
//! process starting tasks has a daemon's RSS, 60-100 MiB on a busy node: what a start costs
//! may grow with the starter's memory, as fork's did).
//!
//! Everything it makes is named `shoalbench-life-<pid>-...` and removed on exit, also when
//! it fails (a guard deletes the namespaces and the run directory).

use std::time::{Duration, Instant};

use nix::sys::resource::{UsageWho, getrusage};
use shoal_exec::{SandboxSpec, TaskExit, cleanup, start, task_netns_name};

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn list(name: &str, default: &str) -> Vec<usize> {
    env(name, default)
        .split_whitespace()
        .map(|s| s.parse().unwrap_or_else(|_| panic!("{name}: numbers")))
        .collect()
}

/// The bench's namespaces and run directory, removed on drop (also after a panic).
struct Guard {
    prefix: String,
    run_dir: std::path::PathBuf,
    pads: Vec<String>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for name in &self.pads {
            let _ = shoal_net::delete_netns(name);
        }
        // A task namespace left by a failed start.
        if let Ok(names) = shoal_net::list_netns() {
            for name in names.iter().filter(|n| n.contains(&self.prefix)) {
                let _ = shoal_net::delete_netns(name);
            }
        }
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

impl Guard {
    /// Makes or removes padding namespaces until there are `n`.
    fn pad_to(&mut self, n: usize) {
        while self.pads.len() < n {
            let name = format!("{}-pad-{}", self.prefix, self.pads.len());
            shoal_net::create_netns(&name).expect("create a padding namespace");
            self.pads.push(name);
        }
        while self.pads.len() > n {
            let name = self.pads.pop().unwrap_or_default();
            shoal_net::delete_netns(&name).expect("delete a padding namespace");
        }
    }
}

/// CPU time (user + system) of this process and of its reaped children.
fn cpu() -> (Duration, Duration) {
    let of = |who| {
        let u = getrusage(who).expect("getrusage");
        let us = |t: nix::sys::time::TimeVal| {
            Duration::from_micros(t.tv_sec() as u64 * 1_000_000 + t.tv_usec() as u64)
        };
        us(u.user_time()) + us(u.system_time())
    };
    (of(UsageWho::RUSAGE_SELF), of(UsageWho::RUSAGE_CHILDREN))
}

/// One task's life, as the agent lives it; `/bin/true` so the process itself costs little.
async fn one_task(run_dir: &std::path::Path, task_id: String) {
    let spec = SandboxSpec {
        hostname: "bench".into(),
        command: vec!["/bin/true".into()],
        env: Vec::new(),
        workdir: None,
        run_dir: run_dir.join(&task_id),
        netns: None,
        extra_hosts: None,
        task_id,
    };
    let mut running = start(&spec).await.expect("start a task");
    let exit = running.wait_exit().await.expect("wait for the task");
    assert_eq!(exit, TaskExit::Code(0), "/bin/true failed in its sandbox");
    cleanup(&spec).await;
    assert!(
        !shoal_net::netns_exists(&task_netns_name(&spec.task_id).expect("name")),
        "cleanup left the task's namespace"
    );
}

struct Sample {
    own_us: f64,
    task_us: f64,
    wall_us: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let pads = list("PADS", "0 300 900");
    let tasks = list("TASKS", "200")[0];
    let rounds = list("ROUNDS", "3")[0];
    let ballast_mb = list("BALLAST_MB", "0")[0];
    // Written, so that every page is resident (and has a page-table entry).
    let ballast = std::hint::black_box(vec![1u8; ballast_mb << 20]);
    let prefix = format!("shoalbench-life-{}", std::process::id());
    let mut guard = Guard {
        run_dir: std::env::temp_dir().join(&prefix),
        prefix,
        pads: Vec::new(),
    };
    println!(
        "a task's life (fresh netns, lo up, /bin/true in its sandbox, wait, cleanup), \
         {tasks} tasks per count, median of {rounds} rounds, {ballast_mb} MiB of ballast"
    );
    let mut samples: Vec<Vec<Sample>> = pads.iter().map(|_| Vec::new()).collect();
    let mut serial = 0usize;
    for _ in 0..rounds {
        for (i, &n) in pads.iter().enumerate() {
            guard.pad_to(n);
            // One task first, outside the figures: the first start of a process makes
            // one-time things (for example the directory `/run/netns`).
            serial += 1;
            one_task(&guard.run_dir, format!("{:012}x", serial)).await;
            let (own0, task0) = cpu();
            let t0 = Instant::now();
            for _ in 0..tasks {
                serial += 1;
                one_task(&guard.run_dir, format!("{:012}x", serial)).await;
            }
            let wall = t0.elapsed();
            let (own1, task1) = cpu();
            let per = |d: Duration| d.as_secs_f64() * 1e6 / tasks as f64;
            samples[i].push(Sample {
                own_us: per(own1 - own0),
                task_us: per(task1 - task0),
                wall_us: per(wall),
            });
        }
    }
    println!(
        "{:>18} {:>14} {:>14} {:>14} {:>10} {:>12}",
        "other namespaces",
        "own µs/task",
        "task µs/task",
        "sum µs/task",
        "vs first",
        "wall µs/task"
    );
    let mut first = None;
    for (n, s) in pads.iter().zip(samples) {
        let own = median(s.iter().map(|x| x.own_us).collect());
        let task = median(s.iter().map(|x| x.task_us).collect());
        let wall = median(s.iter().map(|x| x.wall_us).collect());
        let sum = own + task;
        let base = *first.get_or_insert(sum);
        println!(
            "{n:>18} {own:>14.0} {task:>14.0} {sum:>14.0} {:>9.2}x {wall:>12.0}",
            sum / base
        );
    }
    drop(ballast);
}
