//! Tasks: one replica of a service on one node. States only move forward (swarmkit's task
//! model); `TaskState` is ordered so that a stale report can be recognised and dropped.

use serde::{Deserialize, Serialize};

use crate::service::ContainerSpec;
use crate::{Attachment, Millis, short_id};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Task {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    /// The service's name, kept here so a task can be named without the service.
    pub service_name: String,
    /// Replica number (1-based) for replicated services; 0 for global ones.
    pub slot: u64,
    #[serde(rename = "NodeID", default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    pub desired_state: TaskState,
    pub status: TaskStatus,
    /// The service version this task was made from.
    pub spec_version: u64,
    pub spec: ContainerSpec,
    /// Its address on each of its networks, set by the allocator (New -> Pending).
    #[serde(rename = "NetworksAttachments", default)]
    pub networks: Vec<Attachment>,
    /// The service's published ports when the task was made: the agent serves `mode=host`
    /// and `traffic=local` ports from its own tasks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<crate::PortConfig>,
    /// How many times its slot was restarted under this spec before it, after tasks that
    /// ended on their own (`--restart-max-attempts`). Kept in the task, not counted from the
    /// slot's history, which is trimmed to a few tasks.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restarts: u64,
    /// When its process started (the first Running report's time): a rollout counts a task
    /// that ends within `--update-monitor` of it as a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Millis>,
    /// When it first ran and was ready (the report's time): a rollout's `--update-monitor`
    /// and `--update-delay` count from it, as a task serves only from then on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_at: Option<Millis>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskStatus {
    pub timestamp: Millis,
    pub state: TaskState,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub err: String,
    #[serde(rename = "PID", default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// A running task's health check, if it has one (`service ps`'s `(healthy)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::health::Health>,
    /// Whether a running task may take traffic (DNS, VIPs, the mesh): the agent says so
    /// (`health::Readiness`). True unless it says otherwise, so that tasks recorded before
    /// readiness existed read as they ran.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub ready: bool,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl TaskStatus {
    pub fn new(state: TaskState, at: Millis, message: impl Into<String>) -> TaskStatus {
        TaskStatus {
            timestamp: at,
            state,
            message: message.into(),
            err: String::new(),
            pid: None,
            exit_code: None,
            health: None,
            ready: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    New,
    Pending,
    Assigned,
    Accepted,
    Preparing,
    Starting,
    Running,
    Complete,
    Shutdown,
    Failed,
    Rejected,
    Remove,
    Orphaned,
}

impl TaskState {
    /// The process is gone (or never came) and will not come back.
    pub fn is_terminal(self) -> bool {
        self >= TaskState::Complete
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = format!("{self:?}");
        f.write_str(&s)
    }
}

impl Task {
    /// `vote.1.<id>` or, for global services, `vote.<node id>.<id>`, as docker names tasks.
    pub fn name(&self) -> String {
        format!("{}.{}", self.slot_name(), self.id)
    }

    /// `vote.1` (what `service ps` prints in its NAME column).
    pub fn slot_name(&self) -> String {
        if self.slot > 0 {
            format!("{}.{}", self.service_name, self.slot)
        } else {
            format!(
                "{}.{}",
                self.service_name,
                self.node_id.as_deref().unwrap_or("")
            )
        }
    }

    /// The task's hostname inside its sandbox: its short id.
    pub fn hostname(&self) -> &str {
        short_id(&self.id)
    }

    /// It runs and takes traffic (its agent found it ready: `health::Readiness`): what a
    /// start-first update waits for before it stops the task this one replaces.
    pub fn is_ready(&self) -> bool {
        self.status.state == TaskState::Running && self.status.ready
    }

    /// Desired to run and not yet finished.
    pub fn is_live(&self) -> bool {
        self.desired_state <= TaskState::Running && !self.status.state.is_terminal()
    }
}

/// What changed in a node's task list since the list or change its session sent last:
/// tasks added or changed (whole), and the ids of tasks it no longer has. A session sends
/// the whole list once, then these, so a change of one task costs its own encoding, not
/// the node's hundreds of tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskDelta {
    pub upsert: Vec<Task>,
    pub remove: Vec<String>,
}

impl TaskDelta {
    pub fn is_empty(&self) -> bool {
        self.upsert.is_empty() && self.remove.is_empty()
    }
}
