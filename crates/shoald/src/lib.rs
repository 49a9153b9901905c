//! shoald, the daemon that runs on every host of a shoal cluster.
//!
//! # Layout
//! - `daemon`: roles and their lifecycle (`init`, `join`, `leave`, resume after restart).
//! - `manager`: the manager role at run time (proposals, the leader's control loop).
//! - `cluster_service`: the `Cluster` gRPC service (joins, agent sessions, reports);
//!   `reports`: agents' status reports committed together (group commit).
//! - `backend`: the HTTP API (`shoal-api`'s `Backend`) over the daemon.
//! - `events`: the manager's event feed (`shoal events`), kept in a ring for `--since`.
//! - `identity`: what a node remembers across restarts.
//! - `certs`: the node's certificates (files, TLS configurations); `renewal` renews them;
//!   `gate`: who may call what on 2377, by certificate; `joins`: failed joins rate-limited.
//! - `images`: `image ls|rm|prune` over the agent's store.
//! - `registry`: image pinning and registry logins on managers (sealed, handed to nodes).
//! - `listeners`: where the API is served (`-H`, TLS) and the data dir's mode.
//! - `web`: the `--metrics-addr` listener: `/metrics` (series defined in `metrics`) and the
//!   read-only dashboard (`dashboard`, its data; `dashboard/`, the page).
#![forbid(unsafe_code)]

pub mod backend;
pub mod certs;
pub mod clock;
pub mod cluster_service;
pub mod daemon;
pub mod dashboard;
pub mod errors;
pub mod events;
pub mod gate;
pub mod identity;
pub mod images;
pub mod joins;
pub mod listeners;
pub mod manager;
pub mod metrics;
pub mod networks;
pub mod promotion;
pub mod registry;
pub mod renewal;
pub mod reports;
pub mod role;
pub mod rotation;
pub mod sessions;
pub mod web;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tracing::{info, warn};

use listeners::{HostSpec, TlsFlags};

#[derive(Debug, Parser)]
#[command(
    name = "shoald",
    version,
    about = "The shoal daemon: run one on every host of the cluster"
)]
pub struct Args {
    /// Where the node keeps its identity, Raft log and task directories.
    #[arg(long, default_value = "/var/lib/shoal")]
    pub data_dir: PathBuf,
    /// Where to serve the API, as dockerd's -H (repeatable): unix:///path or tcp://IP:PORT.
    /// Default: unix:///run/shoal/shoal.sock. TCP needs --tlsverify unless the IP is a
    /// loopback one.
    #[arg(short = 'H', long = "host", value_name = "URL")]
    pub hosts: Vec<HostSpec>,
    /// The Unix socket the `shoal` CLI talks to (the same as -H unix://PATH).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Serve TCP listeners over TLS and require client certificates signed by --tlscacert.
    #[arg(long)]
    pub tlsverify: bool,
    /// The CA (PEM) whose certificates clients must present (with --tlsverify).
    #[arg(long, value_name = "FILE")]
    pub tlscacert: Option<PathBuf>,
    /// This daemon's certificate (PEM) for its TCP listeners (with --tlsverify).
    #[arg(long, value_name = "FILE")]
    pub tlscert: Option<PathBuf>,
    /// The key of --tlscert (PEM).
    #[arg(long, value_name = "FILE")]
    pub tlskey: Option<PathBuf>,
    /// Address of the cluster (gRPC) listener that other nodes dial.
    #[arg(long, default_value = "0.0.0.0:2377")]
    pub listen_addr: SocketAddr,
    /// The IP other nodes reach this node at (default: from `init`/`join`, else the listen address).
    #[arg(long)]
    pub advertise_addr: Option<String>,
    /// The node's name in `node ls` (default: the host's name).
    #[arg(long)]
    pub hostname: Option<String>,
    /// How often agents send heartbeats when this node initialises a cluster (Swarm's
    /// `--dispatcher-heartbeat`, 5s by default).
    #[arg(long, default_value = "5s", value_parser = parse_ms)]
    pub heartbeat_period: u64,
    /// Heartbeat periods a node may miss before it is marked Down, when this node
    /// initialises a cluster.
    #[arg(long, default_value_t = shoal_types::state::DEFAULT_HEARTBEAT_GRACE,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub heartbeat_grace: u32,
    /// A hosts file whose lines are added to every task's /etc/hosts (the lab's node names).
    #[arg(long)]
    pub extra_hosts: Option<PathBuf>,
    /// DNS servers (IP:PORT) for names that are not the cluster's; repeatable. Default:
    /// the nameservers of the host's /etc/resolv.conf.
    #[arg(long = "dns-upstream")]
    pub dns_upstream: Vec<std::net::SocketAddr>,
    /// The VIP balancer: `auto` (eBPF socket balancer, one per node, else nftables in each
    /// sandbox with a warning), `ebpf` (a load failure stops the daemon) or `nftables`.
    #[arg(long, default_value = "auto", value_parser = parse_vip_choice)]
    pub vip_balancer: shoal_agent::vip::VipChoice,
    /// The routing mesh's path: `auto` (tc eBPF on the underlay interface, else nftables with
    /// a warning), `tc` (published ports fail if it cannot load) or `nftables`.
    #[arg(long, default_value = "auto", value_parser = parse_mesh_choice)]
    pub mesh_path: shoal_agent::mesh::MeshPathChoice,
    /// How the DNS threads share each sandbox's queries: `hash` (the kernel spreads them) or
    /// `cpu` (one DNS thread pinned per CPU takes the queries its CPU receives: less CPU per
    /// query when clients ask from every CPU, but one busy client's queries get one thread;
    /// needs as many DNS threads as CPUs, else hash with a warning).
    #[arg(long, default_value = "hash", value_parser = ["hash", "cpu"])]
    pub dns_steering: String,
    /// A registry (HOST:PORT) to pull images from over plain HTTP; repeatable. Loopback
    /// registries (127.0.0.0/8, localhost) always are, as docker does.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    pub insecure_registries: Vec<String>,
    /// Where to serve Prometheus metrics (/metrics) and the read-only dashboard (/), as
    /// dockerd's --metrics-addr; plain HTTP without authentication, so keep it on loopback or
    /// a network only operators reach. An empty value serves neither.
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:9323", value_parser = parse_metrics_addr)]
    pub metrics_addr: MetricsAddr,
}

/// `--metrics-addr`: an address, or none (an empty value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsAddr(pub Option<SocketAddr>);

fn parse_metrics_addr(s: &str) -> Result<MetricsAddr, String> {
    if s.is_empty() {
        return Ok(MetricsAddr(None));
    }
    s.parse()
        .map(|a| MetricsAddr(Some(a)))
        .map_err(|e| format!("{e}: give IP:PORT, e.g. 127.0.0.1:9323, or \"\" for none"))
}

fn parse_mesh_choice(s: &str) -> Result<shoal_agent::mesh::MeshPathChoice, String> {
    s.parse()
}

fn parse_vip_choice(s: &str) -> Result<shoal_agent::vip::VipChoice, String> {
    s.parse()
}

fn parse_ms(s: &str) -> Result<u64, String> {
    shoal_types::time::parse_duration_ms(s)
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    // The listeners are decided and their TLS files read first: a bad -H fails at start.
    let plan = listeners::plan(
        &args.hosts,
        args.socket.as_deref(),
        &TlsFlags {
            verify: args.tlsverify,
            ca: args.tlscacert.clone(),
            cert: args.tlscert.clone(),
            key: args.tlskey.clone(),
        },
    )?;
    for w in &plan.warnings {
        warn!("{w}");
    }
    let tls = match &plan.tls {
        None => None,
        Some(files) => {
            if let Some(mode) = listeners::loose_key_mode(&files.key) {
                warn!(key = %files.key.display(), mode = format!("{mode:04o}"),
                      "the API's TLS key is readable by others than its owner; chmod 600 it");
            }
            Some(shoal_api::tls::server_config(files)?)
        }
    };
    let hostname = match args.hostname.clone() {
        Some(h) => h,
        None => nix::unistd::gethostname()
            .context("failed to read the host name; pass --hostname")?
            .to_string_lossy()
            .into_owned(),
    };
    // The data dir holds the Raft log (join tokens, sealed logins) and keys: root's alone.
    if let Some(was) = listeners::private_data_dir(&args.data_dir)
        .with_context(|| format!("failed to create the data dir {}", args.data_dir.display()))?
    {
        info!(data_dir = %args.data_dir.display(), was = format!("{was:04o}"),
              "data dir tightened to 0700");
    }
    // Once per daemon, before anything else: `--vip-balancer ebpf` fails here, at start.
    let vip_balancer = Arc::new(shoal_agent::vip::VipBalancer::select(args.vip_balancer)?);
    let metrics = Arc::new(metrics::Metrics::default());
    // Bound before anything starts, so that a port in use fails the daemon at once.
    let metrics_listener = match args.metrics_addr.0 {
        Some(addr) => Some(web::bind(addr).await?),
        None => None,
    };
    let cfg = daemon::Config {
        hostname,
        data_dir: args.data_dir.clone(),
        listen_addr: args.listen_addr,
        advertise_addr: args.advertise_addr.clone(),
        heartbeat_period_ms: args.heartbeat_period,
        heartbeat_grace: args.heartbeat_grace,
        extra_hosts: args.extra_hosts.clone(),
        insecure_registries: args.insecure_registries.clone(),
        vip_balancer,
        mesh_path: args.mesh_path,
        dns_steer_by_cpu: args.dns_steering == "cpu",
        metrics: Arc::clone(&metrics),
        upstream: if args.dns_upstream.is_empty() {
            shoal_dns::Upstream::from_resolv_conf("/etc/resolv.conf").unwrap_or(
                shoal_dns::Upstream {
                    servers: vec![],
                    timeout: shoal_dns::upstream::DEFAULT_TIMEOUT,
                },
            )
        } else {
            shoal_dns::Upstream {
                servers: args.dns_upstream.clone(),
                timeout: shoal_dns::upstream::DEFAULT_TIMEOUT,
            }
        },
    };
    let daemon = daemon::Daemon::new(cfg);
    daemon
        .resume()
        .await
        .context("failed to resume this node's cluster membership")?;

    let mut bound = Vec::new();
    for spec in &plan.listeners {
        bound.push(bind(spec, tls.as_ref()).await?);
    }
    let router = shoal_api::router(Arc::new(backend::Api(Arc::clone(&daemon))));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    for (spec, listener) in plan.listeners.iter().zip(bound) {
        let mut stopped = stopped.clone();
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        let router = router.clone();
        let name = spec.to_string();
        servers.spawn(async move {
            match listener {
                Bound::Unix(l) => shoal_api::serve_with_shutdown(l, router, shutdown).await,
                Bound::Tcp(l) => shoal_api::serve_with_shutdown(l, router, shutdown).await,
                Bound::Tls(l) => shoal_api::serve_with_shutdown(l, router, shutdown).await,
            }
            .with_context(|| format!("the API server on {name} failed"))
        });
    }
    // Not among `servers`: it is ended, not drained, at shutdown (a dashboard's event
    // stream never closes on its own), and its failure does not stop the daemon.
    let metrics_server = metrics_listener.map(|listener| {
        let addr = listener.local_addr().ok();
        info!(addr = ?addr, "metrics and dashboard listening (/metrics, /)");
        let router = web::router(Arc::clone(&daemon), metrics);
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                warn!(error = %e, "the metrics listener failed");
            }
        })
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let failed = tokio::select! {
        _ = tokio::signal::ctrl_c() => None,
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => None,
        Some(ended) = servers.join_next() => Some(match ended {
            Ok(Ok(())) => anyhow::anyhow!("an API server stopped on its own"),
            Ok(Err(e)) => e,
            Err(e) => anyhow::anyhow!("an API server panicked: {e}"),
        }),
    };
    let _ = stop.send(true);
    if let Some(h) = metrics_server {
        h.abort();
    }
    while servers.join_next().await.is_some() {}
    let remove_sockets = || {
        for spec in &plan.listeners {
            if let HostSpec::Unix(path) = spec {
                let _ = std::fs::remove_file(path);
            }
        }
    };
    if let Some(e) = failed {
        remove_sockets();
        return Err(e);
    }
    info!("shutting down: stopping tasks");
    daemon.shutdown().await;
    remove_sockets();
    Ok(())
}

/// A listener of any kind, bound.
enum Bound {
    Unix(tokio::net::UnixListener),
    Tcp(tokio::net::TcpListener),
    Tls(shoal_api::tls::TlsListener),
}

async fn bind(
    spec: &HostSpec,
    tls: Option<&Arc<shoal_api::tls::rustls::ServerConfig>>,
) -> anyhow::Result<Bound> {
    match spec {
        HostSpec::Unix(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("failed to create {}", dir.display()))?;
            }
            // A socket file left by a daemon that died is stale; a live daemon still answers.
            if path.exists() {
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    anyhow::bail!(
                        "another shoald is already serving {}; stop it first",
                        path.display()
                    );
                }
                std::fs::remove_file(path)
                    .with_context(|| format!("failed to remove stale {}", path.display()))?;
            }
            let listener = tokio::net::UnixListener::bind(path)
                .with_context(|| format!("failed to listen on {}", path.display()))?;
            // Bound with the umask's mode (no write bit for others under the usual 022),
            // then narrowed: root and the `shoal` group, as docker's socket.
            let group = listeners::restrict_socket(path)
                .with_context(|| format!("failed to set the mode of {}", path.display()))?;
            info!(socket = %path.display(), mode = "0660", group, "API listening");
            Ok(Bound::Unix(listener))
        }
        HostSpec::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("failed to listen on {spec}"))?;
            match tls {
                Some(config) => {
                    info!(addr = %spec, tls = "client certificates required", "API listening");
                    Ok(Bound::Tls(shoal_api::tls::TlsListener::new(
                        listener,
                        Arc::clone(config),
                    )?))
                }
                None => {
                    info!(addr = %spec, tls = "none", "API listening");
                    Ok(Bound::Tcp(listener))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Args;

    #[test]
    fn insecure_registries_are_repeatable_and_none_by_default() {
        let args = Args::try_parse_from([
            "shoald",
            "--insecure-registry",
            "10.1.2.3:5000",
            "--insecure-registry",
            "registry.lab:5000",
        ])
        .unwrap();
        assert_eq!(
            args.insecure_registries,
            ["10.1.2.3:5000", "registry.lab:5000"]
        );
        assert!(
            Args::try_parse_from(["shoald"])
                .unwrap()
                .insecure_registries
                .is_empty()
        );
    }

    #[test]
    fn metrics_addr_defaults_to_dockerds_port_on_loopback_and_may_be_off() {
        let addr = |args: &[&str]| {
            Args::try_parse_from([&["shoald"], args].concat())
                .map(|a| a.metrics_addr.0)
                .map_err(|e| e.to_string())
        };
        assert_eq!(addr(&[]), Ok(Some("127.0.0.1:9323".parse().unwrap())));
        assert_eq!(addr(&["--metrics-addr", ""]), Ok(None));
        assert_eq!(
            addr(&["--metrics-addr", "0.0.0.0:9400"]),
            Ok(Some("0.0.0.0:9400".parse().unwrap()))
        );
        let err = addr(&["--metrics-addr", "9323"]).unwrap_err();
        assert!(err.contains("give IP:PORT"), "{err}");
    }

    #[test]
    fn dns_steering_is_hash_unless_cpu_is_asked_for() {
        let steering = |args: &[&str]| {
            Args::try_parse_from([&["shoald"], args].concat())
                .map(|a| a.dns_steering)
                .map_err(|e| e.to_string())
        };
        assert_eq!(steering(&[]).as_deref(), Ok("hash"));
        assert_eq!(steering(&["--dns-steering", "cpu"]).as_deref(), Ok("cpu"));
        let err = steering(&["--dns-steering", "core"]).unwrap_err();
        assert!(
            err.contains("'core'") && err.contains("[possible values: hash, cpu]"),
            "{err}"
        );
    }
}
