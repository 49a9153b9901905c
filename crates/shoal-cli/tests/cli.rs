//! The CLI against a stand-in daemon (tests/fake): flags reach the API as they should,
//! convergence is waited for, and failures exit 1. Run with `--nocapture` to see the output.

mod fake;

use shoal_cli::run;

async fn shoal(d: &fake::Daemon, args: &[&str]) -> i32 {
    let argv = ["shoal", "-H", d.host.as_str()]
        .into_iter()
        .chain(args.iter().copied());
    run(argv).await
}

fn calls(d: &fake::Daemon) -> Vec<String> {
    std::mem::take(&mut d.fake.state.lock().unwrap().calls)
}

#[tokio::test]
async fn swarm_and_nodes() {
    let d = fake::start();
    assert_eq!(
        shoal(&d, &["init", "--advertise-addr", "10.0.0.1"]).await,
        0
    );
    assert_eq!(
        shoal(
            &d,
            &[
                "join",
                "--token",
                "SWMTKN-1-00000000000000000000000000000000000000000000000001-abcdefghijklmnopqrstuvwx9",
                "10.0.0.1"
            ]
        )
        .await,
        0
    );
    assert_eq!(
        shoal(&d, &["join", "--token", "SWMTKN-1-x", "10.0.0.1"]).await,
        1
    );
    assert_eq!(shoal(&d, &["join-token", "worker"]).await, 0);
    assert_eq!(
        shoal(&d, &["swarm", "join-token", "-q", "manager"]).await,
        0
    );
    assert_eq!(shoal(&d, &["join-token", "boss"]).await, 2);
    assert_eq!(shoal(&d, &["node", "ls"]).await, 0);
    assert_eq!(shoal(&d, &["node", "ls", "-q"]).await, 0);
    assert_eq!(
        shoal(
            &d,
            &[
                "node",
                "ls",
                "--format",
                "{{.Hostname}}: {{.ManagerStatus}}"
            ]
        )
        .await,
        0
    );
    assert_eq!(
        shoal(
            &d,
            &[
                "node",
                "inspect",
                "node1",
                "--format",
                "{{.Status.Addr}} {{.ManagerStatus}}"
            ]
        )
        .await,
        0
    );
    assert_eq!(shoal(&d, &["node", "inspect", "nope"]).await, 1);
    assert_eq!(
        shoal(
            &d,
            &[
                "node",
                "update",
                "--availability",
                "drain",
                "--label-add",
                "zone=east",
                "node2"
            ]
        )
        .await,
        0
    );
    assert_eq!(
        shoal(&d, &["node", "update", "--availability", "off", "node2"]).await,
        2
    );
    assert_eq!(shoal(&d, &["node", "rm", "-f", "node2"]).await, 0);
    assert_eq!(shoal(&d, &["leave", "--force"]).await, 0);
    assert_eq!(
        shoal(&d, &["init", "--ingress-subnet", "10.9.0.0/16"]).await,
        0
    );
    assert_eq!(
        shoal(&d, &["swarm", "init", "--ingress-subnet", "10.9.0.1/16"]).await,
        1,
        "host bits set"
    );
    assert_eq!(
        calls(&d),
        [
            "init Some(\"10.0.0.1\") None",
            "join 10.0.0.1:2377",
            "update_node node2 Some(Drain) [\"zone=east\"] []",
            "remove_node node2 true",
            "leave true",
            "init None Some(\"10.9.0.0/16\")",
        ]
    );
}

#[tokio::test]
async fn service_lifecycle() {
    let d = fake::start();
    let create = [
        "service",
        "create",
        "--runtime",
        "host",
        "--name",
        "vote",
        "--replicas",
        "2",
        "-p",
        "8080:80",
        "shoal",
        "demo",
        "vote",
    ];
    assert_eq!(shoal(&d, &create).await, 0);
    let c = calls(&d);
    assert_eq!(c.len(), 1);
    assert!(c[0].starts_with(r#"create {"Name":"vote","Labels":{},"TaskTemplate":{"ContainerSpec":{"Command":["shoal","demo","vote"]"#), "{c:?}");
    assert_eq!(shoal(&d, &create).await, 1, "the name is taken");
    assert_eq!(shoal(&d, &["service", "ls"]).await, 0);
    assert_eq!(shoal(&d, &["service", "ls", "--format", "json"]).await, 0);
    assert_eq!(shoal(&d, &["service", "ps", "vote"]).await, 0);
    assert_eq!(shoal(&d, &["service", "scale", "vote=3"]).await, 0);
    assert!(calls(&d)[0].contains(r#""Mode":{"Replicated":{"Replicas":3}}"#));
    assert_eq!(
        shoal(&d, &["service", "update", "--env-add", "A=1", "vote"]).await,
        0
    );
    assert!(calls(&d)[0].contains(r#""Env":["A=1"]"#));
    assert_eq!(
        shoal(&d, &["service", "update", "vote"]).await,
        1,
        "nothing to update"
    );
    assert_eq!(shoal(&d, &["service", "ps", "vote", "--no-trunc"]).await, 0);
    assert_eq!(
        shoal(
            &d,
            &[
                "service",
                "inspect",
                "vote",
                "--format",
                "{{.Spec.Name}} {{.ServiceStatus}}"
            ]
        )
        .await,
        0
    );
    assert_eq!(
        shoal(&d, &["service", "inspect", "--pretty", "vote"]).await,
        0
    );
    assert_eq!(shoal(&d, &["service", "logs", "vote"]).await, 0);
    assert_eq!(
        shoal(&d, &["service", "rm", "vote", "nope"]).await,
        1,
        "nope does not exist"
    );
    assert_eq!(shoal(&d, &["service", "ps", "vote"]).await, 1);
}

#[tokio::test]
async fn global_services_refuse_scale() {
    let d = fake::start();
    assert_eq!(
        shoal(
            &d,
            &[
                "service",
                "create",
                "--runtime",
                "host",
                "--name",
                "agent",
                "--mode",
                "global",
                "sleep",
                "100"
            ]
        )
        .await,
        0
    );
    assert_eq!(shoal(&d, &["service", "scale", "agent=2"]).await, 1);
    assert_eq!(
        shoal(
            &d,
            &[
                "service",
                "create",
                "--runtime",
                "host",
                "--mode",
                "global",
                "--replicas",
                "2",
                "sleep",
                "1"
            ]
        )
        .await,
        1
    );
}

#[tokio::test]
async fn convergence_times_out_with_the_task_error() {
    let d = fake::start();
    let args = [
        "service",
        "create",
        "--runtime",
        "host",
        "--name",
        "broken",
        "--timeout",
        "600ms",
        "false",
    ];
    assert_eq!(shoal(&d, &args).await, 1);
    // The service exists all the same; --detach does not wait.
    assert_eq!(
        shoal(
            &d,
            &[
                "service",
                "create",
                "--runtime",
                "host",
                "-d",
                "--name",
                "broken2",
                "false"
            ]
        )
        .await,
        0
    );
}

#[tokio::test]
async fn exec_elsewhere_and_no_daemon() {
    let d = fake::start();
    assert_eq!(shoal(&d, &["exec", "vote.1", "--", "ip", "addr"]).await, 1);
    assert_eq!(
        run([
            "shoal",
            "-H",
            "unix:///nonexistent/shoal.sock",
            "service",
            "ls"
        ])
        .await,
        1
    );
}

/// A real `shoal exec` into a process with its own UTS namespace (needs root, like the lab
/// tests): the command sees the task's hostname, and its exit code is shoal's.
#[tokio::test]
async fn exec_joins_the_task_namespaces() {
    let mut task = std::process::Command::new("unshare")
        .args(["--uts", "sh", "-c", "hostname tasky && exec sleep 30"])
        .spawn()
        .expect("failed to start unshare (util-linux)");
    let d = fake::start();
    d.fake.state.lock().unwrap().exec_pid = Some(task.id());
    // Wait until the child has set its hostname.
    let mut code = 1;
    for _ in 0..50 {
        code = shoal(
            &d,
            &[
                "exec",
                "vote.1",
                "--",
                "sh",
                "-c",
                "test \"$(hostname)\" = tasky",
            ],
        )
        .await;
        if code == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let exit7 = shoal(&d, &["exec", "vote.1", "--", "sh", "-c", "exit 7"]).await;
    let missing = shoal(&d, &["exec", "vote.1", "--", "/nonexistent/program"]).await;
    let _ = task.kill();
    let _ = task.wait();
    assert_eq!(
        code, 0,
        "the command did not run in the task's UTS namespace"
    );
    assert_eq!(exit7, 7);
    assert_eq!(missing, 127);
}

#[tokio::test]
async fn networks() {
    let d = fake::start();
    let create = [
        "network",
        "create",
        "--subnet",
        "10.0.7.0/24",
        "--gateway",
        "10.0.7.1",
        "--attachable",
        "--label",
        "tier=back",
        "back",
    ];
    assert_eq!(shoal(&d, &create).await, 0);
    assert_eq!(
        calls(&d),
        [
            r#"create_network {"Name":"back","Driver":"overlay","Subnet":"10.0.7.0/24","Gateway":"10.0.7.1","Attachable":true,"Labels":{"tier":"back"}}"#
        ]
    );
    assert_eq!(shoal(&d, &create).await, 1, "the name is taken");
    assert_eq!(shoal(&d, &["network", "create", "front"]).await, 0);
    assert_eq!(
        calls(&d),
        [
            r#"create_network {"Name":"back","Driver":"overlay","Subnet":"10.0.7.0/24","Gateway":"10.0.7.1","Attachable":true,"Labels":{"tier":"back"}}"#,
            r#"create_network {"Name":"front","Driver":"overlay","Attachable":false,"Labels":{}}"#
        ]
    );
    // Refused before the daemon is asked.
    assert_eq!(
        shoal(&d, &["network", "create", "-d", "bridge", "x"]).await,
        1
    );
    assert_eq!(
        shoal(&d, &["network", "create", "--gateway", "10.0.0.1", "x"]).await,
        1
    );
    assert!(calls(&d).is_empty());

    assert_eq!(shoal(&d, &["network", "ls"]).await, 0);
    assert_eq!(shoal(&d, &["network", "ls", "-q"]).await, 0);
    assert_eq!(
        shoal(
            &d,
            &["network", "list", "--format", "{{.Name}} {{.Subnet}}"]
        )
        .await,
        0
    );
    assert_eq!(
        shoal(&d, &["network", "ls", "--format", "{{.Nope}}"]).await,
        1
    );
    assert_eq!(
        shoal(
            &d,
            &["network", "inspect", "back", "--format", "{{.IPAM.Subnet}}"]
        )
        .await,
        0
    );
    assert_eq!(
        shoal(&d, &["network", "inspect", "back", "ingress"]).await,
        0
    );
    assert_eq!(
        shoal(&d, &["network", "inspect", "back", "nope"]).await,
        1,
        "nope does not exist"
    );
    // Each network is tried: ingress and nope fail, back and front go.
    assert_eq!(
        shoal(&d, &["network", "rm", "ingress", "back", "nope", "front"]).await,
        1
    );
    assert_eq!(calls(&d), ["remove_network back", "remove_network front"]);
    let left: Vec<String> = d
        .fake
        .state
        .lock()
        .unwrap()
        .networks
        .values()
        .map(|n| n.name.clone())
        .collect();
    assert_eq!(left, ["ingress"]);
    assert_eq!(shoal(&d, &["network", "remove", "ingress"]).await, 1);
}

#[tokio::test]
async fn convergence_waits_for_the_endpoint_change() {
    let d = fake::start();
    assert_eq!(
        shoal(
            &d,
            &[
                "service",
                "create",
                "--runtime",
                "host",
                "--name",
                "web",
                "sleep",
                "100"
            ]
        )
        .await,
        0
    );
    // The tasks run at once; converging took polls until both nodes had the change.
    let st = d.fake.state.lock().unwrap();
    assert_eq!(st.synced.values().copied().collect::<Vec<_>>(), [2]);
}
