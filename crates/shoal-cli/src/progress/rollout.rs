//! What `service update` and `service rollback` wait for besides their tasks: the rollout
//! the command began (`UpdateStatus`), which the manager declares complete only once the
//! monitor period has passed, and which may pause or roll back. Pure, tested.

use shoal_types::{UpdateState, UpdateStatus};

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
