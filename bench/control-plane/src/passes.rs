//! The leader loop's deciding steps for `--replicas TASKS` on NODES nodes, in process: the
//! same calls in the same order as `shoald::manager::Manager::run_leader_loop` (what
//! changed, the orchestrator's pass, the pass applied to a copy, allocation, scheduling),
//! then the commit's apply and every task reported running, pass after pass until nothing
//! is left to do. No Raft, no sessions, no agents: what one pass costs to decide, apart
//! from what committing it costs (bench/control-plane measures the whole path).
//!
//!     cargo run --release -p shoal-bench-control-plane --bin passes -- [NODES TASKS]
//!
//! A baseline of 10 nodes / 1,000 tasks runs first, in the same process (11 times: its run
//! of median length is the one printed).

use std::sync::Arc;
use std::time::Instant;

use shoal_manager::{allocator, changes, orchestrator, scheduler};
use shoal_types::fixtures::{cluster, service, spec};
use shoal_types::{ClusterState, Command, Millis, TaskState, TaskStatus};

/// Milliseconds each step took in each pass.
#[derive(Default)]
struct Steps {
    decide: Vec<f64>,
    reconcile: Vec<f64>,
    apply: Vec<f64>,
    passes: usize,
    total_s: f64,
}

fn run(nodes: usize, tasks: u64) -> Steps {
    let names: Vec<(String, String)> = (0..nodes)
        .map(|i| (format!("n{i:05}"), format!("node{i}")))
        .collect();
    let refs: Vec<(&str, &str)> = names
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let mut st = cluster(&refs);
    st.apply(Command::CreateService {
        service: service("s1", spec("web", tasks)),
    })
    .expect("a service of the fixtures applies");
    let mut state = Arc::new(st);
    let mut prev: Option<Arc<ClusterState>> = None;
    let mut n = 0u64;
    // Ids as random as the daemon's spread tasks over the whole map.
    let mut new_id = || {
        n += 1;
        format!(
            "{:024x}",
            n.wrapping_mul(0x9e37_79b9_7f4a_7c15) as u128 * 0x1_0000_0001
        )
    };
    let mut wall = Millis(1_700_000_000_000);
    let mut out = Steps::default();
    let all = Instant::now();
    loop {
        wall = Millis(wall.0 + 1000);
        let t0 = Instant::now();
        let mut changed = match &prev {
            Some(p) => changes::between(p, &state),
            None => changes::Changes::everything(),
        };
        prev = Some(Arc::clone(&state));
        let pass = orchestrator::reconcile_pass(&state, wall, &mut new_id, changed.scope());
        let t1 = Instant::now();
        let decided = changed.with_pass(Arc::clone(&state), &pass.commands);
        let mut cmds = pass.commands;
        if changed.allocate() {
            cmds.extend(allocator::allocate_for(&decided, wall, changed.scope()));
        }
        let mut placed = Vec::new();
        if changed.schedule() {
            let plan = scheduler::schedule(&decided);
            placed.clone_from(&plan.assignments);
            if !plan.assignments.is_empty() {
                cmds.push(Command::AssignTasks {
                    assignments: plan.assignments,
                    at: wall,
                });
            }
        }
        let t2 = Instant::now();
        if cmds.is_empty() {
            break;
        }
        // The commit, then the agents' reports (committed together, as shoald does).
        let mut next = (*state).clone();
        let _ = next.apply(Command::Batch(cmds));
        let reports = placed
            .into_iter()
            .map(|(id, node_id)| Command::UpdateTaskStatus {
                id,
                node_id,
                status: TaskStatus::new(TaskState::Running, wall, "started"),
            })
            .collect();
        let _ = next.apply(Command::Batch(reports));
        state = Arc::new(next);
        let t3 = Instant::now();
        let ms = |a: Instant, b: Instant| b.duration_since(a).as_secs_f64() * 1000.0;
        out.decide.push(ms(t0, t2));
        out.reconcile.push(ms(t0, t1));
        out.apply.push(ms(t2, t3));
        out.passes += 1;
    }
    out.total_s = all.elapsed().as_secs_f64();
    let running = state
        .tasks
        .values()
        .filter(|t| t.status.state == TaskState::Running)
        .count();
    assert_eq!(running as u64, tasks, "every task placed and running");
    out
}

fn pct(v: &[f64], p: usize) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[(v.len() * p)
        .div_ceil(100)
        .saturating_sub(1)
        .min(v.len() - 1)]
}

fn main() {
    let arg = |i: usize, default: u64| {
        std::env::args().nth(i).map_or(default, |s| {
            s.parse()
                .unwrap_or_else(|_| panic!("argument {i} ({s:?}) must be a whole number"))
        })
    };
    let (nodes, tasks) = (arg(1, 1000) as usize, arg(2, 100_000));
    // The baseline takes milliseconds: the run of median length of 11.
    let mut bases: Vec<Steps> = (0..11).map(|_| run(10, 1000)).collect();
    bases.sort_by(|a, b| a.total_s.total_cmp(&b.total_s));
    let base = bases.swap_remove(5);
    let target = run(nodes, tasks);
    let line = |name: &str, s: &Steps, t: u64| {
        println!(
            "{name}: {} passes in {:.2} s ({:.3} s per 1,000 tasks); per pass, ms p50/max: decide {:.1}/{:.1} (reconcile {:.1}/{:.1}), commit's apply + reports {:.1}/{:.1}",
            s.passes,
            s.total_s,
            s.total_s * 1000.0 / t as f64,
            pct(&s.decide, 50),
            pct(&s.decide, 100),
            pct(&s.reconcile, 50),
            pct(&s.reconcile, 100),
            pct(&s.apply, 50),
            pct(&s.apply, 100),
        );
    };
    line("baseline 10 nodes / 1000 tasks", &base, 1000);
    line(
        &format!("target {nodes} nodes / {tasks} tasks"),
        &target,
        tasks,
    );
    println!(
        "per 1,000 tasks, target vs baseline: {:.2}x",
        (target.total_s / tasks as f64) / (base.total_s / 1000.0)
    );
}
