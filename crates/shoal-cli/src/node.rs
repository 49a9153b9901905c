//! `shoal node ls|inspect|update|rm`.

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use shoal_api::{Client, NodeUpdate};
use shoal_types::{Availability, Node, NodeRole, NodeState, short_id};

use crate::format::{Format, pretty_json};
use crate::table::{self, Columns, Row, cell};

#[derive(Debug, Subcommand)]
pub enum NodeCmd {
    /// List nodes in the swarm.
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more nodes.
    Inspect(InspectArgs),
    /// Update a node.
    Update(UpdateArgs),
    /// Remove one or more nodes from the swarm.
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
    /// Promote one or more nodes to manager in the swarm.
    Promote(RoleArgs),
    /// Demote one or more nodes from manager in the swarm.
    Demote(RoleArgs),
}

#[derive(Debug, Args)]
pub struct RoleArgs {
    #[arg(required = true, value_name = "NODE")]
    pub nodes: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only display IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Format output using a template ('json', 'table', 'table TEMPLATE' or a template).
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Format output using a template ('json' prints one object per line).
    #[arg(short, long)]
    pub format: Option<String>,
    #[arg(required = true, value_name = "NODE")]
    pub nodes: Vec<String>,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Availability of the node: active, pause or drain.
    #[arg(long)]
    pub availability: Option<Availability>,
    /// Add or update a node label (key=value).
    #[arg(long, value_name = "KEY=VALUE")]
    pub label_add: Vec<String>,
    /// Remove a node label if it exists.
    #[arg(long, value_name = "KEY")]
    pub label_rm: Vec<String>,
    #[arg(value_name = "NODE")]
    pub node: String,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Force remove a node from the swarm.
    #[arg(short, long)]
    pub force: bool,
    #[arg(required = true, value_name = "NODE")]
    pub nodes: Vec<String>,
}

pub async fn run(client: &Client, cmd: NodeCmd) -> Result<()> {
    match cmd {
        NodeCmd::Ls(a) => ls(client, a).await,
        NodeCmd::Inspect(a) => inspect(client, a).await,
        NodeCmd::Update(a) => update(client, a).await,
        NodeCmd::Rm(a) => rm(client, a).await,
        NodeCmd::Promote(a) => set_role(client, a, NodeRole::Manager).await,
        NodeCmd::Demote(a) => set_role(client, a, NodeRole::Worker).await,
    }
}

/// `node promote|demote`, with docker's messages. The node switches role on its own once
/// the change is committed (its tasks keep running).
async fn set_role(client: &Client, args: RoleArgs, role: NodeRole) -> Result<()> {
    let mut failed = Vec::new();
    for key in &args.nodes {
        let node = match client.node(key).await {
            Ok(n) => n,
            Err(e) => {
                failed.push(e.to_string());
                continue;
            }
        };
        if node.spec.role == role {
            println!("Node {key} is already a {role}.");
            continue;
        }
        let update = NodeUpdate {
            role: Some(role),
            ..Default::default()
        };
        match client.update_node(key, &update).await {
            Ok(()) => println!("{}", role_changed(key, role)),
            Err(e) => failed.push(e.to_string()),
        }
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("\n"));
    }
    Ok(())
}

fn role_changed(key: &str, role: NodeRole) -> String {
    match role {
        NodeRole::Manager => format!("Node {key} promoted to a manager in the swarm."),
        NodeRole::Worker => format!("Manager {key} demoted in the swarm."),
    }
}

async fn ls(client: &Client, args: LsArgs) -> Result<()> {
    let format = Format::parse(args.format.as_deref()).map_err(anyhow::Error::msg)?;
    let (mut nodes, info) = tokio::try_join!(client.nodes(), client.info())?;
    nodes.sort_by(|a, b| a.hostname().cmp(b.hostname()).then(a.id.cmp(&b.id)));
    if args.quiet {
        nodes.iter().for_each(|n| println!("{}", n.id));
        return Ok(());
    }
    let rows: Vec<Row> = nodes.iter().map(|n| row(n, &info.node_id)).collect();
    print!("{}", render_ls(&rows, &format)?);
    Ok(())
}

/// What `--format` sees for one node in `node ls`: docker's keys.
pub fn row(n: &Node, self_id: &str) -> Row {
    let obj = json!({
        "ID": n.id,
        "Self": n.id == self_id,
        "Hostname": n.hostname(),
        "Status": status(n.status.state),
        "Availability": capitalise(&n.spec.availability.to_string()),
        "ManagerStatus": manager_status(n),
    });
    match obj {
        Value::Object(m) => m,
        _ => Row::new(),
    }
}

const KEYS: &[&str] = &[
    "ID",
    "Self",
    "Hostname",
    "Status",
    "Availability",
    "ManagerStatus",
];

fn default_cells(r: &Row) -> Vec<String> {
    let id = cell(r, "ID");
    let marker = if r.get("Self") == Some(&Value::Bool(true)) {
        " *"
    } else {
        ""
    };
    vec![
        format!("{}{marker}", short_id(&id)),
        cell(r, "Hostname"),
        cell(r, "Status"),
        cell(r, "Availability"),
        cell(r, "ManagerStatus"),
    ]
}

pub fn render_ls(rows: &[Row], format: &Format) -> Result<String> {
    let columns = Columns {
        headers: &["ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER STATUS"],
        cells: &default_cells,
    };
    table::list(rows, KEYS, columns, format).map_err(anyhow::Error::msg)
}

fn status(s: NodeState) -> String {
    capitalise(&s.to_string())
}

/// Leader, Reachable, Unreachable, or empty for workers.
fn manager_status(n: &Node) -> String {
    match &n.manager_status {
        None => String::new(),
        Some(m) if m.leader => "Leader".into(),
        Some(m) => capitalise(&m.reachability),
    }
}

pub fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

async fn inspect(client: &Client, args: InspectArgs) -> Result<()> {
    let format = Format::parse(args.format.as_deref()).map_err(anyhow::Error::msg)?;
    let mut found = Vec::new();
    for key in &args.nodes {
        found.push(serde_json::to_value(client.node(key).await?)?);
    }
    print!("{}", render_inspect(&found, &format)?);
    Ok(())
}

/// `inspect` output: a pretty JSON array by default, else one line per object.
pub fn render_inspect(objects: &[Value], format: &Format) -> Result<String> {
    let lines = match format {
        Format::Default => return Ok(format!("{}\n", pretty_json(&objects))),
        Format::Json => objects
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()?,
        Format::Template { template, .. } => objects
            .iter()
            .map(|o| template.render(o))
            .collect::<Result<Vec<_>, _>>()
            .map_err(anyhow::Error::msg)?,
    };
    Ok(lines.into_iter().map(|l| l + "\n").collect())
}

async fn update(client: &Client, args: UpdateArgs) -> Result<()> {
    for l in &args.label_add {
        if !l.contains('=') || l.starts_with('=') {
            bail!("invalid label {l:?}: expected KEY=VALUE");
        }
    }
    if args.availability.is_none() && args.label_add.is_empty() && args.label_rm.is_empty() {
        bail!("nothing to update: give --availability, --label-add or --label-rm");
    }
    let update = NodeUpdate {
        availability: args.availability,
        label_add: args.label_add,
        label_rm: args.label_rm,
        role: None,
    };
    client.update_node(&args.node, &update).await?;
    println!("{}", args.node);
    Ok(())
}

async fn rm(client: &Client, args: RmArgs) -> Result<()> {
    let mut failed = Vec::new();
    for key in &args.nodes {
        match client.remove_node(key, args.force).await {
            Ok(()) => {
                println!("{key}");
                eprintln!(
                    "{key}: removed; the managers refuse its certificate from now on (to come back it must leave and join again with a token)"
                );
            }
            Err(e) => failed.push(e.to_string()),
        }
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("\n"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use expect_test::expect;
    use shoal_types::node::ManagerStatus;

    use super::*;

    fn node(
        id: &str,
        host: &str,
        state: NodeState,
        avail: Availability,
        manager: Option<(bool, &str)>,
    ) -> Node {
        let mut n = shoal_types::fixtures::node(id, host);
        n.status.state = state;
        n.spec.availability = avail;
        n.manager_status = manager.map(|(leader, r)| ManagerStatus {
            raft_id: 1,
            addr: "10.0.0.1:2377".into(),
            leader,
            reachability: r.into(),
        });
        n
    }

    #[test]
    fn role_messages_are_dockers() {
        assert_eq!(
            role_changed("node2", NodeRole::Manager),
            "Node node2 promoted to a manager in the swarm."
        );
        assert_eq!(
            role_changed("node2", NodeRole::Worker),
            "Manager node2 demoted in the swarm."
        );
    }

    #[test]
    fn ls_table() {
        let nodes = [
            node(
                "0a1b2c3d4e5f6a7b8c9d0e1f",
                "node1",
                NodeState::Ready,
                Availability::Active,
                Some((true, "reachable")),
            ),
            node(
                "1a1b2c3d4e5f6a7b8c9d0e1f",
                "node2",
                NodeState::Ready,
                Availability::Drain,
                Some((false, "unreachable")),
            ),
            node(
                "2a1b2c3d4e5f6a7b8c9d0e1f",
                "node3",
                NodeState::Down,
                Availability::Pause,
                None,
            ),
        ];
        let rows: Vec<Row> = nodes
            .iter()
            .map(|n| row(n, "0a1b2c3d4e5f6a7b8c9d0e1f"))
            .collect();
        expect![[r#"
            ID               HOSTNAME   STATUS   AVAILABILITY   MANAGER STATUS
            0a1b2c3d4e5f *   node1      Ready    Active         Leader
            1a1b2c3d4e5f     node2      Ready    Drain          Unreachable
            2a1b2c3d4e5f     node3      Down     Pause
        "#]]
        .assert_eq(&render_ls(&rows, &Format::Default).unwrap());
        let f = Format::parse(Some("{{.Hostname}} {{.ID}} {{.Self}}")).unwrap();
        expect![[r#"
            node1 0a1b2c3d4e5f6a7b8c9d0e1f true
            node2 1a1b2c3d4e5f6a7b8c9d0e1f false
            node3 2a1b2c3d4e5f6a7b8c9d0e1f false
        "#]]
        .assert_eq(&render_ls(&rows, &f).unwrap());
    }

    #[test]
    fn inspect_output() {
        let n = serde_json::to_value(shoal_types::fixtures::node("n1", "node1")).unwrap();
        let out = render_inspect(std::slice::from_ref(&n), &Format::Default).unwrap();
        assert!(
            out.starts_with("[\n    {\n        \"ID\": \"n1\",\n        \"CreatedAt\": 0,"),
            "{out}"
        );
        let f = Format::parse(Some("{{.Status.Addr}}")).unwrap();
        assert_eq!(
            render_inspect(&[n.clone(), n], &f).unwrap(),
            "172.29.0.1\n172.29.0.1\n"
        );
    }
}
