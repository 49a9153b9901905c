//! Builders for tests of this crate and of the manager (feature `test-util`).

use std::collections::BTreeMap;

use crate::node::{NodeDescription, NodeSpec, NodeStatus};
use crate::service::{ContainerSpec, TaskTemplate};
use crate::state::Service;
use crate::*;

pub fn node(id: &str, hostname: &str) -> Node {
    Node {
        id: id.into(),
        created_at: Millis(0),
        updated_at: Millis(0),
        spec: NodeSpec {
            role: NodeRole::Worker,
            availability: Availability::Active,
            labels: BTreeMap::new(),
        },
        description: NodeDescription {
            hostname: hostname.into(),
            data_plane: None,
            host_networks: vec![],
            resources: Default::default(),
        },
        status: NodeStatus {
            state: NodeState::Ready,
            message: String::new(),
            addr: "172.29.0.1".into(),
            cluster_addr: "172.29.0.1:2377".into(),
        },
        manager_status: None,
        ingress_addr: None,
    }
}

pub fn spec(name: &str, replicas: u64) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        labels: BTreeMap::new(),
        task_template: TaskTemplate {
            container_spec: ContainerSpec {
                command: vec!["sleep".into(), "1000".into()],
                env: vec![],
                dir: None,
                stop_grace_period_ms: 10_000,
                ..ContainerSpec::host(vec![])
            },
            restart_policy: RestartPolicy::default(),
            placement: Default::default(),
            networks: vec![],
            force_update: 0,
        },
        mode: ServiceMode::Replicated { replicas },
        endpoint_spec: EndpointSpec::default(),
        update_config: Default::default(),
        rollback_config: Default::default(),
    }
}

pub fn service(id: &str, spec: ServiceSpec) -> Service {
    Service {
        id: id.into(),
        version: 1,
        created_at: Millis(0),
        updated_at: Millis(0),
        spec,
        endpoint: Default::default(),
        registry_auth: None,
        previous_spec: None,
        update_status: None,
        force_version: 0,
    }
}

pub fn info() -> ClusterInfo {
    ClusterInfo {
        id: "c0ffee".into(),
        created_at: Millis(0),
        worker_token: "w".into(),
        manager_token: "m".into(),
        cert_expiry_ms: crate::state::DEFAULT_CERT_EXPIRY_MS,
        removed_nodes: Default::default(),
        heartbeat_period_ms: 1000,
        heartbeat_grace: 3,
        root_ca: None,
        ca_rotation: None,
    }
}

/// A state with the given nodes (all Ready/Active workers) and nothing else.
pub fn cluster(nodes: &[(&str, &str)]) -> ClusterState {
    let mut st = ClusterState::default();
    let mut it = nodes.iter();
    let (id, host) = it.next().expect("at least one node");
    st.apply(Command::InitCluster {
        info: info(),
        node: node(id, host),
    })
    .expect("init");
    for (id, host) in it {
        st.apply(Command::AddNode {
            node: node(id, host),
            at: Millis(0),
        })
        .expect("add node");
    }
    st
}

pub fn network(id: &str, name: &str, subnet: &str, vni: u32) -> Network {
    let subnet: ipnet::Ipv4Net = subnet.parse().expect("subnet");
    let gateway = subnet.hosts().next().expect("a host");
    Network {
        id: id.into(),
        name: name.into(),
        created_at: Millis(0),
        driver: "overlay".into(),
        scope: "swarm".into(),
        ingress: false,
        attachable: false,
        ipam: Ipam { subnet, gateway },
        vni,
        labels: BTreeMap::new(),
        next_host: 0,
        usage: None,
    }
}

/// A spec attached to the given network ids.
pub fn spec_on(name: &str, replicas: u64, networks: &[&str]) -> ServiceSpec {
    let mut s = spec(name, replicas);
    s.task_template.networks = networks
        .iter()
        .map(|n| crate::service::NetworkAttachment {
            target: n.to_string(),
            aliases: vec![],
        })
        .collect();
    s
}

/// A task of service `service_id` (named `name`), slot 1, desired Running, New at time 0;
/// tests set what they need on top.
pub fn task(id: &str, service_id: &str, name: &str) -> Task {
    Task {
        id: id.into(),
        service_id: service_id.into(),
        service_name: name.into(),
        slot: 1,
        node_id: None,
        desired_state: TaskState::Running,
        status: TaskStatus::new(TaskState::New, Millis(0), ""),
        spec_version: 1,
        spec: spec(name, 1).task_template.container_spec,
        networks: vec![],
        ports: vec![],
        restarts: 0,
        started_at: None,
        ready_at: None,
        created_at: Millis(0),
        updated_at: Millis(0),
    }
}
