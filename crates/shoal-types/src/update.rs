//! Update and rollback policies (`--update-*`, `--rollback-*`) and where a service's rollout
//! stands (`UpdateStatus`), with docker's field names and values.
//!
//! A rollout starts when a `service update` changes what tasks run (`ServiceSpec::
//! tasks_differ`, or `--force`), or resumes a paused one; the orchestrator moves it on and
//! records `paused`, `completed` and the rollback states with [`crate::Command::SetUpdateStatus`]
//! and [`crate::Command::RollbackService`].

use serde::{Deserialize, Serialize};

use crate::Millis;
use crate::node::display_lowercase;
use crate::time::MAX_DURATION_MS;

/// How a rollout (or a rollback, with `RollbackConfig`) replaces tasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateConfig {
    /// Slots replaced at once; 0: all at once.
    pub parallelism: u64,
    /// Wait after a slot's new task runs before that slot's turn passes to the next one.
    #[serde(default)]
    pub delay_ms: u64,
    #[serde(default)]
    pub failure_action: FailureAction,
    /// How long after it starts a new task that ends counts as a failure.
    #[serde(default = "default_monitor_ms")]
    pub monitor_ms: u64,
    /// Failures tolerated, as a fraction of the slots (0 to 1).
    #[serde(default)]
    pub max_failure_ratio: FailureRatio,
    #[serde(default)]
    pub order: UpdateOrder,
}

/// docker's `--update-monitor` default.
pub const DEFAULT_MONITOR_MS: u64 = 5_000;

fn default_monitor_ms() -> u64 {
    DEFAULT_MONITOR_MS
}

impl Default for UpdateConfig {
    /// docker's defaults but the order: start-first, so a slot serves throughout (see README).
    fn default() -> Self {
        UpdateConfig {
            parallelism: 1,
            delay_ms: 0,
            failure_action: FailureAction::Pause,
            monitor_ms: DEFAULT_MONITOR_MS,
            max_failure_ratio: FailureRatio(0.0),
            order: UpdateOrder::StartFirst,
        }
    }
}

impl UpdateConfig {
    /// `what` is `update` or `rollback`, for the flag named in the error.
    pub fn validate(&self, what: &str) -> Result<(), String> {
        let ratio = self.max_failure_ratio.0;
        if !(0.0..=1.0).contains(&ratio) {
            return Err(format!(
                "invalid --{what}-max-failure-ratio {ratio}: use a number between 0 and 1"
            ));
        }
        for (flag, ms) in [("delay", self.delay_ms), ("monitor", self.monitor_ms)] {
            if ms > MAX_DURATION_MS {
                return Err(format!(
                    "invalid --{what}-{flag}: longer than a year; use at most 365d"
                ));
            }
        }
        Ok(())
    }
}

/// What a rollout does when more tasks fail than `MaxFailureRatio` allows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureAction {
    #[default]
    Pause,
    Continue,
    Rollback,
}
display_lowercase!(FailureAction { Pause => "pause", Continue => "continue", Rollback => "rollback" });

/// `stop-first`: a slot's old task stops before its new one starts; `start-first`: the new
/// one runs before the old one stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    StopFirst,
    #[default]
    StartFirst,
}

display_lowercase!(UpdateOrder { StopFirst => "stop-first", StartFirst => "start-first" });

/// A fraction from 0 to 1 (docker's float). Equality is the number's, so a spec stays `Eq`
/// (validation keeps NaN out).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FailureRatio(pub f32);

impl Eq for FailureRatio {}

/// docker's `UpdateStatus.State`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateState {
    Updating,
    Paused,
    Completed,
    RollbackStarted,
    RollbackPaused,
    RollbackCompleted,
}

impl UpdateState {
    /// The orchestrator is moving tasks for it.
    pub fn in_progress(self) -> bool {
        matches!(self, UpdateState::Updating | UpdateState::RollbackStarted)
    }

    pub fn paused(self) -> bool {
        matches!(self, UpdateState::Paused | UpdateState::RollbackPaused)
    }

    /// A rollback, started by hand or by a failure, is what moves (or moved) tasks.
    pub fn rolling_back(self) -> bool {
        matches!(
            self,
            UpdateState::RollbackStarted
                | UpdateState::RollbackPaused
                | UpdateState::RollbackCompleted
        )
    }
}

impl std::fmt::Display for UpdateState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UpdateState::Updating => "updating",
            UpdateState::Paused => "paused",
            UpdateState::Completed => "completed",
            UpdateState::RollbackStarted => "rollback_started",
            UpdateState::RollbackPaused => "rollback_paused",
            UpdateState::RollbackCompleted => "rollback_completed",
        })
    }
}

/// Where a service's last rollout stands (`service inspect`'s `UpdateStatus`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateStatus {
    pub state: UpdateState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Millis>,
    #[serde(default)]
    pub message: String,
    /// The service version the rollout began at: tasks made from then on are its own (its
    /// failures count), and a status change the orchestrator decided for an older rollout is
    /// dropped. Not docker's.
    #[serde(default)]
    pub version: u64,
}

pub const MSG_UPDATING: &str = "update in progress";
pub const MSG_COMPLETED: &str = "update completed";
pub const MSG_ROLLBACK_COMPLETED: &str = "rollback completed";
pub const MSG_MANUAL_ROLLBACK: &str = "manually requested rollback";

/// swarmkit's messages when failures pass `MaxFailureRatio`; `task` is the last one that
/// failed.
pub fn paused_message(task: &str) -> String {
    format!("update paused due to failure or early termination of task {task}")
}

pub fn rollback_paused_message(task: &str) -> String {
    format!("rollback paused due to failure or early termination of task {task}")
}

pub fn rolled_back_message(task: &str) -> String {
    format!("update rolled back due to failure or early termination of task {task}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_read_and_write_dockers_values() {
        let c = UpdateConfig {
            parallelism: 2,
            failure_action: FailureAction::Rollback,
            max_failure_ratio: FailureRatio(0.25),
            order: UpdateOrder::StopFirst,
            ..UpdateConfig::default()
        };
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(
            json,
            r#"{"Parallelism":2,"DelayMs":0,"FailureAction":"rollback","MonitorMs":5000,"MaxFailureRatio":0.25,"Order":"stop-first"}"#
        );
        assert_eq!(serde_json::from_str::<UpdateConfig>(&json).unwrap(), c);
        let s = UpdateStatus {
            state: UpdateState::RollbackStarted,
            started_at: Some(Millis(5)),
            completed_at: None,
            message: MSG_MANUAL_ROLLBACK.into(),
            version: 3,
        };
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains(r#""State":"rollback_started""#), "{json}");
        assert_eq!(UpdateState::RollbackPaused.to_string(), "rollback_paused");
    }

    #[test]
    fn ratios_and_durations_are_checked() {
        let mut c = UpdateConfig::default();
        assert!(c.validate("update").is_ok());
        c.max_failure_ratio = FailureRatio(1.5);
        assert_eq!(
            c.validate("rollback").unwrap_err(),
            "invalid --rollback-max-failure-ratio 1.5: use a number between 0 and 1"
        );
        c.max_failure_ratio = FailureRatio(f32::NAN);
        assert!(c.validate("update").is_err());
        assert_eq!(
            "sideways".parse::<UpdateOrder>().unwrap_err(),
            "invalid value \"sideways\": expected one of stop-first, start-first"
        );
    }
}
