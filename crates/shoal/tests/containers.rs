//! `--runtime oci` on a 3-node lab with real runc and a real registry: a docker-registry on
//! 127.0.0.1:5000 in each node's namespace (loopback registries are plain HTTP, as docker
//! has it), each with the same busybox image pushed by skopeo; the nodes pull it themselves.

mod common;

use std::time::Duration;

use common::oci::{IMAGE, Runcs, data_dir, registries, runc_ids};
use common::{Lab, text, wait_for};

#[test]
fn a_service_runs_an_image_in_containers() {
    let lab = Lab::up("oci", 3, 1);
    let _runcs = Runcs::of(&lab);
    let registries = registries(&lab);
    lab.ok(1, &["network", "create", "--driver", "overlay", "ovl"]);

    // Three tasks of one image on a node that has none: one pull (the config and layer
    // blobs fetched once each). First, so that no other task has brought the image.
    let node3 = &registries[2];
    let blob_gets = || {
        node3
            .log()
            .lines()
            .filter(|l| l.contains("\"GET /v2/lab/busybox/blobs/") && l.contains("oci-client"))
            .count()
    };
    lab.create(&format!(
        "--runtime oci --name three --replicas 3 --constraint node.hostname==node3 {IMAGE} \
         busybox sleep 1000"
    ));
    lab.wait_running("three", 3);
    assert_eq!(blob_gets(), 2, "{}", node3.log());

    // A reference that does not parse is refused at create, naming it.
    let err = lab.fails(
        1,
        &[
            "service",
            "create",
            "--runtime",
            "oci",
            "--name",
            "bad",
            "Lab/BusyBox",
        ],
    );
    assert!(
        err.contains("invalid reference format \"Lab/BusyBox\": repository name must be lowercase"),
        "{err}"
    );

    lab.create(&format!(
        "--runtime oci --name bb --network ovl --replicas 2 {IMAGE} busybox httpd -f -p 80"
    ));
    let tasks = lab.wait_running("bb", 2);
    let inspect = lab.ok(
        1,
        &[
            "service",
            "inspect",
            "--format",
            "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
            "bb",
        ],
    );
    // Pinned to the digest the registry had at create, as Swarm does.
    assert!(
        inspect.trim().starts_with(&format!("{IMAGE}@sha256:")),
        "{inspect}"
    );

    // A host-command client on every node; from one without a bb task, tasks.bb is both.
    lab.create("--name client --mode global --network ovl sleep 1000");
    let clients = lab.wait_running("client", 3);
    let bb_nodes: Vec<u32> = tasks.iter().map(|(n, _)| *n).collect();
    let (other, client) = clients
        .iter()
        .find(|(n, _)| !bb_nodes.contains(n))
        .expect("a node without bb (two replicas on three nodes)");
    let mut want: Vec<String> = tasks.iter().map(|(_, id)| lab.task_addr(id)).collect();
    want.sort();
    let mut got = lab.dig(*other, client, &["tasks.bb"]);
    got.sort();
    assert_eq!(got, want);
    // The container serves on its task address, across the overlay.
    let page = lab.in_task(
        *other,
        client,
        &[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://{}/", want[0]),
        ],
    );
    assert_eq!(
        text(&page.stdout),
        "404",
        "busybox httpd answers (no index page)"
    );

    // PID 1 in its own PID namespace, and the host's files are not there.
    for (_, id) in &tasks {
        let pid = lab.task_json(id)["Status"]["PID"].as_u64().expect("a pid");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
        assert!(nspid.ends_with("\t1"), "{nspid}");
        let root = std::fs::read_link(format!("/proc/{pid}/root")).unwrap();
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}/root/work")).exists(),
            "the host's /work is not in the container's root {root:?}"
        );
        assert!(std::path::Path::new(&format!("/proc/{pid}/root/bin/busybox")).exists());
    }
    // `shoal exec` runs inside the container: its hostname, its root (no host /work), its
    // PID namespace (the container's process is PID 1 there).
    let (node, id) = &tasks[0];
    let slot = lab.ok(
        1,
        &[
            "service",
            "ps",
            "--no-trunc",
            "--format",
            "{{.Name}}|{{.ID}}",
            "bb",
        ],
    );
    let name = slot
        .lines()
        .find_map(|l| l.strip_suffix(&format!("|{id}")))
        .expect("the task's name")
        .to_string();
    let hostname = lab.ok(
        *node,
        &["exec", &name, "--", "busybox", "cat", "/etc/hostname"],
    );
    assert_eq!(hostname.trim(), &id[..12]);
    let out = lab.shoal(*node, &["exec", &name, "--", "busybox", "ls", "/work"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("ls: /work: No such file or directory"),
        "{}",
        text(&out.stderr)
    );
    let ps = lab.ok(
        *node,
        &["exec", id, "--", "busybox", "ps", "-o", "pid,args"],
    );
    assert!(
        ps.lines().any(|l| l.trim() == "1 busybox httpd -f -p 80"),
        "{ps}"
    );
    // Where the task does not run, the error says so (a manager names the task's node).
    let (other, want) = match node {
        1 => (2, format!("task {name} is not running on this node")),
        n => (1, format!("task {name} runs on node node{n}, not here")),
    };
    let err = lab.fails(other, &["exec", &name, "--", "true"]);
    assert!(err.contains(&want), "{err}");

    // A missing tag: the task fails with the registry's words, nothing stuck.
    lab.ok(
        1,
        &[
            "service",
            "create",
            "-d",
            "--runtime",
            "oci",
            "--name",
            "missing",
            "--restart-condition",
            "none",
            "127.0.0.1:5000/lab/busybox:nosuch",
        ],
    );
    let error = failed_error(&lab, "missing");
    assert!(error.contains("manifest unknown"), "{error}");

    // A registry nobody serves: the task fails naming it.
    lab.ok(
        1,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "down",
            "--restart-condition",
            "none",
            "127.0.0.1:5999/lab/busybox:1",
        ],
    );
    let error = failed_error(&lab, "down");
    assert!(
        error.contains("cannot reach registry 127.0.0.1:5999"),
        "{error}"
    );

    // What a container writes is what `service logs` shows.
    lab.ok(
        1,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "hello",
            "--restart-condition",
            "none",
            IMAGE,
            "busybox",
            "echo",
            "hello-from-a-container",
        ],
    );
    wait_for("hello's log", Duration::from_secs(60), || {
        let logs = text(&lab.shoal(1, &["service", "logs", "hello"]).stdout);
        if logs.contains("hello-from-a-container") {
            Ok(())
        } else {
            Err(logs)
        }
    });

    // A memory limit stops an allocating container: dd's one 64 MiB block under 16 MiB.
    lab.ok(
        1,
        &[
            "service",
            "create",
            "-d",
            "--runtime",
            "oci",
            "--name",
            "oom",
            "--restart-condition",
            "none",
            "--limit-memory",
            "16m",
            IMAGE,
            "busybox",
            "dd",
            "if=/dev/zero",
            "of=/dev/null",
            "bs=64M",
            "count=1",
        ],
    );
    let error = failed_error(&lab, "oom");
    assert!(error.ends_with("|\"OOMKilled\""), "{error}");

    // service rm: no runc container, no mount, no writable layer left.
    lab.ok(
        1,
        &[
            "service", "rm", "bb", "missing", "oom", "down", "three", "hello",
        ],
    );
    for (node, id) in &tasks {
        let data = data_dir(&lab, *node);
        wait_for(
            "the container to be removed",
            Duration::from_secs(30),
            || {
                let ids = runc_ids(&data.join("runc"));
                let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
                let layer = data.join("images/containers").join(id);
                match (
                    ids.contains(id),
                    mounts.contains(id.as_str()),
                    layer.exists(),
                ) {
                    (false, false, false) => Ok(()),
                    state => Err(format!("runc, mount, writable layer: {state:?}")),
                }
            },
        );
    }
}

/// Waits until a service's (one, not restarted) task failed; its `service ps` ERROR.
fn failed_error(lab: &Lab, service: &str) -> String {
    wait_for(
        &format!("{service}'s task to fail"),
        Duration::from_secs(60),
        || {
            let out = lab.ok(
                1,
                &[
                    "service",
                    "ps",
                    "--no-trunc",
                    "--format",
                    "{{.CurrentState}}|{{.Error}}",
                    service,
                ],
            );
            match out.lines().next() {
                Some(l) if l.starts_with("Failed") => Ok(l.to_string()),
                other => Err(format!("{other:?}")),
            }
        },
    )
}
