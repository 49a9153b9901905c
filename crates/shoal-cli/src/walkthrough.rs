//! `shoal demo walkthrough`: every step of the seed's tutorial (Swarm's service discovery and
//! load balancing) on a 2-node lab, printing each command and its output as the tutorial
//! does, checking each result, then what Swarm could not do. Exits non-zero at the first
//! result that is not what the tutorial shows; the lab is removed in every case.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Args;

#[derive(Debug, Args)]
pub struct WalkArgs {
    /// The lab's name (removed at the end).
    #[arg(long, default_value = "walkthrough")]
    pub name: String,
}

struct Walk {
    shoal: PathBuf,
    lab: String,
    /// The lab registry's `HOST:PORT`, which holds the seed's images.
    registry: String,
}

impl Drop for Walk {
    fn drop(&mut self) {
        let _ = Command::new(&self.shoal)
            .args(["lab", "down", "--name", &self.lab])
            .output();
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Walk {
    fn socket(&self, node: u32) -> String {
        format!("unix:///run/shoal-lab/{}/node{node}/shoal.sock", self.lab)
    }

    /// Runs a command, prints it and its output; fails if it fails.
    fn run(&self, shown: &str, cmd: &mut Command) -> Result<String> {
        println!("\n{shown}");
        let out = cmd
            .output()
            .with_context(|| format!("failed to run {shown}"))?;
        let stdout = text(&out.stdout);
        print!("{stdout}");
        if !out.status.success() {
            bail!("`{shown}` failed: {}", text(&out.stderr).trim());
        }
        Ok(stdout)
    }

    /// `shoal ARGS` on node N.
    fn shoal(&self, node: u32, args: &[&str]) -> Result<String> {
        let shown = format!("[node{node}] $ shoal {}", args.join(" "));
        self.run(
            &shown,
            Command::new(&self.shoal)
                .arg("-H")
                .arg(self.socket(node))
                .args(args),
        )
    }

    /// `shoal LINE` on node N, the line split at spaces as a shell would (no quoting);
    /// `REGISTRY/` stands for the lab registry's address.
    fn cmd(&self, node: u32, line: &str) -> Result<String> {
        let line = line.replace("REGISTRY/", &format!("{}/", self.registry));
        let args: Vec<&str> = line.split_whitespace().collect();
        self.shoal(node, &args)
    }

    /// A command inside a task (through `shoal exec` on the node that runs it).
    fn in_task(&self, task: &str, cmd: &[&str]) -> Result<String> {
        let node = self.node_of(task)?;
        let mut args = vec!["exec", task, "--"];
        args.extend_from_slice(cmd);
        self.shoal(node, &args)
    }

    /// A command on a node (its namespace, where node names resolve).
    fn on_node(&self, node: u32, cmd: &[&str]) -> Result<String> {
        let shown = format!("[node{node}] $ {}", cmd.join(" "));
        let mut c = Command::new(&self.shoal);
        c.args([
            "lab",
            "exec",
            "--name",
            &self.lab,
            &format!("node{node}"),
            "--",
        ])
        .args(cmd);
        self.run(&shown, &mut c)
    }

    /// Quietly: the node that runs task `service.slot`.
    fn node_of(&self, task: &str) -> Result<u32> {
        let service = task.split('.').next().unwrap_or(task);
        let out = Command::new(&self.shoal)
            .arg("-H")
            .arg(self.socket(1))
            .args([
                "service",
                "ps",
                "--format",
                "{{.Name}} {{.Node}} {{.DesiredState}}",
                service,
            ])
            .output()?;
        text(&out.stdout)
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() == 3 && f[0] == task && f[2] == "Running")
                    .then(|| f[1].trim_start_matches("node").parse().ok())?
            })
            .next()
            .with_context(|| format!("no running task {task}"))
    }

    /// Quietly: `NAME ID ADDRESS` of each running task of a service.
    fn tasks(&self, service: &str) -> Result<Vec<(String, String)>> {
        let out = Command::new(&self.shoal)
            .arg("-H")
            .arg(self.socket(1))
            .args([
                "service",
                "ps",
                "--no-trunc",
                "--format",
                "{{.Name}} {{.ID}} {{.DesiredState}} {{.CurrentState}}",
                service,
            ])
            .output()?;
        Ok(text(&out.stdout)
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 4 && f[2] == "Running" && f[3] == "Running")
                    .then(|| (f[0].to_string(), f[1].to_string()))
            })
            .collect())
    }

    fn check(&self, what: &str, ok: bool) -> Result<()> {
        ensure!(ok, "not as in the tutorial: {what}");
        println!("  ✓ {what}");
        Ok(())
    }
}

/// Waits until vote has two running tasks again (after an update).
async fn wait_for_two(w: &Walk) -> Result<()> {
    let t0 = Instant::now();
    while w.tasks("vote")?.len() != 2 {
        ensure!(
            t0.elapsed() < Duration::from_secs(30),
            "vote did not come back to 2 tasks"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// A command inside a task, without printing (for polling).
fn quiet_in_task(w: &Walk, task: &str, cmd: &[&str]) -> Result<String> {
    let node = w.node_of(task)?;
    let out = Command::new(&w.shoal)
        .arg("-H")
        .arg(w.socket(node))
        .args(["exec", task, "--"])
        .args(cmd)
        .output()?;
    Ok(text(&out.stdout))
}

/// The container id on a vote page.
fn page_id(page: &str) -> Option<String> {
    page.split("Processed by container ID ")
        .nth(1)?
        .split('<')
        .next()
        .map(str::to_string)
}

fn a_records(dig: &str) -> Vec<String> {
    let mut v: Vec<String> = dig
        .lines()
        .filter(|l| !l.starts_with(';'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 5 && f[3] == "A").then(|| f[4].to_string())
        })
        .collect();
    v.sort();
    v
}

pub async fn run(args: WalkArgs) -> Result<i32> {
    let shoal = std::env::current_exe().context("failed to find the shoal binary")?;
    let mut w = Walk {
        shoal: shoal.clone(),
        lab: args.name.clone(),
        registry: String::new(),
    };
    // The lab's registry holds the seed's images (anoy/vote, anoy/client), built from this
    // machine's binaries: no internet needed.
    w.run(
        "$ shoal lab up --nodes 2 --registry",
        Command::new(&shoal).args([
            "lab",
            "up",
            "--nodes",
            "2",
            "--registry",
            "--name",
            &args.name,
        ]),
    )?;
    w.registry = shoal_lab::load(&args.name)?
        .registry
        .context("the lab has no registry")?;

    let ls = w.cmd(1, "node ls")?;
    let lines: Vec<&str> = ls.lines().skip(1).collect();
    w.check(
        "two nodes, Ready and Active",
        lines.len() == 2
            && lines
                .iter()
                .all(|l| l.contains("Ready") && l.contains("Active")),
    )?;
    w.check(
        "node1 is the leader",
        lines
            .iter()
            .any(|l| l.contains("node1") && l.contains("Leader")),
    )?;
    w.cmd(1, "network create --driver overlay overlay1")?;

    println!("\n## 1. DNS-based load balancing (endpoint mode dnsrr)");
    w.cmd(1, "service create --endpoint-mode dnsrr --replicas 1 --name client --network overlay1 REGISTRY/anoy/client")?;
    w.cmd(1, "service create --endpoint-mode dnsrr --name vote --network overlay1 --replicas 2 REGISTRY/anoy/vote")?;
    let ls = w.cmd(1, "service ls")?;
    w.check(
        "client 1/1 and vote 2/2",
        ls.lines()
            .any(|l| l.contains("client") && l.contains("1/1"))
            && ls.lines().any(|l| l.contains("vote") && l.contains("2/2")),
    )?;
    let ps = w.cmd(1, "service ps vote")?;
    w.check("vote.1 and vote.2 run on node1 and node2", {
        let column = ps
            .lines()
            .next()
            .and_then(|h| h.split_whitespace().position(|c| c == "NODE"));
        let nodes: BTreeSet<&str> = ps
            .lines()
            .filter(|l| l.contains("Running"))
            .filter_map(|l| l.split_whitespace().nth(column?))
            .collect();
        nodes == BTreeSet::from(["node1", "node2"])
    })?;
    let dig = w.in_task("client.1", &["dig", "vote"])?;
    w.check("dig vote answers two A records", a_records(&dig).len() == 2)?;
    let ping = w.in_task("client.1", &["ping", "-c1", "vote"])?;
    w.check(
        "the reverse name is the task name and network",
        ping.contains(".overlay1 ("),
    )?;
    w.in_task("client.1", &["ping", "-c1", "vote"])?;
    // Clients take the first address; glibc may reorder them (RFC 6724), so the tutorial's
    // point is shown with the first address of each answer, as DNS shuffled it.
    let mut ids = BTreeSet::new();
    let t0 = Instant::now();
    while ids.len() < 2 && t0.elapsed() < Duration::from_secs(20) {
        let page = w.in_task(
            "client.1",
            &["sh", "-c", "curl -s http://$(dig +short vote | head -n1)"],
        )?;
        ids.extend(page_id(&page));
    }
    w.check(
        "curl reaches both vote tasks (two container ids)",
        ids.len() == 2,
    )?;
    w.cmd(1, "service rm client vote")?;

    println!("\n## 2. VIP-based load balancing (the default endpoint mode)");
    w.cmd(
        1,
        "service create --replicas 1 --name client --network overlay1 REGISTRY/anoy/client",
    )?;
    w.cmd(
        1,
        "service create --name vote --network overlay1 --replicas 2 REGISTRY/anoy/vote",
    )?;
    let vips = w.cmd(1, "service inspect --format {{.Endpoint.VirtualIPs}} vote")?;
    w.cmd(
        1,
        "service inspect --format {{.Endpoint.VirtualIPs}} client",
    )?;
    let vip = vips
        .split_whitespace()
        .nth(1)
        .and_then(|a| a.split('/').next())
        .unwrap_or("")
        .to_string();
    w.check(
        "vote has one VIP on overlay1",
        vips.trim().starts_with("[{") && !vip.is_empty(),
    )?;
    let dig = w.in_task("client.1", &["dig", "vote"])?;
    w.check(
        "dig vote answers the VIP only",
        a_records(&dig) == [vip.clone()],
    )?;
    // Our ipvsadm: which balancer the client's node uses, and with the nftables fallback the
    // client's own table, which maps the VIP to the service's chain.
    let node = w.node_of("client.1")?;
    let balancer = w.cmd(
        1,
        &format!("node inspect --format {{{{.Description.DataPlane.VIPBalancer}}}} node{node}"),
    )?;
    if balancer.trim() == "nftables" {
        // The client's image has no nft (nor CAP_NET_ADMIN): look from its node.
        let (_, client_id) = w
            .tasks("client")?
            .first()
            .cloned()
            .context("no client task")?;
        let netns = format!("shoal-task-{}", &client_id[..12]);
        let nft = w.on_node(
            node,
            &[
                "ip", "netns", "exec", &netns, "nft", "list", "table", "ip", "shoal",
            ],
        )?;
        w.check(
            "the client's node maps the VIP (our ipvsadm): the sandbox's nftables table sends it to the service's chain",
            nft.contains(&format!("{vip} : goto svc_")),
        )?;
    } else {
        w.check(
            "the client's node maps the VIP (our ipvsadm): with its eBPF socket balancer, one per node",
            balancer.trim() == "ebpf",
        )?;
    }
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.extend(page_id(&w.in_task("client.1", &["curl", "-s", "vote"])?));
    }
    w.check(
        "curl vote alternates between the two tasks",
        seen.len() == 4 && seen.windows(2).all(|p| p[0] != p[1]),
    )?;
    w.cmd(1, "service rm vote")?;

    println!("\n## 3. The routing mesh (published ports)");
    w.cmd(
        1,
        "service create --name vote --network overlay1 --replicas 2 -p 8080:80 REGISTRY/anoy/vote",
    )?;
    for (from, to) in [(1, "node2"), (2, "node1")] {
        let mut ids = BTreeSet::new();
        for _ in 0..4 {
            ids.extend(page_id(
                &w.on_node(from, &["curl", "-s", &format!("{to}:8080")])?,
            ));
        }
        w.check(
            &format!("curl {to}:8080 from node{from} reaches both tasks"),
            ids.len() == 2,
        )?;
    }

    println!("\n## What Swarm could not do");
    // Restarts would bring a new task at once; keep the kill visible.
    w.cmd(1, "service update -d --restart-condition none vote")?;
    wait_for_two(&w).await?;
    let tasks = w.tasks("vote")?;
    let (_, victim) = tasks.first().context("no vote task")?.clone();
    let client = shoal_api::Client::new(&w.socket(1))?;
    let pid = client
        .task(&victim)
        .await?
        .task
        .status
        .pid
        .context("the task has no pid")?;
    println!(
        "\n$ kill -9 {pid}    # the process of task {}",
        &victim[..12]
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .context("failed to kill the task")?;
    let t0 = Instant::now();
    let mut answer = String::new();
    while t0.elapsed() < Duration::from_secs(5) {
        answer = quiet_in_task(&w, "client.1", &["dig", "+short", "tasks.vote"])?;
        if answer.lines().count() == 1 {
            break;
        }
    }
    let ms = t0.elapsed().as_millis();
    w.in_task("client.1", &["dig", "+short", "tasks.vote"])?;
    w.check(
        &format!("the dead task left DNS within {ms} ms (Swarm: up to 600 s of TTL)"),
        answer.lines().count() == 1,
    )?;
    let mut ids = BTreeSet::new();
    for _ in 0..4 {
        ids.extend(page_id(&w.in_task("client.1", &["curl", "-s", "vote"])?));
    }
    w.check(
        "and the VIP sends nothing to it",
        !ids.contains(&victim[..12]) && ids.len() == 1,
    )?;
    let srv = w.in_task("client.1", &["dig", "+short", "SRV", "_80._tcp.vote"])?;
    w.check(
        "SRV records for published ports",
        srv.contains(" 80 vote.overlay1."),
    )?;
    w.cmd(1, "service create --name web --constraint node.hostname==node1 --publish published=8081,target=80,traffic=local REGISTRY/anoy/vote")?;
    let node2 = w.cmd(1, "node inspect --format {{.Status.Addr}} node2")?;
    let page = w.on_node(2, &["curl", "-s", "node1:8081"])?;
    w.check(
        "traffic=local keeps the client's source address",
        page.contains(&format!("Client address {}<", node2.trim())),
    )?;
    println!("\nThe walkthrough matched the tutorial at every step.");
    Ok(0)
}
