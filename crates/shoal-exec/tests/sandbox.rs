//! Real sandboxes (root): each test starts a task and checks, from inside, what it sees.

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use shoal_exec::{
    ExecError, SandboxSpec, TaskExit, cleanup, exec_in, log_path, read_logs, start, stop,
    task_netns_name,
};

/// A task spec with its own run directory; on drop, kills what is left of the task and
/// removes its namespace and directory (also when the test panics).
struct Fixture {
    spec: SandboxSpec,
    pid: Option<u32>,
}

impl Fixture {
    /// `tag` must be unique per test (it starts the task id, and so the netns name).
    fn new(tag: &str, command: &[&str]) -> Self {
        let task_id = format!("{tag}{}", std::process::id());
        let run_dir = std::env::temp_dir().join(format!("shoaltest-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&run_dir);
        Fixture {
            spec: SandboxSpec {
                hostname: format!("{tag}-host"),
                task_id,
                command: command.iter().map(|s| s.to_string()).collect(),
                env: Vec::new(),
                workdir: None,
                run_dir,
                netns: None,
                extra_hosts: None,
            },
            pid: None,
        }
    }

    fn log(&self) -> String {
        String::from_utf8_lossy(&read_logs(&self.spec.run_dir, None).unwrap()).into_owned()
    }

    /// Starts the task, waits for it and returns its exit and log.
    async fn run(&mut self) -> (TaskExit, String) {
        let mut running = start(&self.spec).await.unwrap();
        self.pid = Some(running.pid);
        let exit = tokio::time::timeout(Duration::from_secs(20), running.wait_exit())
            .await
            .expect("task did not finish in 20s")
            .unwrap();
        (exit, self.log())
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if self.spec.netns.is_none() {
            let _ = shoal_net::delete_netns(&task_netns_name(&self.spec.task_id).unwrap());
        }
        let _ = std::fs::remove_dir_all(&self.spec.run_dir);
    }
}

#[tokio::test]
async fn the_task_sees_its_hostname_dns_hosts_and_only_lo() {
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap();
    let mut f = Fixture::new(
        "hn",
        &[
            "sh",
            "-c",
            "cat /proc/sys/kernel/hostname; cat /etc/resolv.conf; cat /etc/hosts; ip -o addr; ip -o link; echo netns-mounts=$(grep -c \" /run/netns\" /proc/self/mountinfo)",
        ],
    );
    let extra = f.spec.run_dir.with_extension("extra");
    std::fs::write(&extra, "172.29.1.1\tnode1\n").unwrap();
    f.spec.extra_hosts = Some(extra.clone());
    let (exit, log) = f.run().await;
    let _ = std::fs::remove_file(&extra);

    assert_eq!(exit, TaskExit::Code(0), "{log}");
    let mut lines = log.lines();
    assert_eq!(lines.next(), Some("hn-host"), "{log}");
    assert!(
        log.contains("nameserver 127.0.0.11\noptions ndots:0\n"),
        "{log}"
    );
    assert!(
        log.contains("127.0.1.1\thn-host\n") && log.contains("172.29.1.1\tnode1\n"),
        "{log}"
    );
    let addr_lines: Vec<&str> = log.lines().filter(|l| l.contains(" inet")).collect();
    assert!(
        !addr_lines.is_empty()
            && addr_lines
                .iter()
                .all(|l| l.split_whitespace().nth(1) == Some("lo")),
        "{log}"
    );
    let link_lines: Vec<&str> = log.lines().filter(|l| l.contains("link/")).collect();
    assert_eq!(link_lines.len(), 1, "only lo expected: {log}");
    assert!(
        link_lines[0].contains("lo:") && link_lines[0].contains(",UP"),
        "lo must be up: {log}"
    );

    // The task holds no copy of /run/netns, so it pins no other namespace alive.
    assert!(log.contains("netns-mounts=0\n"), "{log}");

    // Nothing leaked to the host: its files and mount table are as they were.
    assert_eq!(
        std::fs::read_to_string("/etc/resolv.conf").unwrap(),
        host_resolv
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(" /etc/resolv.conf ") && !mounts.contains(" /etc/hosts "),
        "{mounts}"
    );
    assert_ne!(nix::unistd::gethostname().unwrap(), "hn-host");
}

#[tokio::test]
async fn env_is_clean_and_workdir_applies() {
    let mut f = Fixture::new("ev", &["env"]);
    f.spec.env = vec!["FOO=bar baz".into(), "EMPTY=".into()];
    let (exit, log) = f.run().await;
    assert!(exit.success(), "{log}");
    let mut env: Vec<&str> = log.lines().collect();
    env.sort();
    assert_eq!(
        env,
        vec![
            "EMPTY=",
            "FOO=bar baz",
            "HOSTNAME=ev-host",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ]
    );

    let mut f = Fixture::new("wd", &["pwd"]);
    f.spec.workdir = Some("/usr/share".into());
    let (_, log) = f.run().await;
    assert_eq!(log, "/usr/share\n");

    let mut f = Fixture::new("wr", &["pwd"]);
    let (_, log) = f.run().await;
    assert_eq!(log, "/\n", "the default workdir is /");
}

#[tokio::test]
async fn exit_codes_and_signals_are_reported() {
    let mut f = Fixture::new("ec", &["sh", "-c", "echo out; echo err >&2; exit 3"]);
    let (exit, log) = f.run().await;
    assert_eq!(exit, TaskExit::Code(3));
    assert_eq!(exit.to_string(), "exit code 3");
    assert_eq!(log, "out\nerr\n");
    // Logs are appended across runs of the same task directory.
    let mut again = start(&f.spec).await.unwrap();
    assert_eq!(again.wait().await, Some(3));
    assert_eq!(f.log(), "out\nerr\nout\nerr\n");
    assert_eq!(read_logs(&f.spec.run_dir, Some(1)).unwrap(), b"err\n");
    assert!(log_path(&f.spec.run_dir).ends_with("task.log"));

    let mut f = Fixture::new("sg", &["sh", "-c", "kill -9 $$"]);
    let (exit, _) = f.run().await;
    assert_eq!(exit, TaskExit::Signal(9));
    assert_eq!(exit.to_string(), "killed by SIGKILL");
    assert_eq!(exit.code(), None);
}

#[tokio::test]
async fn a_missing_program_is_a_clear_error_and_creates_nothing() {
    let f = Fixture::new("nf", &["no-such-program-xyz", "arg"]);
    let err = start(&f.spec).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "executable file not found: no-such-program-xyz"
    );
    assert!(!shoal_net::netns_exists(
        &task_netns_name(&f.spec.task_id).unwrap()
    ));

    let mut f = Fixture::new("ew", &["true"]);
    f.spec.workdir = Some("/no/such/dir".into());
    assert!(matches!(start(&f.spec).await, Err(ExecError::NoWorkdir(_))));
    let f = Fixture::new("em", &[]);
    assert!(matches!(start(&f.spec).await, Err(ExecError::EmptyCommand)));
}

/// Pids of processes in process group `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(2) == Some(&pgid.to_string().as_str()) && fields.first() != Some(&"Z") {
            out.push(pid);
        }
    }
    out
}

#[tokio::test]
async fn stop_kills_a_task_that_ignores_sigterm_after_the_grace() {
    let f = Fixture::new(
        "st",
        &[
            "sh",
            "-c",
            "trap '' TERM; echo ready; while :; do sleep 0.05; done",
        ],
    );
    let mut running = start(&f.spec).await.unwrap();
    let pid = running.pid;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f.log().contains("ready") {
        assert!(Instant::now() < deadline, "task never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t0 = Instant::now();
    let (stopped, exit) = tokio::join!(stop(pid, Duration::from_millis(700)), running.wait_exit());
    let took = t0.elapsed();
    stopped.unwrap();
    assert_eq!(exit.unwrap(), TaskExit::Signal(9));
    assert!(
        took >= Duration::from_millis(700),
        "SIGKILL came before the grace ended: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "stop took {took:?}");
    assert!(
        group_members(pid).is_empty(),
        "processes left in the task's group"
    );
}

#[tokio::test]
async fn stop_is_quick_for_a_task_that_honours_sigterm() {
    let f = Fixture::new("sq", &["sleep", "100"]);
    let mut running = start(&f.spec).await.unwrap();
    let t0 = Instant::now();
    let (stopped, exit) = tokio::join!(
        stop(running.pid, Duration::from_secs(10)),
        running.wait_exit()
    );
    stopped.unwrap();
    assert_eq!(exit.unwrap(), TaskExit::Signal(15));
    assert!(t0.elapsed() < Duration::from_secs(3));
    // Stopping what has gone is fine.
    stop(running.pid, Duration::from_secs(1)).await.unwrap();
}

#[tokio::test]
async fn a_named_netns_is_joined_and_left_in_place() {
    let ns = format!("shoaltest-{}-join", std::process::id());
    let _ = shoal_net::delete_netns(&ns);
    shoal_net::create_netns(&ns).unwrap();
    let mut f = Fixture::new("jn", &["readlink", "/proc/self/ns/net"]);
    f.spec.netns = Some(ns.clone());
    let (exit, log) = f.run().await;
    let ino = std::fs::metadata(shoal_net::netns_path(&ns)).unwrap().ino();
    cleanup(&f.spec).await;
    let still_there = shoal_net::netns_exists(&ns);
    shoal_net::delete_netns(&ns).unwrap();
    assert!(exit.success(), "{log}");
    assert_eq!(log.trim(), format!("net:[{ino}]"));
    assert!(still_there, "cleanup must not delete a joined namespace");
}

#[tokio::test]
async fn cleanup_removes_the_fresh_netns() {
    let mut f = Fixture::new("cl", &["true"]);
    f.run().await;
    let name = task_netns_name(&f.spec.task_id).unwrap();
    assert!(shoal_net::netns_exists(&name));
    cleanup(&f.spec).await;
    assert!(!shoal_net::netns_exists(&name));
    cleanup(&f.spec).await; // twice is fine
}

#[tokio::test]
async fn exec_in_joins_the_tasks_namespaces() {
    let mut f = Fixture::new("xi", &["sleep", "100"]);
    f.spec.env = vec!["TASKVAR=1".into()];
    let running = start(&f.spec).await.unwrap();
    f.pid = Some(running.pid);
    let out = tokio::task::spawn_blocking({
        let pid = running.pid;
        move || {
            exec_in(
                pid,
                &[
                    "sh".into(),
                    "-c".into(),
                    "hostname; pwd; echo $TASKVAR; cat /etc/resolv.conf; ip -o link | wc -l".into(),
                ],
            )
            .unwrap()
            .output()
            .unwrap()
        }
    })
    .await
    .unwrap();
    stop(running.pid, Duration::from_secs(1)).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text,
        "xi-host\n/\n1\nnameserver 127.0.0.11\noptions ndots:0\n1\n"
    );
    assert!(matches!(
        exec_in(u32::MAX - 1, &["true".into()]),
        Err(ExecError::NoSuchProcess(_))
    ));
}

/// Processes (zombies included) whose name is `comm`.
fn processes_named(comm: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm) {
            out.push(pid);
        }
    }
    out
}

#[tokio::test]
async fn a_program_that_cannot_be_executed_in_the_sandbox_is_not_found_and_leaves_nothing() {
    // The script exists (so the checks before anything is created pass), its interpreter
    // does not: execve itself fails with ENOENT, in the child, inside the sandbox.
    let mut f = Fixture::new("ne", &[]);
    std::fs::create_dir_all(&f.spec.run_dir).unwrap();
    let script = f.spec.run_dir.join("no-interpreter.sh");
    // Written by another process: a write fd of this one, inherited by a child that another
    // test starts meanwhile, would make execve fail with ETXTBSY instead.
    let made = std::process::Command::new("sh")
        .args([
            "-c",
            "printf '#!/no/such/interpreter\\n' >\"$0\"; chmod 755 \"$0\"",
        ])
        .arg(&script)
        .status()
        .unwrap();
    assert!(made.success());
    f.spec.command = vec![script.to_str().unwrap().into(), "arg".into()];
    // The child is named after the thread that starts it until it execs: a child left
    // unreaped would be a zombie of this name.
    nix::sys::prctl::set_name(c"shoal-noexec").unwrap();
    let err = start(&f.spec).await.unwrap_err();
    assert!(
        matches!(&err, ExecError::NotFound(p) if *p == f.spec.command[0]),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("executable file not found: {}", script.display())
    );
    assert_eq!(processes_named("shoal-noexec"), Vec::<u32>::new());
    cleanup(&f.spec).await;
    assert!(!shoal_net::netns_exists(
        &task_netns_name(&f.spec.task_id).unwrap()
    ));
}

#[tokio::test]
async fn try_exit_says_none_while_running_and_the_exit_after() {
    let f = Fixture::new("tx", &[]);
    let gate = f.spec.run_dir.with_extension("gate");
    let _ = std::fs::remove_file(&gate);
    let mut f = f;
    f.spec.command = vec![
        "sh".into(),
        "-c".into(),
        format!(
            "while [ ! -e {} ]; do sleep 0.02; done; exit 3",
            gate.display()
        ),
    ];
    let mut running = start(&f.spec).await.unwrap();
    f.pid = Some(running.pid);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(running.try_exit().unwrap(), None);
    std::fs::write(&gate, "").unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(20), running.wait_exit())
        .await
        .expect("task did not finish in 20s");
    let _ = std::fs::remove_file(&gate);
    assert_eq!(exit.unwrap(), TaskExit::Code(3));
    // Reaped once; every later call says the same.
    assert_eq!(running.try_exit().unwrap(), Some(TaskExit::Code(3)));
    assert_eq!(running.wait_exit().await.unwrap(), TaskExit::Code(3));
    assert_eq!(running.wait().await, Some(3));
}

#[tokio::test]
async fn a_task_killed_from_outside_reports_the_signal() {
    let mut f = Fixture::new("kx", &["sleep", "100"]);
    let mut running = start(&f.spec).await.unwrap();
    f.pid = Some(running.pid);
    assert_eq!(running.try_exit().unwrap(), None);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(running.pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(20), running.wait_exit())
        .await
        .expect("task did not end in 20s")
        .unwrap();
    assert_eq!(exit, TaskExit::Signal(9));
    assert_eq!(running.try_exit().unwrap(), Some(TaskExit::Signal(9)));
    assert_eq!(running.wait().await, None);
    // Reaped: the pid is no longer ours, not even as a zombie.
    assert!(!std::path::Path::new(&format!("/proc/{}", running.pid)).exists());
}

/// The `Sig...` line of a /proc status text, as a bit mask.
fn sig_line(status: &str, name: &str) -> u64 {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:\t")))
        .unwrap_or_else(|| panic!("no {name} in {status}"));
    u64::from_str_radix(line.trim(), 16).unwrap()
}

#[tokio::test]
async fn the_task_gets_the_starters_signal_mask_and_sigpipe_back() {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
    // A mask on the thread that starts the task (this test's runtime runs on this thread).
    let mut usr2 = SigSet::empty();
    usr2.add(Signal::SIGUSR2);
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&usr2), None).unwrap();
    let mut f = Fixture::new("sm", &["cat", "/proc/self/status"]);
    let (exit, log) = f.run().await;
    pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&usr2), None).unwrap();
    assert!(exit.success(), "{log}");
    let bit = |s: Signal| 1u64 << (s as i32 - 1);
    // The starter's mask, not the all-blocked one of the moment of the clone.
    assert_eq!(sig_line(&log, "SigBlk"), bit(Signal::SIGUSR2), "{log}");
    // Ignored signals stay ignored across exec, but SIGPIPE (which Rust ignores) is reset,
    // as std's Command does.
    let ours = std::fs::read_to_string("/proc/self/status").unwrap();
    assert_ne!(sig_line(&ours, "SigIgn") & bit(Signal::SIGPIPE), 0);
    assert_eq!(
        sig_line(&log, "SigIgn"),
        sig_line(&ours, "SigIgn") & !bit(Signal::SIGPIPE),
        "{log}"
    );
}

#[tokio::test]
async fn stdin_is_dev_null_and_no_fd_of_the_sandbox_reaches_the_task() {
    let mut f = Fixture::new("io", &["sh", "-c", "ls -l /proc/$$/fd/"]);
    let (exit, log) = f.run().await;
    assert!(exit.success(), "{log}");
    let fds: std::collections::BTreeMap<u32, &str> = log
        .lines()
        .filter_map(|l| {
            let (left, target) = l.split_once(" -> ")?;
            Some((left.rsplit(' ').next()?.parse().ok()?, target))
        })
        .collect();
    let log_file = log_path(&f.spec.run_dir);
    assert_eq!(fds.get(&0), Some(&"/dev/null"), "{log}");
    assert_eq!(fds.get(&1), Some(&log_file.to_str().unwrap()), "{log}");
    assert_eq!(fds.get(&2), Some(&log_file.to_str().unwrap()), "{log}");
    // What the test's environment leaks (a lock held by a wrapper, say) may be inherited as
    // by any child; the namespaces and the pidfd opened for the task may not.
    assert!(
        fds.values()
            .all(|t| !t.contains("pidfd") && !t.contains("net:[") && !t.contains("mnt:[")),
        "{log}"
    );
}
