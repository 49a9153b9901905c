//! Processes in a lab's nodes: the daemons, the `shoal` commands that form the cluster, and
//! `lab exec`. All enter the node's network namespace and the lab's cgroup before exec.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::{Instant, sleep};

use crate::cgroup;
use crate::error::LabError;
use crate::state::{CLUSTER_PORT, LabInfo, NodeInfo, registry_dir};
use crate::sys::{NodeEntry, enter_node_on_spawn};

/// How long a daemon may take to open its API socket.
pub(crate) const SOCKET_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one cluster-forming `shoal` command may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// `unix://<socket>`, the `-H` / `SHOAL_HOST` value for a node.
pub(crate) fn host_url(socket: &Path) -> String {
    format!("unix://{}", socket.display())
}

/// The daemon's command line after the program name.
pub(crate) fn shoald_args(node: &NodeInfo, extra: &[String]) -> Vec<String> {
    let mut args = vec![
        "--hostname".to_string(),
        node.name.clone(),
        "--data-dir".to_string(),
        node.data_dir.display().to_string(),
        "--socket".to_string(),
        node.socket.display().to_string(),
        "--listen-addr".to_string(),
        format!("0.0.0.0:{CLUSTER_PORT}"),
        "--advertise-addr".to_string(),
        node.addr.to_string(),
    ];
    args.extend(extra.iter().cloned());
    args
}

/// A command for `program` that runs in `node`'s namespace and the lab's cgroup (if it
/// exists). `daemon` also detaches it into its own session.
pub(crate) fn node_command(
    lab: &LabInfo,
    node: &NodeInfo,
    program: &Path,
    daemon: bool,
    hosts: Option<std::ffi::CString>,
) -> Result<Command, LabError> {
    in_lab_netns(lab, &node.netns, program, daemon, hosts)
}

/// A command for `program` that runs in the lab's namespace `netns` (a node's or the
/// bridge's) and the lab's cgroup (if it exists); `daemon` detaches it into its own session.
pub(crate) fn in_lab_netns(
    lab: &LabInfo,
    netns: &str,
    program: &Path,
    daemon: bool,
    hosts: Option<std::ffi::CString>,
) -> Result<Command, LabError> {
    let netns = shoal_net::open_netns(netns)
        .map_err(|e| LabError::net(format!("open namespace {netns}"), e))?;
    let cgroup_procs = if lab.cgroup.exists() {
        Some(cgroup::open_procs(&lab.cgroup)?)
    } else {
        None
    };
    let mut cmd = Command::new(program);
    enter_node_on_spawn(
        &mut cmd,
        NodeEntry {
            netns,
            cgroup_procs,
            new_session: daemon,
            hosts,
        },
    );
    Ok(cmd)
}

/// A started daemon; a thread reaps it and keeps how it ended.
pub(crate) struct Daemon {
    pub pid: u32,
    exit: Arc<Mutex<Option<String>>>,
}

impl Daemon {
    /// How it ended, if it has.
    pub(crate) fn exited(&self) -> Option<String> {
        self.exit.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Starts `argv` (program first) as `node`'s daemon, output appended to its log.
pub(crate) fn spawn_daemon(
    lab: &LabInfo,
    node: &NodeInfo,
    argv: &[String],
) -> Result<Daemon, LabError> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| LabError::InvalidSpec("empty daemon command".into()))?;
    std::fs::create_dir_all(&node.data_dir)
        .map_err(|e| LabError::io(format!("create {}", node.data_dir.display()), e))?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&node.log)
        .map_err(|e| LabError::io(format!("open {}", node.log.display()), e))?;
    let log_err = log
        .try_clone()
        .map_err(|e| LabError::io(format!("duplicate the fd of {}", node.log.display()), e))?;
    let mut cmd = node_command(lab, node, Path::new(program), true, None)?;
    cmd.args(args)
        .env(shoal_net::REGISTRY_ENV, registry_dir(&lab.name))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    let child = cmd
        .spawn()
        .map_err(|e| LabError::io(format!("start {program} for {}", node.name), e))?;
    let daemon = reap(child, &node.name)?;
    tracing::debug!(node = %node.name, pid = daemon.pid, "daemon started");
    Ok(daemon)
}

/// Reaps `child` on a thread whenever it ends, so a long-lived caller (tests, benchmarks)
/// keeps no zombies, and keeps how it ended.
pub(crate) fn reap(mut child: std::process::Child, name: &str) -> Result<Daemon, LabError> {
    let pid = child.id();
    let exit = Arc::new(Mutex::new(None));
    let slot = Arc::clone(&exit);
    std::thread::Builder::new()
        .name(format!("reap-{name}"))
        .spawn(move || {
            let status = match child.wait() {
                Ok(s) => s.to_string(),
                Err(e) => format!("unknown: {e}"),
            };
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
        })
        .map_err(|e| LabError::io("start a reaper thread", e))?;
    Ok(Daemon { pid, exit })
}

/// The last `lines` lines of a log file (empty if unreadable).
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.seek(SeekFrom::End(0)).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
    let mut buf = Vec::new();
    let _ = file.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Waits until `node`'s daemon accepts connections on its API socket.
pub(crate) async fn wait_for_socket(
    node: &NodeInfo,
    daemon: &Daemon,
    timeout: Duration,
) -> Result<(), LabError> {
    let deadline = Instant::now() + timeout;
    loop {
        if tokio::net::UnixStream::connect(&node.socket).await.is_ok() {
            return Ok(());
        }
        if let Some(status) = daemon.exited() {
            return Err(LabError::DaemonExited {
                node: node.name.clone(),
                status,
                log: node.log.clone(),
                tail: log_tail(&node.log, 20),
            });
        }
        if Instant::now() >= deadline {
            return Err(LabError::DaemonTimeout {
                node: node.name.clone(),
                socket: node.socket.clone(),
                secs: timeout.as_secs(),
                log: node.log.clone(),
                tail: log_tail(&node.log, 20),
            });
        }
        sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `shoal -H unix://<node socket> ARGS` in `node` and returns its trimmed stdout.
pub(crate) async fn run_cli(
    lab: &LabInfo,
    node: &NodeInfo,
    shoal_bin: &Path,
    args: &[String],
) -> Result<String, LabError> {
    let mut full = vec!["-H".to_string(), host_url(&node.socket)];
    full.extend(args.iter().cloned());
    let command = format!("{} {}", shoal_bin.display(), full.join(" "));
    let mut cmd = node_command(lab, node, shoal_bin, false, None)?;
    cmd.args(&full).stdin(Stdio::null());
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let fail = |status: String, output: String| LabError::Cli {
        node: node.name.clone(),
        command: command.clone(),
        status,
        output,
        log: node.log.clone(),
    };
    let out = match tokio::time::timeout(CLI_TIMEOUT, cmd.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(fail("could not start".into(), e.to_string())),
        Err(_) => {
            return Err(fail(
                format!("timed out after {}s", CLI_TIMEOUT.as_secs()),
                String::new(),
            ));
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(fail(
            out.status.to_string(),
            format!("{stdout}\n{stderr}").trim().to_string(),
        ));
    }
    Ok(stdout)
}

/// Forms the cluster: `init` on node1, then every other node joins node1 with the manager
/// token (node2..node<managers>) or the worker token, one at a time.
pub(crate) async fn form_cluster(
    lab: &LabInfo,
    shoal_bin: &Path,
    init_args: &[String],
) -> Result<(), LabError> {
    let first = lab.node(1)?;
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let mut init = s(&["init", "--advertise-addr", &first.addr.to_string()]);
    init.extend(init_args.iter().cloned());
    run_cli(lab, first, shoal_bin, &init).await?;
    if lab.nodes.len() < 2 {
        return Ok(());
    }
    let worker = run_cli(lab, first, shoal_bin, &s(&["join-token", "-q", "worker"])).await?;
    let manager = if lab.managers > 1 {
        Some(run_cli(lab, first, shoal_bin, &s(&["join-token", "-q", "manager"])).await?)
    } else {
        None
    };
    let remote = format!("{}:{CLUSTER_PORT}", first.addr);
    for node in lab.nodes.iter().skip(1) {
        let token = match (&manager, node.index <= lab.managers) {
            (Some(token), true) => token,
            _ => &worker,
        };
        if token.is_empty() || token.contains(char::is_whitespace) {
            return Err(LabError::Cli {
                node: first.name.clone(),
                command: "shoal join-token -q".into(),
                status: "unexpected output".into(),
                output: format!("expected a single token, got {token:?}"),
                log: first.log.clone(),
            });
        }
        run_cli(
            lab,
            node,
            shoal_bin,
            &s(&["join", "--token", token, &remote]),
        )
        .await?;
        tracing::info!(lab = %lab.name, node = %node.name, "joined");
    }
    Ok(())
}

/// The daemon argv for `node`: shoald and its flags.
pub(crate) fn daemon_argv(shoald_bin: &Path, node: &NodeInfo, extra: &[String]) -> Vec<String> {
    let mut argv = vec![shoald_bin.display().to_string()];
    argv.extend(shoald_args(node, extra));
    argv
}

/// Whether `path` is an executable file.
pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Resolves a bare program name in `PATH` (as `Command` would), for the binary checks.
pub(crate) fn find_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return is_executable(program).then(|| program.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|p| is_executable(p))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    use crate::state::NodeRole;

    fn node_at(dir: &Path) -> NodeInfo {
        NodeInfo {
            index: 2,
            name: "node2".into(),
            netns: "unused".into(),
            addr: Ipv4Addr::new(172, 29, 9, 2),
            role: NodeRole::Worker,
            socket: dir.join("shoal.sock"),
            data_dir: dir.join("data"),
            log: dir.join("shoald.log"),
            pid: None,
        }
    }

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("shoaltest-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn shoald_gets_the_contracted_flags() {
        let node = node_at(Path::new("/run/shoal-lab/x/node2"));
        assert_eq!(
            daemon_argv(Path::new("/bin/shoald"), &node, &["--debug".into()]).join(" "),
            "/bin/shoald --hostname node2 --data-dir /run/shoal-lab/x/node2/data \
             --socket /run/shoal-lab/x/node2/shoal.sock --listen-addr 0.0.0.0:2377 \
             --advertise-addr 172.29.9.2 --debug"
        );
        assert_eq!(
            host_url(&node.socket),
            "unix:///run/shoal-lab/x/node2/shoal.sock"
        );
    }

    #[tokio::test]
    async fn socket_wait_succeeds_fails_and_cites_the_log() {
        let dir = scratch("sock");
        let node = node_at(&dir);
        std::fs::write(&node.log, "starting\nfatal: cannot bind\n").unwrap();

        let listener = std::os::unix::net::UnixListener::bind(&node.socket).unwrap();
        let alive = Daemon {
            pid: 0,
            exit: Arc::new(Mutex::new(None)),
        };
        wait_for_socket(&node, &alive, Duration::from_secs(5))
            .await
            .unwrap();
        drop(listener);
        std::fs::remove_file(&node.socket).unwrap();

        let err = wait_for_socket(&node, &alive, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(err, LabError::DaemonTimeout { .. }), "{err:?}");
        let dead = Daemon {
            pid: 0,
            exit: Arc::new(Mutex::new(Some("exit status: 2".into()))),
        };
        let err = wait_for_socket(&node, &dead, Duration::from_secs(5))
            .await
            .unwrap_err();
        let msg = err.to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(msg.contains("exited (exit status: 2)"), "{msg}");
        assert!(msg.contains(&node.log.display().to_string()), "{msg}");
        assert!(msg.ends_with("starting\nfatal: cannot bind"), "{msg}");
    }

    #[test]
    fn programs_are_found_in_path() {
        assert!(find_program(Path::new("sh")).is_some());
        assert!(find_program(Path::new("/bin/sh")).is_some());
        assert!(find_program(Path::new("no-such-shoald-xyz")).is_none());
    }
}
