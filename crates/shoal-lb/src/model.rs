//! What a sandbox's load balancer must do: services, their VIPs, ports and running tasks.
//!
//! This is the input of everything else in the crate. It is plain data so that the agent can
//! build it from the endpoint table and keep the last one it programmed to diff against.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use crate::error::LbError;

/// A transport protocol a VIP port is balanced for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// The name nft uses (`tcp`, `udp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }

    /// The IP protocol number, as `meta l4proto` sees it.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One service as one sandbox's balancer sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipService {
    /// The service id; it names the service's chains, so it must be a plain identifier.
    pub id: String,
    /// The service's virtual IP on a network this sandbox is attached to.
    pub vip: Ipv4Addr,
    /// The ports balanced, VIP port = task port as in Swarm. Empty means every port and every
    /// protocol of the VIP: Swarm balances a VIP by firewall mark, so its services need no
    /// declared port for `curl vote` to work, and shoal keeps that. Other ports of the VIP are
    /// refused.
    pub ports: Vec<(Proto, u16)>,
    /// The addresses of the service's running tasks, in the order round robin visits them.
    /// Empty: connections to the VIP are refused at once.
    pub backends: Vec<Ipv4Addr>,
}

/// Everything one sandbox's balancer programs, keyed by service id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LbConfig {
    /// Services by id.
    pub services: BTreeMap<String, VipService>,
}

impl LbConfig {
    /// A config of `services`, keyed by their ids.
    pub fn new(services: impl IntoIterator<Item = VipService>) -> LbConfig {
        LbConfig {
            services: services.into_iter().map(|s| (s.id.clone(), s)).collect(),
        }
    }

    /// Checks what the kernel would reject or what would make two services collide, so that
    /// the error names the service instead of an nftables element.
    pub fn validate(&self) -> Result<(), LbError> {
        for (key, svc) in &self.services {
            validate_service(key, svc)?;
        }
        let all: Vec<&VipService> = self.services.values().collect();
        check_vips(self, &all)
    }
}

/// The checks of one service on its own, filed under `key`.
pub(crate) fn validate_service(key: &str, svc: &VipService) -> Result<(), LbError> {
    let invalid = |reason: String| LbError::InvalidConfig {
        service: svc.id.clone(),
        reason,
    };
    if key != svc.id {
        return Err(invalid(format!("is filed under the key {key:?}")));
    }
    validate_id(&svc.id).map_err(invalid)?;
    if svc.vip.is_unspecified() || svc.vip.is_loopback() || svc.vip.is_broadcast() {
        return Err(invalid(format!("{} cannot be a VIP", svc.vip)));
    }
    for (i, &(proto, port)) in svc.ports.iter().enumerate() {
        if port == 0 {
            return Err(invalid("lists port 0".to_string()));
        }
        // Services list a handful of ports: a quadratic scan beats a set.
        if svc.ports[..i].contains(&(proto, port)) {
            return Err(invalid(format!("lists {proto}/{port} twice")));
        }
    }
    if let Some(b) = svc.backends.iter().find(|b| **b == svc.vip) {
        return Err(invalid(format!("has its own VIP {b} as a backend")));
    }
    Ok(())
}

/// Checks that no service of `cfg` shares its VIP with one of `these` (services of `cfg`).
/// One pass over `cfg` and a sort of `these`: an update checks only what it changes.
pub(crate) fn check_vips(cfg: &LbConfig, these: &[&VipService]) -> Result<(), LbError> {
    let mut mine: Vec<(u32, &VipService)> = these.iter().map(|s| (u32::from(s.vip), *s)).collect();
    mine.sort_unstable_by_key(|(vip, _)| *vip);
    let clash = |a: &VipService, b: &VipService| LbError::InvalidConfig {
        service: b.id.clone(),
        reason: format!("shares its VIP {} with {}", b.vip, a.id),
    };
    if let Some(w) = mine.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(clash(w[0].1, w[1].1));
    }
    for other in cfg.services.values() {
        if let Ok(i) = mine.binary_search_by_key(&u32::from(other.vip), |(vip, _)| *vip)
            && mine[i].1.id != other.id
        {
            return Err(clash(other, mine[i].1));
        }
    }
    Ok(())
}

/// Service ids name chains, and nft's grammar takes identifiers of letters, digits, `_`, `.`,
/// `-` and `/` starting with a letter or `_`; the prefix `svc_` takes care of the start.
fn validate_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 {
        return Err("needs an id of 1 to 64 characters".to_string());
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err("needs an id of letters, digits, '_', '.' and '-'".to_string());
    }
    Ok(())
}

/// Which traffic to a VIP a verdict-map element sends to the service's chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Ports {
    /// One protocol and port (map `ports`).
    One(Proto, u16),
    /// Everything sent to the VIP, a service without declared ports (map `addrs`).
    All,
}

impl VipService {
    /// The service's chain: `svc_<id>`.
    pub(crate) fn chain(&self) -> String {
        format!("svc_{}", self.id)
    }

    /// What its verdict-map elements match.
    pub(crate) fn jump_ports(&self) -> Vec<Ports> {
        if self.ports.is_empty() {
            vec![Ports::All]
        } else {
            self.ports
                .iter()
                .map(|&(proto, port)| Ports::One(proto, port))
                .collect()
        }
    }
}
