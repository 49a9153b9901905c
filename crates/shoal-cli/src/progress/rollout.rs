//! What `service update` and `service rollback` wait for besides their tasks: the rollout
//! the command began (`UpdateStatus`), which the manager declares complete only once the
//! monitor period has passed, and which may pause or roll back. Pure, tested.

use shoal_api::{ServiceView, TaskView};
use shoal_types::{Millis, TaskState, UpdateState, UpdateStatus};

/// The rollout a command follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    /// None: `service create`, `service scale`.
    Tasks,
    /// `service update`: the rollout begun at service version `since`, if it began one.
    Update { since: u64 },
    /// `service rollback` / `service update --rollback`.
    Rollback { since: u64 },
}

impl Follow {
    /// The status of the rollout this command began, if any.
    pub fn status<'a>(&self, status: Option<&'a UpdateStatus>) -> Option<&'a UpdateStatus> {
        let since = match self {
            Follow::Tasks => return None,
            Follow::Update { since } | Follow::Rollback { since } => *since,
        };
        status.filter(|s| s.version >= since)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Wait,
    Done,
    Fail(String),
}

/// Whether the command is done, given its rollout's status, whether the tasks have
/// converged, and the message a rollback started with (docker's texts).
pub fn verdict(
    follow: Follow,
    status: Option<&UpdateStatus>,
    converged: bool,
    rollback_reason: Option<&str>,
) -> Verdict {
    let Some(s) = follow.status(status) else {
        return if converged {
            Verdict::Done
        } else {
            Verdict::Wait
        };
    };
    match s.state {
        UpdateState::Updating | UpdateState::RollbackStarted => Verdict::Wait,
        UpdateState::Paused => Verdict::Fail(format!("service update paused: {}", s.message)),
        UpdateState::RollbackPaused => {
            Verdict::Fail(format!("service rollback paused: {}", s.message))
        }
        _ if !converged => Verdict::Wait,
        UpdateState::Completed => Verdict::Done,
        UpdateState::RollbackCompleted => match follow {
            // The update did not happen: a script must know.
            Follow::Update { .. } => Verdict::Fail(format!(
                "service rolled back: {}",
                rollback_reason.unwrap_or(&s.message)
            )),
            _ => Verdict::Done,
        },
    }
}

/// The `rollback: ...` line to print once a rollback has started.
pub fn rollback_line(follow: Follow, status: Option<&UpdateStatus>) -> Option<String> {
    follow
        .status(status)
        .filter(|s| s.state == UpdateState::RollbackStarted && !s.message.is_empty())
        .map(|s| format!("rollback: {}", s.message))
}

/// docker's `verify: Waiting N seconds to verify that tasks are stable...`: what is left of
/// the monitor period after the last current task started (at least 1 s: the manager has
/// the last word).
pub fn stable_line(view: &ServiceView, tasks: &[TaskView], now: Millis) -> String {
    let spec = &view.service.spec;
    let rolling_back = view
        .service
        .update_status
        .as_ref()
        .is_some_and(|s| s.state.rolling_back());
    let monitor = if rolling_back {
        spec.rollback_config.monitor_ms
    } else {
        spec.update_config.monitor_ms
    };
    let last = tasks
        .iter()
        .filter(|t| {
            t.task.desired_state == TaskState::Running
                && t.task.spec == spec.task_template.container_spec
        })
        .filter_map(|t| t.task.ready_at.or(t.task.started_at))
        .max()
        .unwrap_or(now);
    let left = (last.0 + monitor).saturating_sub(now.0);
    format!(
        "verify: Waiting {} seconds to verify that tasks are stable...",
        (left / 1000 + 1).max(1)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_types::Millis;

    fn status(state: UpdateState, message: &str, version: u64) -> UpdateStatus {
        UpdateStatus {
            state,
            started_at: Some(Millis(1)),
            completed_at: None,
            message: message.into(),
            version,
        }
    }

    #[test]
    fn an_update_waits_for_completed_and_fails_when_paused_or_rolled_back() {
        let f = Follow::Update { since: 4 };
        let updating = status(UpdateState::Updating, "update in progress", 4);
        assert_eq!(verdict(f, Some(&updating), true, None), Verdict::Wait);
        let done = status(UpdateState::Completed, "update completed", 4);
        assert_eq!(verdict(f, Some(&done), false, None), Verdict::Wait);
        assert_eq!(verdict(f, Some(&done), true, None), Verdict::Done);
        let paused = status(
            UpdateState::Paused,
            "update paused due to failure or early termination of task abc",
            4,
        );
        assert_eq!(
            verdict(f, Some(&paused), false, None),
            Verdict::Fail(
                "service update paused: update paused due to failure or early termination of task abc"
                    .into()
            )
        );
        let why = "update rolled back due to failure or early termination of task abc";
        let started = status(UpdateState::RollbackStarted, why, 5);
        assert_eq!(
            rollback_line(f, Some(&started)),
            Some(format!("rollback: {why}"))
        );
        assert_eq!(verdict(f, Some(&started), true, None), Verdict::Wait);
        let rolled = status(UpdateState::RollbackCompleted, "rollback completed", 5);
        assert_eq!(verdict(f, Some(&rolled), false, Some(why)), Verdict::Wait);
        assert_eq!(
            verdict(f, Some(&rolled), true, Some(why)),
            Verdict::Fail(format!("service rolled back: {why}"))
        );
    }

    #[test]
    fn the_wait_left_is_the_monitor_after_the_last_start() {
        let mut view = ServiceView {
            service: shoal_types::fixtures::service("s1", shoal_types::fixtures::spec("web", 1)),
            status: Default::default(),
        };
        view.service.spec.update_config.monitor_ms = 5_000;
        let mut task = shoal_types::fixtures::task("t1", "s1", "web");
        task.started_at = Some(Millis(10_000));
        let tasks = [TaskView {
            task,
            node_hostname: "node1".into(),
        }];
        assert_eq!(
            stable_line(&view, &tasks, Millis(12_500)),
            "verify: Waiting 3 seconds to verify that tasks are stable..."
        );
        assert_eq!(
            stable_line(&view, &tasks, Millis(20_000)),
            "verify: Waiting 1 seconds to verify that tasks are stable..."
        );
    }

    #[test]
    fn an_older_rollouts_status_is_not_this_commands() {
        let f = Follow::Update { since: 7 };
        let old = status(UpdateState::Paused, "update paused ...", 6);
        assert_eq!(verdict(f, Some(&old), true, None), Verdict::Done);
        assert_eq!(verdict(f, Some(&old), false, None), Verdict::Wait);
        assert_eq!(
            verdict(Follow::Tasks, Some(&old), true, None),
            Verdict::Done
        );
    }

    #[test]
    fn a_rollback_is_done_when_completed_and_fails_when_paused() {
        let f = Follow::Rollback { since: 3 };
        let started = status(
            UpdateState::RollbackStarted,
            "manually requested rollback",
            3,
        );
        assert_eq!(
            rollback_line(f, Some(&started)).as_deref(),
            Some("rollback: manually requested rollback")
        );
        let done = status(UpdateState::RollbackCompleted, "rollback completed", 3);
        assert_eq!(verdict(f, Some(&done), true, None), Verdict::Done);
        let paused = status(UpdateState::RollbackPaused, "rollback paused due to x", 3);
        assert_eq!(
            verdict(f, Some(&paused), true, None),
            Verdict::Fail("service rollback paused: rollback paused due to x".into())
        );
    }
}
