//! Pinned digests, registry logins and `image ls|rm|prune` on a 2-node lab with real runc
//! and real registries: in each node's namespace a docker-registry on 127.0.0.1:5000 (open)
//! and one on 127.0.0.1:5001 that requires a login (htpasswd), serving the same images.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{Lab, SHOAL, text, wait_for};
use shoal_testns::Netns;
use shoal_testns::registry::{LabRegistry, ManifestFormat};

const IMAGE: &str = "127.0.0.1:5000/lab/busybox:1";
const PRIVATE: &str = "127.0.0.1:5001/team/busybox:1";
const PASSWORD: &str = "lab-password";
/// bcrypt of `lab-password` (the registry reads bcrypt hashes only).
const HASH: &str = "$2b$05$A6Sl0M3BcfxIkYJWf6bNieO/0d48ciByyEF7OBWaGa378UInwPqcu";

/// Deletes, when the test ends (also by failing), the containers runc still runs for the
/// lab's nodes.
struct Runcs(Vec<PathBuf>);

impl Drop for Runcs {
    fn drop(&mut self) {
        for root in &self.0 {
            let out = Command::new("runc")
                .arg("--root")
                .arg(root)
                .args(["list", "-q"])
                .output();
            for id in out.map(|o| text(&o.stdout)).unwrap_or_default().lines() {
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(root)
                    .args(["delete", "--force", id])
                    .output();
            }
        }
    }
}

fn data_dir(lab: &Lab, node: u32) -> PathBuf {
    lab.dir().join(format!("node{node}")).join("data")
}

/// `shoal ARGS` on node N with the docker CLI config in `config` (never the user's own).
fn shoal(lab: &Lab, node: u32, config: &Path, args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(SHOAL)
        .arg("-H")
        .arg(lab.socket(node))
        .args(args)
        .env("DOCKER_CONFIG", config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run shoal");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).expect("write stdin");
    drop(input);
    child.wait_with_output().expect("wait for shoal")
}

fn ok(lab: &Lab, config: &Path, args: &[&str]) -> Output {
    let out = shoal(lab, 1, config, args, "");
    assert!(
        out.status.success(),
        "`shoal {}` failed:\n{}{}",
        args.join(" "),
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

fn image_of(lab: &Lab, service: &str) -> String {
    let format = "{{.Spec.TaskTemplate.ContainerSpec.Image}}";
    lab.ok(1, &["service", "inspect", "--format", format, service])
        .trim()
        .to_string()
}

/// The first task line of `service ps` (newest first): `CurrentState|Error`, once it failed.
fn failed_error(lab: &Lab, service: &str) -> String {
    wait_for(
        &format!("{service}'s task to fail"),
        Duration::from_secs(60),
        || {
            let format = "{{.CurrentState}}|{{.Error}}";
            let out = lab.ok(
                1,
                &["service", "ps", "--no-trunc", "--format", format, service],
            );
            match out.lines().next() {
                Some(l) if l.starts_with("Failed") => Ok(l.to_string()),
                other => Err(format!("{other:?}")),
            }
        },
    )
}

/// Whether the running task's container has `/variant` (the image pushed second).
fn has_variant(lab: &Lab, task: &str) -> bool {
    let pid = lab.task_json(task)["Status"]["PID"]
        .as_u64()
        .expect("a running task's pid");
    Path::new(&format!("/proc/{pid}/root/variant")).exists()
}

#[test]
fn services_pin_digests_pull_with_logins_and_images_are_listed_and_pruned() {
    // Two managers: node2, a follower, seals a login that the leader (node1) opens.
    let lab = Lab::up("img", 2, 2);
    let _runcs = Runcs((1..=2).map(|n| data_dir(&lab, n).join("runc")).collect());
    // The docker CLI config of this test (never the user's own), deleted by `lab down`.
    let config = lab.dir().join("docker-config");
    let mut open = Vec::new();
    let mut private = Vec::new();
    for n in 1..=2 {
        // The namespaces are the lab's (`lab down` deletes them): not dropped here.
        let ns = Netns { name: lab.netns(n) };
        let r = LabRegistry::start(&ns, 5000);
        r.push_busybox("lab/busybox:1", ManifestFormat::Oci);
        open.push(r);
        let p = LabRegistry::start_with_login(&ns, 5001, "lab", PASSWORD, HASH);
        p.push_busybox("team/busybox:1", ManifestFormat::Oci);
        private.push(p);
        std::mem::forget(ns);
    }
    let first = open[0].push_busybox("lab/busybox:1", ManifestFormat::Oci);

    // Pinned at create: inspect shows tag@digest, ps the image as docker shows it.
    lab.create(&format!(
        "--runtime oci --name pinned --replicas 2 --restart-delay 1s {IMAGE} busybox sleep 1000"
    ));
    let tasks = lab.wait_running("pinned", 2);
    assert_eq!(image_of(&lab, "pinned"), format!("{IMAGE}@{first}"));
    let ps = lab.ok(1, &["service", "ps", "pinned"]);
    let header = ps.lines().next().unwrap();
    assert!(
        header.contains("NAME ") && header.contains(" IMAGE "),
        "{ps}"
    );
    assert!(ps.contains(&format!(" {IMAGE} ")), "{ps}");
    assert!(!ps.contains("sha256:"), "{ps}");

    // The tag moves in every registry; a replica that restarts keeps the pinned image.
    let second = open
        .iter()
        .map(|r| r.push_busybox_variant("lab/busybox:1", "second"))
        .collect::<Vec<_>>();
    assert_ne!(second[0], first);
    assert_eq!(second[0], second[1]);
    let (_, killed) = &tasks[0];
    let pid = lab.task_json(killed)["Status"]["PID"].as_u64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let restarted = wait_for("a replacement replica", Duration::from_secs(60), || {
        let t = lab.tasks_by_node("pinned");
        match t
            .iter()
            .find(|(_, id)| id != killed && !tasks.iter().any(|(_, o)| o == id))
        {
            Some((_, id)) if t.len() == 2 => Ok(id.clone()),
            _ => Err(format!("{t:?}")),
        }
    });
    assert!(
        !has_variant(&lab, &restarted),
        "the restarted replica runs the moved tag"
    );
    let spec_image = lab.task_json(&restarted)["Spec"]["Image"].clone();
    assert_eq!(spec_image, format!("{IMAGE}@{first}"));

    // update --image resolves the tag again and rolls the replicas onto it.
    let out = ok(
        &lab,
        &config,
        &["service", "update", "--image", IMAGE, "pinned"],
    );
    assert!(text(&out.stderr).is_empty(), "{}", text(&out.stderr));
    assert_eq!(image_of(&lab, "pinned"), format!("{IMAGE}@{}", second[0]));
    let rolled = lab.wait_running("pinned", 2);
    wait_for(
        "both replicas on the new image",
        Duration::from_secs(60),
        || {
            let t = lab.tasks_by_node("pinned");
            let on_new: Vec<bool> = t.iter().map(|(_, id)| has_variant(&lab, id)).collect();
            if t.len() == 2 && on_new.iter().all(|v| *v) {
                Ok(())
            } else {
                Err(format!("{t:?} {on_new:?} (after {rolled:?})"))
            }
        },
    );

    // --no-resolve-image keeps the tag as given.
    let out = ok(
        &lab,
        &config,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "loose",
            "--no-resolve-image",
            IMAGE,
            "busybox",
            "sleep",
            "1000",
        ],
    );
    assert!(text(&out.stderr).is_empty(), "{}", text(&out.stderr));
    assert_eq!(image_of(&lab, "loose"), IMAGE);

    // A registry that cannot be reached at create: docker's warning, and the service is
    // created unpinned.
    let out = ok(
        &lab,
        &config,
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
    let warning = text(&out.stderr);
    assert!(
        warning.starts_with(
            "image 127.0.0.1:5999/lab/busybox:1 could not be accessed on a registry to record\n\
             its digest. Each node will access 127.0.0.1:5999/lab/busybox:1 independently,\n\
             possibly leading to different nodes running different\nversions of the image.\n"
        ),
        "{warning}"
    );
    assert_eq!(image_of(&lab, "down"), "127.0.0.1:5999/lab/busybox:1");
    let error = failed_error(&lab, "down");
    assert!(
        error.contains("cannot reach registry 127.0.0.1:5999"),
        "{error}"
    );

    // A registry that requires a login, without one: pull access denied, and the task ends
    // Failed (nothing stuck in Preparing).
    let out = ok(
        &lab,
        &config,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "anon",
            "--restart-condition",
            "none",
            PRIVATE,
        ],
    );
    assert!(
        text(&out.stderr).contains("could not be accessed"),
        "{}",
        text(&out.stderr)
    );
    let error = failed_error(&lab, "anon");
    assert!(
        error.contains(
            "pull access denied for 127.0.0.1:5001/team/busybox, repository does not exist or \
             may require 'docker login'"
        ),
        "{error}"
    );

    // --with-registry-auth without a login says what to do.
    let out = shoal(
        &lab,
        1,
        &config,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "nologin",
            "--with-registry-auth",
            PRIVATE,
        ],
        "",
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no login for 127.0.0.1:5001 in")
            && text(&out.stderr).contains("run `shoal login 127.0.0.1:5001` first"),
        "{}",
        text(&out.stderr)
    );

    // A wrong password: docker's "unauthorized".
    let login = |password: &str| {
        let out = shoal(
            &lab,
            1,
            &config,
            &["login", "-u", "lab", "--password-stdin", "127.0.0.1:5001"],
            &format!("{password}\n"),
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    login("wrong-password");
    ok(
        &lab,
        &config,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "wrong",
            "--restart-condition",
            "none",
            "--with-registry-auth",
            PRIVATE,
        ],
    );
    let error = failed_error(&lab, "wrong");
    assert!(
        error.contains("unauthorized: authentication required"),
        "{error}"
    );

    // The right login, written as docker's config.json: pinned and pulled on both nodes.
    login(PASSWORD);
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(config.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(
        written["auths"]["127.0.0.1:5001"]["auth"],
        "bGFiOmxhYi1wYXNzd29yZA=="
    );
    let private_digest = private[0].push_busybox("team/busybox:1", ManifestFormat::Oci);
    let out = shoal(
        &lab,
        2,
        &config,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "private",
            "--replicas",
            "2",
            "--with-registry-auth",
            PRIVATE,
            "busybox",
            "sleep",
            "1000",
        ],
        "",
    );
    assert!(
        out.status.success() && text(&out.stderr).is_empty(),
        "{}",
        text(&out.stderr)
    );
    // `-d`: a follower may not have applied the create yet when the CLI would start
    // following it there; node1 (the leader) is asked instead.
    let private_tasks = lab.wait_running("private", 2);
    assert_eq!(
        image_of(&lab, "private"),
        format!("{PRIVATE}@{private_digest}")
    );

    // The login is nowhere in plain text: not in inspect, not in the managers' Raft files,
    // not in any daemon's log.
    // The password, the config.json form, the X-Registry-Auth header the CLI sent, and
    // any JSON login.
    let header = shoal_image::AuthConfig {
        username: "lab".into(),
        password: PASSWORD.into(),
        server_address: "127.0.0.1:5001".into(),
    }
    .to_header();
    let secrets = [
        PASSWORD.to_string(),
        "bGFiOmxhYi1wYXNzd29yZA".to_string(),
        header.trim_end_matches('=').to_string(),
        "\"password\"".to_string(),
    ];
    let inspect = lab.ok(1, &["service", "inspect", "private"]);
    for s in &secrets {
        assert!(!inspect.contains(s.as_str()), "{s} in inspect:\n{inspect}");
    }
    assert!(!inspect.contains("RegistryAuth"), "{inspect}");
    let mut files = vec![
        lab.dir().join("node1/shoald.log"),
        lab.dir().join("node2/shoald.log"),
    ];
    for n in 1..=2 {
        let raft = data_dir(&lab, n).join("raft");
        let found = walk(&raft);
        assert!(!found.is_empty(), "no Raft files under {}", raft.display());
        files.extend(found);
    }
    for f in &files {
        let bytes = std::fs::read(f).unwrap_or_default();
        for s in &secrets {
            assert!(
                !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                "{s} in {}",
                f.display()
            );
        }
    }
    // The managers share one sealing key, readable by root alone.
    let keys: Vec<Vec<u8>> = (1..=2)
        .map(|n| {
            let key = data_dir(&lab, n).join("registry-auth.key");
            let meta = std::fs::metadata(&key).unwrap();
            let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions());
            assert_eq!(mode & 0o777, 0o600, "{}", key.display());
            std::fs::read(&key).unwrap()
        })
        .collect();
    assert_eq!(keys[0].len(), 32);
    assert_eq!(keys[0], keys[1]);

    // image ls on a node shows what it pulled; rm of an image a task uses is refused,
    // naming the task; prune after service rm reclaims it.
    let (node, task) = &private_tasks[0];
    let ls = lab.ok(*node, &["image", "ls"]);
    let header = ls.lines().next().unwrap();
    for h in ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"] {
        assert!(header.contains(h), "{ls}");
    }
    assert!(
        ls.lines()
            .any(|l| l.starts_with("127.0.0.1:5001/team/busybox ") && l.contains(" 1 ")),
        "{ls}"
    );
    let err = lab.fails(*node, &["image", "rm", PRIVATE]);
    let slot = lab.task_json(task)["Slot"].as_u64().unwrap_or_default();
    let name = format!("private.{slot}.{task}");
    // Every local task of that image is named (another service's task may run the same
    // image: the lab's registries serve one build).
    let ps = lab.ok(1, &["service", "ps", "--no-trunc", "pinned"]);
    assert!(
        err.contains(&format!(
            "conflict: unable to remove repository reference \"{PRIVATE}\" - container "
        )) && err.contains(&name)
            && err.contains("is using its referenced image"),
        "{err}\n{ps}"
    );
    lab.ok(
        1,
        &[
            "service", "rm", "pinned", "loose", "down", "anon", "wrong", "private",
        ],
    );
    let removed = wait_for("the containers to go", Duration::from_secs(60), || {
        let out = lab.shoal(*node, &["image", "rm", PRIVATE]);
        if out.status.success() {
            Ok(text(&out.stdout))
        } else {
            Err(text(&out.stderr))
        }
    });
    assert!(
        removed.contains(&format!("Untagged: {PRIVATE}")),
        "{removed}"
    );
    assert!(removed.contains("Deleted: sha256:"), "{removed}");
    let pruned = wait_for("prune to reclaim the rest", Duration::from_secs(60), || {
        let out = lab.ok(*node, &["image", "prune", "-f"]);
        let ls = lab.ok(*node, &["image", "ls", "-q"]);
        if ls.trim().is_empty() {
            Ok(out)
        } else {
            Err(format!("{out}\nleft: {ls}"))
        }
    });
    assert!(pruned.contains("Total reclaimed space: "), "{pruned}");
    assert!(
        walk(&data_dir(&lab, *node).join("images/blobs/sha256")).is_empty(),
        "blobs left after prune"
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
