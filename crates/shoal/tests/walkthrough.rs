//! The acceptance test: the seed tutorial's walkthrough (`shoal demo walkthrough`, what
//! `scripts/demo.sh` runs), twice in a row on the same lab name — the second run proves the
//! first left nothing behind.

mod common;

use common::*;

/// Every check the walkthrough makes, in order; each must be reported as passed.
const CHECKS: &[&str] = &[
    "two nodes, Ready and Active",
    "node1 is the leader",
    "client 1/1 and vote 2/2",
    "vote.1 and vote.2 run on node1 and node2",
    "dig vote answers two A records",
    "the reverse name is the task name and network",
    "curl reaches both vote tasks (two container ids)",
    "vote has one VIP on overlay1",
    "dig vote answers the VIP only",
    "the client's node maps the VIP (our ipvsadm)",
    "curl vote alternates between the two tasks",
    "curl node2:8080 from node1 reaches both tasks",
    "curl node1:8080 from node2 reaches both tasks",
    "the dead task left DNS within",
    "and the VIP sends nothing to it",
    "SRV records for published ports",
    "traffic=local keeps the client's source address",
];

#[test]
fn the_seed_walkthrough_twice() {
    let name = format!("t{}walk", std::process::id() % 100_000);
    for run in 1..=2 {
        let out = std::process::Command::new(SHOAL)
            .args(["demo", "walkthrough", "--name", &name])
            .env("SHOALD_BIN", SHOALD)
            .output()
            .expect("run shoal demo walkthrough");
        let transcript = text(&out.stdout);
        assert!(
            out.status.success(),
            "run {run} failed:\n{transcript}\n{}",
            text(&out.stderr)
        );
        let mut rest = transcript.as_str();
        for check in CHECKS {
            let at = rest
                .find(&format!("✓ {check}"))
                .unwrap_or_else(|| panic!("run {run}: no ✓ for {check:?}"));
            rest = &rest[at..];
        }
        assert!(
            !std::path::Path::new(&format!("/run/shoal-lab/{name}")).exists(),
            "run {run} left its lab behind"
        );
    }
}
