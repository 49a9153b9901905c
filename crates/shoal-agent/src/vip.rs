//! The node's VIP balancer, behind one interface: the eBPF socket balancer (`shoal-bpf`, one
//! instance for the whole node) or, where it cannot load, the nftables balancer (`shoal-lb`,
//! one table per sandbox).
//!
//! With eBPF an endpoint change is a few map writes for the service that changed, whatever the
//! number of sandboxes, and VIP flows have no conntrack entry to flush; a UDP socket connected
//! through a VIP to a backend that left is destroyed (its application gets ECONNABORTED and
//! connects again), in the sandboxes that have one. The nftables fallback costs one table
//! update per sandbox per change (O(sandboxes)) and deletes the conntrack entries of UDP flows
//! to removed backends, so that their next datagram is balanced again. Either way before
//! `apply` returns, so before the change is acked and the leaving task gets SIGTERM.
//! `shoald --vip-balancer auto|ebpf|nftables` chooses; `auto` tries eBPF first.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::Serialize;
use shoal_types::EndpointMode;
use shoal_types::diff::changes;
use shoal_types::endpoint::{EndpointView, ServiceTasks};
use tokio::sync::Mutex;
use tracing::{info, warn};

/// Which balancer the node should use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VipChoice {
    /// eBPF if it loads, else nftables (with a warning naming the error).
    #[default]
    Auto,
    /// eBPF or nothing: a load failure stops the daemon.
    Ebpf,
    /// The per-sandbox nftables balancer.
    Nftables,
}

impl FromStr for VipChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<VipChoice, String> {
        match s {
            "auto" => Ok(VipChoice::Auto),
            "ebpf" => Ok(VipChoice::Ebpf),
            "nftables" => Ok(VipChoice::Nftables),
            other => Err(format!(
                "unknown VIP balancer {other:?}: use auto, ebpf or nftables"
            )),
        }
    }
}

impl fmt::Display for VipChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VipChoice::Auto => "auto",
            VipChoice::Ebpf => "ebpf",
            VipChoice::Nftables => "nftables",
        })
    }
}

/// What `shoal node inspect` shows: the balancer in use and, for nftables, why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VipBalancerInfo {
    /// "ebpf" or "nftables".
    pub kind: &'static str,
    /// Why the node uses the nftables fallback (`None` with eBPF).
    pub fallback_reason: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum VipError {
    #[error(
        "--vip-balancer ebpf: {0}. Use --vip-balancer auto to fall back to the nftables balancer"
    )]
    Ebpf(shoal_bpf::BpfError),
}

/// Sandboxes whose conntrack entries the nftables fallback flushes at once.
const FLUSH_PARALLELISM: usize = 4;

/// The node's balancer. Shared by every sandbox of the node.
#[derive(Debug)]
pub struct VipBalancer {
    info: VipBalancerInfo,
    state: Mutex<State>,
}

#[derive(Debug)]
enum State {
    Ebpf {
        // Boxed: the loader is large and there is one per node.
        lb: Box<shoal_bpf::SockLb>,
        /// Task id -> its sandbox's netns cookie and namespace name.
        sandboxes: BTreeMap<String, (u64, String)>,
        /// `None` after a failure.
        applied: Option<Applied>,
    },
    Nftables {
        sandboxes: BTreeMap<String, NftSandbox>,
    },
}

/// The view last applied and the config made from it: the next config is that one with the
/// changed services' entries made again, their tasks found through `tasks`.
#[derive(Debug)]
struct Applied {
    view: Arc<EndpointView>,
    cfg: shoal_bpf::NodeConfig,
    tasks: ServiceTasks,
}

struct NftSandbox {
    netns: String,
    networks: Vec<String>,
    lb: shoal_lb::Balancer,
}

impl fmt::Debug for NftSandbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NftSandbox")
            .field("netns", &self.netns)
            .field("networks", &self.networks)
            .finish()
    }
}

impl VipBalancer {
    /// Loads the balancer `choice` asks for. Only `Ebpf` can fail; `Auto` falls back.
    pub fn select(choice: VipChoice) -> Result<VipBalancer, VipError> {
        VipBalancer::select_with(choice, &shoal_bpf::Options::default())
    }

    /// [`VipBalancer::select`] with load options (tests force a failure with them).
    pub fn select_with(
        choice: VipChoice,
        opts: &shoal_bpf::Options,
    ) -> Result<VipBalancer, VipError> {
        match choice {
            VipChoice::Nftables => Ok(VipBalancer::nftables(
                "chosen with --vip-balancer nftables".into(),
            )),
            VipChoice::Ebpf => shoal_bpf::SockLb::load(opts)
                .map(VipBalancer::ebpf)
                .map_err(VipError::Ebpf),
            VipChoice::Auto => match shoal_bpf::SockLb::load(opts) {
                Ok(lb) => Ok(VipBalancer::ebpf(lb)),
                Err(e) => {
                    warn!("the eBPF VIP balancer could not load, using nftables instead: {e}");
                    Ok(VipBalancer::nftables(format!(
                        "the eBPF balancer could not load: {e}"
                    )))
                }
            },
        }
    }

    fn ebpf(lb: shoal_bpf::SockLb) -> VipBalancer {
        info!(cgroup = %lb.cgroup().display(), programs = ?lb.program_ids(), "VIP balancer: eBPF (one per node)");
        VipBalancer {
            info: VipBalancerInfo {
                kind: "ebpf",
                fallback_reason: None,
            },
            state: Mutex::new(State::Ebpf {
                lb: Box::new(lb),
                sandboxes: BTreeMap::new(),
                applied: None,
            }),
        }
    }

    /// The nftables balancer, for `reason`.
    pub fn nftables(reason: String) -> VipBalancer {
        info!(%reason, "VIP balancer: nftables (one table per sandbox)");
        VipBalancer {
            info: VipBalancerInfo {
                kind: "nftables",
                fallback_reason: Some(reason),
            },
            state: Mutex::new(State::Nftables {
                sandboxes: BTreeMap::new(),
            }),
        }
    }

    /// Connections the eBPF balancer sent to each backend, named with the view it last
    /// applied (`crate::counts`); empty with nftables, which counts nothing per backend.
    pub async fn connection_counts(&self) -> Vec<crate::counts::VipCount> {
        let state = self.state.lock().await;
        match &*state {
            State::Ebpf {
                lb,
                applied: Some(Applied { view, .. }),
                ..
            } => crate::counts::label_vip(view, &lb.connection_counts()),
            _ => Vec::new(),
        }
    }

    /// "ebpf" or "nftables".
    pub fn kind(&self) -> &'static str {
        self.info.kind
    }

    pub fn info(&self) -> VipBalancerInfo {
        self.info.clone()
    }

    /// A new sandbox on `networks` (network ids): from now on it reaches the VIPs of those
    /// networks and no other.
    pub async fn attach_sandbox(
        &self,
        task_id: &str,
        netns: &str,
        networks: &[String],
        view: &EndpointView,
    ) -> Result<(), String> {
        // Read outside the lock: it takes a thread entering the namespace.
        let cookie =
            if self.info.kind == "ebpf" {
                Some(shoal_bpf::netns_cookie(netns).await.map_err(|e| {
                    format!("failed to register the task with the VIP balancer: {e}")
                })?)
            } else {
                None
            };
        let mut state = self.state.lock().await;
        match &mut *state {
            State::Ebpf { lb, sandboxes, .. } => {
                let cookie = cookie.ok_or("no netns cookie")?;
                lb.add_sandbox(cookie, networks).map_err(|e| {
                    format!("failed to register the task with the VIP balancer: {e}")
                })?;
                sandboxes.insert(task_id.to_string(), (cookie, netns.to_string()));
            }
            State::Nftables { sandboxes } => {
                // Idle connections must outlive Swarm's 15 minutes (moby #31208).
                if let Err(e) = shoal_lb::ensure_tcp_timeout(netns).await {
                    warn!(netns, "failed to check the conntrack timeout: {e}");
                }
                let lb = shoal_lb::Balancer::create(netns, &sandbox_config(view, networks))
                    .await
                    .map_err(|e| format!("failed to program the task's VIP balancer: {e}"))?;
                sandboxes.insert(
                    task_id.to_string(),
                    NftSandbox {
                        netns: netns.to_string(),
                        networks: networks.to_vec(),
                        lb,
                    },
                );
            }
        }
        Ok(())
    }

    /// Forgets a sandbox (its task ended; the namespace goes with its table, if any).
    pub async fn release_sandbox(&self, task_id: &str) {
        let mut state = self.state.lock().await;
        match &mut *state {
            State::Ebpf { lb, sandboxes, .. } => {
                if let Some((cookie, _)) = sandboxes.remove(task_id)
                    && let Err(e) = lb.remove_sandbox(cookie)
                {
                    warn!(
                        task = task_id,
                        "failed to unregister the task from the VIP balancer: {e}"
                    );
                }
            }
            State::Nftables { sandboxes } => {
                sandboxes.remove(task_id);
            }
        }
    }

    /// A new endpoint table.
    pub async fn apply(&self, view: &Arc<EndpointView>) {
        let mut state = self.state.lock().await;
        match &mut *state {
            State::Ebpf {
                lb,
                applied,
                sandboxes,
            } => {
                // The services that changed alone, from the config and index kept beside
                // the last view: nothing here walks every service or task of a network.
                let (cfg, tasks, result) = match applied.take() {
                    Some(Applied {
                        view: old,
                        mut cfg,
                        mut tasks,
                    }) => {
                        tasks.follow(&old, view);
                        let changed = update_node_config(&mut cfg, &tasks, &old, view);
                        let result = lb.apply_changes(&cfg, &changed);
                        (cfg, tasks, result)
                    }
                    None => {
                        let cfg = node_config(view);
                        let result = lb.apply(&cfg);
                        (cfg, ServiceTasks::of(view), result)
                    }
                };
                let removed = match result {
                    Ok(a) => {
                        *applied = Some(Applied {
                            view: Arc::clone(view),
                            cfg,
                            tasks,
                        });
                        a.removed
                    }
                    Err(e) => {
                        warn!("failed to update the eBPF VIP balancer: {e}");
                        return;
                    }
                };
                // A UDP socket connected through a VIP keeps the backend connect() gave it:
                // once that task is gone it would send into the void. Closed now, before the
                // ack, so that its application connects again while the task still answers.
                // Asked only for a sandbox that has such a socket (rare): a search then is
                // cheaper than a map of every sandbox made at every change.
                let netns_of = |c: u64| {
                    sandboxes
                        .values()
                        .find(|(cookie, _)| *cookie == c)
                        .map(|(_, n)| n.clone())
                };
                match lb.close_udp(&removed, netns_of).await {
                    Ok(c) if c.sockets > 0 => info!(
                        sockets = c.sockets,
                        sandboxes = c.namespaces,
                        "closed UDP sockets connected through a VIP to removed backends"
                    ),
                    Ok(_) => {}
                    Err(e) => warn!("{e}"),
                }
            }
            State::Nftables { sandboxes } => {
                let mut flushes = Vec::new();
                for s in sandboxes.values_mut() {
                    let cfg = sandbox_config(view, &s.networks);
                    if &cfg == s.lb.programmed() {
                        continue;
                    }
                    match s.lb.update(cfg).await {
                        Ok(stale) if !stale.is_empty() => flushes.push((s.netns.clone(), stale)),
                        Ok(_) => {}
                        Err(e) => {
                            warn!(netns = %s.netns, "failed to update the VIP balancer: {e}")
                        }
                    }
                }
                // UDP flows (and TCP handshakes) to removed backends go, so that their next
                // datagram is balanced again (a reply already on its way still comes from
                // the VIP: `update` kept it, map `orphans`); established TCP stays until the task's own
                // SIGTERM handling closes it. Before the ack: the task gets SIGTERM once
                // every node has acked, and a UDP flow still pinned to it by its conntrack
                // entry would lose its datagrams from then until the flush. A few sandboxes
                // at a time (each is a thread in its namespace and a conntrack dump).
                use futures::StreamExt;
                futures::stream::iter(flushes)
                    .for_each_concurrent(FLUSH_PARALLELISM, |(netns, stale)| async move {
                        if let Err(e) = shoal_lb::flush_conntrack(&netns, &stale).await {
                            warn!(%netns, "failed to flush conntrack entries of removed backends: {e}");
                        }
                    })
                    .await;
            }
        }
    }
}

/// One vip-mode service on one network (ingress excluded: it carries no VIPs), with its
/// running tasks on that network.
struct VipEntry<'a> {
    network: &'a str,
    service: &'a str,
    vip: std::net::Ipv4Addr,
    backends: Vec<std::net::Ipv4Addr>,
}

fn vip_services<'a>(
    view: &'a EndpointView,
    networks: impl Iterator<Item = &'a String>,
) -> Vec<VipEntry<'a>> {
    let mut out = Vec::new();
    for id in networks {
        let Some(n) = view.networks.get(id) else {
            continue;
        };
        if n.info.ingress {
            continue;
        }
        // The network's tasks grouped by service in one pass: filtering them per service
        // made every change O(services x tasks) on every node.
        let mut by_service: std::collections::HashMap<&str, Vec<std::net::Ipv4Addr>> =
            std::collections::HashMap::new();
        // Only ready tasks are a VIP's backends (a task not ready yet takes no traffic).
        for t in n.tasks.values().filter(|t| t.ready) {
            by_service
                .entry(t.service_id.as_str())
                .or_default()
                .push(t.addr.addr());
        }
        for s in n.services.values() {
            let (EndpointMode::Vip, Some(vip)) = (s.mode, s.vip) else {
                continue;
            };
            let mut backends = by_service.remove(s.id.as_str()).unwrap_or_default();
            backends.sort();
            out.push(VipEntry {
                network: id,
                service: &s.id,
                vip: vip.addr(),
                backends,
            });
        }
    }
    out
}

/// What the node's eBPF balancer holds: every VIP of every network the node takes part in,
/// every port of each VIP (VIP port = task port, as in Swarm).
pub fn node_config(view: &EndpointView) -> shoal_bpf::NodeConfig {
    shoal_bpf::NodeConfig {
        services: vip_services(view, view.networks.keys())
            .into_iter()
            .map(|e| {
                (
                    (e.network.to_string(), e.service.to_string()),
                    shoal_bpf::Service {
                        vip: e.vip,
                        ports: Vec::new(),
                        backends: e.backends,
                    },
                )
            })
            .collect(),
    }
}

/// `cfg`, made by [`node_config`] from `old`, turned into what it makes from `new`: only the
/// entries of services whose VIP or tasks changed are made again (the views' maps are
/// persistent, so finding them walks the change, not the network), their tasks found through
/// `tasks` (which has followed `new` already) instead of a walk of the network's tasks.
/// Returns the keys of the entries that may differ, for `SockLb::apply_changes`.
pub fn update_node_config(
    cfg: &mut shoal_bpf::NodeConfig,
    tasks: &ServiceTasks,
    old: &EndpointView,
    new: &EndpointView,
) -> BTreeSet<shoal_bpf::ServiceKey> {
    let mut touched = BTreeSet::new();
    for (_, was, now) in changes(&old.networks, &new.networks) {
        let id = was.or(now).map(|n| n.info.id.clone()).unwrap_or_default();
        let (Some(was), Some(now)) = (was, now) else {
            // A network came or went: all of its entries.
            cfg.services.retain(|key, _| {
                let other = key.0 != id;
                if !other {
                    touched.insert(key.clone());
                }
                other
            });
            if let Some(n) = now {
                let one = EndpointView {
                    version: new.version,
                    networks: std::iter::once((id.clone(), n.clone())).collect(),
                };
                let services = node_config(&one).services;
                touched.extend(services.keys().cloned());
                cfg.services.extend(services);
            }
            continue;
        };
        let services = was.changed_services(now);
        for sid in &services {
            let key = (id.clone(), sid.to_string());
            cfg.services.remove(&key);
            touched.insert(key);
        }
        if now.info.ingress {
            continue;
        }
        for sid in services {
            let Some(s) = now.services.get(sid) else {
                continue;
            };
            let (EndpointMode::Vip, Some(vip)) = (s.mode, s.vip) else {
                continue;
            };
            let mut b: Vec<std::net::Ipv4Addr> = tasks
                .tasks(&id, now, sid)
                .filter(|t| t.ready)
                .map(|t| t.addr.addr())
                .collect();
            b.sort();
            cfg.services.insert(
                (id.clone(), sid.to_string()),
                shoal_bpf::Service {
                    vip: vip.addr(),
                    ports: Vec::new(),
                    backends: b,
                },
            );
        }
    }
    touched
}

/// What one sandbox's nftables balancer programs: the VIPs of the sandbox's networks.
pub fn sandbox_config(view: &EndpointView, networks: &[String]) -> shoal_lb::LbConfig {
    shoal_lb::LbConfig::new(vip_services(view, networks.iter()).into_iter().map(|e| {
        shoal_lb::VipService {
            // One chain per service and network: a sandbox on two of its networks has two
            // VIPs for it.
            id: format!(
                "{}_{}",
                &e.service[..12.min(e.service.len())],
                &e.network[..12.min(e.network.len())]
            ),
            vip: e.vip,
            ports: Vec::new(),
            backends: e.backends,
        }
    }))
}

#[cfg(test)]
#[path = "vip_tests.rs"]
mod tests;
