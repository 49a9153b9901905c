//! A node changes role while it runs (`node promote|demote`), and a surviving manager
//! starts a new cluster of its own (`init --force-new-cluster`). The agent, its session and
//! its tasks are not touched: only the manager role (its Raft store, loops and port-2377
//! services, `crate::role`) starts or stops.
//!
//! The cluster decides the role (`Command::SetNodeRole`); the leader's session tells the
//! node (`Assignments.role`) and `follow_role` switches:
//! - promoted: renew the certificate (the manager answering gives a manager's certificate
//!   and the root CA's and registry-login keys, as at a manager's join), open a Raft store,
//!   switch the role's services on, then ask the leader to add this node (`JoinRaft`: a
//!   learner until it has caught up, then a voter);
//! - demoted: wait until the leader's membership loop has taken this node out of the voters
//!   (a demoted leader takes itself out and steps down), switch the role off, forget the
//!   Raft files and the root CA's key, renew the certificate as a worker's.

use std::sync::Arc;
use std::time::Duration;

use crate::errors::DaemonError;
use shoal_pki::Access;
use shoal_store::Store;
use shoal_types::{Command, NodeRole};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::certs::NodeCerts;
use crate::cluster_service::ClusterService;
use crate::daemon::{Active, Daemon, MAX_RPC_MESSAGE, join_raft};
use crate::errors::internal;
use crate::gate::Gate;
use crate::manager::Manager;
use crate::role::{ManagerSlot, Switches};

/// How long a demoted manager waits for the leader to take it out of the voters before it
/// stops anyway (the leader finishes the removal without it).
const LEAVE_VOTERS_WAIT: Duration = Duration::from_secs(30);
/// How long a switch that a peer did not answer waits before it is tried again.
const RETRY: Duration = Duration::from_secs(3);
/// How long a role switch that failed here waits before it is tried again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(10);

/// Plugs manager `m` into port 2377 and starts its loops; returns the loops' handles.
pub fn start_manager_role(
    m: &Arc<Manager>,
    certs: &Arc<NodeCerts>,
    gate: &Gate,
    slot: &ManagerSlot,
    switches: &Switches,
) -> Vec<JoinHandle<()>> {
    switches
        .raft
        .on(tonic::service::interceptor::InterceptedService::new(
            m.raft_service(),
            gate.clone().interceptor("Raft", Access::Manager),
        ));
    switches.cluster.on(
        shoal_rpc::cluster_server::ClusterServer::new(ClusterService {
            manager: Arc::clone(m),
            gate: gate.clone(),
            certs: Arc::clone(certs),
            failed_joins: Default::default(),
            sessions: Default::default(),
            in_flight: Default::default(),
        })
        .max_decoding_message_size(MAX_RPC_MESSAGE),
    );
    slot.set(Some(Arc::clone(m)));
    vec![
        tokio::spawn(Arc::clone(m).run_leader_loop()),
        tokio::spawn(Arc::clone(m).run_membership_loop()),
        tokio::spawn(crate::events::run(Arc::clone(m))),
        tokio::spawn(crate::daemon::exit_on_raft_failure(Arc::clone(m))),
        tokio::spawn(crate::rotation::run(Arc::clone(m), Arc::clone(certs))),
        tokio::spawn(Arc::clone(m).count_leader_changes()),
    ]
}

/// Unplugs the manager role and stops its Raft store (its files stay).
async fn stop_manager_role(active: &Active, m: &Manager) {
    active.switches.off();
    active.slot.set(None);
    for h in active.manager_tasks.iter() {
        h.abort();
    }
    if let Err(e) = m.shutdown_raft().await {
        warn!("the manager role's raft store did not stop cleanly: {e}");
    }
}

/// Follows the role the leader's session gives this node, until the daemon leaves.
pub async fn follow_role(daemon: Arc<Daemon>, mut wanted: watch::Receiver<Option<NodeRole>>) {
    loop {
        let want = *wanted.borrow_and_update();
        if let Some(want) = want
            && let Err(e) = daemon.switch_role(want).await
        {
            // A peer that did not answer yet is asked again soon; a failure of this node's
            // own (its disk, its keys) is not fixed by asking again at once.
            let wait = if e.is_retryable() {
                RETRY
            } else {
                RETRY_AFTER_FAILURE
            };
            warn!(role = %want, "failed to switch roles: {e}; trying again in {wait:?}");
            tokio::time::sleep(wait).await;
            continue;
        }
        if wanted.changed().await.is_err() {
            return;
        }
    }
}

impl Daemon {
    async fn switch_role(self: &Arc<Self>, want: NodeRole) -> Result<(), DaemonError> {
        let _guard = self.lifecycle.lock().await;
        let Some(active) = self.active() else {
            return Ok(());
        };
        match (want, active.manager.clone()) {
            (NodeRole::Manager, None) => self.promote(active).await,
            (NodeRole::Manager, Some(m)) if !m.is_voter() => {
                // Promoted, but the leader has not added it yet (a failed JoinRaft, or a
                // restart in between).
                join_raft(&active.certs.dialer(), &first(&active), &managers(&active)).await
            }
            (NodeRole::Worker, Some(m)) => self.demote(active, m).await,
            _ => Ok(()),
        }
    }

    async fn promote(self: &Arc<Self>, active: Active) -> Result<(), DaemonError> {
        info!("this node was promoted: starting the manager role");
        let renewed = crate::renewal::renew(&active.certs, &active.managers)
            .await
            .map_err(|e| {
                DaemonError::Unavailable(format!(
                    "promoted, but no manager renewed this node's certificate: {e}"
                ))
            })?;
        if renewed.identity.role != shoal_pki::Role::Manager || renewed.ca_key.is_empty() {
            return Err(DaemonError::Unavailable(
                "promoted, but the manager that renewed this node's certificate did not know yet"
                    .into(),
            ));
        }
        active
            .certs
            .set_root_key(Some(&renewed.ca_key))
            .map_err(|e| internal("failed to keep the root CA's key", e))?;
        if !renewed.registry_auth_key.is_empty() {
            shoal_image::SealKey::from_bytes(&renewed.registry_auth_key)
                .and_then(|k| k.save(&crate::registry::key_path(&self.cfg.data_dir)))
                .map_err(|e| internal("failed to keep the registry login key", e))?;
        }
        let mut identity = active.identity.clone();
        identity.role = NodeRole::Manager;
        // Raft files left by an earlier time as a manager are another group's past.
        let _ = std::fs::remove_dir_all(self.raft_dir());
        let m = self.open_manager(&identity, active.certs.dialer()).await?;
        let manager_tasks = start_manager_role(
            &m,
            &active.certs,
            &active.gate,
            &active.slot,
            &active.switches,
        );
        identity
            .save(&self.cfg.data_dir)
            .map_err(|e| internal("failed to save the node identity", e))?;
        let next = Active {
            identity,
            manager: Some(Arc::clone(&m)),
            manager_tasks: Arc::new(manager_tasks),
            ..active
        };
        *self.role.write().unwrap_or_else(|p| p.into_inner()) = Some(next.clone());
        join_raft(&next.certs.dialer(), &first(&next), &managers(&next)).await?;
        info!("this node is a manager now");
        Ok(())
    }

    async fn demote(self: &Arc<Self>, active: Active, m: Arc<Manager>) -> Result<(), DaemonError> {
        info!("this node was demoted: leaving the managers");
        let deadline = tokio::time::Instant::now() + LEAVE_VOTERS_WAIT;
        while m.is_voter() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if m.is_voter() {
            warn!(
                "the leader has not taken this node out of the raft voters after {LEAVE_VOTERS_WAIT:?}; stopping the manager role anyway (the leader finishes the removal)"
            );
        }
        stop_manager_role(&active, &m).await;
        drop(m);
        let _ = std::fs::remove_dir_all(self.raft_dir());
        active
            .certs
            .set_root_key(None)
            .map_err(|e| internal("failed to forget the root CA's key", e))?;
        let _ = std::fs::remove_file(crate::registry::key_path(&self.cfg.data_dir));
        let mut identity = active.identity.clone();
        identity.role = NodeRole::Worker;
        identity
            .save(&self.cfg.data_dir)
            .map_err(|e| internal("failed to save the node identity", e))?;
        let next = Active {
            identity,
            manager: None,
            manager_tasks: Arc::new(Vec::new()),
            ..active
        };
        *self.role.write().unwrap_or_else(|p| p.into_inner()) = Some(next.clone());
        // Its manager certificate is refused for managers' calls already (the gate reads
        // the state); a worker's replaces it.
        match crate::renewal::renew(&next.certs, &next.managers).await {
            Ok(r) => info!(role = %r.identity.role, "renewed this node's certificate"),
            Err(e) => warn!("demoted, but the certificate was not renewed yet: {e}"),
        }
        info!("this node is a worker now; its tasks kept running");
        Ok(())
    }

    /// `init --force-new-cluster`: this manager, cut off from a majority of the managers
    /// that will not come back, keeps its state and becomes the only voter of a new Raft
    /// group; the other managers are removed from the state and refused from then on.
    ///
    /// The Raft files are rewritten while the role is stopped (`Store::force_new_cluster`),
    /// then the role starts again on them: a new Store, Manager and port-2377 services, the
    /// same machinery as a promotion, so nothing holds the old store. Agents' sessions to
    /// the old one end and reconnect.
    pub async fn force_new_cluster(self: &Arc<Self>) -> Result<Active, DaemonError> {
        let _guard = self.lifecycle.lock().await;
        let active = self.active().ok_or_else(|| {
            DaemonError::Invalid(
                "--force-new-cluster recovers a manager's state, and this node is not part of a swarm; run `shoal init` without it".into(),
            )
        })?;
        let Some(m) = active.manager.clone() else {
            return Err(DaemonError::Invalid(
                "this node is a worker: --force-new-cluster runs on a manager that kept the cluster's state".into(),
            ));
        };
        let raft_id = m.raft_id();
        warn!("forcing a new cluster: this manager will be the only one");
        stop_manager_role(&active, &m).await;
        drop(m);
        let forced = Store::force_new_cluster(
            &self.raft_dir(),
            raft_id,
            active.identity.cluster_addr.clone(),
            vec![Command::ForceNewCluster {
                node_id: active.identity.node_id.clone(),
                at: self.clock.now().wall,
            }],
        )
        .await;
        // The role starts again whether or not the rewrite worked: this node stays what it
        // was rather than a manager without its store.
        let m = self
            .open_manager(&active.identity, active.certs.dialer())
            .await?;
        let manager_tasks = start_manager_role(
            &m,
            &active.certs,
            &active.gate,
            &active.slot,
            &active.switches,
        );
        let next = Active {
            manager: Some(Arc::clone(&m)),
            manager_tasks: Arc::new(manager_tasks),
            ..active
        };
        *self.role.write().unwrap_or_else(|p| p.into_inner()) = Some(next.clone());
        forced.map_err(|e| internal("failed to start a new cluster", e))?;
        let node_id = next.identity.node_id.clone();
        let mut state = m.watch_state();
        let applied = tokio::time::timeout(
            Duration::from_secs(15),
            state.wait_for(|s| {
                s.nodes
                    .values()
                    .all(|n| n.id == node_id || n.spec.role != NodeRole::Manager)
            }),
        )
        .await;
        if !matches!(applied, Ok(Ok(_))) {
            return Err(DaemonError::Unavailable(
                "the new cluster did not apply its state within 15s; check this daemon's log"
                    .into(),
            ));
        }
        info!("this manager alone is the new cluster; the others are refused");
        Ok(next)
    }
}

/// The managers this node knows, for `JoinRaft` (it follows the leader's hint from any).
fn managers(active: &Active) -> Vec<String> {
    active
        .managers
        .read()
        .map(|m| m.clone())
        .unwrap_or_default()
}

fn first(active: &Active) -> String {
    managers(active)
        .into_iter()
        .find(|a| *a != active.identity.cluster_addr)
        .unwrap_or_else(|| active.identity.cluster_addr.clone())
}
