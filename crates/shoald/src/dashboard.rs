//! The dashboard's data: one JSON document with the nodes, services (their tasks, VIPs and
//! ports), networks, the last endpoint changes' convergence and this node's per-backend
//! connection counts. Built from the state a manager holds (pure: [`snapshot`]); `crate::web`
//! serves it at `/api/snapshot` and pushes it as server-sent events at `/api/events` when the
//! state changes. The page (`dashboard/`: plain HTML, CSS and JS compiled into the binary)
//! only renders it: it is read-only, as the listener has no authentication.

use serde::Serialize;
use shoal_agent::counts::DataplaneCounts;
use shoal_manager::dispatcher::Settled;
use shoal_types::{ClusterState, ServiceMode, TaskState};

/// The page's files, served as they are.
pub const INDEX_HTML: &str = include_str!("dashboard/index.html");
pub const APP_JS: &str = include_str!("dashboard/app.js");
pub const STYLE_CSS: &str = include_str!("dashboard/style.css");

#[derive(Debug, Serialize)]
pub struct Snapshot {
    /// The node serving the page.
    pub node: String,
    /// The state's version (the page shows it; a change bumps it).
    pub version: u64,
    /// Why there is no cluster view here (a worker has no copy of the state).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub nodes: Vec<NodeRow>,
    pub services: Vec<ServiceRow>,
    pub networks: Vec<NetworkRow>,
    pub convergence: Vec<ConvergenceRow>,
    pub dataplane: DataplaneCounts,
}

#[derive(Debug, Serialize)]
pub struct NodeRow {
    pub id: String,
    pub hostname: String,
    pub role: String,
    pub state: String,
    pub availability: String,
    pub addr: String,
    pub leader: bool,
}

#[derive(Debug, Serialize)]
pub struct ServiceRow {
    pub id: String,
    pub name: String,
    pub mode: &'static str,
    /// Replicas asked for (`None` for a global service).
    pub desired: Option<u64>,
    /// Tasks meant to run that run.
    pub running: usize,
    pub image: String,
    pub vips: Vec<VipRow>,
    /// `8080:80/tcp`.
    pub ports: Vec<String>,
    /// Its tasks meant to run, and the last ended ones, newest first per slot.
    pub tasks: Vec<TaskRow>,
}

#[derive(Debug, Serialize)]
pub struct VipRow {
    pub network: String,
    pub addr: String,
}

#[derive(Debug, Serialize)]
pub struct TaskRow {
    pub id: String,
    /// `web.1`.
    pub name: String,
    pub node: String,
    pub desired: String,
    pub state: String,
    pub addr: String,
    pub error: String,
}

#[derive(Debug, Serialize)]
pub struct NetworkRow {
    pub id: String,
    pub name: String,
    pub driver: String,
    pub subnet: String,
    pub ingress: bool,
}

#[derive(Debug, Serialize)]
pub struct ConvergenceRow {
    pub version: u64,
    pub took_ms: u64,
}

fn lower<T: std::fmt::Debug>(v: T) -> String {
    format!("{v:?}").to_lowercase()
}

/// The snapshot a manager serves (`state`: its copy; `leader`: the Raft id of the leader it
/// knows; `recent`: the leader's settled endpoint changes, empty elsewhere).
pub fn snapshot(
    node: &str,
    state: &ClusterState,
    leader: Option<u64>,
    recent: &[Settled],
    dataplane: DataplaneCounts,
) -> Snapshot {
    let hostname = |id: &Option<String>| {
        id.as_ref()
            .and_then(|id| state.nodes.get(id))
            .map_or_else(String::new, |n| n.description.hostname.clone())
    };
    let net_name = |id: &str| {
        state
            .networks
            .get(id)
            .map_or_else(|| id.to_string(), |n| n.name.clone())
    };
    let nodes = state
        .nodes
        .values()
        .map(|n| NodeRow {
            id: n.id.clone(),
            hostname: n.description.hostname.clone(),
            role: lower(n.spec.role),
            state: lower(n.status.state),
            availability: lower(n.spec.availability),
            addr: n.status.addr.clone(),
            leader: n
                .manager_status
                .as_ref()
                .is_some_and(|m| Some(m.raft_id) == leader),
        })
        .collect();
    let services = state
        .services
        .values()
        .map(|s| {
            let mut tasks: Vec<&shoal_types::Task> = state.tasks_of(&s.id).collect();
            tasks.sort_by(|a, b| (a.slot, b.created_at).cmp(&(b.slot, a.created_at)));
            let running = tasks
                .iter()
                .filter(|t| {
                    t.desired_state == TaskState::Running && t.status.state == TaskState::Running
                })
                .count();
            ServiceRow {
                id: s.id.clone(),
                name: s.spec.name.clone(),
                mode: s.spec.mode.name(),
                desired: match s.spec.mode {
                    ServiceMode::Replicated { replicas } => Some(replicas),
                    ServiceMode::Global {} => None,
                },
                running,
                image: {
                    let c = &s.spec.task_template.container_spec;
                    c.image.clone().unwrap_or_else(|| c.command.join(" "))
                },
                vips: s
                    .endpoint
                    .virtual_ips
                    .iter()
                    .map(|v| VipRow {
                        network: net_name(&v.network_id),
                        addr: v.addr.addr().to_string(),
                    })
                    .collect(),
                ports: s
                    .spec
                    .endpoint_spec
                    .ports
                    .iter()
                    .map(|p| {
                        format!(
                            "{}:{}/{}",
                            p.published_port.unwrap_or(0),
                            p.target_port,
                            lower(p.protocol)
                        )
                    })
                    .collect(),
                tasks: tasks
                    .iter()
                    .map(|t| TaskRow {
                        id: t.id.clone(),
                        name: t.slot_name(),
                        node: hostname(&t.node_id),
                        desired: lower(t.desired_state),
                        state: lower(t.status.state),
                        addr: t
                            .networks
                            .first()
                            .map(|a| a.addr.addr().to_string())
                            .unwrap_or_default(),
                        error: t.status.err.clone(),
                    })
                    .collect(),
            }
        })
        .collect();
    let networks = state
        .networks
        .values()
        .map(|n| NetworkRow {
            id: n.id.clone(),
            name: n.name.clone(),
            driver: n.driver.clone(),
            subnet: n.ipam.subnet.to_string(),
            ingress: n.ingress,
        })
        .collect();
    Snapshot {
        node: node.to_string(),
        version: state.version,
        error: None,
        nodes,
        services,
        networks,
        convergence: recent
            .iter()
            .rev()
            .map(|s| ConvergenceRow {
                version: s.version,
                took_ms: s.took_ms,
            })
            .collect(),
        dataplane,
    }
}

/// What a node without the state (a worker, or one not in a cluster) serves.
pub fn unavailable(node: &str, why: String, dataplane: DataplaneCounts) -> Snapshot {
    Snapshot {
        node: node.to_string(),
        version: 0,
        error: Some(why),
        nodes: vec![],
        services: vec![],
        networks: vec![],
        convergence: vec![],
        dataplane,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_types::TaskState::{Failed, Running};

    #[test]
    fn a_service_lists_its_tasks_with_their_nodes_and_what_runs() {
        let st = crate::metrics::state_with_tasks(&[
            (1, "n1", Failed, 0),
            (1, "n2", Running, 1),
            (2, "n1", Running, 0),
        ]);
        let leader = st.nodes["n1"].manager_status.as_ref().map(|m| m.raft_id);
        let recent = [Settled {
            version: 7,
            took_ms: 4,
        }];
        let snap = snapshot("node1", &st, leader, &recent, DataplaneCounts::default());
        let web = &snap.services[0];
        assert_eq!(
            (web.name.as_str(), web.desired, web.running),
            ("web", Some(3), 2)
        );
        let tasks: Vec<(&str, &str, &str)> = web
            .tasks
            .iter()
            .map(|t| (t.name.as_str(), t.node.as_str(), t.state.as_str()))
            .collect();
        // By slot, the newest task of a slot first.
        assert_eq!(
            tasks,
            [
                ("web.1", "node2", "running"),
                ("web.1", "node1", "failed"),
                ("web.2", "node1", "running")
            ]
        );
        assert_eq!(snap.convergence[0].took_ms, 4);
        assert_eq!(snap.nodes.len(), 2);
        // A manager's snapshot has no top-level error (a worker's says why it has no view).
        let json = serde_json::to_value(&snap).unwrap();
        assert!(json.get("error").is_none(), "{json}");
        let worker = serde_json::to_value(unavailable(
            "node2",
            "a worker".into(),
            DataplaneCounts::default(),
        ))
        .unwrap();
        assert_eq!(worker["error"], "a worker");
    }
}
