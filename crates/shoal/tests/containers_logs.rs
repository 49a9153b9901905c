//! `service logs` of container tasks on a 1-node lab with real runc, conmon and a real
//! registry: `--tail`, `-t`, `--since`, `-f`, and the log's size bound.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::oci::{IMAGE, Runcs, data_dir, registries};
use common::{Lab, SHOAL, wait_for};

const SLOW: Duration = Duration::from_secs(60);

/// `service create -d ARGS` on node1, then the one task's id once it runs.
fn create_one(lab: &Lab, args: &[&str]) -> String {
    let mut a = vec!["service", "create", "-d"];
    a.extend_from_slice(args);
    lab.ok(1, &a);
    let name = args[args.iter().position(|a| *a == "--name").unwrap() + 1];
    lab.wait_running(name, 1)[0].1.clone()
}

/// `service logs ARGS` once the log has a line ending with `last`; its lines.
fn logs_with(lab: &Lab, args: &[&str], last: &str) -> Vec<String> {
    let mut a = vec!["service", "logs"];
    a.extend_from_slice(args);
    wait_for(&format!("logs ending with {last:?}"), SLOW, || {
        let out = lab.ok(1, &a);
        match out.lines().any(|l| l.ends_with(last)) {
            true => Ok(out.lines().map(str::to_string).collect()),
            false => Err(out),
        }
    })
}

#[test]
fn service_logs_of_containers() {
    let lab = Lab::up("ocilog", 1, 1);
    let _runcs = Runcs::of(&lab);
    let _registries = registries(&lab);

    let talk = create_one(
        &lab,
        &[
            "--name",
            "talk",
            IMAGE,
            "busybox",
            "sh",
            "-c",
            "echo one; busybox sleep 1; echo two; echo three >&2; \
             while [ ! -e /go ]; do busybox sleep 1; done; echo four; exec busybox sleep 1000",
        ],
    );
    let prefix = format!("talk.1.{}@node1    | ", &talk[..12]);
    let all = logs_with(&lab, &["talk"], "| three");
    assert_eq!(
        all,
        ["one", "two", "three"].map(|l| format!("{prefix}{l}")),
        "stdout and stderr, in order"
    );
    let tail = lab.ok(1, &["service", "logs", "--tail", "1", "talk"]);
    assert_eq!(tail, format!("{prefix}three\n"));

    // -t: each line after the time its monitor read it.
    let timed = lab.ok(1, &["service", "logs", "-t", "talk"]);
    let times: Vec<&str> = timed
        .lines()
        .map(|l| {
            let (time, rest) = l.split_once(' ').unwrap();
            assert!(rest.starts_with(&prefix), "{l}");
            assert!(
                time.len() > 20 && time.as_bytes()[10] == b'T' && time.starts_with("20"),
                "{l}"
            );
            time
        })
        .collect();
    assert_eq!(times.len(), 3, "{timed}");
    // --since the second line's time: that line and what came after (the first was read
    // a second before it; lines read together share a time).
    let since = lab.ok(1, &["service", "logs", "--since", times[1], "talk"]);
    assert_eq!(since, format!("{prefix}two\n{prefix}three\n"));
    let err = lab.fails(1, &["service", "logs", "--since", "yesterday", "talk"]);
    assert!(
        err.contains("invalid --since \"yesterday\": expected an RFC 3339 time or a duration"),
        "{err}"
    );

    // -f: what the container writes later, once; nothing printed twice.
    let mut follow = Command::new(SHOAL)
        .args(["-H", &lab.socket(1), "service", "logs", "-f", "talk"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run service logs -f");
    let mut out = BufReader::new(follow.stdout.take().unwrap());
    let mut seen = Vec::new();
    for _ in 0..3 {
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        seen.push(l.trim_end().to_string());
    }
    let pid = lab.task_json(&talk)["Status"]["PID"].as_u64().unwrap();
    std::fs::write(format!("/proc/{pid}/root/go"), "").unwrap();
    let mut l = String::new();
    out.read_line(&mut l).unwrap();
    seen.push(l.trim_end().to_string());
    let _ = follow.kill();
    let _ = follow.wait();
    assert_eq!(
        seen,
        ["one", "two", "three", "four"].map(|l| format!("{prefix}{l}"))
    );

    // The log is bounded: 5.1 MB written, the file stays at conmon's limit (2 MiB) and the
    // newest lines are kept.
    let big = create_one(
        &lab,
        &[
            "--name",
            "big",
            IMAGE,
            "busybox",
            "sh",
            "-c",
            "busybox yes 0123456789abcdef | busybox head -c 5100000; echo END; \
             exec busybox sleep 1000",
        ],
    );
    let lines = logs_with(&lab, &["--tail", "2", "big"], "| END");
    assert!(lines[0].ends_with("| 0123456789abcdef"), "{lines:?}");
    let log = data_dir(&lab, 1)
        .join("tasks")
        .join(&big)
        .join("container.log");
    let size = std::fs::metadata(&log).unwrap().len();
    assert!(size <= 2 << 20, "{} is {size} bytes", log.display());
    let all = lab.ok(1, &["service", "logs", "big"]);
    let n = all.lines().count();
    assert!(n < 300_000, "{n} lines kept");
    assert!(Path::new(&log).exists());

    lab.ok(1, &["service", "rm", "talk", "big"]);
    wait_for("the containers to go", SLOW, || {
        let ids = common::oci::runc_ids(&data_dir(&lab, 1).join("runc"));
        match ids.is_empty() {
            true => Ok(()),
            false => Err(format!("{ids:?}")),
        }
    });
}
