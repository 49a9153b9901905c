//! A node that cannot apply an endpoint table (issue 12): it does not ack it, its status
//! says what failed, it tries again, and once the cause is gone the table applies, the
//! status clears and the task it waited for runs.

mod common;

use std::time::Duration;

use common::*;

// Generous: on a loaded 2-core machine the task may take a while to reach node2.
const SLOW: Duration = Duration::from_secs(90);

/// Removes the obstacle even when the test fails.
struct Obstacle(std::path::PathBuf);

impl Drop for Obstacle {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn a_table_that_does_not_apply_is_not_acked_and_is_retried() {
    let lab = Lab::up("fail", 2, 1);
    lab.ok(1, &["network", "create", "ovl"]);
    let field = |args: &[&str]| lab.ok(1, args).trim().to_string();
    let net = field(&["network", "inspect", "--format", "{{.ID}}", "ovl"]);
    let node2 = field(&["node", "inspect", "--format", "{{.ID}}", "node2"]);
    // Where node2's agent will make the overlay's namespace: a directory there makes the
    // namespace impossible to create.
    let path = std::path::PathBuf::from(format!(
        "/run/netns/shoal-ov-{}-{}",
        &node2[..12],
        &net[..12]
    ));
    std::fs::create_dir_all(&path).unwrap();
    let obstacle = Obstacle(path);

    lab.ok(
        1,
        &[
            "service",
            "create",
            "-d",
            "--runtime",
            "host",
            "--name",
            "web",
            "--network",
            "ovl",
            "--constraint",
            "node.hostname==node2",
            SHOAL,
            "demo",
            "vote",
            "--port",
            "8000",
        ],
    );
    let message = || {
        field(&[
            "node",
            "inspect",
            "--format",
            "{{.Status.Message}}",
            "node2",
        ])
    };
    wait_for(
        "node2's status to say the table did not apply",
        SLOW,
        || {
            let m = message();
            if m.starts_with("endpoint table not applied: failed to set up overlay network ovl:") {
                Ok(())
            } else {
                Err(m)
            }
        },
    );
    drop(obstacle);
    wait_for("node2's status to clear", SLOW, || {
        let m = message();
        if m.is_empty() { Ok(()) } else { Err(m) }
    });
    lab.wait_running("web", 1);
}
