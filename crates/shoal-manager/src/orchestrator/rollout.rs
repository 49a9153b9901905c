//! The rollout state machine: how tasks of an older spec give way to the service's current
//! one (`--update-*`, or `--rollback-*` while rolling back), decided again at every pass
//! from the state and `now` alone, so that a new leader carries on where the last one was.
//!
//! A slot is one replica (or one node of a global service). It is *in flight* while its new
//! task is not running and ready, while an old task of it is still stopping, while it has no
//! task at all after its old one stopped (stop-first), or for `Delay` after its new task
//! became ready.
//! At most `Parallelism` slots are in flight (0: all); slots start in order. Start-first:
//! the new task is made beside the old one, which is told to stop once the new one runs.
//! Stop-first: the old task is told to stop; the new one is made once it has.
//!
//! A failure is a task of this rollout that ends on its own (fails, is rejected, exits)
//! before it was ready or within `Monitor` of becoming ready. When failures exceed
//! `MaxFailureRatio` of the slots the rollout changes (as swarmkit's updater divides by its
//! dirty slots), `FailureAction` applies: `pause` (no slot starts until the next `service
//! update`), `rollback` (back to the previous spec, with its `RollbackConfig`; a rollback
//! that fails so pauses instead, as Swarm never rolls a rollback back), `continue`. A slot
//! whose new task failed before it ran keeps its old task (start-first) and retries the new
//! one per the restart policy, unless `continue`, where the slot gives up its old task.
//! The rollout is complete when no old task is left, no slot is in flight, and `Monitor` has
//! passed since the last new task became ready.
//!
//! A task on a drained node (or one its constraints no longer allow) moves as a start-first
//! slot does, outside the rollout's parallelism: its replacement is made at once and it keeps
//! serving until that one is ready, or cannot be (placed nowhere, or failed).

use shoal_types::update::{
    MSG_COMPLETED, MSG_ROLLBACK_COMPLETED, paused_message, rollback_paused_message,
    rolled_back_message,
};
use shoal_types::{
    ClusterState, Command, FailureAction, Millis, Service, Task, TaskState, UpdateConfig,
    UpdateOrder, UpdateState, UpdateStatus,
};

use super::{
    Changes, DRAINED, UPDATED, ended_on_its_own, gone, must_replace, outdated, restart_at,
    restarts_after,
};

/// One slot's tasks, sorted out.
pub(super) struct Slot<'a> {
    /// Every task of the slot, history included.
    all: &'a [&'a Task],
    /// The task of the current spec meant to run (the newest, if there were several).
    current: Option<&'a Task>,
    /// Tasks of an older spec still meant to run.
    old_live: Vec<&'a Task>,
    /// Tasks of an older spec told to stop that have not stopped yet.
    old_stopping: bool,
    /// Tasks on a node that no longer keeps them (drained, or constraints): they serve until
    /// their replacement is ready.
    drained: Vec<&'a Task>,
    /// The newest task of the slot.
    newest: Option<&'a Task>,
}

impl<'a> Slot<'a> {
    /// Sorts a slot's tasks out; tasks that must go for another reason than the spec
    /// (ended, node down or drained, a second current task) are told to stop here.
    pub(super) fn classify(
        state: &ClusterState,
        service: &Service,
        all: &'a [&'a Task],
        out: &mut Changes,
    ) -> Slot<'a> {
        let mut current: Vec<&Task> = Vec::new();
        let mut old_live = Vec::new();
        let mut drained = Vec::new();
        for t in all.iter().filter(|t| t.desired_state <= TaskState::Running) {
            match must_replace(state, service, t) {
                // An outdated task keeps serving until the rollout replaces it.
                Some(why) if why == UPDATED => old_live.push(*t),
                Some(why) if why == DRAINED => drained.push(*t),
                Some(_) => {
                    out.shutdown.insert(t.id.clone());
                }
                None => current.push(t),
            }
        }
        // Two current tasks in one slot should not happen; keep the newest.
        current.sort_by_key(|t| t.created_at);
        while current.len() > 1 {
            out.shutdown.insert(current.remove(0).id.clone());
        }
        let old_stopping = all.iter().any(|t| {
            t.desired_state > TaskState::Running && outdated(service, t) && !gone(state, t)
        });
        Slot {
            all,
            current: current.pop(),
            old_live,
            old_stopping,
            drained,
            newest: all.iter().max_by_key(|t| t.created_at).copied(),
        }
    }

    fn has_old(&self) -> bool {
        !self.old_live.is_empty() || self.old_stopping
    }

    /// Whether the slot's drained tasks may stop: their replacement is ready, or cannot be
    /// (the scheduler found no node for it and said why, or it ended on its own). The node
    /// is being emptied: nothing else keeps them.
    pub(super) fn drained_may_stop(&self) -> bool {
        if self.drained.is_empty() {
            return false;
        }
        match self.current {
            Some(new) => new.is_ready() || (new.node_id.is_none() && !new.status.err.is_empty()),
            None => self
                .newest
                .is_some_and(|t| ended_on_its_own(t) && !self.drained.iter().any(|d| d.id == t.id)),
        }
    }
}

/// One service's rollout during one pass.
pub(super) struct Rollout<'s> {
    config: &'s UpdateConfig,
    status: Option<&'s UpdateStatus>,
    /// The rollout's first version: tasks made from it on are its own.
    version: u64,
    now: Millis,
    /// No slot starts: the rollout is paused, or failures just stopped it.
    stopped: bool,
    /// Slots that may still start in this pass.
    budget: usize,
    /// Slots in flight at the start of the pass.
    in_flight: usize,
    /// Whether any slot still has a task of an older spec.
    old_left: bool,
    /// Something was started or stopped in this pass.
    moved: bool,
    /// When the last of the rollout's tasks started.
    last_start: Option<Millis>,
}

impl<'s> Rollout<'s> {
    /// Looks at every slot: counts the failures (applying the failure action) and the slots
    /// in flight.
    pub(super) fn begin<'a>(
        service: &'s Service,
        slots: impl Iterator<Item = &'a Slot<'a>> + Clone,
        now: Millis,
        out: &mut Changes,
    ) -> Rollout<'s> {
        let status = service.update_status.as_ref();
        let config = match status {
            Some(s) if s.state.rolling_back() => &service.spec.rollback_config,
            _ => &service.spec.update_config,
        };
        let mut r = Rollout {
            config,
            status,
            version: status.map_or(0, |s| s.version),
            now,
            stopped: status.is_some_and(|s| s.state.paused()),
            budget: 0,
            in_flight: 0,
            old_left: false,
            moved: false,
            last_start: None,
        };
        let mut changed = 0usize;
        let mut failures = 0usize;
        let mut last_failed: Option<&Task> = None;
        for slot in slots.clone() {
            if r.changes(service, slot) {
                changed += 1;
            }
            r.old_left |= slot.has_old();
            if r.in_flight(service, slot, out) {
                r.in_flight += 1;
            }
            let owned: Vec<&Task> = slot
                .all
                .iter()
                .copied()
                .filter(|t| r.owns(service, t))
                .collect();
            for t in owned {
                if let Some(at) = t.ready_at {
                    r.last_start = r.last_start.max(Some(at));
                }
                if r.failed(t) {
                    failures += 1;
                    let later =
                        |l: &Task| (t.status.timestamp, &t.id) > (l.status.timestamp, &l.id);
                    if last_failed.is_none_or(later) {
                        last_failed = Some(t);
                    }
                }
            }
        }
        if let (Some(s), Some(task)) = (status.filter(|s| s.state.in_progress()), last_failed)
            && failures as f32 / changed.max(1) as f32 > config.max_failure_ratio.0
        {
            r.fail(service, s, &task.id, out);
        }
        r.budget = match config.parallelism {
            0 => usize::MAX,
            p => usize::try_from(p)
                .unwrap_or(usize::MAX)
                .saturating_sub(r.in_flight),
        };
        r
    }

    /// A task made by this rollout (of the current spec, from its first version on).
    fn owns(&self, service: &Service, t: &Task) -> bool {
        t.spec_version >= self.version && !outdated(service, t)
    }

    /// A task of this rollout that ended on its own before it was ready or within the
    /// monitor of becoming ready.
    fn failed(&self, t: &Task) -> bool {
        ended_on_its_own(t)
            && t.ready_at
                .is_none_or(|s| t.status.timestamp.0 <= s.0.saturating_add(self.config.monitor_ms))
    }

    /// Whether the rollout changes the slot (swarmkit's dirty slot): it has a task of an
    /// older spec still meant to run, or stopped since the rollout started, or a task of the
    /// rollout failed in it. A slot made by a scale during the rollout, or whose task already
    /// had the spec rolled out to, is not counted.
    fn changes(&self, service: &Service, slot: &Slot) -> bool {
        let since = self.status.and_then(|s| s.started_at).unwrap_or(Millis(0));
        slot.all.iter().any(|t| {
            (outdated(service, t)
                && (t.desired_state <= TaskState::Running || t.status.timestamp >= since))
                || (self.owns(service, t) && self.failed(t))
        })
    }

    fn fail(&mut self, service: &Service, s: &UpdateStatus, task: &str, out: &mut Changes) {
        self.stopped = true;
        let rolling_back = s.state == UpdateState::RollbackStarted;
        let pause = |message: String| Command::SetUpdateStatus {
            id: service.id.clone(),
            status: UpdateStatus {
                state: if rolling_back {
                    UpdateState::RollbackPaused
                } else {
                    UpdateState::Paused
                },
                message,
                ..s.clone()
            },
        };
        let cmd = match self.config.failure_action {
            FailureAction::Continue => {
                self.stopped = false;
                return;
            }
            FailureAction::Pause => pause(paused_message(task)),
            // Swarm never rolls a rollback back: it pauses.
            FailureAction::Rollback if rolling_back => pause(rollback_paused_message(task)),
            FailureAction::Rollback => Command::RollbackService {
                id: service.id.clone(),
                rollout: Some(s.version),
                message: rolled_back_message(task),
                at: self.now,
            },
        };
        out.rollouts.push(cmd);
    }

    /// Whether the slot holds a place of `Parallelism`; records when a delay runs out.
    fn in_flight(&self, service: &Service, slot: &Slot, out: &mut Changes) -> bool {
        if slot.old_stopping || (!slot.old_live.is_empty() && slot.current.is_some()) {
            return true;
        }
        match slot.current {
            Some(t) if self.owns(service, t) => {
                // Not running yet, or running but not ready (its health check has not
                // passed, or its port does not answer yet): the slot is still moving.
                if t.status.state < TaskState::Running
                    || t.status.state == TaskState::Running && !t.status.ready
                {
                    return true;
                }
                let settled = t
                    .ready_at
                    .map(|s| Millis(s.0.saturating_add(self.config.delay_ms)));
                match settled {
                    Some(at) if self.config.delay_ms > 0 && self.now < at => {
                        out.due(service, at);
                        true
                    }
                    _ => false,
                }
            }
            Some(_) => false,
            // Stop-first: the old task has stopped and the new one is about to be made.
            None => slot.old_live.is_empty() && slot.newest.is_some_and(|t| outdated(service, t)),
        }
    }

    /// Decides for one slot; `create` makes its new task with a restart count.
    pub(super) fn step(
        &mut self,
        service: &Service,
        slot: &Slot,
        out: &mut Changes,
        create: &mut dyn FnMut(u64) -> Task,
    ) {
        let stop_old = |out: &mut Changes| {
            out.shutdown
                .extend(slot.old_live.iter().map(|t| t.id.clone()));
        };
        if slot.drained_may_stop() {
            out.shutdown
                .extend(slot.drained.iter().map(|t| t.id.clone()));
            self.moved = true;
        }
        match slot.current {
            Some(new) => {
                // Start first: the old task stops once its successor is ready.
                if new.is_ready() && !slot.old_live.is_empty() {
                    stop_old(out);
                    self.moved = true;
                }
            }
            None if !slot.old_live.is_empty() => {
                let retry = slot
                    .newest
                    .filter(|t| self.owns(service, t) && ended_on_its_own(t));
                if self.stopped {
                    return;
                }
                if let Some(failed) = retry {
                    self.moved = true;
                    if self.config.failure_action == FailureAction::Continue {
                        stop_old(out);
                        return;
                    }
                    match restart_at(service, Some(failed)) {
                        Some(at) if self.now >= at => {
                            out.create(service, || create(restarts_after(service, Some(failed))));
                        }
                        Some(at) => out.due(service, at),
                        None => {}
                    }
                    return;
                }
                if self.budget == 0 {
                    return;
                }
                self.budget -= 1;
                self.moved = true;
                match self.config.order {
                    UpdateOrder::StartFirst => out.create(service, || create(0)),
                    UpdateOrder::StopFirst => stop_old(out),
                }
            }
            None => {
                if slot.old_stopping {
                    // Stop-first: the new task waits until the old one has stopped.
                    return;
                }
                let last = slot.newest;
                match restart_at(service, last) {
                    Some(at) if self.now >= at => {
                        if last.is_some_and(|t| outdated(service, t)) {
                            self.moved = true;
                        }
                        out.create(service, || create(restarts_after(service, last)));
                    }
                    Some(at) => out.due(service, at),
                    None => {}
                }
            }
        }
    }

    /// Marks the rollout complete once nothing is left to do and the monitor has passed.
    pub(super) fn finish(&self, service: &Service, out: &mut Changes) {
        let Some(s) = self.status.filter(|s| s.state.in_progress()) else {
            return;
        };
        if self.stopped || self.moved || self.old_left || self.in_flight > 0 {
            return;
        }
        let at = self.last_start.map_or(self.now, |t| {
            Millis(t.0.saturating_add(self.config.monitor_ms))
        });
        if self.now < at {
            out.due(service, at);
            return;
        }
        let (state, message) = match s.state {
            UpdateState::RollbackStarted => {
                (UpdateState::RollbackCompleted, MSG_ROLLBACK_COMPLETED)
            }
            _ => (UpdateState::Completed, MSG_COMPLETED),
        };
        out.rollouts.push(Command::SetUpdateStatus {
            id: service.id.clone(),
            status: UpdateStatus {
                state,
                completed_at: Some(self.now),
                message: message.into(),
                ..s.clone()
            },
        });
    }
}
