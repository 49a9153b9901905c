//! Container options on a 1-node lab with real runc, conmon and a real registry: bind,
//! volume and tmpfs mounts, `--cap-drop`, `--hostname`, `--env-file`, and a reservation
//! larger than the node.

mod common;

use std::time::Duration;

use common::oci::{IMAGE, Runcs, data_dir, registries, runc_ids};
use common::{Lab, text, wait_for};

const SLOW: Duration = Duration::from_secs(60);

/// `service create -d ARGS` on node1, then the one task's id once it runs.
fn create_one(lab: &Lab, args: &[&str]) -> String {
    let mut a = vec!["service", "create", "-d"];
    a.extend_from_slice(args);
    lab.ok(1, &a);
    let name = args[args.iter().position(|a| *a == "--name").unwrap() + 1];
    lab.wait_running(name, 1)[0].1.clone()
}

/// Removes the test's files in /tmp when it ends, also by failing.
struct TmpDir(String);

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn mounts_capabilities_hostname_env_files_and_reservations() {
    let lab = Lab::up("ociopt", 1, 1);
    let _runcs = Runcs::of(&lab);
    let _registries = registries(&lab);
    let host = TmpDir(format!("/tmp/{}-host", lab.name));
    std::fs::create_dir_all(&host.0).unwrap();
    std::fs::write(format!("{}/f", host.0), "from-the-host\n").unwrap();
    let env_file = format!("{}/env", host.0);
    std::fs::write(&env_file, "# settings\nGREETING=hello-env\n").unwrap();

    let bind = format!("type=bind,source={},target=/data,readonly", host.0);
    let id = create_one(
        &lab,
        &[
            "--name",
            "opts",
            "--mount",
            &bind,
            "--mount",
            "type=volume,source=vol1,target=/v",
            "--mount",
            "type=tmpfs,target=/scratch",
            "--cap-drop",
            "NET_RAW",
            "--hostname",
            "opts-host",
            "--env-file",
            &env_file,
            IMAGE,
            "busybox",
            "sh",
            "-c",
            "echo saved > /v/f; exec busybox sleep 1000",
        ],
    );
    let exec = |cmd: &[&str]| {
        let mut a = vec!["exec", "opts.1", "--", "busybox"];
        a.extend_from_slice(cmd);
        lab.shoal(1, &a)
    };
    // bind: the host's file, read-only.
    assert_eq!(text(&exec(&["cat", "/data/f"]).stdout), "from-the-host\n");
    let out = exec(&["touch", "/data/g"]);
    assert!(
        text(&out.stderr).contains("touch: /data/g: Read-only file system"),
        "{}",
        text(&out.stderr)
    );
    // tmpfs: a tmpfs of its own.
    let mounts = text(&exec(&["cat", "/proc/mounts"]).stdout);
    assert!(
        mounts
            .lines()
            .any(|l| l.starts_with("tmpfs /scratch tmpfs")),
        "{mounts}"
    );
    // --cap-drop NET_RAW: ping cannot open its raw socket.
    let out = exec(&["ping", "-c", "1", "127.0.0.1"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("ping: permission denied (are you root?)"),
        "{}",
        text(&out.stderr)
    );
    // --hostname and --env-file.
    assert_eq!(text(&exec(&["cat", "/etc/hostname"]).stdout), "opts-host\n");
    let env = text(&exec(&["env"]).stdout);
    assert!(env.lines().any(|l| l == "GREETING=hello-env"), "{env}");

    // volume: what the task wrote outlives it and the next task sees it.
    lab.ok(1, &["service", "rm", "opts"]);
    wait_for("opts's container to go", SLOW, || {
        match runc_ids(&data_dir(&lab, 1).join("runc")).contains(&id) {
            false => Ok(()),
            true => Err("still there".to_string()),
        }
    });
    let kept = data_dir(&lab, 1).join("volumes/vol1/_data/f");
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), "saved\n");
    create_one(
        &lab,
        &[
            "--name",
            "reader",
            "--mount",
            "type=volume,source=vol1,target=/v",
            IMAGE,
            "busybox",
            "sleep",
            "1000",
        ],
    );
    let out = lab.ok(1, &["exec", "reader.1", "--", "busybox", "cat", "/v/f"]);
    assert_eq!(out, "saved\n");

    // A reservation larger than any node: the task waits, saying why.
    lab.ok(
        1,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "huge",
            "--reserve-memory",
            "100000g",
            IMAGE,
            "busybox",
            "sleep",
            "1000",
        ],
    );
    let line = wait_for("huge's task to say why it waits", SLOW, || {
        let out = lab.ok(
            1,
            &[
                "service",
                "ps",
                "--no-trunc",
                "--format",
                "{{.CurrentState}}|{{.Error}}",
                "huge",
            ],
        );
        match out.lines().next() {
            Some(l) if l.contains("insufficient") => Ok(l.to_string()),
            other => Err(format!("{other:?}")),
        }
    });
    assert!(line.starts_with("Pending"), "{line}");
    assert!(
        line.contains("no suitable node (insufficient memory on 1 node)"),
        "{line}"
    );
    lab.ok(1, &["service", "rm", "reader", "huge"]);
}
