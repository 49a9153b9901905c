//! Applying rollout commands: `UpdateService` (which starts, resumes or restarts a rollout
//! and keeps the previous spec), `RollbackService` and the orchestrator's `SetUpdateStatus`.

use super::{ApplyError, ClusterState};
use crate::update::{MSG_MANUAL_ROLLBACK, MSG_UPDATING, UpdateState};
use crate::{Millis, ServiceSpec, UpdateStatus};

impl ClusterState {
    pub(super) fn update_service(
        &mut self,
        id: &str,
        spec: ServiceSpec,
        at: Millis,
        expected_version: Option<u64>,
    ) -> Result<(), ApplyError> {
        spec.validate().map_err(ApplyError::Invalid)?;
        self.check_networks(&spec)?;
        self.check_ports(&spec, Some(id))?;
        let svc = self
            .services
            .get_mut(id)
            .ok_or_else(|| ApplyError::NoSuchService(id.to_string()))?;
        if let Some(expected) = expected_version
            && expected != svc.version
        {
            return Err(ApplyError::OutOfSequence {
                service: svc.spec.name.clone(),
                version: svc.version,
                expected,
            });
        }
        if spec.name != svc.spec.name {
            return Err(ApplyError::Invalid("a service can't be renamed".into()));
        }
        // A change of what tasks run starts a rollout; any update resumes a paused one and
        // restarts one in progress (Swarm resets the status at every update).
        let rollout = svc.spec.tasks_differ(&spec)
            || svc
                .update_status
                .as_ref()
                .is_some_and(|s| s.state.paused() || s.state.in_progress());
        let old = std::mem::replace(&mut svc.spec, spec);
        svc.version += 1;
        svc.updated_at = at;
        if old.task_template.force_update != svc.spec.task_template.force_update {
            svc.force_version = svc.version;
        }
        svc.previous_spec = Some(Box::new(old));
        svc.update_status = rollout.then(|| UpdateStatus {
            state: UpdateState::Updating,
            started_at: Some(at),
            completed_at: None,
            message: MSG_UPDATING.into(),
            version: svc.version,
        });
        Ok(())
    }

    /// Dropped unless the service's rollout is still the one `status.version` names.
    pub(super) fn set_update_status(&mut self, id: &str, status: UpdateStatus) {
        if let Some(svc) = self.services.get_mut(id)
            && svc
                .update_status
                .as_ref()
                .is_some_and(|s| s.version == status.version)
        {
            svc.update_status = Some(status);
        }
    }

    pub(super) fn rollback_service(
        &mut self,
        id: &str,
        rollout: Option<u64>,
        message: String,
        at: Millis,
    ) -> Result<(), ApplyError> {
        let svc = self
            .services
            .get(id)
            .ok_or_else(|| ApplyError::NoSuchService(id.to_string()))?;
        let status = svc.update_status.as_ref();
        if let Some(v) = rollout
            && !status.is_some_and(|s| s.version == v && s.state == UpdateState::Updating)
        {
            // Decided for a rollout that is over or replaced: nothing to do.
            return Ok(());
        }
        let Some(previous) = svc.previous_spec.as_deref().cloned() else {
            return Err(ApplyError::Invalid(format!(
                "service {} does not have a previous spec",
                svc.spec.name
            )));
        };
        self.check_networks(&previous)?;
        self.check_ports(&previous, Some(id))?;
        let started_at = match rollout {
            Some(_) => status.and_then(|s| s.started_at),
            None => Some(at),
        };
        let svc = self
            .services
            .get_mut(id)
            .ok_or_else(|| ApplyError::NoSuchService(id.to_string()))?;
        let current = std::mem::replace(&mut svc.spec, previous);
        svc.version += 1;
        svc.updated_at = at;
        if current.task_template.force_update != svc.spec.task_template.force_update {
            svc.force_version = svc.version;
        }
        // As Swarm: a rollback by hand can be undone by another; one after failures cannot.
        svc.previous_spec = rollout.is_none().then(|| Box::new(current));
        svc.update_status = Some(UpdateStatus {
            state: UpdateState::RollbackStarted,
            started_at,
            completed_at: None,
            message: if rollout.is_none() && message.is_empty() {
                MSG_MANUAL_ROLLBACK.into()
            } else {
                message
            },
            version: svc.version,
        });
        Ok(())
    }
}
