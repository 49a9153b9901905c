//! `shoal lab`: a whole shoal cluster on one machine, one network namespace per node.
//!
//! # Layout
//! - `state`: names, addresses and paths of a lab, derived from its name; [`LabInfo`] in
//!   `/run/shoal-lab/<lab>/lab.json`; [`list`].
//! - `topology`: namespace `shoal-<lab>-net` with bridge `br0`; per node a namespace
//!   `shoal-<lab>-node<i>` whose `eth0` (172.29.k.i/24) is a veth to the bridge.
//! - `cgroup`: the lab's cgroup v2, which holds every process of the lab.
//! - `daemon`: starting `shoald` in each node, waiting for its socket, forming the cluster
//!   with the `shoal` CLI.
//! - `registry`, `images`: `--registry`, an image registry in the lab's bridge namespace
//!   and the seed's images built from this machine's binaries and pushed to it.
//! - `leftovers`: what `down` removes outside the cgroup: containers (through runc's state),
//!   the mounts of their root filesystems, and the nodes' overlay namespaces by name.
//! - `sys`: the one unsafe module (entering a node and the cgroup between fork and exec).
//!
//! Architecture invariant: nothing of a lab lives in the host's network namespace; its only
//! footprint outside its namespaces is its state directory, its cgroup and the cgroups
//! runc makes for its containers. [`down`] finds everything from the lab's name alone: the
//! lab's own namespaces by name, the namespaces its daemons created from the registry they
//! keep (`SHOAL_NETNS_REGISTRY`, see shoal-net), the namespaces of the processes in its
//! cgroup, its nodes' overlay namespaces by their node ids (`shoal-ov-<id>-`, stale empty
//! files included), and the containers in its nodes' runc state directories.
#![deny(unsafe_code)]

mod cgroup;
mod daemon;
mod error;
mod images;
mod leftovers;
mod registry;
mod state;
mod sys;
mod topology;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::LabError;
pub use images::{CLIENT, VOTE};
pub use registry::registry_addr;
pub use state::{
    CLUSTER_PORT, LABS_DIR, LabInfo, LabStatus, NodeInfo, NodeRole, hosts_path, lab_dir, lab_netns,
    list, load, node_addr, node_netns, node_socket, parse_node, validate_name,
};

/// A lab that is up: its record, as in lab.json.
pub type Lab = LabInfo;

/// What `shoal lab up` builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabSpec {
    /// The lab's name ([a-z0-9-], up to 32 characters).
    pub name: String,
    /// How many nodes (1..=250).
    pub nodes: u32,
    /// How many of them are managers (1..=nodes); node1..node<managers>.
    pub managers: u32,
    /// The `shoal` CLI, used to form the cluster (a bare name is looked up in `PATH`).
    pub shoal_bin: PathBuf,
    /// The daemon.
    pub shoald_bin: PathBuf,
    /// Extra flags for every daemon.
    pub shoald_args: Vec<String>,
    /// Run an image registry in the lab and push the seed's images to it (`--registry`).
    pub registry: bool,
    /// Extra flags for `shoal init` on node1 (e.g. `--cert-expiry 1m`).
    pub init_args: Vec<String>,
}

/// How `up` runs the daemons; tests swap in fakes.
pub(crate) struct Hooks {
    /// Replaces `shoald ...` (program first) when set.
    pub daemon_argv: Option<Vec<String>>,
    pub wait_for_sockets: bool,
    pub socket_timeout: Duration,
    pub form_cluster: bool,
}

impl Hooks {
    fn real() -> Self {
        Hooks {
            daemon_argv: None,
            wait_for_sockets: true,
            socket_timeout: daemon::SOCKET_TIMEOUT,
            form_cluster: true,
        }
    }
}

/// Builds lab `spec.name`: namespaces and bridge, a daemon per node, node1 initialised and
/// the others joined. Refuses a name in use. On failure everything but the logs is removed
/// again (see [`LabError::UpFailed`]).
pub async fn up(spec: &LabSpec) -> Result<Lab, LabError> {
    up_with(spec, &Hooks::real()).await
}

pub(crate) async fn up_with(spec: &LabSpec, hooks: &Hooks) -> Result<Lab, LabError> {
    validate_name(&spec.name)?;
    if !(1..=250).contains(&spec.nodes) {
        return Err(LabError::InvalidSpec(format!(
            "--nodes must be 1 to 250, not {}",
            spec.nodes
        )));
    }
    if !(1..=spec.nodes).contains(&spec.managers) {
        return Err(LabError::InvalidSpec(format!(
            "--managers must be 1 to --nodes ({}), not {}",
            spec.nodes, spec.managers
        )));
    }
    let missing = |what, path: &Path| LabError::MissingBinary {
        what,
        path: path.to_path_buf(),
    };
    let shoal_bin = match hooks.form_cluster {
        true => daemon::find_program(&spec.shoal_bin)
            .ok_or_else(|| missing("shoal", &spec.shoal_bin))?,
        false => spec.shoal_bin.clone(),
    };
    let shoald_bin = match hooks.daemon_argv {
        None => daemon::find_program(&spec.shoald_bin)
            .ok_or_else(|| missing("shoald", &spec.shoald_bin))?,
        Some(_) => spec.shoald_bin.clone(),
    };

    let mut lab = reserve(spec)?;
    match build(&mut lab, spec, hooks, &shoal_bin, &shoald_bin).await {
        Ok(()) => {
            lab.status = LabStatus::Up;
            lab.save()?;
            tracing::info!(lab = %lab.name, nodes = spec.nodes, subnet = %lab.subnet_cidr(), "lab up");
            Ok(lab)
        }
        Err(source) => {
            let problems = teardown(&lab.name, false).await;
            for p in &problems {
                tracing::warn!(lab = %lab.name, "after the failed up: {p}");
            }
            lab.status = LabStatus::Failed;
            for node in &mut lab.nodes {
                node.pid = None;
            }
            let _ = lab.save();
            Err(LabError::UpFailed {
                lab: lab.name.clone(),
                dir: lab.dir.clone(),
                source: Box::new(source),
            })
        }
    }
}

/// Whether anything of lab `name` exists: its directory, its cgroup or a namespace.
fn lab_exists(name: &str) -> bool {
    lab_dir(name).exists()
        || cgroup::lab_cgroup(name).is_ok_and(|cg| cg.exists())
        || shoal_net::list_netns()
            .unwrap_or_default()
            .iter()
            .any(|ns| state::is_lab_netns(name, ns))
}

/// Under the labs lock: refuses a name in use, picks a free subnet, creates the state
/// directory and writes the first lab.json.
fn reserve(spec: &LabSpec) -> Result<LabInfo, LabError> {
    let _lock = state::LabsLock::acquire()?;
    if lab_exists(&spec.name) {
        return Err(LabError::AlreadyExists(spec.name.clone()));
    }
    let used: Vec<u8> = list().iter().map(|l| l.subnet).collect();
    let subnet = state::free_subnet(&used).ok_or(LabError::NoFreeSubnet)?;
    let cg = cgroup::lab_cgroup(&spec.name)?;
    let lab = LabInfo::plan(&spec.name, subnet, spec.nodes, spec.managers, cg);
    std::fs::create_dir_all(&lab.dir)
        .map_err(|e| LabError::io(format!("create {}", lab.dir.display()), e))?;
    lab.save()?;
    Ok(lab)
}

async fn build(
    lab: &mut LabInfo,
    spec: &LabSpec,
    hooks: &Hooks,
    shoal_bin: &Path,
    shoald_bin: &Path,
) -> Result<(), LabError> {
    cgroup::create(&lab.cgroup)?;
    topology::build(lab).await?;
    std::fs::write(&lab.hosts_file, lab.render_hosts())
        .map_err(|e| LabError::io(format!("write {}", lab.hosts_file.display()), e))?;
    let registry = state::registry_dir(&lab.name);
    std::fs::create_dir_all(&registry)
        .map_err(|e| LabError::io(format!("create {}", registry.display()), e))?;

    let mut shoald_args = spec.shoald_args.clone();
    if spec.registry {
        let addr = registry::start(lab).await?;
        let (info, bin) = (lab.clone(), shoal_bin.to_path_buf());
        let images = tokio::task::spawn_blocking(move || images::build_and_push(&info, &bin, addr))
            .await
            .map_err(|e| LabError::io("build the lab images", std::io::Error::other(e)))??;
        // The nodes pull from it over plain HTTP, as from a registry on a local network.
        shoald_args.extend(["--insecure-registry".to_string(), addr.to_string()]);
        lab.registry = Some(addr.to_string());
        lab.images = images;
        lab.save()?;
    }

    let mut daemons = Vec::new();
    for i in 0..lab.nodes.len() {
        let node = &lab.nodes[i];
        let argv = match &hooks.daemon_argv {
            Some(argv) => argv.clone(),
            None => daemon::daemon_argv(shoald_bin, node, &shoald_args),
        };
        let d = daemon::spawn_daemon(lab, node, &argv)?;
        lab.nodes[i].pid = Some(d.pid);
        lab.save()?;
        daemons.push(d);
    }
    if hooks.wait_for_sockets {
        for (node, d) in lab.nodes.iter().zip(&daemons) {
            daemon::wait_for_socket(node, d, hooks.socket_timeout).await?;
        }
    }
    if hooks.form_cluster {
        daemon::form_cluster(lab, shoal_bin, &spec.init_args).await?;
    }
    Ok(())
}

/// Removes lab `name` entirely: every process in its cgroup (daemons, tasks, `lab exec`),
/// its namespaces and those its daemons created, its cgroup and its state directory. Works
/// on the remains of a failed or interrupted `up`.
pub async fn down(name: &str) -> Result<(), LabError> {
    validate_name(name)?;
    if !lab_exists(name) {
        return Err(LabError::NoSuchLab(name.to_string()));
    }
    let problems = teardown(name, true).await;
    if problems.is_empty() {
        tracing::info!(lab = name, "lab removed");
        Ok(())
    } else {
        Err(LabError::DownIncomplete {
            lab: name.to_string(),
            problems,
        })
    }
}

/// Kills, deletes and removes what exists of lab `name`; returns what it could not.
async fn teardown(name: &str, remove_dir: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let mut inodes = Default::default();
    match cgroup::lab_cgroup(name) {
        Ok(cg) => {
            // Before the kill: which namespaces are the lab's processes in?
            inodes = cgroup::netns_inodes(&cg);
            if let Err(e) = cgroup::kill_and_remove(&cg).await {
                problems.push(e.to_string());
            }
        }
        Err(e) => problems.push(e.to_string()),
    }
    // Containers live in cgroups of their own (runc's), so the kill above missed them.
    problems.extend(leftovers::remove_containers(&lab_dir(name)));
    problems.extend(leftovers::unmount_under(&lab_dir(name)));
    if let Ok(own) = std::fs::metadata("/proc/self/ns/net") {
        inodes.remove(&own.ino());
    }

    let mut doomed = BTreeSet::new();
    if let Ok(entries) = std::fs::read_dir(state::registry_dir(name)) {
        doomed.extend(
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_string)),
        );
    }
    let owned = leftovers::node_netns_prefixes(&lab_dir(name));
    match shoal_net::list_netns() {
        Ok(all) => {
            for ns in all {
                let by_process = std::fs::metadata(shoal_net::netns_path(&ns))
                    .is_ok_and(|m| inodes.contains(&m.ino()));
                let by_node = owned.iter().any(|p| ns.starts_with(p));
                if by_process || by_node || state::is_lab_netns(name, &ns) {
                    doomed.insert(ns);
                }
            }
        }
        Err(e) => problems.push(e.to_string()),
    }
    // Nodes first, the bridge's namespace last.
    let bridge = lab_netns(name);
    let mut order: Vec<&String> = doomed.iter().filter(|ns| **ns != bridge).collect();
    order.push(&bridge);
    for ns in order {
        match shoal_net::delete_netns(ns) {
            Ok(_) => {}
            // A stray registry entry is not a namespace we can delete; forget it.
            Err(shoal_net::NetError::InvalidNetnsName(_)) => {}
            Err(e) => problems.push(format!("delete namespace {ns}: {e}")),
        }
    }
    if remove_dir {
        let dir = lab_dir(name);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => problems.push(format!("remove {}: {e}", dir.display())),
        }
    }
    problems
}

/// A command that runs `cmd` in node `node` of lab `lab` (in its network namespace and the
/// lab's cgroup), with `SHOAL_HOST=unix://<that node's socket>`. Spawn it as you like.
pub fn exec(lab: &str, node: u32, cmd: &[String]) -> Result<std::process::Command, LabError> {
    let info = load(lab)?;
    if info.status != LabStatus::Up {
        return Err(LabError::InvalidSpec(format!(
            "lab {lab} is not up (it is {:?}); `shoal lab down --name {lab}`, then `shoal lab up` again",
            info.status
        )));
    }
    let node = info.node(node)?;
    let (program, args) = cmd.split_first().ok_or_else(|| {
        LabError::InvalidSpec("no command given: `shoal lab exec NODE -- CMD...`".into())
    })?;
    // Node names resolve on the nodes, as in the seed (`curl node2:8080` from node1).
    let hosts_file = lab_dir(lab).join("etc-hosts");
    let hosts = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n{}",
        info.render_hosts()
    );
    std::fs::write(&hosts_file, hosts)
        .map_err(|e| LabError::io(format!("write {}", hosts_file.display()), e))?;
    let hosts_c =
        std::ffi::CString::new(hosts_file.as_os_str().as_encoded_bytes()).map_err(|_| {
            LabError::InvalidSpec(format!("{} contains a NUL byte", hosts_file.display()))
        })?;
    let mut command = daemon::node_command(&info, node, Path::new(program), false, Some(hosts_c))?;
    command
        .args(args)
        .env("SHOAL_HOST", daemon::host_url(&node.socket))
        // Whatever runs in the lab (a daemon restarted by hand, too) records the namespaces
        // it creates, so that `lab down` finds them.
        .env(shoal_net::REGISTRY_ENV, state::registry_dir(lab));
    Ok(command)
}
