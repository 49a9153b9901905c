//! `service create`'s progress on a terminal and off one: indicatif bars when stdout is a
//! terminal (a pty made by script(1)), and plain lines without an escape code otherwise,
//! the lines the other lab tests and scripts read.

mod common;

use std::process::Command;

use common::*;

#[test]
fn bars_on_a_terminal_plain_lines_elsewhere() {
    let lab = Lab::up("progress", 1, 1);
    let create = |name: &str| {
        format!(
            "{SHOAL} -H {} service create --runtime host --name {name} --replicas 2 {SHOAL} demo vote",
            lab.socket(1)
        )
    };

    // Not a terminal: docker's lines, each once it changes, and no escape code.
    let out = Command::new("sh")
        .args(["-c", &create("plain")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plain = text(&out.stdout);
    assert!(!plain.contains('\x1b'), "{plain:?}");
    let lines: Vec<&str> = plain.lines().collect();
    assert!(
        lines.contains(&"overall progress: 2 out of 2 tasks"),
        "{plain}"
    );
    assert!(
        lines.contains(&"1/2: running") && lines.contains(&"2/2: running"),
        "{plain}"
    );
    assert_eq!(lines.last(), Some(&"verify: Service converged"), "{plain}");

    // A terminal: the same story drawn as bars.
    let out = Command::new("script")
        .args(["-qec", &create("tty"), "/dev/null"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stdout));
    let tty = text(&out.stdout);
    assert!(
        tty.contains('\x1b'),
        "no escape codes on a terminal: {tty:?}"
    );
    assert!(
        tty.contains(&format!("[{}]", "=".repeat(50))),
        "no full bar: {tty:?}"
    );
    assert!(tty.contains("verify: Service converged"), "{tty:?}");
    assert!(
        !tty.contains("\n1/2: running\n"),
        "plain lines on a terminal: {tty:?}"
    );
}
