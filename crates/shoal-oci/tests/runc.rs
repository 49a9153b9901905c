//! The container runtime with real runc (root): the busybox image pulled with shoal-image
//! from a registry in the test's namespace, its root filesystem mounted with overlayfs,
//! the container in that namespace. What a user of `service create IMAGE` would see.

mod common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use common::{Lab, PATIENCE, TASK_ADDR, Task};
use shoal_oci::{MountSpec, OciError, cgroup};

fn task<'a>(lab: &'a Lab, name: &str, command: &[&str]) -> Task<'a> {
    Task {
        lab,
        id: name.to_string(),
        settings: lab.task(command),
        seccomp: true,
    }
}

#[test]
fn a_container_is_isolated_in_the_tasks_network_namespace() {
    let lab = Lab::new();
    let script = "echo pid=$$; busybox hostname; busybox cat /etc/resolv.conf /etc/hostname; \
                  busybox ip -4 -o addr show dev lo scope global; ls /work; busybox grep -E \
                  '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; busybox id";
    let out = task(&lab, "iso", &["sh", "-c", script]).run().unwrap();
    assert_eq!(out.exit.code, Some(0), "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "pid=1", "PID 1 in its own PID namespace");
    assert_eq!(lines[1], "web-1", "the hostname given");
    assert_eq!(
        &lines[2..5],
        ["nameserver 127.0.0.11", "options ndots:0", "web-1"]
    );
    assert!(
        lines[5].contains(&format!("inet {TASK_ADDR}/32")),
        "the namespace's address: {}",
        lines[5]
    );
    assert_eq!(
        out.stderr.trim(),
        "ls: /work: No such file or directory",
        "the host's files are not there"
    );
    assert_eq!(
        &lines[6..9],
        ["CapEff:\t00000000a80425fb", "NoNewPrivs:\t1", "Seccomp:\t2"],
        "docker's default capabilities, no new privileges, a seccomp filter"
    );
    assert_eq!(
        lines[9], "uid=0 gid=0",
        "root by default (no /etc/passwd to name it)"
    );
    assert_eq!(lines.len(), 10, "{lines:?}");

    // The seccomp filter: swapon is refused by the profile (EPERM) even with CAP_SYS_ADMIN,
    // where the kernel itself would get as far as finding no swap signature.
    let swapon = ["busybox", "swapon", "/etc/hostname"];
    let mut filtered = task(&lab, "filtered", &swapon);
    filtered.settings.cap_add = vec!["SYS_ADMIN".into()];
    let out = filtered.run().unwrap();
    assert_eq!(
        out.stderr.trim(),
        "swapon: /etc/hostname: Operation not permitted"
    );
    let mut unconfined = task(&lab, "unconfined", &swapon);
    unconfined.settings.cap_add = vec!["SYS_ADMIN".into()];
    unconfined.seccomp = false;
    let out = unconfined.run().unwrap();
    assert_eq!(out.stderr.trim(), "swapon: /etc/hostname: Invalid argument");

    let mut as_user = task(&lab, "user", &["busybox", "id"]);
    as_user.settings.user = Some("1000:1000".into());
    let out = as_user.run().unwrap();
    assert_eq!(out.stdout.trim(), "uid=1000 gid=1000");
    let mut named = task(&lab, "named", &["busybox", "id"]);
    named.settings.user = Some("app".into());
    assert_eq!(
        named.run().unwrap_err().to_string(),
        "unable to find user app: no matching entries in passwd file",
        "the busybox image has no /etc/passwd"
    );
}

#[test]
fn read_only_rootfs_tmpfs_and_bind_mounts() {
    let lab = Lab::new();
    let host = lab.dir.path().join("host-data");
    fs::create_dir_all(&host).unwrap();
    fs::write(host.join("greeting"), "hello from the host\n").unwrap();
    let script = "echo x > /file; echo scratch > /scratch/a && busybox cat /scratch/a; \
                  busybox cat /data/greeting; echo from-container > /data/out; \
                  busybox grep ' /scratch ' /proc/mounts; echo kept > /vol/x";
    let mut t = task(&lab, "ro", &["sh", "-c", script]);
    t.settings.read_only = true;
    t.settings.mounts = vec![
        MountSpec::Tmpfs {
            target: "/scratch".into(),
            size_bytes: Some(1 << 20),
            mode: None,
        },
        MountSpec::Bind {
            source: host.clone(),
            target: "/data".into(),
            read_only: false,
        },
        MountSpec::Volume {
            name: "vol1".into(),
            target: "/vol".into(),
            read_only: false,
        },
    ];
    let out = t.run().unwrap();
    assert_eq!(
        out.stderr.trim(),
        "sh: can't create /file: Read-only file system"
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(&lines[..2], ["scratch", "hello from the host"]);
    assert!(lines[2].starts_with("tmpfs /scratch tmpfs"), "{}", lines[2]);
    assert_eq!(
        fs::read_to_string(host.join("out")).unwrap(),
        "from-container\n",
        "the bind mount is the host's directory"
    );
    assert_eq!(
        fs::read_to_string(lab.dir.path().join("volumes/vol1/_data/x")).unwrap(),
        "kept\n",
        "the volume is the node's directory"
    );
}

#[test]
fn a_memory_limit_stops_an_allocating_process_and_says_oomkilled() {
    let lab = Lab::new();
    let limit = 16 << 20;
    // dd's buffer is one block: 8 MiB fits under the limit, 64 MiB does not.
    let mut fits = task(
        &lab,
        "fits",
        &[
            "busybox",
            "dd",
            "if=/dev/zero",
            "of=/dev/null",
            "bs=8M",
            "count=1",
        ],
    );
    fits.settings.memory_bytes = Some(limit);
    let out = fits.run().unwrap();
    assert_eq!(
        (out.exit.code, out.exit.oom_killed),
        (Some(0), false),
        "{out:?}"
    );
    assert_eq!(out.exit.error(), None);

    let mut grows = task(
        &lab,
        "grows",
        &[
            "busybox",
            "dd",
            "if=/dev/zero",
            "of=/dev/null",
            "bs=64M",
            "count=1",
        ],
    );
    grows.settings.memory_bytes = Some(limit);
    let out = grows.run().unwrap();
    assert!(out.exit.oom_killed, "{out:?}");
    assert_eq!(out.exit.signal, Some(9), "the kernel killed it");
    assert_eq!(out.exit.error().as_deref(), Some("OOMKilled"));
}

#[test]
fn a_missing_executable_is_runcs_error_as_docker_words_it_and_leaves_nothing() {
    let lab = Lab::new();
    let err = task(&lab, "missing", &["nosuch"]).run().unwrap_err();
    assert!(matches!(err, OciError::Runtime { op: "create", .. }));
    assert_eq!(
        err.to_string(),
        "OCI runtime create failed: runc create failed: unable to start container process: \
         exec: \"nosuch\": executable file not found in $PATH"
    );
    assert_eq!(lab.runc.list().unwrap(), vec![]);
    assert_eq!(
        cgroup::existing_dirs(&lab.cgroups_path("missing")),
        Vec::<std::path::PathBuf>::new()
    );
}

#[test]
fn stop_sends_term_then_kill_and_delete_leaves_nothing() {
    let lab = Lab::new();
    // Exits 3 on SIGTERM: stopped within the grace.
    // It says "ready" once its trap is set: a SIGTERM before that would be ignored (PID 1).
    let polite = "trap 'exit 3' TERM; echo ready; while true; do busybox sleep 0.1; done";
    let t = task(&lab, "polite", &["sh", "-c", polite]);
    let exit = t
        .with(|c, base| {
            c.start().unwrap();
            wait_for_output(&base.join("stdout.log"), "ready\n");
            c.stop(PATIENCE).unwrap()
        })
        .unwrap();
    assert_eq!((exit.code, exit.signal), (Some(3), None));

    // Ignores SIGTERM (PID 1 without a handler): killed after the grace.
    let mut t = task(
        &lab,
        "stubborn",
        &["sh", "-c", "while true; do busybox sleep 0.1; done"],
    );
    t.settings.nano_cpus = Some(500_000_000);
    let (exit, pid, listed, adopted, during) = t
        .with(|c, _| {
            c.start().unwrap();
            wait_running(c);
            let listed = lab.runc.list().unwrap();
            let adopted = lab.runc.adopt(&listed[0]).unwrap();
            let during = cgroup::existing_dirs(&c.cgroups_path);
            // --limit-cpu 0.5: a 50 ms quota per 100 ms period (v1 cpu controller or v2).
            let quota: Vec<String> = during
                .iter()
                .flat_map(|d| [d.join("cpu.cfs_quota_us"), d.join("cpu.max")])
                .filter_map(|f| fs::read_to_string(f).ok())
                .map(|q| q.trim().to_string())
                .collect();
            assert!(
                quota == ["50000"] || quota == ["50000 100000"],
                "cpu quota {quota:?} in {during:?}"
            );
            let exit = c.stop(Duration::from_millis(300)).unwrap();
            c.delete(false).unwrap();
            (exit, c.pid, listed, adopted, during)
        })
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].id.as_str(), listed[0].status.as_str()),
        ("stubborn", "running")
    );
    assert_eq!(adopted.cgroups_path, lab.cgroups_path("stubborn"));
    assert_eq!(adopted.pid, pid);
    assert!(
        during
            .iter()
            .any(|d| d.starts_with("/sys/fs/cgroup/memory")),
        "the container had its cgroup: {during:?}"
    );
    assert_eq!((exit.code, exit.signal), (Some(137), Some(9)));
    assert_eq!(lab.runc.list().unwrap(), vec![], "no runc state");
    assert!(matches!(
        lab.runc.state("stubborn"),
        Err(OciError::NoSuchContainer(_))
    ));
    assert_eq!(
        cgroup::existing_dirs(&lab.cgroups_path("stubborn")),
        Vec::<std::path::PathBuf>::new(),
        "no cgroup dir"
    );
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "no process");
}

/// Waits until the container has written `text` (a readiness guard, not a timing check).
fn wait_for_output(file: &Path, text: &str) {
    for _ in 0..500 {
        if fs::read_to_string(file).is_ok_and(|t| t == text) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{} never said {text:?}", file.display());
}

/// Waits until runc says the container runs (start returns once it is told to).
fn wait_running(c: &shoal_oci::Container) {
    for _ in 0..500 {
        if c.state().unwrap().status == "running" {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{} never ran: {:?}", c.id, c.state());
}
