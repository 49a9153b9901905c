//! `shoal ca --rotate`: moving a running cluster to a new root CA without downtime, as
//! Swarm's cross-signed transition (shoal-pki's `Trust` has the certificate side).
//!
//! 1. `start` (the API, on a manager): the new root R2 (made here, or the one given), R2
//!    cross-signed by the current root R1, R2's key sealed with the managers' key, proposed
//!    as `StartCaRotation`.
//! 2. Every manager's `run` sees it in its state and trusts both roots (`NodeCerts::
//!    follow_state`); the leader's sessions tell the workers (`Assignments.ca`,
//!    `NodeCerts::follow_session`). A node whose certificate is not from R2 renews at once
//!    (`renewal::run`); the manager that issues it from R2 records the node
//!    (`CaRotationRenewed`) before answering.
//! 3. When every node that is not Down has renewed, the leader's `run` proposes
//!    `FinishCaRotation` with new join tokens pinning R2; every node then trusts R2 alone
//!    and managers keep R2's key as `root-ca.key`.
//!
//! Connections made before a change keep the configuration they were made with, so no
//! session drops; a Down node keeps its certificate from R1, refused once the rotation ends.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use shoal_api::{CaRotateRequest, CaRotationStatus, ClusterCa};
use shoal_pki::{JoinToken, RootCa, Trust, Validity};
use shoal_types::Command;
use shoal_types::state::{CaRotation, RootCaRecord};
use tracing::{info, warn};

use crate::certs::NodeCerts;
use crate::daemon::Active;
use crate::errors::{DaemonError, internal, not_manager};
use crate::manager::Manager;

/// What `shoal ca` shows: the root (on a manager, the one its state records), and the
/// rotation in progress.
pub fn ca_view(active: &Active) -> Result<ClusterCa, DaemonError> {
    let mut ca = active.certs.ca();
    let mut rotation = None;
    if let Some(m) = &active.manager {
        let state = m.state();
        if let Some(r) = state.cluster.as_ref().and_then(|c| c.root_ca.as_ref())
            && let Ok(root) = shoal_pki::ClusterCa::from_pem(
                r.cert.as_bytes(),
                "the state's root",
                SystemTime::now(),
            )
        {
            ca = root;
        }
        if let Some((r, p)) = state.ca_rotation() {
            let digest = shoal_pki::ClusterCa::from_pem(
                r.root.cert.as_bytes(),
                "the new root",
                SystemTime::now(),
            )
            .map(|c| c.digest().to_string())
            .map_err(|e| internal("the rotation's new root", e))?;
            rotation = Some(CaRotationStatus {
                id: r.id.clone(),
                digest,
                renewed: p.renewed,
                total: p.total,
                waiting: p
                    .waiting
                    .iter()
                    .map(|id| {
                        state
                            .nodes
                            .get(id)
                            .map(|n| n.hostname().to_string())
                            .unwrap_or_else(|| id.clone())
                    })
                    .collect(),
            });
        }
    }
    Ok(ClusterCa {
        certificate: ca.pem(),
        digest: ca.digest().to_string(),
        not_after: humantime::format_rfc3339_seconds(ca.not_after()).to_string(),
        rotation,
    })
}

/// Starts a rotation. A second one while one runs is refused (the state decides, so two
/// racing starts cannot both win); Swarm would start over from the newer root instead.
pub async fn start(active: &Active, req: CaRotateRequest) -> Result<(), DaemonError> {
    let m = active.manager.as_ref().ok_or_else(not_manager)?;
    let state = m.state();
    if let Some((_, p)) = state.ca_rotation() {
        return Err(DaemonError::Refused(
            shoal_types::ApplyError::CaRotationInProgress {
                renewed: p.renewed,
                total: p.total,
            },
        ));
    }
    let current = active.certs.root().ok_or_else(|| {
        internal(
            "failed to rotate the root CA",
            "this manager has no root CA key",
        )
    })?;
    let now = SystemTime::now();
    let next = match (req.ca_cert, req.ca_key) {
        (Some(cert), Some(key)) => RootCa::import(
            cert.as_bytes(),
            "--ca-cert",
            key.as_bytes(),
            "--ca-key",
            now,
        )
        .map_err(|e| DaemonError::Invalid(e.to_string()))?,
        (None, None) => RootCa::generate(
            &active.identity.cluster_id,
            Validity::starting(now, shoal_pki::ROOT_CA_VALIDITY),
        )
        .map_err(|e| internal("failed to make the new root CA", e))?,
        _ => {
            return Err(DaemonError::Invalid(
                "--ca-cert and --ca-key go together: give both (the new root CA's certificate and its key) or neither".into(),
            ));
        }
    };
    if next.cert() == current.cert() {
        return Err(DaemonError::Invalid(
            "--ca-cert is the cluster's current root CA; give a new one (or neither flag for one made by the manager)".into(),
        ));
    }
    let cross = next
        .cross_signed_by(&current)
        .map_err(|e| DaemonError::Invalid(e.to_string()))?;
    // The pair is checked here, before any node is told of it.
    Trust::rotating(current.cert().clone(), next.cert().clone(), cross.clone())
        .map_err(|e| internal("the cross-signed root does not verify", e))?;
    let key_sealed = m
        .logins
        .key()
        .and_then(|k| k.seal(next.key_pem().as_bytes()))
        .map_err(|e| internal("failed to seal the new root CA's key", e))?;
    let rotation = CaRotation {
        id: shoal_types::ids::new_id(),
        started_at: m.now().wall,
        root: RootCaRecord {
            cert: next.cert().pem(),
            key_sealed,
        },
        cross_signed: shoal_pki::cert_to_pem(&cross),
        renewed: Default::default(),
    };
    let id = rotation.id.clone();
    m.propose(Command::StartCaRotation { rotation }).await?;
    info!(rotation = %id, from = %current.cert().digest(), to = %next.cert().digest(), "root CA rotation started");
    Ok(())
}

/// On every manager: follows the state's root and rotation (keys and trust), and on the
/// leader ends a rotation once every node that is not Down has renewed.
pub async fn run(manager: Arc<Manager>, certs: Arc<NodeCerts>) {
    let mut states = manager.watch_state();
    let mut finished: Option<String> = None;
    loop {
        let state = states.borrow_and_update().clone();
        if let Some(info) = &state.cluster
            && (info.root_ca.is_some() || info.ca_rotation.is_some())
        {
            match manager.logins.key() {
                Ok(key) => {
                    if let Err(e) = certs.follow_state(info, &key) {
                        warn!("cannot follow the cluster's root CA: {e}");
                    }
                }
                Err(e) => warn!("cannot read the managers' key to open the root CA's: {e}"),
            }
        }
        if let Some((r, p)) = state.ca_rotation()
            && p.done()
            && manager.is_leader()
            && finished.as_deref() != Some(r.id.as_str())
        {
            match finish(&manager, r).await {
                Ok(()) => finished = Some(r.id.clone()),
                Err(e) => {
                    warn!(rotation = %r.id, "failed to end the root CA rotation: {e}; retrying")
                }
            }
        }
        tokio::select! {
            _ = states.changed() => {}
            // Leadership may move without a state change.
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

async fn finish(manager: &Manager, r: &CaRotation) -> Result<(), String> {
    let root =
        shoal_pki::ClusterCa::from_pem(r.root.cert.as_bytes(), "the new root", SystemTime::now())
            .map_err(|e| e.to_string())?;
    let token = || JoinToken::random(root.digest()).to_string();
    manager
        .propose(Command::FinishCaRotation {
            rotation: r.id.clone(),
            worker_token: token(),
            manager_token: token(),
        })
        .await
        .map_err(|e| e.to_string())?;
    info!(rotation = %r.id, root = %root.digest(), "root CA rotation finished: every node has a certificate from the new root; the old root is no longer trusted and the join tokens changed");
    Ok(())
}
