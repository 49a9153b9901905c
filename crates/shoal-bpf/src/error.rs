use std::path::PathBuf;

/// What can go wrong loading, attaching or programming the socket balancer.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error(
        "this shoald was built without the eBPF VIP balancer: {0}; use --vip-balancer nftables, \
         or install clang and libbpf-dev and rebuild"
    )]
    NotBuilt(String),

    #[error(
        "this shoald was built without the routing mesh's tc program: {0}; published ports \
         use nftables (--mesh-path nftables), or install clang and libbpf-dev and rebuild"
    )]
    MeshNotBuilt(String),

    #[error(
        "no cgroup v2 hierarchy is mounted (tried {tried}); the eBPF VIP balancer attaches at its \
         root: mount cgroup2 or use --vip-balancer nftables"
    )]
    NoCgroup2 { tried: String },

    #[error("cannot open the cgroup {path}: {source}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "failed to load the eBPF VIP balancer's object: {0}; it needs root (CAP_BPF and \
         CAP_NET_ADMIN) and a kernel with BTF"
    )]
    Load(#[from] aya::EbpfError),

    #[error(
        "failed to {action} eBPF program {program}: {source}; cgroup sock_addr programs with \
         bpf_set_retval need Linux 5.18 or later, root, and no cgroup program attached without \
         multi-attach above the target cgroup"
    )]
    Program {
        action: &'static str,
        program: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },

    #[error(
        "failed to {action} the routing mesh's tc program {program}{on}: {source}; it needs \
         root (CAP_BPF and CAP_NET_ADMIN) and Linux 5.10 or later (bpf_redirect_peer)",
        on = if iface.is_empty() { String::new() } else { format!(" on {iface}") }
    )]
    TcProgram {
        action: &'static str,
        program: &'static str,
        iface: String,
        // Boxed: with the interface name it would make every BpfError large.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },

    #[error(
        "cannot find the interface holding the node's address {addr}: {detail}; published \
         ports need it for the tc path (--mesh-path nftables does without)"
    )]
    NoInterfaceFor {
        addr: std::net::Ipv4Addr,
        detail: String,
    },

    #[error("no interface {ifname} in this network namespace: {source}")]
    Interface {
        ifname: String,
        #[source]
        source: nix::errno::Errno,
    },

    #[error("the eBPF object has no {kind} named {name} (built from an older bpf/sock_lb.c?)")]
    Missing {
        kind: &'static str,
        name: &'static str,
    },

    #[error("failed to {action} in eBPF map {map}: {source}")]
    Map {
        action: &'static str,
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },

    #[error(
        "failed to {action} the iterator that closes UDP sockets of removed backends: {source}"
    )]
    Iterator {
        action: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },

    #[error(
        "failed to close the UDP sockets connected to removed backends in {netns}: {source}; \
         they keep sending to a task that is gone until the application closes them"
    )]
    UdpClose {
        netns: String,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot read the network namespace cookie of {netns}: {source}")]
    Cookie {
        netns: String,
        #[source]
        source: nix::errno::Errno,
    },

    #[error(
        "failed to make the kernel count eBPF run times (BPF_ENABLE_STATS): {0}; it needs root and Linux 5.8 or later"
    )]
    RunStats(std::io::Error),

    #[error(transparent)]
    Netns(#[from] shoal_net::NetError),
}
