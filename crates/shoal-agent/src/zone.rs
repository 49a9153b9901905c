//! What one sandbox can resolve: the endpoint table cut to the networks the task is
//! attached to (ingress carries no names, as in Swarm).

use shoal_dns::{NetworkView, Protocol, ServiceView, SrvPort, TaskView, Zone};
use shoal_types::endpoint::{EndpointView, TASK_TTL, VIP_TTL};
use shoal_types::{EndpointMode, Protocol as PortProtocol};

pub fn zone_for(view: &EndpointView, networks: &[String]) -> Zone {
    let mut out = Vec::new();
    for id in networks {
        let Some(n) = view.networks.get(id) else {
            continue;
        };
        if n.info.ingress {
            continue;
        }
        let services = n
            .services
            .values()
            .map(|s| {
                let vip = if s.mode == EndpointMode::Vip {
                    s.vip.map(|v| v.addr())
                } else {
                    None
                };
                ServiceView {
                    name: s.name.clone(),
                    vip,
                    dnsrr: s.mode == EndpointMode::Dnsrr,
                    ttl: s
                        .dns_ttl
                        .unwrap_or(if vip.is_some() { VIP_TTL } else { TASK_TTL }),
                    aliases: s.aliases.clone(),
                    ports: s
                        .ports
                        .iter()
                        .map(|p| SrvPort {
                            name: p.name.clone(),
                            protocol: match p.protocol {
                                PortProtocol::Tcp => Protocol::Tcp,
                                PortProtocol::Udp => Protocol::Udp,
                            },
                            target_port: p.target_port,
                        })
                        .collect(),
                    tasks: n
                        .tasks
                        .values()
                        .filter(|t| t.service_id == s.id)
                        .map(|t| TaskView {
                            id: t.id.clone(),
                            name: t.name.clone(),
                            addr: t.addr.addr(),
                            aliases: vec![],
                        })
                        .collect(),
                }
            })
            .collect();
        out.push(NetworkView {
            name: n.info.name.clone(),
            services,
        });
    }
    Zone::new(out)
}

/// What one sandbox's VIP balancer programs: every vip-mode service on the sandbox's
/// networks (ingress excluded), all ports of its VIP, to its running tasks on that network.
pub fn lb_for(view: &EndpointView, networks: &[String]) -> shoal_lb::LbConfig {
    let mut services = Vec::new();
    for id in networks {
        let Some(n) = view.networks.get(id) else {
            continue;
        };
        if n.info.ingress {
            continue;
        }
        for s in n.services.values() {
            let (EndpointMode::Vip, Some(vip)) = (s.mode, s.vip) else {
                continue;
            };
            let mut backends: Vec<_> = n
                .tasks
                .values()
                .filter(|t| t.service_id == s.id)
                .map(|t| t.addr.addr())
                .collect();
            backends.sort();
            services.push(shoal_lb::VipService {
                // One chain per service and network: a sandbox on two of its networks has
                // two VIPs for it.
                id: format!(
                    "{}_{}",
                    &s.id[..12.min(s.id.len())],
                    &id[..12.min(id.len())]
                ),
                vip: vip.addr(),
                ports: Vec::new(),
                backends,
            });
        }
    }
    shoal_lb::LbConfig::new(services)
}
