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

    #[error("cannot read the network namespace cookie of {netns}: {source}")]
    Cookie {
        netns: String,
        #[source]
        source: nix::errno::Errno,
    },

    #[error(transparent)]
    Netns(#[from] shoal_net::NetError),
}
