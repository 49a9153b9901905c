//! What the node's data plane counted, named: the eBPF programs count connections by address
//! (`shoal-bpf`'s `conns` maps); this turns (VIP, backend address) and (published port,
//! backend address) into services and tasks with the endpoint view the agent applied. Pure.
//! The I/O (reading the maps) is in `vip` and `network`; shoald's `/metrics` and dashboard
//! read the result.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use serde::Serialize;
use shoal_types::endpoint::EndpointView;

/// New connections the node's VIP balancer sent to one task through one VIP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VipCount {
    pub service: String,
    pub network: String,
    pub vip: Ipv4Addr,
    pub backend: Ipv4Addr,
    /// `web.1.<id>`.
    pub task: String,
    pub count: u64,
}

/// New flows the node's routing mesh (tc) sent to one backend of one published port: a task
/// of this node, or another node the flow was forwarded to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MeshCount {
    pub port: u16,
    /// "tcp" or "udp".
    pub protocol: &'static str,
    /// The task's name (a task of this node), or `node:<address>` (forwarded there).
    pub backend: String,
    pub count: u64,
}

/// What the data plane counted, and which paths it takes (`ebpf`/`nftables`, `tc`/`nftables`):
/// only the eBPF paths count per backend.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DataplaneCounts {
    pub vip_balancer: &'static str,
    pub mesh_path: &'static str,
    pub vip: Vec<VipCount>,
    pub mesh: Vec<MeshCount>,
}

/// Names the balancer's (VIP, backend, count) triples with `view`; a pair the view does not
/// have (a task or service gone since) is left out: its counter is no longer a backend's.
pub fn label_vip(view: &EndpointView, counts: &[(Ipv4Addr, Ipv4Addr, u64)]) -> Vec<VipCount> {
    let mut vips = HashMap::new();
    for net in view.networks.values() {
        for svc in net.services.values() {
            if let Some(vip) = svc.vip {
                vips.insert(vip.addr(), (net, svc));
            }
        }
    }
    let mut out: Vec<VipCount> = counts
        .iter()
        .filter_map(|&(vip, backend, count)| {
            let (net, svc) = vips.get(&vip)?;
            let task = net
                .tasks
                .values()
                .find(|t| t.service_id == svc.id && t.addr.addr() == backend)?;
            Some(VipCount {
                service: svc.name.clone(),
                network: net.info.name.clone(),
                vip,
                backend,
                task: task.name.clone(),
                count,
            })
        })
        .collect();
    out.sort_by(|a, b| (&a.service, &a.task).cmp(&(&b.service, &b.task)));
    out
}

/// Names the mesh's counts: a local backend by the task whose gateway address it is
/// (`local`: gateway address → task name), a remote one by its node's address.
pub fn label_mesh(
    counts: &[shoal_bpf::MeshCount],
    local: &HashMap<Ipv4Addr, String>,
) -> Vec<MeshCount> {
    let mut out: Vec<MeshCount> = counts
        .iter()
        .filter_map(|c| {
            let backend = if c.local {
                local.get(&c.addr)?.clone()
            } else {
                format!("node:{}", c.addr)
            };
            Some(MeshCount {
                port: c.port,
                protocol: if c.proto == 17 { "udp" } else { "tcp" },
                backend,
                count: c.count,
            })
        })
        .collect();
    out.sort_by(|a, b| (a.port, a.protocol, &a.backend).cmp(&(b.port, b.protocol, &b.backend)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_types::endpoint::{NetworkEndpoints, NetworkInfo, ServiceEndpoint, TaskEndpoint};

    fn view() -> EndpointView {
        let mut net = NetworkEndpoints {
            info: NetworkInfo {
                id: "n1".into(),
                name: "ovl".into(),
                vni: 4097,
                subnet: "10.0.1.0/24".parse().unwrap(),
                gateway: "10.0.1.1".parse().unwrap(),
                ingress: false,
            },
            services: Default::default(),
            tasks: Default::default(),
            nodes: Default::default(),
        };
        net.services.insert(
            "s1".into(),
            ServiceEndpoint {
                id: "s1".into(),
                name: "web".into(),
                mode: shoal_types::EndpointMode::Vip,
                vip: Some("10.0.1.2/24".parse().unwrap()),
                ports: vec![],
                aliases: vec![],
                dns_ttl: None,
                publish_not_ready: false,
            },
        );
        net.tasks.insert(
            "t1".into(),
            TaskEndpoint {
                id: "t1".into(),
                name: "web.1.t1".into(),
                service_id: "s1".into(),
                addr: "10.0.1.3/24".parse().unwrap(),
                node_id: "n".into(),
                vtep: "192.168.0.1".parse().unwrap(),
                ready: true,
            },
        );
        let mut v = EndpointView::default();
        v.networks.insert("n1".into(), net);
        v
    }

    #[test]
    fn vip_counts_are_named_and_stale_pairs_dropped() {
        let vip: Ipv4Addr = "10.0.1.2".parse().unwrap();
        let counts = [
            (vip, "10.0.1.3".parse().unwrap(), 7),
            (vip, "10.0.1.9".parse().unwrap(), 2), // a task gone
            ("10.9.9.9".parse().unwrap(), "10.0.1.3".parse().unwrap(), 1), // a VIP gone
        ];
        let named = label_vip(&view(), &counts);
        assert_eq!(
            named,
            [VipCount {
                service: "web".into(),
                network: "ovl".into(),
                vip,
                backend: "10.0.1.3".parse().unwrap(),
                task: "web.1.t1".into(),
                count: 7,
            }]
        );
    }

    #[test]
    fn mesh_counts_name_local_tasks_and_remote_nodes() {
        let gw: Ipv4Addr = "172.30.0.5".parse().unwrap();
        let local = HashMap::from([(gw, "web.1.t1".to_string())]);
        let c = |local, addr: &str, count| shoal_bpf::MeshCount {
            port: 8080,
            proto: 6,
            local,
            addr: addr.parse().unwrap(),
            count,
        };
        let named = label_mesh(
            &[
                c(true, "172.30.0.5", 3),
                c(false, "172.29.1.2", 1),
                c(true, "172.30.0.9", 4),
            ],
            &local,
        );
        let got: Vec<(&str, u64)> = named
            .iter()
            .map(|m| (m.backend.as_str(), m.count))
            .collect();
        assert_eq!(got, [("node:172.29.1.2", 1), ("web.1.t1", 3)]);
    }
}
