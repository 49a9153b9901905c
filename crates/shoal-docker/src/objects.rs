//! shoal's nodes, services, tasks and networks in the Engine API's shapes, and what
//! `/info` and `/version` say.

use std::time::{Duration, SystemTime};

use bollard_stubs::models as d;
use shoal_types::node::ManagerStatus;
use shoal_types::{
    Availability, Millis, Network, Node, NodeRole, NodeState, Service, Task, TaskState, UpdateState,
};

use crate::spec::{self, to_hash};
use crate::{DockerError, version};

/// RFC 3339 with nanoseconds, as docker prints times.
pub fn rfc3339(t: Millis) -> String {
    humantime::format_rfc3339_nanos(SystemTime::UNIX_EPOCH + Duration::from_millis(t.0)).to_string()
}

fn version_of(index: u64) -> d::ObjectVersion {
    d::ObjectVersion { index: Some(index) }
}

pub fn node(n: &Node) -> d::Node {
    d::Node {
        id: Some(n.id.clone()),
        // A node's spec changes are not versioned in shoal: its last update's time is.
        version: Some(version_of(n.updated_at.0)),
        created_at: Some(rfc3339(n.created_at)),
        updated_at: Some(rfc3339(n.updated_at)),
        spec: Some(d::NodeSpec {
            name: None,
            labels: Some(to_hash(&n.spec.labels)),
            role: Some(match n.spec.role {
                NodeRole::Manager => d::NodeSpecRoleEnum::MANAGER,
                NodeRole::Worker => d::NodeSpecRoleEnum::WORKER,
            }),
            availability: Some(match n.spec.availability {
                Availability::Active => d::NodeSpecAvailabilityEnum::ACTIVE,
                Availability::Pause => d::NodeSpecAvailabilityEnum::PAUSE,
                Availability::Drain => d::NodeSpecAvailabilityEnum::DRAIN,
            }),
        }),
        description: Some(d::NodeDescription {
            hostname: Some(n.description.hostname.clone()),
            platform: Some(d::Platform {
                architecture: Some("x86_64".into()),
                os: Some("linux".into()),
            }),
            resources: Some(d::ResourceObject {
                nano_cpus: Some(n.description.resources.nano_cpus as i64),
                memory_bytes: Some(n.description.resources.memory_bytes),
                generic_resources: None,
            }),
            engine: Some(d::EngineDescription {
                engine_version: Some(format!("shoal {}", env!("CARGO_PKG_VERSION"))),
                ..Default::default()
            }),
            tls_info: None,
        }),
        status: Some(d::NodeStatus {
            state: Some(match n.status.state {
                NodeState::Unknown => d::NodeState::UNKNOWN,
                NodeState::Down => d::NodeState::DOWN,
                NodeState::Ready => d::NodeState::READY,
                NodeState::Disconnected => d::NodeState::DISCONNECTED,
            }),
            message: Some(n.status.message.clone()),
            addr: Some(n.status.addr.clone()),
        }),
        manager_status: n.manager_status.as_ref().map(|m| manager_status(m, n)),
    }
}

fn manager_status(m: &ManagerStatus, n: &Node) -> d::ManagerStatus {
    d::ManagerStatus {
        leader: Some(m.leader),
        reachability: Some(if n.status.state == NodeState::Ready {
            d::Reachability::REACHABLE
        } else {
            d::Reachability::UNREACHABLE
        }),
        addr: Some(m.addr.clone()),
    }
}

/// A service with its task counts (`?status=true`).
pub fn service(s: &Service, running: u64, desired: u64) -> d::Service {
    let endpoint_spec = spec::endpoint_to_docker(&s.spec.endpoint_spec);
    d::Service {
        id: Some(s.id.clone()),
        version: Some(version_of(s.version)),
        created_at: Some(rfc3339(s.created_at)),
        updated_at: Some(rfc3339(s.updated_at)),
        spec: Some(spec::to_docker(&s.spec)),
        endpoint: Some(d::ServiceEndpoint {
            ports: endpoint_spec.ports.clone(),
            spec: Some(endpoint_spec),
            virtual_ips: Some(
                s.endpoint
                    .virtual_ips
                    .iter()
                    .map(|v| d::ServiceEndpointVirtualIps {
                        network_id: Some(v.network_id.clone()),
                        addr: Some(v.addr.to_string()),
                    })
                    .collect(),
            ),
        }),
        update_status: s.update_status.as_ref().map(|u| d::ServiceUpdateStatus {
            state: Some(match u.state {
                UpdateState::Updating => d::ServiceUpdateStatusStateEnum::UPDATING,
                UpdateState::Paused => d::ServiceUpdateStatusStateEnum::PAUSED,
                UpdateState::Completed => d::ServiceUpdateStatusStateEnum::COMPLETED,
                UpdateState::RollbackStarted => d::ServiceUpdateStatusStateEnum::ROLLBACK_STARTED,
                UpdateState::RollbackPaused => d::ServiceUpdateStatusStateEnum::ROLLBACK_PAUSED,
                UpdateState::RollbackCompleted => {
                    d::ServiceUpdateStatusStateEnum::ROLLBACK_COMPLETED
                }
            }),
            started_at: u.started_at.map(rfc3339),
            completed_at: u.completed_at.map(rfc3339),
            message: Some(u.message.clone()),
        }),
        service_status: Some(d::ServiceServiceStatus {
            running_tasks: Some(running),
            desired_tasks: Some(desired),
            completed_tasks: Some(0),
        }),
        job_status: None,
    }
}

pub fn task_state(s: TaskState) -> d::TaskState {
    match s {
        TaskState::New => d::TaskState::NEW,
        TaskState::Pending => d::TaskState::PENDING,
        TaskState::Assigned => d::TaskState::ASSIGNED,
        TaskState::Accepted => d::TaskState::ACCEPTED,
        TaskState::Preparing => d::TaskState::PREPARING,
        TaskState::Starting => d::TaskState::STARTING,
        TaskState::Running => d::TaskState::RUNNING,
        TaskState::Complete => d::TaskState::COMPLETE,
        TaskState::Shutdown => d::TaskState::SHUTDOWN,
        TaskState::Failed => d::TaskState::FAILED,
        TaskState::Rejected => d::TaskState::REJECTED,
        TaskState::Remove => d::TaskState::REMOVE,
        TaskState::Orphaned => d::TaskState::ORPHANED,
    }
}

/// A task as `GET /tasks` shows it; `service` is its service's spec when known, for the
/// parts of the task's spec docker shows that shoal keeps on the service.
pub fn task(t: &Task, service: Option<&shoal_types::ServiceSpec>) -> d::Task {
    let mut task_spec = service
        .map(|s| spec::to_docker(s).task_template.unwrap_or_default())
        .unwrap_or_default();
    // What the task runs is its own spec (an update may not have reached it yet).
    let as_service = shoal_types::ServiceSpec {
        name: t.service_name.clone(),
        labels: Default::default(),
        task_template: shoal_types::service::TaskTemplate {
            container_spec: t.spec.clone(),
            restart_policy: Default::default(),
            placement: Default::default(),
            networks: vec![],
            force_update: 0,
        },
        mode: shoal_types::ServiceMode::Replicated { replicas: 1 },
        endpoint_spec: Default::default(),
        update_config: Default::default(),
        rollback_config: Default::default(),
    };
    task_spec.container_spec = spec::to_docker(&as_service)
        .task_template
        .and_then(|t| t.container_spec);
    d::Task {
        id: Some(t.id.clone()),
        version: Some(version_of(t.updated_at.0)),
        created_at: Some(rfc3339(t.created_at)),
        updated_at: Some(rfc3339(t.updated_at)),
        name: Some(format!("{}.{}", t.service_name, t.slot)),
        labels: Some(Default::default()),
        spec: Some(task_spec),
        service_id: Some(t.service_id.clone()),
        slot: Some(t.slot as i64),
        node_id: t.node_id.clone(),
        assigned_generic_resources: None,
        status: Some(d::TaskStatus {
            timestamp: Some(rfc3339(t.status.timestamp)),
            state: Some(task_state(t.status.state)),
            message: Some(t.status.message.clone()),
            err: (!t.status.err.is_empty()).then(|| t.status.err.clone()),
            container_status: Some(d::ContainerStatus {
                container_id: Some(t.id.clone()),
                pid: t.status.pid.map(i64::from),
                exit_code: t.status.exit_code.map(i64::from),
            }),
            port_status: Some(d::PortStatus {
                ports: Some(
                    t.ports
                        .iter()
                        .filter(|p| p.publish_mode == shoal_types::PublishMode::Host)
                        .map(spec::port_to_docker)
                        .collect(),
                ),
            }),
        }),
        desired_state: Some(task_state(t.desired_state)),
        job_iteration: None,
    }
}

pub fn network(n: &Network) -> d::Network {
    d::Network {
        name: Some(n.name.clone()),
        id: Some(n.id.clone()),
        created: Some(rfc3339(n.created_at)),
        scope: Some("swarm".into()),
        driver: Some(n.driver.clone()),
        ipam: Some(d::Ipam {
            driver: Some("default".into()),
            config: Some(vec![d::IpamConfig {
                subnet: Some(n.ipam.subnet.to_string()),
                gateway: Some(n.ipam.gateway.to_string()),
                ..Default::default()
            }]),
            options: None,
        }),
        internal: Some(false),
        attachable: Some(n.attachable),
        ingress: Some(n.ingress),
        options: Some(
            [(
                "com.docker.network.driver.overlay.vxlanid_list".to_string(),
                n.vni.to_string(),
            )]
            .into_iter()
            .collect(),
        ),
        labels: Some(to_hash(&n.labels)),
        ..Default::default()
    }
}

/// `POST /networks/create` as shoal takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRequest {
    pub name: String,
    pub driver: String,
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    pub attachable: bool,
    pub labels: std::collections::BTreeMap<String, String>,
}

/// A docker network create request, refusing by name what shoal's overlays cannot be.
pub fn network_create(r: d::NetworkCreateRequest) -> Result<NetworkRequest, DockerError> {
    let refuse = |set: bool, field: &str| {
        if set {
            Err(DockerError::unsupported(field))
        } else {
            Ok(())
        }
    };
    refuse(r.internal == Some(true), "an internal network (--internal)")?;
    refuse(
        r.ingress == Some(true),
        "a second ingress network (--ingress)",
    )?;
    refuse(
        r.config_only == Some(true),
        "a config-only network (--config-only)",
    )?;
    refuse(
        r.config_from.is_some(),
        "a network made from a config (--config-from)",
    )?;
    refuse(
        r.options.as_ref().is_some_and(|o| !o.is_empty()),
        "network driver options (--opt)",
    )?;
    if let Some(scope) = r
        .scope
        .as_deref()
        .filter(|s| !s.is_empty() && *s != "swarm")
    {
        return Err(DockerError::unsupported(&format!(
            "the network scope {scope:?} (shoal's networks are swarm-scoped)"
        )));
    }
    let ipam = r.ipam.unwrap_or_default();
    refuse(
        ipam.driver
            .as_deref()
            .is_some_and(|d| !d.is_empty() && d != "default"),
        "an IPAM driver other than default (--ipam-driver)",
    )?;
    refuse(
        ipam.options.as_ref().is_some_and(|o| !o.is_empty()),
        "IPAM options (--ipam-opt)",
    )?;
    let configs = ipam.config.unwrap_or_default();
    refuse(configs.len() > 1, "more than one subnet")?;
    let config = configs.into_iter().next().unwrap_or_default();
    refuse(
        config.ip_range.as_deref().is_some_and(|r| !r.is_empty()),
        "an IP range (--ip-range)",
    )?;
    refuse(
        config
            .auxiliary_addresses
            .as_ref()
            .is_some_and(|a| !a.is_empty()),
        "auxiliary addresses (--aux-address)",
    )?;
    Ok(NetworkRequest {
        name: r.name,
        driver: r
            .driver
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "overlay".into()),
        subnet: config.subnet.filter(|s| !s.is_empty()),
        gateway: config.gateway.filter(|g| !g.is_empty()),
        attachable: r.attachable.unwrap_or(false),
        labels: r.labels.unwrap_or_default().into_iter().collect(),
    })
}

/// What `/info` needs to know of the daemon.
#[derive(Debug, Clone, Default)]
pub struct InfoFacts {
    pub node_id: String,
    pub hostname: String,
    pub node_addr: String,
    /// Empty when the node is in no cluster.
    pub cluster_id: String,
    pub is_manager: bool,
    /// The managers' addresses, by node id.
    pub managers: Vec<(String, String)>,
    /// Counted when the node is a manager.
    pub nodes: Option<usize>,
    pub kernel_version: String,
    pub cpus: i64,
    pub memory_bytes: i64,
}

pub fn info(f: &InfoFacts) -> d::SystemInfo {
    let active = !f.cluster_id.is_empty();
    d::SystemInfo {
        id: Some(f.node_id.clone()),
        name: Some(f.hostname.clone()),
        server_version: Some(format!("shoal {}", env!("CARGO_PKG_VERSION"))),
        operating_system: Some("shoal".into()),
        os_type: Some("linux".into()),
        architecture: Some("x86_64".into()),
        kernel_version: Some(f.kernel_version.clone()),
        ncpu: Some(f.cpus),
        mem_total: Some(f.memory_bytes),
        driver: Some("overlayfs".into()),
        // The only runtime shoal drives (`runc` from the distribution).
        default_runtime: Some("runc".into()),
        swarm: Some(d::SwarmInfo {
            node_id: Some(f.node_id.clone()),
            node_addr: Some(f.node_addr.clone()),
            local_node_state: Some(if active {
                d::LocalNodeState::ACTIVE
            } else {
                d::LocalNodeState::INACTIVE
            }),
            control_available: Some(f.is_manager),
            error: Some(String::new()),
            remote_managers: Some(
                f.managers
                    .iter()
                    .map(|(id, addr)| d::PeerNode {
                        node_id: Some(id.clone()),
                        addr: Some(addr.clone()),
                    })
                    .collect(),
            ),
            nodes: f.nodes.map(|n| n as i64),
            managers: f.is_manager.then_some(f.managers.len() as i64),
            cluster: (active && f.is_manager).then(|| d::ClusterInfo {
                id: Some(f.cluster_id.clone()),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

/// `/version`.
pub fn system_version(kernel_version: &str) -> d::SystemVersion {
    let version = format!("shoal {}", env!("CARGO_PKG_VERSION"));
    d::SystemVersion {
        platform: Some(d::SystemVersionPlatform {
            name: "shoal".into(),
        }),
        components: Some(vec![d::SystemVersionComponents {
            name: "Engine".into(),
            version: version.clone(),
            details: Some(
                [
                    ("ApiVersion", version::MAX),
                    ("MinAPIVersion", version::MIN),
                    ("Os", "linux"),
                    ("Arch", "amd64"),
                    ("KernelVersion", kernel_version),
                    ("Experimental", "false"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ),
        }]),
        version: Some(version),
        api_version: Some(version::MAX.into()),
        min_api_version: Some(version::MIN.into()),
        os: Some("linux".into()),
        arch: Some("amd64".into()),
        kernel_version: Some(kernel_version.into()),
        experimental: Some(false),
        ..Default::default()
    }
}
