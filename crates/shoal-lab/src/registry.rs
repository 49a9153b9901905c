//! The lab's image registry (`lab up --registry`): Debian's `docker-registry` (the CNCF
//! distribution registry) in the lab's bridge namespace at 172.29.k.254:5000, inside the
//! lab's cgroup so that `lab down` stops it with everything else. The nodes reach it over
//! the lab bridge and pull from it over plain HTTP (`--insecure-registry`, added to every
//! daemon's flags), as from a registry on the local network.

use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::daemon::{Daemon, in_lab_netns, log_tail, reap};
use crate::error::LabError;
use crate::state::LabInfo;
use crate::topology::BRIDGE;

/// The host number of the registry's address in the lab's subnet (nodes are 1..=250).
const HOST: u8 = 254;

/// The port it listens on, docker's usual one for a private registry.
const PORT: u16 = 5000;

/// How long the registry may take to listen.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// `172.29.k.254:5000`: where the lab's registry listens.
pub fn registry_addr(subnet: u8) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(172, 29, subnet, HOST), PORT)
}

/// The registry's configuration: filesystem storage under `storage`, deletes allowed (for
/// `image` tests that remove a tag), an access log.
fn config(addr: SocketAddrV4, storage: &Path) -> String {
    format!(
        "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         http:\n  addr: {addr}\n",
        storage.display()
    )
}

/// Gives the lab bridge the registry's address, starts `docker-registry` there and waits
/// until it accepts connections.
pub(crate) async fn start(lab: &LabInfo) -> Result<SocketAddrV4, LabError> {
    let addr = registry_addr(lab.subnet);
    let hub = shoal_net::Netlink::in_netns(&lab.bridge_netns)
        .await
        .map_err(|e| LabError::net("open netlink in the lab namespace", e))?;
    hub.add_address(BRIDGE, *addr.ip(), 24)
        .await
        .map_err(|e| LabError::net("address the lab bridge for the registry", e))?;
    hub.set_up(BRIDGE)
        .await
        .map_err(|e| LabError::net("set the lab bridge up", e))?;

    let dir = lab.dir.join("registry");
    let storage = dir.join("storage");
    std::fs::create_dir_all(&storage)
        .map_err(|e| LabError::io(format!("create {}", storage.display()), e))?;
    let config_file = dir.join("config.yml");
    std::fs::write(&config_file, config(addr, &storage))
        .map_err(|e| LabError::io(format!("write {}", config_file.display()), e))?;
    let log_file = dir.join("registry.log");
    let log = std::fs::File::create(&log_file)
        .map_err(|e| LabError::io(format!("create {}", log_file.display()), e))?;
    let log_err = log
        .try_clone()
        .map_err(|e| LabError::io(format!("duplicate the fd of {}", log_file.display()), e))?;
    let mut cmd = in_lab_netns(
        lab,
        &lab.bridge_netns,
        Path::new("docker-registry"),
        true,
        None,
    )?;
    cmd.arg("serve")
        .arg(&config_file)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    let child = cmd.spawn().map_err(|e| {
        LabError::registry(
            "start docker-registry",
            format!("{e} (install the docker-registry package: scripts/setup.sh does)"),
        )
    })?;
    let registry = reap(child, "registry")?;
    wait_ready(lab, addr, &registry, &log_file).await?;
    tracing::info!(lab = %lab.name, %addr, "lab registry up");
    Ok(addr)
}

/// Polls a TCP connect from inside the lab namespace until the registry answers, it exits,
/// or the timeout passes (then its log says why).
async fn wait_ready(
    lab: &LabInfo,
    addr: SocketAddrV4,
    registry: &Daemon,
    log: &Path,
) -> Result<(), LabError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if connects_in(&lab.bridge_netns, addr)? {
            return Ok(());
        }
        if let Some(status) = registry.exited() {
            return Err(LabError::registry(
                format!("docker-registry exited ({status})"),
                log_tail(log, 10),
            ));
        }
        if Instant::now() >= deadline {
            return Err(LabError::registry(
                format!(
                    "docker-registry did not listen on {addr} within {}s",
                    READY_TIMEOUT.as_secs()
                ),
                log_tail(log, 10),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether a TCP connect to `addr` from namespace `netns` succeeds (on a thread of its own,
/// which alone enters the namespace).
fn connects_in(netns: &str, addr: SocketAddrV4) -> Result<bool, LabError> {
    let fd = shoal_net::open_netns(netns)
        .map_err(|e| LabError::net(format!("open namespace {netns}"), e))?;
    std::thread::scope(|s| {
        s.spawn(move || {
            nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| LabError::io("enter the lab namespace", e))?;
            Ok(TcpStream::connect_timeout(&addr.into(), Duration::from_millis(500)).is_ok())
        })
        .join()
        .unwrap_or_else(|_| {
            Err(LabError::io(
                "probe the registry",
                std::io::Error::other("panic"),
            ))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_sits_above_every_node_address() {
        assert_eq!(registry_addr(7).to_string(), "172.29.7.254:5000");
        // Nodes are 1..=250, so .254 is never a node's.
        assert!(crate::state::node_addr(7, 250) < *registry_addr(7).ip());
    }

    #[test]
    fn config_names_storage_and_address() {
        let c = config(
            registry_addr(3),
            Path::new("/run/shoal-lab/x/registry/storage"),
        );
        assert!(c.contains("rootdirectory: /run/shoal-lab/x/registry/storage\n"));
        assert!(c.contains("addr: 172.29.3.254:5000\n"));
        assert!(c.contains("delete:\n    enabled: true"));
    }
}
