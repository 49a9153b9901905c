//! Lab tests (root, real namespaces, bridge and cgroup) with fake daemons: `sleep` for
//! shoald and a shell script for the `shoal` CLI, until the real binaries exist.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::*;

/// A lab name unique to this test process; the lab is downed on drop (also on panic).
struct TestLab(String);

impl TestLab {
    fn new(tag: &str) -> Self {
        let name = format!("t{}-{tag}", std::process::id());
        if lab_exists(&name) {
            let _ = tokio::runtime::Runtime::new().map(|rt| rt.block_on(down(&name)));
        }
        TestLab(name)
    }

    fn spec(&self, nodes: u32, managers: u32, shoal_bin: &Path) -> LabSpec {
        LabSpec {
            name: self.0.clone(),
            nodes,
            managers,
            shoal_bin: shoal_bin.to_path_buf(),
            shoald_bin: "unused-shoald".into(),
            shoald_args: vec![],
            registry: false,
            init_args: vec![],
        }
    }
}

impl Drop for TestLab {
    fn drop(&mut self) {
        if lab_exists(&self.0) {
            // Drop may run inside a runtime (a panicking tokio test): use a thread of its own.
            let name = self.0.clone();
            let _ = std::thread::spawn(move || {
                tokio::runtime::Runtime::new().map(|rt| rt.block_on(down(&name)))
            })
            .join();
        }
    }
}

fn fake_daemons() -> Hooks {
    Hooks {
        daemon_argv: Some(vec!["sleep".into(), "1000".into()]),
        wait_for_sockets: false,
        socket_timeout: Duration::from_secs(1),
        form_cluster: false,
    }
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ino(path: impl AsRef<Path>) -> u64 {
    std::fs::metadata(path).unwrap().ino()
}

fn root_links() -> Vec<String> {
    let mut links: Vec<String> = ip(&["-o", "link"])
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect();
    links.sort();
    links
}

/// A fake `shoal` CLI: records its arguments and namespace, answers join-token, and fails
/// when its arguments contain `fail_on`.
fn fake_shoal(tag: &str, fail_on: &str) -> (PathBuf, PathBuf) {
    let script = std::env::temp_dir().join(format!("shoaltest-{}-{tag}-shoal", std::process::id()));
    let record = script.with_extension("log");
    let _ = std::fs::remove_file(&record);
    let body = format!(
        "#!/bin/sh\n\
         echo \"$* @ $(readlink /proc/self/ns/net)\" >> {record}\n\
         case \"$*\" in *'{fail_on}'*) echo boom from fake shoal >&2; exit 1;; esac\n\
         case \"$*\" in *'join-token -q worker'*) echo SWMTKN-worker;; *'join-token -q manager'*) echo SWMTKN-manager;; esac\n",
        record = record.display()
    );
    std::fs::write(&script, body).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, record)
}

#[tokio::test]
async fn a_lab_is_built_reachable_and_leaves_nothing_behind() {
    let t = TestLab::new("up");
    let links_before = root_links();
    let lab = up_with(&t.spec(3, 1, Path::new("unused")), &fake_daemons())
        .await
        .unwrap();
    let name = &lab.name;
    let k = lab.subnet;

    // Recorded, listed, and the name is taken.
    assert_eq!(lab.status, LabStatus::Up);
    assert_eq!(load(name).unwrap(), lab);
    assert!(
        list()
            .iter()
            .any(|l| &l.name == name && l.status == LabStatus::Up)
    );
    let err = up_with(&t.spec(1, 1, Path::new("unused")), &fake_daemons())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("lab {name} already exists; `shoal lab down --name {name}` first")
    );

    // Topology: addresses, links up, no route out, the bridge holds three ports.
    for node in &lab.nodes {
        let addrs = ip(&["-n", &node.netns, "-o", "addr"]);
        assert!(
            addrs.contains(&format!("inet 172.29.{k}.{}/24", node.index)),
            "{addrs}"
        );
        assert!(addrs.contains("lo    inet 127.0.0.1/8"), "{addrs}");
        let eth0 = ip(&["-n", &node.netns, "-o", "link", "show", "eth0"]);
        assert!(eth0.contains(",UP,"), "{eth0}");
        assert!(!ip(&["-n", &node.netns, "route"]).contains("default"));
    }
    let ports = ip(&[
        "-n",
        &lab.bridge_netns,
        "-o",
        "link",
        "show",
        "master",
        "br0",
    ]);
    assert_eq!(ports.lines().count(), 3, "{ports}");
    assert_eq!(
        std::fs::read_to_string(&lab.hosts_file).unwrap(),
        format!("172.29.{k}.1\tnode1\n172.29.{k}.2\tnode2\n172.29.{k}.3\tnode3\n")
    );

    // Daemons run in their node's namespace and in the lab's cgroup.
    let in_cgroup = cgroup::pids(&lab.cgroup);
    for node in &lab.nodes {
        let pid = node.pid.expect("daemon pid recorded");
        assert!(in_cgroup.contains(&pid), "{pid} not in {in_cgroup:?}");
        assert_eq!(
            ino(format!("/proc/{pid}/ns/net")),
            ino(shoal_net::netns_path(&node.netns))
        );
    }

    // node1 reaches node3 over the bridge, through `exec`, which also sets SHOAL_HOST.
    let out = exec(
        name,
        1,
        &[
            "ping".into(),
            "-c1".into(),
            "-W5".into(),
            format!("172.29.{k}.3"),
        ],
    )
    .unwrap()
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "ping: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = exec(
        name,
        2,
        &["sh".into(), "-c".into(), "echo $SHOAL_HOST".into()],
    )
    .unwrap()
    .output()
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("unix://{}", node_socket(name, 2).display())
    );
    assert!(matches!(
        exec(name, 4, &["true".into()]),
        Err(LabError::NoSuchNode { nodes: 3, .. })
    ));

    // What the daemons would leave: a namespace they registered, and a process of the lab
    // sitting in a namespace nobody registered (found through the cgroup).
    let registered = format!("shoaltest-{}-task1", std::process::id());
    let unregistered = format!("shoaltest-{}-task2", std::process::id());
    for ns in [&registered, &unregistered] {
        let _ = shoal_net::delete_netns(ns);
        shoal_net::create_netns(ns).unwrap();
    }
    std::fs::write(state::registry_dir(name).join(&registered), "").unwrap();
    let mut stray = exec(
        name,
        2,
        &[
            "ip".into(),
            "netns".into(),
            "exec".into(),
            unregistered.clone(),
            "sleep".into(),
            "1000".into(),
        ],
    )
    .unwrap()
    .spawn()
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !cgroup::netns_inodes(&lab.cgroup).contains(&ino(shoal_net::netns_path(&unregistered))) {
        assert!(
            std::time::Instant::now() < deadline,
            "the stray process never entered {unregistered}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    down(name).await.unwrap();
    let stray_status = stray.wait().unwrap();
    assert!(
        !stray_status.success(),
        "the stray process should have been killed"
    );

    let left: Vec<String> = shoal_net::list_netns()
        .unwrap()
        .into_iter()
        .filter(|ns| state::is_lab_netns(name, ns) || *ns == registered || *ns == unregistered)
        .collect();
    assert!(left.is_empty(), "namespaces left: {left:?}");
    assert!(!lab.cgroup.exists(), "cgroup left");
    assert!(!lab.dir.exists(), "state directory left");
    for node in &lab.nodes {
        let pid = node.pid.unwrap_or_default();
        let gone = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_or(true, |s| s.contains(") Z "));
        assert!(gone, "daemon {pid} still running");
    }
    assert_eq!(root_links(), links_before, "the host's links changed");
    assert!(!list().iter().any(|l| &l.name == name));
    assert!(matches!(down(name).await, Err(LabError::NoSuchLab(_))));
}

#[tokio::test]
async fn the_cluster_is_formed_with_the_contracted_shoal_commands() {
    let t = TestLab::new("cli");
    let (shoal, record) = fake_shoal("cli", "never-matches");
    let hooks = Hooks {
        form_cluster: true,
        ..fake_daemons()
    };
    let lab = up_with(&t.spec(4, 2, &shoal), &hooks).await.unwrap();
    let calls = std::fs::read_to_string(&record).unwrap();
    let k = lab.subnet;
    let sock = |i| node_socket(&lab.name, i).display().to_string();
    let ns = |i| {
        format!(
            "net:[{}]",
            ino(shoal_net::netns_path(&node_netns(&lab.name, i)))
        )
    };
    let expected = [
        format!(
            "-H unix://{} init --advertise-addr 172.29.{k}.1 @ {}",
            sock(1),
            ns(1)
        ),
        format!("-H unix://{} join-token -q worker @ {}", sock(1), ns(1)),
        format!("-H unix://{} join-token -q manager @ {}", sock(1), ns(1)),
        format!(
            "-H unix://{} join --token SWMTKN-manager 172.29.{k}.1:2377 @ {}",
            sock(2),
            ns(2)
        ),
        format!(
            "-H unix://{} join --token SWMTKN-worker 172.29.{k}.1:2377 @ {}",
            sock(3),
            ns(3)
        ),
        format!(
            "-H unix://{} join --token SWMTKN-worker 172.29.{k}.1:2377 @ {}",
            sock(4),
            ns(4)
        ),
    ];
    down(&lab.name).await.unwrap();
    let _ = std::fs::remove_file(&shoal);
    let _ = std::fs::remove_file(&record);
    assert_eq!(calls.lines().collect::<Vec<_>>(), expected);
}

#[tokio::test]
async fn a_failed_up_cleans_up_keeps_logs_and_says_what_to_do() {
    let t = TestLab::new("fail");
    let (shoal, record) = fake_shoal("fail", " join ");
    let hooks = Hooks {
        form_cluster: true,
        ..fake_daemons()
    };
    let err = up_with(&t.spec(2, 1, &shoal), &hooks).await.unwrap_err();
    let _ = std::fs::remove_file(&shoal);
    let _ = std::fs::remove_file(&record);
    let msg = err.to_string();
    assert!(msg.contains("boom from fake shoal"), "{msg}");
    assert!(
        msg.contains(&format!("`shoal lab down --name {}`", t.0)),
        "{msg}"
    );

    // Processes, namespaces and cgroup are gone; the directory and lab.json stay.
    let info = load(&t.0).unwrap();
    assert_eq!(info.status, LabStatus::Failed);
    assert!(
        !shoal_net::list_netns()
            .unwrap()
            .iter()
            .any(|ns| state::is_lab_netns(&t.0, ns))
    );
    assert!(!info.cgroup.exists());
    assert!(info.dir.exists());
    assert!(matches!(
        exec(&t.0, 1, &["true".into()]),
        Err(LabError::InvalidSpec(_))
    ));
    assert!(matches!(
        up_with(&t.spec(2, 1, Path::new("x")), &fake_daemons()).await,
        Err(LabError::AlreadyExists(_))
    ));
    down(&t.0).await.unwrap();
    assert!(!info.dir.exists());
}

#[tokio::test]
async fn a_daemon_that_dies_fails_up_with_its_log() {
    let t = TestLab::new("die");
    let hooks = Hooks {
        daemon_argv: Some(vec![
            "sh".into(),
            "-c".into(),
            "echo 'fatal: no such flag'; exit 2".into(),
        ]),
        wait_for_sockets: true,
        ..fake_daemons()
    };
    let err = up_with(&t.spec(1, 1, Path::new("x")), &hooks)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("shoald on node1 exited (exit status: 2)"),
        "{msg}"
    );
    assert!(
        msg.contains("node1/shoald.log") && msg.contains("fatal: no such flag"),
        "{msg}"
    );
    down(&t.0).await.unwrap();
}

#[tokio::test]
async fn specs_are_checked_before_anything_is_built() {
    let t = TestLab::new("spec");
    for (nodes, managers) in [(0, 1), (2, 3), (2, 0), (251, 1)] {
        let result = up_with(&t.spec(nodes, managers, Path::new("x")), &fake_daemons()).await;
        assert!(
            matches!(result, Err(LabError::InvalidSpec(_))),
            "{nodes}/{managers}"
        );
    }
    let mut spec = t.spec(1, 1, Path::new("no-such-shoal-xyz"));
    let err = up(&spec).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("shoal binary no-such-shoal-xyz not found"),
        "{err}"
    );
    spec.name = "Bad_Name".into();
    assert!(matches!(up(&spec).await, Err(LabError::InvalidName(_))));
    assert!(!lab_exists(&t.0));
}
