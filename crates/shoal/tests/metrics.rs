//! `/metrics` on `--metrics-addr` (issue 14) on a lab cluster: scraped on every node with
//! curl, checked by Debian's `promtool check metrics`; one connection through a VIP, one
//! through a published port and one DNS query each move their node's counter by exactly one;
//! leader-only series only on the leader; and a real Prometheus (Debian's binary, in node1's
//! namespace, temporary config and data dir, killed by pid) scrapes node1 and answers a
//! query for a series through its HTTP API.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

const METRICS: &str = "http://127.0.0.1:9323/metrics";

/// `CMD` in node N's namespace (`shoal lab exec`).
fn on_node(lab: &Lab, node: u32, cmd: &[&str]) -> std::process::Output {
    Command::new(SHOAL)
        .args([
            "lab",
            "exec",
            "--name",
            &lab.name,
            &format!("node{node}"),
            "--",
        ])
        .args(cmd)
        .output()
        .expect("run shoal lab exec")
}

/// Node N's `/metrics` as curl gets it (Prometheus' text format: curl asks for no other).
fn scrape(lab: &Lab, node: u32) -> String {
    let out = on_node(lab, node, &["curl", "-sS", "--max-time", "5", METRICS]);
    assert!(
        out.status.success(),
        "scraping node{node}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The sum of a family's samples whose labels include every `key="value"` of `want`.
fn sum(metrics: &str, name: &str, want: &[&str]) -> u64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, labels) = series.split_once('{').unwrap_or((series, ""));
            (n == name && want.iter().all(|w| labels.contains(w))).then_some(value)
        })
        .map(|v| v.parse::<f64>().expect("a sample value") as u64)
        .sum()
}

/// `promtool check metrics` on a scrape: exit 0 and nothing to say.
fn promtool_check(metrics: &str, node: u32) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (Debian package prometheus; scripts/setup.sh installs it)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics on node{node}'s scrape ({}): {said}\n{metrics}",
        out.status
    );
}

/// A Prometheus server that is killed (by its pid) when dropped, with its temporary dir.
struct Prometheus {
    child: Child,
    dir: std::path::PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn metrics_on_every_node_counted_by_the_data_plane_and_read_by_prometheus() {
    let lab = Lab::up("metrics", 3, 1);
    lab.ok(1, &["network", "create", "ovl"]);
    // The client alone on node2, so that node2's counters move only by what the test does.
    lab.create(
        "--name vote --network ovl --replicas 2 --constraint node.hostname!=node2 -p 8080:80 SHOAL demo vote",
    );
    lab.create("--name client --network ovl --constraint node.hostname==node2 SHOAL demo client");
    lab.wait_running("vote", 2);
    let (node, client) = lab.wait_running("client", 1)[0].clone();
    assert_eq!(node, 2);
    let vip = lab.dig(2, &client, &["vote"]).join("");

    // Every node serves /metrics, and promtool finds nothing wrong with any of them.
    for n in 1..=3 {
        let m = scrape(&lab, n);
        promtool_check(&m, n);
        assert_eq!(
            sum(
                &m,
                "shoal_dataplane_info",
                &["vip_balancer=\"ebpf\"", "mesh_path=\"tc\""]
            ),
            1,
            "node{n} says which paths it uses:\n{m}"
        );
    }
    // Series drawn from the cluster state are the leader's alone.
    let leader = scrape(&lab, 1);
    assert_eq!(
        sum(
            &leader,
            "shoal_service_tasks",
            &["service=\"vote\"", "state=\"running\""]
        ),
        2,
        "{leader}"
    );
    assert_eq!(sum(&leader, "shoal_raft_leader", &[]), 1, "{leader}");
    assert!(leader.contains("shoal_raft_term "), "{leader}");
    let worker = scrape(&lab, 2);
    assert!(!worker.contains("shoal_service_tasks"), "{worker}");
    assert!(!worker.contains("shoal_raft_term"), "{worker}");

    // One connection to the VIP (by address: no DNS query) moves node2's count by one.
    let vip_count = |m: &str| {
        sum(
            m,
            "shoal_vip_backend_connections_total",
            &["service=\"vote\""],
        )
    };
    let before = vip_count(&scrape(&lab, 2));
    let out = lab.in_task(
        2,
        &client,
        &["curl", "-s", "--max-time", "5", &format!("http://{vip}/")],
    );
    assert!(
        text(&out.stdout).contains("Processed by container ID"),
        "{out:?}"
    );
    let after = scrape(&lab, 2);
    assert_eq!(vip_count(&after), before + 1, "{after}");

    // One DNS query moves node2's A/NOERROR count by one.
    let a_noerror = |m: &str| {
        sum(
            m,
            "shoal_dns_queries_total",
            &["type=\"A\"", "rcode=\"NOERROR\""],
        )
    };
    let nxdomain = |m: &str| sum(m, "shoal_dns_queries_total", &["rcode=\"NXDOMAIN\""]);
    let before = scrape(&lab, 2);
    assert_eq!(lab.dig(2, &client, &["vote"]), std::slice::from_ref(&vip));
    let after = scrape(&lab, 2);
    assert_eq!(a_noerror(&after), a_noerror(&before) + 1, "{after}");
    assert_eq!(nxdomain(&after), nxdomain(&before), "{after}");
    assert!(
        sum(&after, "shoal_dns_answer_duration_seconds_count", &[]) >= 1,
        "{after}"
    );

    // One connection to the published port on node3 (from node2, which runs no vote task)
    // moves node3's mesh count for 8080 by one.
    let mesh_count = |m: &str| {
        sum(
            m,
            "shoal_mesh_backend_connections_total",
            &["port=\"8080\""],
        )
    };
    let before = mesh_count(&scrape(&lab, 3));
    let url = format!("http://{}:8080/", lab.node_addr(3));
    let out = on_node(&lab, 2, &["curl", "-s", "--max-time", "5", &url]);
    assert!(
        text(&out.stdout).contains("Processed by container ID"),
        "{out:?}"
    );
    let after = scrape(&lab, 3);
    assert_eq!(mesh_count(&after), before + 1, "{after}");

    // A real Prometheus in node1's namespace scrapes node1 every second; a series comes back
    // through its query API.
    let dir = std::env::temp_dir().join(format!("shoal-prom-{}", lab.name));
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(
        dir.join("prometheus.yml"),
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: shoal\n    static_configs:\n      - targets: ['127.0.0.1:9323']\n",
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    // `ip netns exec` execs the command itself: the child's pid is Prometheus'.
    let child = Command::new("ip")
        .args(["netns", "exec", &lab.netns(1), "prometheus"])
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg("--web.listen-address=127.0.0.1:9090")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("run prometheus (Debian package prometheus)");
    let prometheus = Prometheus { child, dir };
    let query = "http://127.0.0.1:9090/api/v1/query?query=shoal_service_tasks%7Bservice%3D%22vote%22%2Cstate%3D%22running%22%7D";
    let answer = wait_for(
        "Prometheus to have scraped shoal_service_tasks",
        Duration::from_secs(60),
        || {
            let out = on_node(&lab, 1, &["curl", "-s", "--max-time", "2", query]);
            let body = text(&out.stdout);
            if body.contains("\"result\":[{") {
                Ok(body)
            } else {
                Err(format!(
                    "{body} / log: {}",
                    std::fs::read_to_string(prometheus.dir.join("prometheus.log"))
                        .unwrap_or_default()
                ))
            }
        },
    );
    let v: serde_json::Value = serde_json::from_str(&answer).expect("Prometheus' JSON");
    assert_eq!(v["status"], "success", "{answer}");
    let result = &v["data"]["result"][0];
    assert_eq!(result["metric"]["job"], "shoal", "{answer}");
    assert_eq!(result["value"][1], "2", "{answer}");
    drop(prometheus);
}
