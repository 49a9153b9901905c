//! Tasks' mount namespaces are copied from one made at the first start, without
//! `/run/netns`. A test binary of its own: which mounts that namespace holds depends on what
//! existed at the process's first start, so no other test may start a task before it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use shoal_exec::{SandboxSpec, TaskExit, cleanup, read_logs, start, task_netns_name};

/// A directory of the test's own, made a shared mount point so that mounts below it
/// propagate; unmounted and removed on drop, with the tasks' namespaces (also on panic).
struct Shared {
    dir: PathBuf,
    late: PathBuf,
    specs: Vec<SandboxSpec>,
    pads: Vec<String>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let _ = umount2(&self.late, MntFlags::MNT_DETACH);
        let _ = umount2(&self.dir, MntFlags::MNT_DETACH);
        for spec in &self.specs {
            let _ = shoal_net::delete_netns(&task_netns_name(&spec.task_id).unwrap());
            let _ = std::fs::remove_dir_all(&spec.run_dir);
        }
        for pad in &self.pads {
            let _ = shoal_net::delete_netns(pad);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spec(tag: &str, script: &str) -> SandboxSpec {
    SandboxSpec {
        task_id: format!("{tag}{}", std::process::id()),
        hostname: tag.into(),
        command: vec!["sh".into(), "-c".into(), script.into()],
        env: Vec::new(),
        workdir: None,
        run_dir: std::env::temp_dir().join(format!("shoaltest-{}-{tag}", std::process::id())),
        netns: None,
        extra_hosts: None,
    }
}

async fn run(s: &SandboxSpec) -> String {
    let mut running = start(s).await.unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(20), running.wait_exit())
        .await
        .expect("task did not finish in 20s")
        .unwrap();
    cleanup(s).await;
    let log = String::from_utf8_lossy(&read_logs(&s.run_dir, None).unwrap()).into_owned();
    assert_eq!(exit, TaskExit::Code(0), "{log}");
    log
}

fn bind_shared(dir: &Path) {
    mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>).unwrap();
    mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_SHARED,
        None::<&str>,
    )
    .unwrap();
}

#[tokio::test]
async fn later_host_mounts_reach_tasks_and_namespaces_never_do() {
    let dir = std::env::temp_dir().join(format!("shoaltest-{}-shared", std::process::id()));
    let mut g = Shared {
        late: dir.join("late"),
        dir,
        specs: vec![
            spec(
                "mt1",
                "echo netns-mounts=$(grep -c ' /run/netns' /proc/self/mountinfo)",
            ),
            spec(
                "mt2",
                "cat \"$0\"; echo netns-mounts=$(grep -c ' /run/netns' /proc/self/mountinfo)",
            ),
        ],
        pads: Vec::new(),
    };
    std::fs::create_dir_all(&g.late).unwrap();
    bind_shared(&g.dir);

    // The first start makes the namespace tasks are copied from.
    let first = run(&g.specs[0]).await;
    assert_eq!(first, "netns-mounts=0\n");

    // Then the host mounts something under a shared mount, and namespaces are made.
    mount(
        Some("tmpfs"),
        &g.late,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("size=64k"),
    )
    .unwrap();
    std::fs::write(g.late.join("file"), "mounted after the first task\n").unwrap();
    for i in 0..3 {
        let pad = format!("shoaltest-{}-pad{i}", std::process::id());
        shoal_net::create_netns(&pad).unwrap();
        g.pads.push(pad);
    }

    // A later task sees the host's later mount, and none of the namespaces' mounts.
    let mut second = g.specs[1].clone();
    second
        .command
        .push(g.late.join("file").display().to_string());
    let log = run(&second).await;
    assert_eq!(log, "mounted after the first task\nnetns-mounts=0\n");
    // The namespaces are there for everyone else (`ip netns` and the daemon).
    for pad in &g.pads {
        assert!(shoal_net::netns_exists(pad), "{pad}");
    }
}
