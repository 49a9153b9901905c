//! `shoal lab`: a cluster in network namespaces on this machine (see shoal-lab).

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum LabCmd {
    /// Build a cluster on this machine: one network namespace and daemon per node.
    Up(LabUpArgs),
    /// Tear the lab down: processes, namespaces, links, state.
    Down(LabNameArg),
    /// List the lab's nodes.
    Ls,
    /// Run a command on a lab node: shoal lab exec node2 -- shoal node ls.
    Exec(LabExecArgs),
}

#[derive(Debug, Args)]
pub struct LabUpArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: u32,
    /// Number of managers among them.
    #[arg(long, default_value_t = 1)]
    pub managers: u32,
    /// The lab's name (several labs can run side by side).
    #[arg(long, default_value = "lab")]
    pub name: String,
    /// How often agents send heartbeats; a node is Down after three missed ones.
    #[arg(long, default_value = "1s")]
    pub heartbeat_period: String,
    /// Heartbeat periods a node may miss before it is marked Down. Lab nodes share two
    /// cores, so the lab is more patient than a cluster's default of 3.
    #[arg(long, default_value_t = 5)]
    pub heartbeat_grace: u32,
    /// DNS server (IP:PORT) the nodes forward non-cluster names to; repeatable. Lab
    /// nodes have no route out, so the host's resolvers are unreachable from them.
    #[arg(long)]
    pub dns_upstream: Vec<String>,
    /// The nodes' VIP balancer: auto (eBPF, else nftables), ebpf or nftables. Every node
    /// loads its own eBPF programs; they act only on that node's tasks.
    #[arg(long, default_value = "auto")]
    pub vip_balancer: String,
    /// The nodes' routing-mesh path: auto (tc eBPF, else nftables), tc or nftables.
    #[arg(long, default_value = "auto")]
    pub mesh_path: String,
    /// A registry (HOST:PORT) the nodes pull from over plain HTTP; repeatable.
    #[arg(long, value_name = "HOST:PORT")]
    pub insecure_registry: Vec<String>,
    /// Run an image registry in the lab (docker-registry at 172.29.k.254:5000, pulled from
    /// over plain HTTP) with the seed's images pushed: anoy/vote and anoy/client, built
    /// from this machine's binaries.
    #[arg(long)]
    pub registry: bool,
    /// How long node certificates are valid (`shoal init --cert-expiry`; e.g. 1m to watch
    /// them renew).
    #[arg(long, value_name = "DURATION")]
    pub cert_expiry: Option<String>,
}

#[derive(Debug, Args)]
pub struct LabNameArg {
    /// The lab's name.
    #[arg(long, default_value = "lab")]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct LabExecArgs {
    /// The lab's name.
    #[arg(long, default_value = "lab")]
    pub name: String,
    /// The node: node1, node2, ...
    pub node: String,
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

pub async fn lab(cmd: LabCmd) -> Result<i32> {
    match cmd {
        LabCmd::Up(args) => up(args).await,
        LabCmd::Down(args) => {
            shoal_lab::down(&args.name).await?;
            println!("lab {} removed", args.name);
            Ok(0)
        }
        LabCmd::Ls => {
            let labs = shoal_lab::list();
            println!(
                "{:<16} {:<10} {:<8} {:<16}",
                "NAME", "STATUS", "NODES", "SUBNET"
            );
            for l in labs {
                println!(
                    "{:<16} {:<10} {:<8} {:<16}",
                    l.name,
                    format!("{:?}", l.status).to_lowercase(),
                    l.nodes.len(),
                    l.subnet_cidr()
                );
            }
            Ok(0)
        }
        LabCmd::Exec(args) => {
            let node = shoal_lab::parse_node(&args.node).ok_or_else(|| {
                anyhow::anyhow!(
                    "invalid node {:?}: expected node1, node2, ... or a number",
                    args.node
                )
            })?;
            let status = shoal_lab::exec(&args.name, node, &args.command)?.status()?;
            Ok(status.code().unwrap_or(1))
        }
    }
}

/// The daemon binary: `$SHOALD_BIN`, else `shoald` next to this `shoal`, else from PATH.
fn shoald_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SHOALD_BIN") {
        return PathBuf::from(p);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("shoald")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("shoald"))
}

async fn up(args: LabUpArgs) -> Result<i32> {
    let shoal_bin = std::env::current_exe().context("failed to find the shoal binary")?;
    let spec = shoal_lab::LabSpec {
        name: args.name.clone(),
        nodes: args.nodes,
        managers: args.managers,
        shoal_bin,
        shoald_bin: shoald_bin(),
        shoald_args: vec![
            "--extra-hosts".into(),
            shoal_lab::hosts_path(&args.name).display().to_string(),
            "--heartbeat-period".into(),
            args.heartbeat_period.clone(),
            "--heartbeat-grace".into(),
            args.heartbeat_grace.to_string(),
            "--vip-balancer".into(),
            args.vip_balancer.clone(),
            "--mesh-path".into(),
            args.mesh_path.clone(),
        ]
        .into_iter()
        .chain(
            args.dns_upstream
                .iter()
                .flat_map(|u| ["--dns-upstream".to_string(), u.clone()]),
        )
        .chain(
            args.insecure_registry
                .iter()
                .flat_map(|r| ["--insecure-registry".to_string(), r.clone()]),
        )
        .collect(),
        registry: args.registry,
        init_args: args
            .cert_expiry
            .iter()
            .flat_map(|d| ["--cert-expiry".to_string(), d.clone()])
            .collect(),
    };
    // A spinner while the namespaces, daemons and cluster come up, on a terminal only: the
    // lines below are what scripts and the lab tests read.
    let spinner = std::io::stderr().is_terminal().then(|| {
        let s =
            indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
        if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
            s.set_style(style);
        }
        s.set_message(format!(
            "starting lab {} ({} nodes, {} managers)",
            args.name, args.nodes, args.managers
        ));
        s.enable_steady_tick(std::time::Duration::from_millis(120));
        s
    });
    let lab = shoal_lab::up(&spec).await;
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    let lab = lab?;
    println!(
        "lab {} is up: {} nodes on {}",
        lab.name,
        lab.nodes.len(),
        lab.subnet_cidr()
    );
    for n in &lab.nodes {
        println!(
            "  {:<8} {:<15} {:<8} SHOAL_HOST=unix://{}",
            n.name,
            n.addr,
            format!("{:?}", n.role).to_lowercase(),
            n.socket.display()
        );
    }
    if let Some(registry) = &lab.registry {
        println!("  registry {registry} (plain HTTP) with:");
        for image in &lab.images {
            println!("    {image}");
        }
    }
    println!(
        "run commands on a node with: shoal lab exec --name {} node1 -- shoal node ls",
        lab.name
    );
    Ok(0)
}
