//! What the host (the caller's namespace) already uses: its IPv4 addresses, routes and DNS
//! resolvers. Subnets that shoal picks (overlay networks, the ingress network, the gateway
//! bridge) must not cover any of them, or the host or its tasks lose their way to them.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Something of the host's that an overlay subnet must not cover, with what it is.
#[derive(Debug, Clone)]
pub struct Reserved {
    pub net: Ipv4Net,
    pub what: String,
    /// The interface it was read from, for addresses.
    pub ifname: Option<String>,
}

/// The host's IPv4 addresses (with their subnets), its non-default routes and its DNS
/// resolvers. A route in a task for a subnet covering any of these would cut the task off
/// from them (on these machines the resolver, 10.255.255.53, sits in Swarm's default
/// ingress range).
pub fn host_reserved() -> Vec<Reserved> {
    let mut out = Vec::new();
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for ifa in addrs {
            let (Some(addr), Some(mask)) = (ifa.address, ifa.netmask) else {
                continue;
            };
            let (Some(a), Some(m)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) else {
                continue;
            };
            let ip = a.ip();
            if ip.is_loopback() {
                continue;
            }
            let prefix = u32::from(m.ip()).count_ones() as u8;
            if let Ok(net) = Ipv4Net::new(ip, prefix) {
                out.push(Reserved {
                    net: net.trunc(),
                    what: format!("the host's address {ip} ({})", ifa.interface_name),
                    ifname: Some(ifa.interface_name.clone()),
                });
            }
        }
    }
    // /proc/net/route: destination and mask in little-endian hex.
    if let Ok(routes) = std::fs::read_to_string("/proc/net/route") {
        for line in routes.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                continue;
            }
            let (Ok(dst), Ok(mask)) =
                (u32::from_str_radix(f[1], 16), u32::from_str_radix(f[7], 16))
            else {
                continue;
            };
            let (dst, mask) = (Ipv4Addr::from(u32::from_be(dst)), u32::from_be(mask));
            if mask == 0 {
                continue; // the default route covers everything; it is not a conflict
            }
            if let Ok(net) = Ipv4Net::new(dst, mask.count_ones() as u8) {
                out.push(Reserved {
                    net,
                    what: format!("the host's route to {net} ({})", f[0]),
                    ifname: Some(f[0].to_string()),
                });
            }
        }
    }
    if let Ok(conf) = std::fs::read_to_string("/etc/resolv.conf") {
        for line in conf.lines() {
            let mut words = line.split_whitespace();
            if words.next() == Some("nameserver")
                && let Some(Ok(ip)) = words.next().map(str::parse::<Ipv4Addr>)
                && !ip.is_loopback()
            {
                out.push(Reserved {
                    net: Ipv4Net::from(ip),
                    what: format!("the host's DNS resolver {ip}"),
                    ifname: None,
                });
            }
        }
    }
    out
}
