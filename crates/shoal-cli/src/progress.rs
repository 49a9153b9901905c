//! Convergence progress after `service create|update|scale`, as docker shows it:
//!
//! ```text
//! overall progress: 1 out of 2 tasks
//! 1/2: running   [==================================================>]
//! 2/2: starting  [========================================>          ]
//! verify: Service converged
//! ```
//!
//! Once every task runs, it also waits (when the daemon reports endpoint sync) until every
//! node has applied the service's latest endpoint change, so that its name resolves and its
//! ports forward everywhere when "converged" is printed.
//!
//! [`snapshot`] turns the service and its tasks into lines (pure, tested); [`wait`] polls the
//! daemon and draws them: indicatif bars on a terminal, plain lines (only when they change)
//! otherwise.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use shoal_api::{Client, ServiceView, TaskFilter, TaskView};

mod rollout;
pub use rollout::{Follow, Verdict};
use shoal_types::{ServiceMode, TaskState, short_id};

const POLL: Duration = Duration::from_millis(200);
/// Steps from New to Running, the length of each bar.
const STEPS: u64 = TaskState::Running as u64;

/// One replica (or, for global services, one node) and how far its task has come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// `1/2`, or a node's hostname for global services.
    pub label: String,
    pub state: Option<TaskState>,
    /// The newest error of this slot's tasks while it is not running.
    pub error: String,
    /// The task the error came from (`vote.1.abcdef123456`).
    pub task: String,
    /// What a preparing task says of its pull (`pulling image: 12.3MB of 35.1MB`).
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub running: u64,
    pub desired: u64,
    /// Tasks still meant to run in slots above the replica count (a scale-down the
    /// manager has not acted on yet).
    pub excess: u64,
    pub lines: Vec<Line>,
    /// Ready nodes that applied the latest endpoint change, of `endpoint_nodes`.
    pub endpoint_nodes_synced: usize,
    /// 0 when the daemon does not report it (nothing to wait for).
    pub endpoint_nodes: usize,
    /// A rollback is what moves the tasks.
    pub rollback: bool,
}

impl Snapshot {
    /// Every task is running the current spec.
    pub fn tasks_converged(&self) -> bool {
        self.running == self.desired
            && self.excess == 0
            && self
                .lines
                .iter()
                .all(|l| l.state == Some(TaskState::Running))
    }

    /// Every node has applied the latest endpoint change (or there is none to wait for).
    pub fn endpoints_synced(&self) -> bool {
        self.endpoint_nodes == 0 || self.endpoint_nodes_synced >= self.endpoint_nodes
    }

    pub fn converged(&self) -> bool {
        self.tasks_converged() && self.endpoints_synced()
    }

    /// What is left once the tasks run: the endpoint change still reaching nodes.
    pub fn endpoint_wait(&self) -> Option<String> {
        (self.tasks_converged() && !self.endpoints_synced()).then(|| {
            format!(
                "verify: waiting for the endpoint change to reach every node ({}/{})",
                self.endpoint_nodes_synced, self.endpoint_nodes
            )
        })
    }

    pub fn overall(&self) -> String {
        let what = if self.rollback {
            "rolling back update: "
        } else {
            ""
        };
        format!(
            "overall progress: {what}{} out of {} tasks",
            self.running, self.desired
        )
    }
}

impl Line {
    pub fn text(&self) -> String {
        let state = self
            .state
            .map(|s| format!("{s:?}").to_lowercase())
            .unwrap_or_else(|| "new".into());
        match self.message() {
            "" => format!("{}: {state}", self.label),
            m => format!("{}: {state}: {m}", self.label),
        }
    }

    /// The error if there is one, else how far a pull is.
    pub fn message(&self) -> &str {
        if self.error.is_empty() {
            &self.detail
        } else {
            &self.error
        }
    }
}

/// Where the service stands: a task counts when it is desired running, is running and ready
/// (in DNS and behind the VIP), and runs the service's current container spec (so an update
/// counts only replaced tasks).
pub fn snapshot(view: &ServiceView, tasks: &[TaskView]) -> Snapshot {
    let spec = &view.service.spec;
    let current = &spec.task_template.container_spec;
    let mut groups: BTreeMap<(u64, String), Vec<&TaskView>> = BTreeMap::new();
    for t in tasks
        .iter()
        .filter(|t| t.task.service_id == view.service.id)
    {
        let key = match spec.mode {
            ServiceMode::Replicated { .. } => (t.task.slot, String::new()),
            ServiceMode::Global {} => (0, t.node_hostname.clone()),
        };
        groups.entry(key).or_default().push(t);
    }
    for g in groups.values_mut() {
        g.sort_by_key(|t| std::cmp::Reverse((t.task.created_at, t.task.status.timestamp)));
    }
    let line = |label: String, group: Option<&Vec<&TaskView>>| {
        let group: &[&TaskView] = group.map(Vec::as_slice).unwrap_or(&[]);
        // Tasks made before a `--force` are not current either.
        let live = group.iter().find(|t| {
            t.task.desired_state <= TaskState::Running
                && t.task.spec == *current
                && t.task.spec_version >= view.service.force_version
        });
        // A task that runs but is not ready yet (its health check, or its target port) is
        // still starting, as docker's CLI shows a task whose check has not passed.
        let state = live.map(|t| match t.task.status.state {
            TaskState::Running if !t.task.status.ready => TaskState::Starting,
            s => s,
        });
        let failed = group.iter().find(|t| !t.task.status.err.is_empty());
        let (error, task) = match (state, failed) {
            (Some(TaskState::Running), _) | (_, None) => (String::new(), String::new()),
            (_, Some(f)) => (
                f.task.status.err.clone(),
                format!("{}.{}", f.task.slot_name(), short_id(&f.task.id)),
            ),
        };
        let running = state == Some(TaskState::Running);
        let detail = live
            .filter(|t| t.task.status.state == TaskState::Preparing)
            .map(|t| t.task.status.message.clone())
            .filter(|m| m.starts_with("pulling") || m.starts_with("extracting"))
            .unwrap_or_default();
        (
            Line {
                label,
                state,
                error,
                task,
                detail,
            },
            running,
        )
    };
    let (mut lines, mut running) = (Vec::new(), 0);
    let excess = match spec.mode {
        ServiceMode::Replicated { replicas } => groups
            .iter()
            .filter(|((slot, _), _)| *slot > replicas)
            .filter(|(_, g)| g.iter().any(|t| t.task.desired_state <= TaskState::Running))
            .count() as u64,
        ServiceMode::Global {} => 0,
    };
    let desired = match spec.mode {
        ServiceMode::Replicated { replicas } => {
            for slot in 1..=replicas {
                let (l, r) = line(
                    format!("{slot}/{replicas}"),
                    groups.get(&(slot, String::new())),
                );
                lines.push(l);
                running += u64::from(r);
            }
            replicas
        }
        ServiceMode::Global {} => {
            for ((_, host), group) in &groups {
                if group
                    .iter()
                    .any(|t| t.task.desired_state <= TaskState::Running)
                {
                    let (l, r) = line(
                        if host.is_empty() {
                            "unassigned".into()
                        } else {
                            host.clone()
                        },
                        Some(group),
                    );
                    lines.push(l);
                    running += u64::from(r);
                }
            }
            view.status.desired_tasks
        }
    };
    Snapshot {
        running,
        desired,
        excess,
        lines,
        endpoint_nodes_synced: view.status.endpoint_nodes_synced,
        endpoint_nodes: view.status.endpoint_nodes,
        rollback: view
            .service
            .update_status
            .as_ref()
            .is_some_and(|s| s.state.rolling_back()),
    }
}

/// Polls until the service converges or `timeout` passes; the error names the failing task.
pub async fn wait(client: &Client, service: &str, timeout: Duration) -> Result<()> {
    wait_for(client, service, timeout, Follow::Tasks).await
}

/// [`wait`], and for `service update|rollback` until the rollout they began is complete;
/// an error with docker's words when it pauses or rolls back.
pub async fn wait_for(
    client: &Client,
    service: &str,
    timeout: Duration,
    follow: Follow,
) -> Result<()> {
    let mut out = Output::new(std::io::stdout().is_terminal());
    let start = Instant::now();
    let mut rollback_reason: Option<String> = None;
    loop {
        // Tasks first, then the service: its endpoint sync then describes a state at least
        // as new as the tasks seen, so a change the tasks show cannot read as synced before
        // the daemon has even recorded it.
        let filter = TaskFilter {
            service: Some(service.to_string()),
            node: None,
        };
        let tasks = client.tasks(&filter).await?;
        let view = client.service(service).await?;
        let snap = snapshot(&view, &tasks);
        out.show(&snap);
        let status = view.service.update_status.as_ref();
        if let Some(line) = rollout::rollback_line(follow, status)
            && rollback_reason.is_none()
        {
            out.note(&line);
            rollback_reason = follow.status(status).map(|s| s.message.clone());
        }
        match rollout::verdict(follow, status, snap.converged(), rollback_reason.as_deref()) {
            Verdict::Done => {
                out.finish("verify: Service converged");
                if let Follow::Rollback { .. } = follow
                    && let Some(s) = follow.status(status)
                {
                    println!("rollback: {}", s.message);
                }
                return Ok(());
            }
            Verdict::Fail(why) => {
                out.finish("");
                bail!("{why}");
            }
            Verdict::Wait if snap.converged() => {
                out.note_once(
                    "verify:",
                    &rollout::stable_line(&view, &tasks, crate::now()),
                );
            }
            Verdict::Wait => {}
        }
        if start.elapsed() >= timeout {
            out.finish("");
            let name = &view.service.spec.name;
            if snap.tasks_converged() {
                bail!(
                    "service {name} did not converge within {}: its {} tasks run, but its \
                     endpoint change reached only {} of {} nodes; see `shoal node ls` for nodes \
                     that are down or behind",
                    humanize(timeout),
                    snap.running,
                    snap.endpoint_nodes_synced,
                    snap.endpoint_nodes
                );
            }
            let why = snap
                .lines
                .iter()
                .find(|l| !l.error.is_empty())
                .map(|l| format!(": task {}: {}", l.task, l.error))
                .unwrap_or_default();
            bail!(
                "service {name} did not converge within {} ({} of {} tasks running){why}; it keeps trying: \
                 see `shoal service ps {name}`",
                humanize(timeout),
                snap.running,
                snap.desired,
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

fn humanize(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Bars on a terminal; changed lines only, no escape codes, elsewhere.
enum Output {
    Tty {
        multi: MultiProgress,
        overall: ProgressBar,
        bars: Vec<ProgressBar>,
        /// The `verify:` line, once there is something to say.
        verify: Option<ProgressBar>,
    },
    Plain {
        last: BTreeMap<String, String>,
    },
}

impl Output {
    fn new(tty: bool) -> Output {
        if !tty {
            return Output::Plain {
                last: BTreeMap::new(),
            };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let overall = multi.add(ProgressBar::new(0));
        overall.set_style(
            ProgressStyle::with_template("{msg}").unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Output::Tty {
            multi,
            overall,
            bars: Vec::new(),
            verify: None,
        }
    }

    fn show(&mut self, snap: &Snapshot) {
        match self {
            Output::Plain { last } => {
                let mut emit = |key: &str, text: String| {
                    if last.get(key) != Some(&text) {
                        println!("{text}");
                        last.insert(key.to_string(), text);
                    }
                };
                emit("", snap.overall());
                for l in &snap.lines {
                    emit(&l.label, l.text());
                }
                if let Some(wait) = snap.endpoint_wait() {
                    // No task line has the label "verify:" (they are `1/2` or hostnames
                    // without a colon).
                    emit("verify:", wait);
                }
            }
            Output::Tty {
                multi,
                overall,
                bars,
                verify,
            } => {
                overall.set_message(snap.overall());
                while bars.len() < snap.lines.len() {
                    let bar = multi.add(ProgressBar::new(STEPS));
                    let style = ProgressStyle::with_template("{prefix} [{bar:50}] {msg}")
                        .map(|s| s.progress_chars("=> "))
                        .unwrap_or_else(|_| ProgressStyle::default_bar());
                    bar.set_style(style);
                    bars.push(bar);
                }
                while bars.len() > snap.lines.len() {
                    if let Some(b) = bars.pop() {
                        b.finish_and_clear();
                        multi.remove(&b);
                    }
                }
                let width = snap.lines.iter().map(|l| l.label.len()).max().unwrap_or(0);
                for (bar, l) in bars.iter().zip(&snap.lines) {
                    let state = l
                        .state
                        .map(|s| format!("{s:?}").to_lowercase())
                        .unwrap_or_else(|| "new".into());
                    let pos = l
                        .state
                        .filter(|s| !s.is_terminal())
                        .map(|s| s as u64)
                        .unwrap_or(0);
                    bar.set_prefix(format!(
                        "{:<w$} {state:<9}",
                        format!("{}:", l.label),
                        w = width + 1
                    ));
                    bar.set_position(pos.min(STEPS));
                    bar.set_message(l.message().to_string());
                }
                if let Some(wait) = snap.endpoint_wait() {
                    verify
                        .get_or_insert_with(|| text_line(multi))
                        .set_message(wait);
                }
            }
        }
    }

    /// A line of its own (`rollback: ...`).
    fn note(&mut self, line: &str) {
        match self {
            Output::Plain { .. } => println!("{line}"),
            Output::Tty { multi, .. } => text_line(multi).finish_with_message(line.to_string()),
        }
    }

    /// The `verify:` line, shown once (plain) or replacing the last (terminal).
    fn note_once(&mut self, key: &str, line: &str) {
        match self {
            Output::Plain { last } => {
                if last.get(key).map(String::as_str) != Some(line) {
                    println!("{line}");
                    last.insert(key.to_string(), line.to_string());
                }
            }
            Output::Tty { multi, verify, .. } => verify
                .get_or_insert_with(|| text_line(multi))
                .set_message(line.to_string()),
        }
    }

    fn finish(&mut self, last_line: &str) {
        match self {
            Output::Plain { .. } => {
                if !last_line.is_empty() {
                    println!("{last_line}");
                }
            }
            Output::Tty {
                multi,
                overall,
                bars,
                verify,
            } => {
                if !last_line.is_empty() {
                    verify
                        .take()
                        .unwrap_or_else(|| text_line(multi))
                        .finish_with_message(last_line.to_string());
                } else if let Some(v) = verify.take() {
                    v.abandon();
                }
                // abandon(), not finish(): finish() would fill the bars of failed tasks.
                overall.abandon();
                bars.iter().for_each(ProgressBar::abandon);
            }
        }
    }
}

/// A line of text under the bars.
fn text_line(multi: &MultiProgress) -> ProgressBar {
    let line = multi.add(ProgressBar::new(0));
    if let Ok(style) = ProgressStyle::with_template("{msg}") {
        line.set_style(style);
    }
    line
}

#[cfg(test)]
mod tests;
