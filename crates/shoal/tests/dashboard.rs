//! The dashboard at `/` on `--metrics-addr` (issue 14), in Debian's headless Chromium inside
//! node1's namespace, driven over the DevTools protocol: the service page lists the
//! service's tasks per node (a screenshot is saved under target/tmp and its path printed),
//! and when the service scales the same page, never reloaded, shows the new task (pushed as
//! server-sent events), asserted from its DOM.

mod common;

use std::net::TcpStream;
use std::process::{Child, Command};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// Chromium, killed by its pid (SIGTERM: it takes its helper processes with it) on drop.
struct Chromium {
    child: Child,
    profile: std::path::PathBuf,
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// A DevTools protocol session over the page's WebSocket.
struct Page {
    ws: tungstenite::WebSocket<TcpStream>,
    next: u64,
}

impl Page {
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let msg = json!({"id": id, "method": method, "params": params});
        self.ws
            .send(tungstenite::Message::text(msg.to_string()))
            .expect("send to DevTools");
        loop {
            let m = self.ws.read().expect("read from DevTools");
            let Ok(text) = m.to_text() else { continue };
            let v: Value = serde_json::from_str(text).unwrap_or_default();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression in the page.
    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true}),
        );
        r["result"]["value"].clone()
    }
}

/// A TCP connection made from inside network namespace `netns` (a socket keeps the
/// namespace it was made in; the thread that enters it ends right after).
fn connect_in(netns: &str, addr: &str) -> std::io::Result<TcpStream> {
    let netns = format!("/run/netns/{netns}");
    let addr = addr.to_string();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&netns)?;
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
        TcpStream::connect(addr)
    })
    .join()
    .expect("the namespace thread")
}

/// What the page's DOM says about the service: (`#replicas` running count, the running
/// tasks listed, by node).
const DOM_STATE: &str = r#"JSON.stringify({
  running: document.querySelector('#replicas')?.dataset.running ?? null,
  tasks: [...document.querySelectorAll('.node-tasks')].map(n =>
    n.dataset.node + ':' + n.querySelectorAll('li.task[data-state=running][data-desired=running]').length).sort(),
  updates: Number(document.body.dataset.updates || 0),
  connections: [...document.querySelectorAll('#backends tr.backend td.count')]
    .reduce((n, td) => n + Number(td.textContent), 0),
  marker: window.__marker ?? null,
})"#;

fn dom_state(page: &mut Page) -> Value {
    let s = page.eval(DOM_STATE);
    serde_json::from_str(s.as_str().unwrap_or("{}")).unwrap_or_default()
}

#[test]
fn dashboard_shows_a_service_and_follows_a_scale_live() {
    let lab = Lab::up("dash", 2, 1);
    lab.ok(1, &["network", "create", "ovl"]);
    lab.create("--name web --network ovl --replicas 2 SHOAL demo vote");
    lab.create("--name client --network ovl --constraint node.hostname==node1 SHOAL demo client");
    lab.wait_running("web", 2);
    let (_, client) = lab.wait_running("client", 1)[0].clone();

    // In the lab's directory: `lab down` removes whatever Chromium's helpers still wrote
    // after the browser itself ended.
    let profile = lab.dir().join("chromium-profile");
    let log = std::fs::File::create(lab.dir().join("chromium.log")).unwrap();
    // `ip netns exec` execs Chromium itself: the child's pid is Chromium's.
    let child = Command::new("ip")
        .args(["netns", "exec", &lab.netns(1), "chromium"])
        .args([
            "--headless",
            // As root, Chromium's sandbox refuses to start; the page is our own.
            "--no-sandbox",
            "--disable-gpu",
            "--remote-debugging-port=9222",
            "--window-size=1280,900",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("http://127.0.0.1:9323/#/service/web")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("run chromium (Debian package chromium; scripts/setup.sh installs it)");
    let _chromium = Chromium { child, profile };

    // The page's DevTools WebSocket, from the browser's own list.
    let ws_url = wait_for(
        "Chromium's DevTools endpoint",
        Duration::from_secs(60),
        || {
            let out = Command::new(SHOAL)
                .args(["lab", "exec", "--name", &lab.name, "node1", "--"])
                .args([
                    "curl",
                    "-s",
                    "--max-time",
                    "2",
                    "http://127.0.0.1:9222/json/list",
                ])
                .output()
                .unwrap();
            let list: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
            list.as_array()
                .and_then(|l| l.iter().find(|t| t["type"] == "page"))
                .and_then(|t| t["webSocketDebuggerUrl"].as_str())
                .map(str::to_string)
                .ok_or_else(|| text(&out.stdout))
        },
    );
    let stream = connect_in(&lab.netns(1), "127.0.0.1:9222").expect("connect to DevTools");
    let (ws, _) = tungstenite::client(ws_url.as_str(), stream).expect("DevTools handshake");
    let mut page = Page { ws, next: 0 };

    // The service page: two running tasks, listed under their nodes.
    let first = wait_for(
        "the page to list web's two tasks",
        Duration::from_secs(30),
        || {
            let s = dom_state(&mut page);
            let listed: u64 = s["tasks"]
                .as_array()
                .map(|t| {
                    t.iter()
                        .filter_map(|x| x.as_str()?.rsplit(':').next()?.parse::<u64>().ok())
                        .sum()
                })
                .unwrap_or(0);
            if s["running"] == "2" && listed == 2 {
                Ok(s)
            } else {
                Err(s.to_string())
            }
        },
    );
    // One connection through the VIP from node1 shows in the backends' counts (node1's eBPF
    // balancer counted it; the page gets the figure pushed).
    let out = lab.in_task(1, &client, &["curl", "-s", "--max-time", "5", "web"]);
    assert!(
        text(&out.stdout).contains("Processed by container ID"),
        "{out:?}"
    );
    wait_for(
        "the page to count the connection",
        Duration::from_secs(30),
        || {
            let s = dom_state(&mut page);
            if s["connections"] == 1 {
                Ok(())
            } else {
                Err(s.to_string())
            }
        },
    );
    let shot = page.call("Page.captureScreenshot", json!({"format": "png"}));
    let png = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-service-web.png");
    let b64 = lab.dir().join("shot.b64");
    std::fs::write(&b64, shot["data"].as_str().expect("a screenshot")).unwrap();
    let decoded = Command::new("base64")
        .arg("-d")
        .stdin(std::fs::File::open(&b64).unwrap())
        .output()
        .unwrap();
    assert!(decoded.status.success() && decoded.stdout.starts_with(b"\x89PNG"));
    std::fs::write(&png, &decoded.stdout).unwrap();
    println!("dashboard screenshot: {}", png.display());

    // Scale while the page stays open: the new task shows up without a reload.
    page.eval("window.__marker = 'same page'");
    lab.ok(1, &["service", "scale", "web=3"]);
    let after = wait_for(
        "the page to show web's third task",
        Duration::from_secs(30),
        || {
            let s = dom_state(&mut page);
            let listed: u64 = s["tasks"]
                .as_array()
                .map(|t| {
                    t.iter()
                        .filter_map(|x| x.as_str()?.rsplit(':').next()?.parse::<u64>().ok())
                        .sum()
                })
                .unwrap_or(0);
            if s["running"] == "3" && listed == 3 {
                Ok(s)
            } else {
                Err(s.to_string())
            }
        },
    );
    assert_eq!(
        after["marker"], "same page",
        "the page was reloaded: {after}"
    );
    assert!(
        after["updates"].as_u64() > first["updates"].as_u64(),
        "no event arrived: {first} then {after}"
    );
}
