//! `shoal network create|ls|inspect|rm`, as `docker network` prints them.

use std::net::Ipv4Addr;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use shoal_api::{Client, NetworkCreate};
use shoal_types::network::parse_subnet;
use shoal_types::{Network, short_id};

use crate::format::Format;
use crate::node::render_inspect;
use crate::table::{self, Columns, Row, cell};

/// The only driver there is.
const OVERLAY: &str = "overlay";

#[derive(Debug, Subcommand)]
pub enum NetworkCmd {
    /// Create an overlay network.
    Create(CreateArgs),
    /// List networks.
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more networks.
    Inspect(InspectArgs),
    /// Remove one or more networks.
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Driver to manage the network (only overlay).
    #[arg(short, long, default_value = OVERLAY)]
    pub driver: String,
    /// Subnet in CIDR format, e.g. 10.0.1.0/24 (default: a free one).
    #[arg(long, value_name = "CIDR")]
    pub subnet: Option<String>,
    /// IPv4 gateway of the subnet (default: its first address).
    #[arg(long, value_name = "IP")]
    pub gateway: Option<String>,
    /// Let standalone processes attach, not only services' tasks.
    #[arg(long)]
    pub attachable: bool,
    /// Set metadata on a network (KEY=VALUE).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    #[arg(value_name = "NAME")]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only display network IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Do not truncate the output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Format output using a template ('json', 'table', 'table TEMPLATE' or a template).
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Format output using a template ('json' prints one object per line).
    #[arg(short, long)]
    pub format: Option<String>,
    #[arg(required = true, value_name = "NETWORK")]
    pub networks: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    #[arg(required = true, value_name = "NETWORK")]
    pub networks: Vec<String>,
}

/// Runs a `network` command; `Ok(1)` when some of several networks failed (each error is
/// already printed).
pub async fn run(client: &Client, cmd: NetworkCmd) -> Result<i32> {
    match cmd {
        NetworkCmd::Create(a) => create(client, a).await.map(|()| 0),
        NetworkCmd::Ls(a) => ls(client, a).await.map(|()| 0),
        NetworkCmd::Inspect(a) => inspect(client, a).await,
        NetworkCmd::Rm(a) => Ok(rm(client, a).await),
    }
}

/// The request `network create` sends: checked here first so mistakes are caught before the
/// daemon is asked (it checks again).
pub fn create_request(a: &CreateArgs) -> Result<NetworkCreate> {
    if a.driver != OVERLAY {
        bail!(
            "invalid driver {:?}: only the overlay driver is supported",
            a.driver
        );
    }
    if a.name.is_empty() {
        bail!("a network name is required");
    }
    shoal_types::dns_name::check_network(&a.name).map_err(anyhow::Error::msg)?;
    let subnet = a
        .subnet
        .as_deref()
        .map(parse_subnet)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    if let Some(g) = &a.gateway {
        let Some(net) = subnet else {
            bail!("--gateway needs --subnet: give the subnet the gateway belongs to");
        };
        let ip: Ipv4Addr = g
            .parse()
            .map_err(|_| anyhow::anyhow!("invalid gateway {g:?}: expected an IPv4 address"))?;
        if !net.contains(&ip) || ip == net.network() || ip == net.broadcast() {
            bail!("invalid gateway {g}: it is not a host address of {net}");
        }
    }
    let mut labels = std::collections::BTreeMap::new();
    for kv in &a.labels {
        match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                labels.insert(k.to_string(), v.to_string());
            }
            _ => bail!("invalid label {kv:?}: expected KEY=VALUE"),
        }
    }
    Ok(NetworkCreate {
        name: a.name.clone(),
        driver: a.driver.clone(),
        subnet: a.subnet.clone(),
        gateway: a.gateway.clone(),
        attachable: a.attachable,
        labels,
    })
}

async fn create(client: &Client, a: CreateArgs) -> Result<()> {
    let req = create_request(&a)?;
    let created = client.create_network(&req).await?;
    println!("{}", created.id);
    Ok(())
}

async fn ls(client: &Client, a: LsArgs) -> Result<()> {
    let format = Format::parse(a.format.as_deref()).map_err(anyhow::Error::msg)?;
    let mut networks = client.networks().await?;
    sort(&mut networks);
    if a.quiet {
        for n in &networks {
            println!("{}", if a.no_trunc { &n.id } else { short_id(&n.id) });
        }
        return Ok(());
    }
    let rows: Vec<Row> = networks.iter().map(|n| row(n, a.no_trunc)).collect();
    print!("{}", render_ls(&rows, &format)?);
    Ok(())
}

/// docker's order: by name (then id, should two share a name).
pub fn sort(networks: &mut [Network]) {
    networks.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
}

/// What `--format` sees for one network in `network ls`: docker's keys, and `Subnet`.
pub fn row(n: &Network, no_trunc: bool) -> Row {
    let labels = n
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let obj = json!({
        "ID": if no_trunc { n.id.as_str() } else { short_id(&n.id) },
        "Name": n.name,
        "Driver": n.driver,
        "Scope": n.scope,
        "Subnet": n.ipam.subnet.to_string(),
        "Ingress": n.ingress,
        "Attachable": n.attachable,
        "Labels": labels,
    });
    match obj {
        Value::Object(m) => m,
        _ => Row::new(),
    }
}

const KEYS: &[&str] = &[
    "ID",
    "Name",
    "Driver",
    "Scope",
    "Subnet",
    "Ingress",
    "Attachable",
    "Labels",
];

fn default_cells(r: &Row) -> Vec<String> {
    ["ID", "Name", "Driver", "Scope"]
        .iter()
        .map(|k| cell(r, k))
        .collect()
}

pub fn render_ls(rows: &[Row], format: &Format) -> Result<String> {
    let columns = Columns {
        headers: &["NETWORK ID", "NAME", "DRIVER", "SCOPE"],
        cells: &default_cells,
    };
    table::list(rows, KEYS, columns, format).map_err(anyhow::Error::msg)
}

/// A network as `network inspect` prints it: the API's object without the allocator's
/// bookkeeping.
pub fn inspect_value(n: &Network) -> Result<Value> {
    let mut v = serde_json::to_value(n)?;
    if let Value::Object(m) = &mut v {
        m.remove("NextHost");
    }
    Ok(v)
}

/// Like docker: prints the networks found, then an error for each one that was not.
async fn inspect(client: &Client, a: InspectArgs) -> Result<i32> {
    let format = Format::parse(a.format.as_deref()).map_err(anyhow::Error::msg)?;
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for key in &a.networks {
        match client.network(key).await {
            Ok(n) => found.push(inspect_value(&n)?),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if !found.is_empty() || errors.is_empty() {
        print!("{}", render_inspect(&found, &format)?);
    }
    for e in &errors {
        eprintln!("Error: {e}");
    }
    Ok(i32::from(!errors.is_empty()))
}

/// Removes each network, printing its name, or `Error: ...` and going on with the others;
/// 1 when any failed.
async fn rm(client: &Client, a: RmArgs) -> i32 {
    let mut code = 0;
    for key in &a.networks {
        match client.remove_network(key).await {
            Ok(()) => println!("{key}"),
            Err(e) => {
                eprintln!("Error: {e}");
                code = 1;
            }
        }
    }
    code
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use expect_test::expect;
    use shoal_types::fixtures;

    use super::*;
    use crate::{Cli, Command};

    fn create_args(args: &[&str]) -> CreateArgs {
        let argv = ["shoal", "network", "create"].iter().chain(args);
        match Cli::try_parse_from(argv).map(|c| c.command) {
            Ok(Command::Network(NetworkCmd::Create(a))) => a,
            Ok(other) => panic!("parsed as {other:?}"),
            Err(e) => panic!("{e}"),
        }
    }

    fn request(args: &[&str]) -> Result<NetworkCreate> {
        create_request(&create_args(args))
    }

    fn err(args: &[&str]) -> String {
        request(args).unwrap_err().to_string()
    }

    #[test]
    fn create_defaults() {
        assert_eq!(request(&["front"]).unwrap(), NetworkCreate::new("front"));
    }

    #[test]
    fn create_every_flag() {
        let req = request(&[
            "--driver",
            "overlay",
            "--subnet",
            "10.0.9.0/24",
            "--gateway",
            "10.0.9.254",
            "--attachable",
            "--label",
            "tier=back",
            "--label",
            "owner=a=b",
            "back",
        ])
        .unwrap();
        assert_eq!(req.name, "back");
        assert_eq!(req.driver, "overlay");
        assert_eq!(req.subnet.as_deref(), Some("10.0.9.0/24"));
        assert_eq!(req.gateway.as_deref(), Some("10.0.9.254"));
        assert!(req.attachable);
        assert_eq!(
            req.labels.into_iter().collect::<Vec<_>>(),
            [
                ("owner".to_string(), "a=b".to_string()),
                ("tier".to_string(), "back".to_string())
            ]
        );
        assert_eq!(request(&["-d", "overlay", "x"]).unwrap().driver, "overlay");
    }

    #[test]
    fn create_errors() {
        assert_eq!(
            err(&["--driver", "bridge", "x"]),
            "invalid driver \"bridge\": only the overlay driver is supported"
        );
        assert!(err(&["--subnet", "10.0.9.1/24", "x"]).contains("host bits are set"));
        assert!(err(&["--subnet", "10.0.9", "x"]).starts_with("invalid subnet"));
        assert_eq!(
            err(&["--gateway", "10.0.9.1", "x"]),
            "--gateway needs --subnet: give the subnet the gateway belongs to"
        );
        assert_eq!(
            err(&["--subnet", "10.0.9.0/24", "--gateway", "10.0.8.1", "x"]),
            "invalid gateway 10.0.8.1: it is not a host address of 10.0.9.0/24"
        );
        assert!(
            err(&["--subnet", "10.0.9.0/24", "--gateway", "10.0.9.255", "x"])
                .contains("not a host address")
        );
        assert!(err(&["--subnet", "10.0.9.0/24", "--gateway", "gw", "x"]).contains("IPv4"));
        assert_eq!(
            err(&["--label", "=v", "x"]),
            "invalid label \"=v\": expected KEY=VALUE"
        );
        assert!(
            err(&["tasks"]).starts_with("invalid network name \"tasks\": the name is reserved")
        );
        assert!(
            err(&["org"]).starts_with("invalid network name \"org\": it is a top-level domain")
        );
        assert!(Cli::try_parse_from(["shoal", "network", "create"]).is_err());
    }

    fn networks() -> Vec<Network> {
        let mut ingress =
            fixtures::network("3c4d5e6f7a8b9c0d1e2f3a4b", "ingress", "10.0.0.0/24", 4096);
        ingress.ingress = true;
        let mut front = fixtures::network("7a8b9c0d1e2f3a4b5c6d7e8f", "front", "10.0.1.0/24", 4097);
        front.labels.insert("tier".into(), "web".into());
        front.labels.insert("env".into(), "prod".into());
        let back = fixtures::network("0d1e2f3a4b5c6d7e8f9a0b1c", "back-end", "10.0.2.0/24", 4098);
        vec![ingress, front, back]
    }

    #[test]
    fn ls_table() {
        let mut nets = networks();
        sort(&mut nets);
        let rows: Vec<Row> = nets.iter().map(|n| row(n, false)).collect();
        expect![[r#"
            NETWORK ID     NAME       DRIVER    SCOPE
            0d1e2f3a4b5c   back-end   overlay   swarm
            7a8b9c0d1e2f   front      overlay   swarm
            3c4d5e6f7a8b   ingress    overlay   swarm
        "#]]
        .assert_eq(&render_ls(&rows, &Format::Default).unwrap());
        let f = Format::parse(Some(r"table {{.Name}}\t{{.Subnet}}\t{{.Labels}}")).unwrap();
        expect![[r#"
            NAME       SUBNET        LABELS
            back-end   10.0.2.0/24
            front      10.0.1.0/24   env=prod,tier=web
            ingress    10.0.0.0/24
        "#]]
        .assert_eq(&render_ls(&rows, &f).unwrap());
        let f = Format::parse(Some(
            "{{.ID}} {{.Name}} {{.Driver}} {{.Scope}} {{.Ingress}}",
        ))
        .unwrap();
        expect![[r#"
            0d1e2f3a4b5c back-end overlay swarm false
            7a8b9c0d1e2f front overlay swarm false
            3c4d5e6f7a8b ingress overlay swarm true
        "#]]
        .assert_eq(&render_ls(&rows, &f).unwrap());
        let full = row(&nets[0], true);
        assert_eq!(cell(&full, "ID"), "0d1e2f3a4b5c6d7e8f9a0b1c");
        expect![[r#"
            NETWORK ID   NAME   DRIVER   SCOPE
        "#]]
        .assert_eq(&render_ls(&[], &Format::Default).unwrap());
    }

    #[test]
    fn inspect_output() {
        let v = inspect_value(&networks()[1]).unwrap();
        let f = Format::parse(Some(
            "{{.IPAM.Subnet}} {{.IPAM.Gateway}} {{.VNI}} {{.Labels.tier}}",
        ))
        .unwrap();
        assert_eq!(
            render_inspect(std::slice::from_ref(&v), &f).unwrap(),
            "10.0.1.0/24 10.0.1.1 4097 web\n"
        );
        let out = render_inspect(&[v], &Format::Default).unwrap();
        assert!(
            out.starts_with("[\n    {\n        \"ID\": \"7a8b9c0d1e2f3a4b5c6d7e8f\",\n        \"Name\": \"front\","),
            "{out}"
        );
        assert!(
            out.contains("\"IPAM\": {\n            \"Subnet\": \"10.0.1.0/24\""),
            "{out}"
        );
        assert!(!out.contains("NextHost"), "{out}");
    }
}
