//! Helpers shared by the loopback tests: uniquely named namespaces deleted on drop.

#![allow(dead_code)]

use std::process::Command;

use shoal_net::{create_netns, delete_netns};

/// A test namespace `shoaltest-<pid>-<tag>`, deleted when dropped (also when a test panics).
pub struct TestNs(pub String);

impl TestNs {
    pub fn new(tag: &str) -> Self {
        let name = format!("shoaltest-{}-{tag}", std::process::id());
        // A leftover from an earlier run with the same pid would make create fail.
        let _ = delete_netns(&name);
        create_netns(&name).unwrap_or_else(|e| panic!("cannot set up test netns {name}: {e}"));
        TestNs(name)
    }

    pub fn name(&self) -> &str {
        &self.0
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        if let Err(e) = delete_netns(&self.0) {
            eprintln!("failed to delete test netns {}: {e}", self.0);
        }
    }
}

/// Runs `ip ARGS` and returns its stdout; panics with its stderr if it fails.
pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The line of `ip -n NS -o link` output for link `name`, if any.
pub fn link_line(ns: &str, name: &str) -> Option<String> {
    ip(&["-n", ns, "-o", "link", "show"])
        .lines()
        .find(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|n| n.trim_end_matches(':').split('@').next() == Some(name))
        })
        .map(str::to_string)
}
