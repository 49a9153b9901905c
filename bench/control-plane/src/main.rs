//! bench/control-plane: the control plane at scale, with simulated agents that speak the
//! real protocol to 3 real managers of a lab (see README.md). Run inside the lab's node1:
//!
//!   shoal lab exec --name LAB node1 -- control-plane --lab LAB --shoal PATH [--nodes 1000 --tasks 100000]
//!
//! Two stages in one run: the baseline (`--base-nodes`, `--base-tasks`), then the target
//! (`--nodes`, `--tasks`); each figure is printed beside the baseline's.

mod agent;
mod stats;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use shoal_types::{NodeRole, NodeState};

use agent::{Agent, Shared, Slot};
use stats::{ms, percentile};

#[derive(Parser, Clone)]
struct Args {
    /// The lab whose 3 managers are measured (`shoal lab up --nodes 3 --managers 3`).
    #[arg(long)]
    lab: String,
    /// The shoal CLI, for the writes a user makes (`service create`, `service scale`).
    #[arg(long)]
    shoal: String,
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    #[arg(long, default_value_t = 100_000)]
    tasks: usize,
    #[arg(long, default_value_t = 10)]
    base_nodes: usize,
    #[arg(long, default_value_t = 1000)]
    base_tasks: usize,
    /// Endpoint changes measured per stage (web scaled 2 <-> 3).
    #[arg(long, default_value_t = 60)]
    changes: usize,
    /// Seconds of each heartbeat window.
    #[arg(long, default_value_t = 20)]
    beat_window: u64,
    /// Joins in flight at once.
    #[arg(long, default_value_t = 16)]
    join_parallel: usize,
}

/// What a stage measured.
struct Stage {
    nodes: usize,
    tasks: usize,
    join: Duration,
    delivered: Duration,
    running: Duration,
    change_all: Vec<Duration>,
    change_node: Vec<Duration>,
    leader_stats: Option<shoal_api::EndpointStats>,
    /// Leader CPU per heartbeat (marginal), and at rest per second.
    beat_cost: Option<Duration>,
    rest_cpu: Duration,
    beats_per_s: (f64, f64),
    rss_kib: Vec<(String, u64)>,
    load: Vec<String>,
}

struct Ctx {
    args: Args,
    lab: shoal_lab::LabInfo,
    api: shoal_api::Client,
    shared: Arc<Shared>,
    slots: Vec<Arc<Slot>>,
    token: String,
    managers: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.base_nodes > args.nodes || args.base_tasks > args.tasks {
        bail!("--base-nodes/--base-tasks must not exceed --nodes/--tasks");
    }
    let lab = shoal_lab::load(&args.lab)?;
    let socket = shoal_lab::node_socket(&args.lab, 1);
    let api = shoal_api::Client::new(&format!("unix://{}", socket.display()))?;
    let token = api.join_token(NodeRole::Worker).await?.token;
    let managers: Vec<String> = lab
        .nodes
        .iter()
        .filter(|n| n.role == shoal_lab::NodeRole::Manager)
        .map(|n| format!("{}:{}", n.addr, shoal_lab::CLUSTER_PORT))
        .collect();
    if managers.len() < 3 {
        eprintln!(
            "note: {} manager(s) in lab {}, not 3",
            managers.len(),
            args.lab
        );
    }
    let mut ctx = Ctx {
        args: args.clone(),
        lab,
        api,
        shared: Arc::new(Shared::default()),
        slots: Vec::new(),
        token,
        managers,
    };
    // The lab's own nodes run nothing: every task goes to the simulated nodes.
    for n in &ctx.lab.nodes {
        cli(
            &ctx,
            &["node", "update", "--availability", "drain", &n.name],
        )
        .await?;
    }
    *ctx.shared.watched.lock().unwrap() = "web".into();
    let down_seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let watcher = tokio::spawn(watch_nodes(
        shoal_api::Client::new(&format!("unix://{}", socket.display()))?,
        Arc::clone(&down_seen),
    ));

    eprintln!(
        "== baseline: {} nodes, {} tasks",
        args.base_nodes, args.base_tasks
    );
    let base = stage(&mut ctx, args.base_nodes, args.base_tasks, true).await?;
    eprintln!("== target: {} nodes, {} tasks", args.nodes, args.tasks);
    let big = stage(&mut ctx, args.nodes, args.tasks, false).await?;
    watcher.abort();
    ctx.shared.stop.store(true, Ordering::Relaxed);

    print(&base, &big);
    let errors = ctx.shared.session_errors.lock().unwrap().clone();
    println!(
        "sessions opened: {} (one per node unless one ended)",
        ctx.slots
            .iter()
            .map(|s| s.sessions.load(Ordering::Relaxed))
            .sum::<u64>()
    );
    println!("sessions ended, by reason: {errors:?}");
    let protocol = ctx.shared.protocol_errors.load(Ordering::Relaxed);
    println!("messages that did not parse or apply: {protocol}");
    let down = down_seen.lock().unwrap().clone();
    println!(
        "simulated nodes ever seen not Ready: {} {:?}",
        down.len(),
        down
    );
    if protocol > 0 {
        bail!("{protocol} session messages did not parse or apply");
    }
    Ok(())
}

/// Runs `shoal -H <node1> ARGS`; its stdout.
async fn cli(ctx: &Ctx, args: &[&str]) -> anyhow::Result<String> {
    let socket = shoal_lab::node_socket(&ctx.args.lab, 1);
    let out = tokio::process::Command::new(&ctx.args.shoal)
        .arg("-H")
        .arg(format!("unix://{}", socket.display()))
        .args(args)
        .output()
        .await
        .with_context(|| format!("run {}", ctx.args.shoal))?;
    if !out.status.success() {
        bail!(
            "`shoal {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls `f` every 20 ms until it holds; fails after `limit`.
async fn until(what: &str, limit: Duration, f: impl FnMut() -> bool) -> anyhow::Result<()> {
    until_with(what, limit, f, String::new).await
}

/// `until`, saying how far it got every 10 s (`progress`).
async fn until_with(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> bool,
    progress: impl Fn() -> String,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut said = Instant::now();
    while !f() {
        if start.elapsed() > limit {
            bail!(
                "timed out after {limit:?} waiting for {what} ({})",
                progress()
            );
        }
        if said.elapsed() > Duration::from_secs(10) {
            let secs = start.elapsed().as_secs_f64();
            eprintln!("  waiting for {what}: {secs:.0} s, {}", progress());
            said = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Every simulated node's hostname ever seen in a state other than Ready.
async fn watch_nodes(api: shoal_api::Client, seen: Arc<std::sync::Mutex<Vec<String>>>) {
    loop {
        if let Ok(nodes) = api.nodes().await {
            let mut s = seen.lock().unwrap();
            for n in nodes {
                let h = n.description.hostname.clone();
                if h.starts_with("sim") && n.status.state != NodeState::Ready && !s.contains(&h) {
                    eprintln!("!! {h} is {:?}: {}", n.status.state, n.status.message);
                    s.push(h);
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn stage(ctx: &mut Ctx, nodes: usize, tasks: usize, first: bool) -> anyhow::Result<Stage> {
    let mut load = vec![stats::load()];
    // Join the nodes the stage adds.
    let t = Instant::now();
    let from = ctx.slots.len();
    let joined: Vec<anyhow::Result<Agent>> = futures::stream::iter(from..nodes)
        .map(|i| {
            let (token, shared) = (ctx.token.clone(), Arc::clone(&ctx.shared));
            let managers = ctx.managers.clone();
            let via = managers[i % managers.len()].clone();
            async move { Agent::join(i, &token, &via, managers, shared).await }
        })
        .buffer_unordered(ctx.args.join_parallel)
        .collect()
        .await;
    for a in joined {
        let a = a?;
        ctx.slots.push(Arc::clone(&a.slot));
        tokio::spawn(a.run());
    }
    let join = t.elapsed();
    eprintln!(
        "{} nodes joined in {:.1} s",
        nodes - from,
        join.as_secs_f64()
    );
    // Steady: every node's acked ingress view lists every Ready node (the simulated ones
    // and the lab's).
    let all = (nodes + ctx.lab.nodes.len()) as u64;
    let slots = ctx.slots.clone();
    until(
        "every node's view to list every node",
        Duration::from_secs(600),
        || {
            slots
                .iter()
                .all(|s| s.ingress_nodes.load(Ordering::Relaxed) == all)
        },
    )
    .await?;
    eprintln!(
        "every node has a view of all {all} nodes, {:.1} s after the first join",
        t.elapsed().as_secs_f64()
    );

    if first {
        cli(
            ctx,
            &[
                "service",
                "create",
                "-d",
                "--runtime",
                "host",
                "--name",
                "web",
                "--replicas",
                "2",
                "-p",
                "8080:80",
                "sleep",
                "1000000",
            ],
        )
        .await?;
    }
    let slots = ctx.slots.clone();
    until(
        "web's 2 tasks on every node",
        Duration::from_secs(300),
        || slots.iter().all(|s| s.watched.lock().unwrap().0 == 2),
    )
    .await?;

    // Placement: from the API call until every task is in its node's hands, and until
    // the managers record each running.
    let name = format!("bulk{nodes}");
    let base_live = ctx.shared.live.load(Ordering::Relaxed);
    let t = Instant::now();
    cli(
        ctx,
        &[
            "service",
            "create",
            "-d",
            "--runtime",
            "host",
            "--name",
            &name,
            "--replicas",
            &tasks.to_string(),
            "sleep",
            "1000000",
        ],
    )
    .await?;
    let shared = Arc::clone(&ctx.shared);
    let delivered_now = || {
        shared
            .delivered
            .lock()
            .unwrap()
            .get(&name)
            .copied()
            .unwrap_or(0)
    };
    until_with(
        &format!("{tasks} tasks delivered"),
        Duration::from_secs(900),
        || delivered_now() >= tasks as u64,
        || {
            format!(
                "{} delivered, {} told to run now, session ends {:?}",
                delivered_now(),
                shared.live.load(Ordering::Relaxed),
                shared.session_errors.lock().unwrap()
            )
        },
    )
    .await?;
    let delivered = t.elapsed();
    eprintln!(
        "{tasks} tasks delivered to their nodes in {:.2} s",
        delivered.as_secs_f64()
    );
    loop {
        let s = ctx.api.service(&name).await?;
        if s.status.running_tasks >= tasks as u64 {
            break;
        }
        if t.elapsed() > Duration::from_secs(900) {
            bail!(
                "{name}: {} of {tasks} running after 900 s",
                s.status.running_tasks
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let running = t.elapsed();
    eprintln!(
        "{tasks} tasks recorded running in {:.2} s",
        running.as_secs_f64()
    );
    let live = ctx.shared.live.load(Ordering::Relaxed) - base_live;
    if live != tasks as i64 {
        bail!(
            "{live} tasks of {name} told to run on the simulated nodes, not {tasks} (a task twice?)"
        );
    }
    load.push(stats::load());

    // Endpoint changes: web 2 -> 3 -> 2 ..., each from the API call until every node has
    // acked a view with that many ready web tasks.
    let _ = ctx.api.reset_endpoint_stats().await;
    let (mut change_all, mut change_node) = (Vec::new(), Vec::new());
    for i in 0..ctx.args.changes {
        let want = if i % 2 == 0 { 3 } else { 2 };
        let t = Instant::now();
        cli(ctx, &["service", "scale", "-d", &format!("web={want}")]).await?;
        let slots = ctx.slots.clone();
        until(
            &format!("web={want} on every node"),
            Duration::from_secs(120),
            || slots.iter().all(|s| s.watched.lock().unwrap().0 == want),
        )
        .await?;
        let per: Vec<Duration> = ctx
            .slots
            .iter()
            .map(|s| s.watched.lock().unwrap().1.saturating_duration_since(t))
            .collect();
        change_all.push(per.iter().copied().max().unwrap_or_default());
        change_node.extend(per);
    }
    if ctx.args.changes % 2 == 1 {
        cli(ctx, &["service", "scale", "-d", "web=2"]).await?;
    }
    let leader_stats = ctx.api.endpoint_stats().await.ok();
    load.push(stats::load());

    // Heartbeats: the leader's CPU over a window at the period the leader asks for, then
    // one where every node beats so that ~1,000 more heartbeats a second arrive; the
    // difference over the difference in heartbeats is the cost of one.
    let leader = leader_pid(ctx).await?;
    let window = Duration::from_secs(ctx.args.beat_window);
    let measure = |shared: Arc<Shared>| async move {
        let (c0, b0) = (
            stats::cpu_time(leader),
            shared.beats_ok.load(Ordering::Relaxed),
        );
        tokio::time::sleep(window).await;
        let (c1, b1) = (
            stats::cpu_time(leader),
            shared.beats_ok.load(Ordering::Relaxed),
        );
        (c1.zip(c0).map(|(a, b)| a.saturating_sub(b)), b1 - b0)
    };
    ctx.shared.beat_override_ms.store(0, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (rest, beats_rest) = measure(Arc::clone(&ctx.shared)).await;
    // ~1,000 more a second than at rest, whatever the node count.
    let per_node = beats_rest as f64 / window.as_secs_f64() / nodes as f64;
    let fast_ms = 1000.0 / (per_node + 1000.0 / nodes as f64);
    ctx.shared
        .beat_override_ms
        .store((fast_ms as u64).max(1), Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (fast, beats_fast) = measure(Arc::clone(&ctx.shared)).await;
    ctx.shared.beat_override_ms.store(0, Ordering::Relaxed);
    let beat_cost = match (rest, fast) {
        (Some(r), Some(f)) if beats_fast > beats_rest => {
            Some(f.saturating_sub(r) / (beats_fast - beats_rest) as u32)
        }
        _ => None,
    };
    let w = window.as_secs_f64();
    let rest_cpu = rest.map_or(Duration::ZERO, |r| r.div_f64(w));
    load.push(stats::load());

    let rss_kib = ctx
        .lab
        .nodes
        .iter()
        .filter(|n| n.role == shoal_lab::NodeRole::Manager)
        .filter_map(|n| Some((n.name.clone(), stats::rss(n.pid?)?)))
        .collect();
    let stage = Stage {
        nodes,
        tasks,
        join,
        delivered,
        running,
        change_all,
        change_node,
        leader_stats,
        beat_cost,
        rest_cpu,
        beats_per_s: (beats_rest as f64 / w, beats_fast as f64 / w),
        rss_kib,
        load,
    };
    // The next stage starts without this one's tasks (after the last, the lab goes).
    if first {
        cli(ctx, &["service", "rm", &name]).await?;
        let shared = Arc::clone(&ctx.shared);
        until(
            &format!("{name}'s tasks stopped"),
            Duration::from_secs(900),
            || shared.live.load(Ordering::Relaxed) <= base_live,
        )
        .await?;
    }
    Ok(stage)
}

/// The leader's pid, from the API's manager status and the lab's record.
async fn leader_pid(ctx: &Ctx) -> anyhow::Result<u32> {
    let nodes = ctx.api.nodes().await?;
    let host = nodes
        .iter()
        .find(|n| n.manager_status.as_ref().is_some_and(|m| m.leader))
        .map(|n| n.description.hostname.clone())
        .context("no leader in `node ls`")?;
    ctx.lab
        .nodes
        .iter()
        .find(|n| n.name == host)
        .and_then(|n| n.pid)
        .with_context(|| format!("no pid for the leader {host} in the lab's record"))
}

fn print(base: &Stage, big: &Stage) {
    let ratio = |a: f64, b: f64| {
        if b > 0.0 {
            format!("{:.2}x", a / b)
        } else {
            "-".into()
        }
    };
    println!();
    println!(
        "control plane: {} nodes / {} tasks, beside {} nodes / {} tasks (same run, same 3 managers)",
        big.nodes, big.tasks, base.nodes, base.tasks
    );
    println!(
        "  load average during each stage: {} / {}",
        big.load.join(" "),
        base.load.join(" ")
    );
    let per_join =
        |s: &Stage, from: usize| s.join.as_secs_f64() * 1000.0 / (s.nodes - from).max(1) as f64;
    println!(
        "  joins: {:.1} ms per node ({} joined) vs {:.1} ms ({} joined)",
        per_join(big, base.nodes),
        big.nodes - base.nodes,
        per_join(base, 0),
        base.nodes
    );
    println!(
        "  placement, API call until every task is in its node's hands: {:.2} s vs {:.2} s \
        (swarmkit's scheduler benchmark: 100k tasks on 1k nodes in 22.6 s)",
        big.delivered.as_secs_f64(),
        base.delivered.as_secs_f64()
    );
    println!(
        "    per 1,000 tasks: {:.3} s vs {:.3} s ({})",
        big.delivered.as_secs_f64() * 1000.0 / big.tasks as f64,
        base.delivered.as_secs_f64() * 1000.0 / base.tasks as f64,
        ratio(
            big.delivered.as_secs_f64() / big.tasks as f64,
            base.delivered.as_secs_f64() / base.tasks as f64
        )
    );
    println!(
        "  ... until the managers record every task running: {:.2} s vs {:.2} s",
        big.running.as_secs_f64(),
        base.running.as_secs_f64()
    );
    for (what, a, b) in [
        (
            "  endpoint change, API call until ALL nodes acked",
            &big.change_all,
            &base.change_all,
        ),
        (
            "  endpoint change, API call until a node acked (every node)",
            &big.change_node,
            &base.change_node,
        ),
    ] {
        let (a50, a99, b50, b99) = (
            percentile(a, 50.0),
            percentile(a, 99.0),
            percentile(b, 50.0),
            percentile(b, 99.0),
        );
        println!(
            "{what} ({} samples vs {}): p50 {} ms vs {} ms ({}), p99 {} ms vs {} ms ({}), max {} ms",
            a.len(),
            b.len(),
            ms(a50),
            ms(b50),
            ratio(a50.as_secs_f64(), b50.as_secs_f64()),
            ms(a99),
            ms(b99),
            ratio(a99.as_secs_f64(), b99.as_secs_f64()),
            ms(percentile(a, 100.0))
        );
    }
    if let (Some(a), Some(b)) = (&big.leader_stats, &base.leader_stats) {
        println!(
            "  the leader's own figure (commit until all acked, {} vs {} changes): p50 {} ms vs {} ms, p99 {} ms vs {} ms",
            a.count, b.count, a.p50_ms, b.p50_ms, a.p99_ms, b.p99_ms
        );
    }
    let us =
        |d: Option<Duration>| d.map_or("?".into(), |d| format!("{:.1}", d.as_secs_f64() * 1e6));
    println!(
        "  leader CPU per heartbeat (marginal): {} µs vs {} µs ({}); heartbeats/s at rest {:.0} vs {:.0}, fast {:.0} vs {:.0}",
        us(big.beat_cost),
        us(base.beat_cost),
        match (big.beat_cost, base.beat_cost) {
            (Some(a), Some(b)) => ratio(a.as_secs_f64(), b.as_secs_f64()),
            _ => "-".into(),
        },
        big.beats_per_s.0,
        base.beats_per_s.0,
        big.beats_per_s.1,
        base.beats_per_s.1
    );
    if let Some(c) = big.beat_cost {
        let per_node = c.as_secs_f64() * big.beats_per_s.0 / big.nodes as f64;
        println!(
            "    per node at the leader's period: {:.2} µs of CPU a second ({:.3}% of a core for {} nodes)",
            per_node * 1e6,
            per_node * big.nodes as f64 * 100.0,
            big.nodes
        );
    }
    println!(
        "  leader CPU at rest (sessions open, heartbeats at the period): {:.1}% vs {:.1}% of a core",
        big.rest_cpu.as_secs_f64() * 100.0,
        base.rest_cpu.as_secs_f64() * 100.0
    );
    let rss = |s: &Stage| {
        s.rss_kib
            .iter()
            .map(|(n, k)| format!("{n} {} MiB", k / 1024))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("  manager RSS: {} vs {}", rss(big), rss(base));
}
