//! Renews the node's certificate on its own, at a random point between 50% and 80% of its
//! lifetime (shoal-pki's decision, as Swarm), or at once when a root rotation wants a
//! certificate from the new root, with a new key, from any manager. Connections
//! made with the old certificate stay up; new ones use the new certificate.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use shoal_agent::session::Managers;
use shoal_pki::{NodeKey, Renewal};
use shoal_rpc::cluster_client::ClusterClient;
use tracing::{info, warn};

use crate::certs::NodeCerts;

/// The longest sleep between two looks at the certificate (the clock may jump).
const RECHECK: Duration = Duration::from_secs(30);

pub async fn run(certs: Arc<NodeCerts>, managers: Managers) {
    let mut fraction = shoal_pki::random_fraction();
    loop {
        let id = certs.identity();
        let now = SystemTime::now();
        // A root rotation wants a certificate from the new root now, whatever its age.
        let rotating = certs.must_renew();
        let decision = match id.renewal(now, fraction) {
            Renewal::Wait { .. } if rotating => Renewal::Now,
            d => d,
        };
        match decision {
            Renewal::Wait { until } => {
                let wait = until.duration_since(now).unwrap_or_default();
                tokio::select! {
                    _ = tokio::time::sleep(wait.min(RECHECK)) => {}
                    _ = certs.renewal_wanted() => {}
                }
            }
            Renewal::Now => match renew(&certs, &managers).await {
                Ok(Renewed { identity: new, .. }) => {
                    info!(serial = %new.serial, not_after = %humantime::format_rfc3339_seconds(new.not_after), rotation = rotating, "renewed this node's certificate");
                    fraction = shoal_pki::random_fraction();
                    if certs.must_renew() {
                        // The manager had not heard of the rotation yet: ask again shortly.
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                Err(e) => {
                    // Before it expires there is time to try again; say how much.
                    let left = id.not_after.duration_since(now).unwrap_or_default();
                    warn!(
                        "certificate renewal failed ({e}); it expires in {}; retrying",
                        humantime::format_duration(Duration::from_secs(left.as_secs()))
                    );
                    tokio::time::sleep((left / 20).clamp(Duration::from_secs(1), RECHECK)).await;
                }
            },
            Renewal::Expired => {
                warn!(
                    "this node's certificate expired at {}: no manager accepts it any more; run `shoal leave --force` and join again",
                    humantime::format_rfc3339_seconds(id.not_after)
                );
                tokio::time::sleep(RECHECK).await;
            }
        }
    }
}

/// A renewed certificate, installed, and what a manager's renewal carries besides.
pub struct Renewed {
    pub identity: shoal_pki::Identity,
    /// A manager's certificate only: the root CA's key (PEM) and the registry-login key.
    pub ca_key: Vec<u8>,
    pub registry_auth_key: Vec<u8>,
}

/// Renews now, from the first manager in `managers` that answers (a `node promote|demote`
/// wants the role the state gives now; `run` at its time).
pub async fn renew(certs: &NodeCerts, managers: &Managers) -> Result<Renewed, String> {
    let key = NodeKey::generate().map_err(|e| e.to_string())?;
    let csr = key.csr().map_err(|e| e.to_string())?;
    let list = managers.read().map(|m| m.clone()).unwrap_or_default();
    let mut last = "no manager is known".to_string();
    for addr in list {
        let channel = match certs.dialer().manager(&addr) {
            Ok(c) => c,
            Err(e) => {
                last = format!("{addr}: {e}");
                continue;
            }
        };
        let mut client = ClusterClient::new(channel);
        let call = client.renew_certificate(shoal_rpc::RenewRequest { csr: csr.clone() });
        match tokio::time::timeout(Duration::from_secs(10), call).await {
            Ok(Ok(reply)) => {
                let reply = reply.into_inner();
                let identity = certs
                    .install(&key, reply.certificate)
                    .map_err(|e| e.to_string())?;
                return Ok(Renewed {
                    identity,
                    ca_key: reply.ca_key,
                    registry_auth_key: reply.registry_auth_key,
                });
            }
            Ok(Err(s)) => last = format!("{addr}: {}", s.message()),
            Err(_) => last = format!("{addr}: no answer within 10s"),
        }
    }
    Err(last)
}
