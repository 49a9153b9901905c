//! `shoal lab` (a cluster in network namespaces on this machine) and `shoal demo` (the demo
//! apps). The clap surface is here; the handlers are stubs until they are wired to shoal-lab
//! and the demo apps.

use anyhow::{Result, bail};
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum LabCmd {
    /// Build a cluster on this machine: one network namespace and daemon per node.
    Up(LabUpArgs),
    /// Tear the lab down.
    Down,
    /// List the lab's nodes.
    Ls,
    /// Run a command on a lab node: shoal lab exec node2 -- shoal node ls.
    Exec(LabExecArgs),
}

#[derive(Debug, Args)]
pub struct LabUpArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: u32,
    /// Number of managers among them.
    #[arg(long, default_value_t = 1)]
    pub managers: u32,
}

#[derive(Debug, Args)]
pub struct LabExecArgs {
    /// The node: node1, node2, ...
    pub node: String,
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum DemoCmd {
    /// The voting app's web front end.
    Vote(DemoVoteArgs),
    /// A client that calls a service in a loop and reports which tasks answered.
    Client(DemoClientArgs),
}

#[derive(Debug, Args)]
pub struct DemoVoteArgs {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:80")]
    pub listen: String,
}

#[derive(Debug, Args)]
pub struct DemoClientArgs {
    /// URL to call.
    pub url: String,
    /// Number of requests.
    #[arg(short = 'n', long, default_value_t = 10)]
    pub requests: u32,
}

pub async fn lab(cmd: LabCmd) -> Result<i32> {
    match cmd {
        LabCmd::Up(_) => not_built("lab up"),
        LabCmd::Down => not_built("lab down"),
        LabCmd::Ls => not_built("lab ls"),
        LabCmd::Exec(_) => not_built("lab exec"),
    }
}

pub async fn demo(cmd: DemoCmd) -> Result<i32> {
    match cmd {
        DemoCmd::Vote(_) => not_built("demo vote"),
        DemoCmd::Client(_) => not_built("demo client"),
    }
}

fn not_built(what: &str) -> Result<i32> {
    bail!("`shoal {what}` is not built yet")
}
