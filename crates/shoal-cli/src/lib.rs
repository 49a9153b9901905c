//! The `shoal` command: docker's swarm verbs, flags, tables and `--format` templates over
//! shoal's API.
//!
//! # Layout
//! - `lib.rs`: the clap tree ([`Cli`]), [`run`] and [`main`].
//! - `swarm`: `init`, `join`, `join-token`, `leave`.
//! - `node`: `node ls|inspect|update|rm`.
//! - `network`: `network create|ls|inspect|rm`.
//! - `stack`: `stack deploy|ls|ps|services|rm` (compose files read by shoal-compose).
//! - `service`: `service ...`; `spec` builds a `ServiceSpec` from flags (`update_opts`: the
//!   `--update-*`/`--rollback-*` policies); `list` makes the rows of `service ls|ps`;
//!   `progress` shows convergence and follows rollouts.
//! - `format`: the `--format` template evaluator; `table`: docker-style tables.
//! - `image`: `image ls|rm|prune`, `login`/`logout`, the image flags of `service create|update`.
//! - `events`: `shoal events`, the cluster's events as `docker events` prints them.
//! - `docs`: `completion` (shell scripts) and the hidden `gen-man` (man pages).
//! - `exec`: `shoal exec`; `lab`: `lab ...`; `demo`: the demo apps.
//! - `remote`: `-H`, `--tlsverify` and the certificate files: which daemon, and how.
//!
//! Errors print as `Error: <message>` on stderr with exit code 1; usage errors are clap's
//! (exit code 2).
#![forbid(unsafe_code)]

pub mod ca;
pub mod container_opts;
pub mod demo;
pub mod docs;
pub mod events;
pub mod exec;
pub mod format;
pub mod health_opts;
pub mod image;
pub mod lab;
pub mod list;
pub mod logs;
pub mod network;
pub mod node;
pub mod progress;
pub mod remote;
pub mod service;
pub mod spec;
pub mod stack;
pub mod swarm;
pub mod table;
pub mod update_opts;
pub mod walkthrough;

use std::ffi::OsString;

use clap::{Parser, Subcommand};
use shoal_api::DEFAULT_HOST;
use shoal_types::Millis;

#[derive(Debug, Parser)]
#[command(
    name = "shoal",
    version,
    about = "Services, overlay networks and load balancing for a cluster of Linux hosts"
)]
pub struct Cli {
    /// Daemon to connect to: unix:///path, or tcp://HOST:PORT (with --tlsverify unless the
    /// daemon serves plain HTTP on a loopback address).
    #[arg(short = 'H', long, env = "SHOAL_HOST", default_value = DEFAULT_HOST, global = true)]
    pub host: String,
    #[command(flatten)]
    pub tls: remote::TlsArgs,
    #[command(subcommand)]
    pub command: Command,
}

// One value per process, parsed once: the size of its largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Initialize a swarm: this node becomes its first manager.
    Init(swarm::InitArgs),
    /// Join a swarm as a worker or a manager (the token decides).
    Join(swarm::JoinArgs),
    /// Print the command (or with -q the token) that joins a node.
    JoinToken(swarm::JoinTokenArgs),
    /// Leave the swarm.
    Leave(swarm::LeaveArgs),
    /// Print the cluster's root CA certificate, or move the cluster to a new one with
    /// --rotate (docker's `swarm ca`).
    Ca(ca::CaArgs),
    /// The same verbs under `swarm`, as docker spells them.
    #[command(subcommand)]
    Swarm(SwarmCmd),
    /// Manage swarm nodes.
    #[command(subcommand)]
    Node(node::NodeCmd),
    /// Manage services.
    #[command(subcommand)]
    Service(service::ServiceCmd),
    /// Manage overlay networks.
    #[command(subcommand)]
    Network(network::NetworkCmd),
    /// Deploy compose files as stacks (docker's `stack`).
    #[command(subcommand)]
    Stack(stack::StackCmd),
    /// Manage this node's images.
    #[command(subcommand)]
    Image(image::ImageCmd),
    /// Log in to a registry (kept in the docker CLI's config.json).
    Login(image::LoginArgs),
    /// Log out from a registry.
    Logout(image::LogoutArgs),
    /// Run a command in a task on this node: shoal exec vote.1 -- ip addr.
    Exec(exec::ExecArgs),
    /// Stream the cluster's events (service, node, task and network changes) from a
    /// manager, as `docker events`.
    Events(events::EventsArgs),
    /// Print a shell completion script: bash, zsh or fish.
    Completion(docs::CompletionArgs),
    /// Write the man pages into a directory (for packaging).
    #[command(hide = true)]
    GenMan(docs::GenManArgs),
    /// A cluster in network namespaces on this machine.
    #[command(subcommand)]
    Lab(lab::LabCmd),
    /// The demo apps.
    #[command(subcommand)]
    Demo(demo::DemoCmd),
}

#[derive(Debug, Subcommand)]
pub enum SwarmCmd {
    /// Initialize a swarm.
    Init(swarm::InitArgs),
    /// Join a swarm.
    Join(swarm::JoinArgs),
    /// Print the command that joins a node.
    JoinToken(swarm::JoinTokenArgs),
    /// Leave the swarm.
    Leave(swarm::LeaveArgs),
    /// Print the cluster's root CA certificate, or rotate it (--rotate).
    Ca(ca::CaArgs),
}

/// Runs `shoal` with `args` (the first is the program name) and returns the exit code.
pub async fn run<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    run_with(args, &[]).await
}

/// [`run`], with the clap trees of the programs shipped beside `shoal` (`shoald`), whose
/// man pages `gen-man` writes too.
pub async fn run_with<I, T>(args: I, daemons: &[clap::Command]) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            if let Some(message) = unknown_flag(&e) {
                eprintln!("{message}");
            } else {
                let _ = e.print();
            }
            return e.exit_code();
        }
    };
    match dispatch(cli, daemons).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e}");
            1
        }
    }
}

/// docker's words for a flag it does not know: "unknown flag: --bogus" and where the help
/// is (clap says "unexpected argument"). Other usage errors keep clap's text.
fn unknown_flag(e: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() != ErrorKind::UnknownArgument {
        return None;
    }
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    if !arg.starts_with('-') {
        return None;
    }
    let flag = arg.split_once('=').map_or(arg.as_str(), |(f, _)| f);
    // "Usage: shoal service create [OPTIONS] ..." names the command.
    let command = match e.get(ContextKind::Usage) {
        Some(ContextValue::StyledStr(usage)) => usage
            .to_string()
            .lines()
            .next()
            .unwrap_or("")
            .trim_start_matches("Usage:")
            .split_whitespace()
            .take_while(|w| !w.starts_with(['[', '<', '-']))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    };
    let command = if command.is_empty() {
        "shoal".to_string()
    } else {
        command
    };
    Some(format!("unknown flag: {flag}\nSee '{command} --help'."))
}

/// `fn main` of the `shoal` binary: runs [`run_with`] on a single-threaded runtime and
/// exits.
pub fn main(daemons: &[clap::Command]) -> ! {
    let code = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(run_with(std::env::args_os(), daemons)),
        Err(e) => {
            eprintln!("Error: failed to start the async runtime: {e}");
            1
        }
    };
    std::process::exit(code)
}

async fn dispatch(cli: Cli, daemons: &[clap::Command]) -> anyhow::Result<i32> {
    let ok = |r: anyhow::Result<()>| r.map(|()| 0);
    // Made on first use, so that `lab` and `demo` don't depend on a valid -H.
    let client = || remote::client(&cli.host, &cli.tls);
    match cli.command {
        Command::Init(a) | Command::Swarm(SwarmCmd::Init(a)) => {
            ok(swarm::init(&client()?, a).await)
        }
        Command::Join(a) | Command::Swarm(SwarmCmd::Join(a)) => {
            ok(swarm::join(&client()?, a).await)
        }
        Command::JoinToken(a) | Command::Swarm(SwarmCmd::JoinToken(a)) => {
            ok(swarm::join_token(&client()?, a).await)
        }
        Command::Leave(a) | Command::Swarm(SwarmCmd::Leave(a)) => {
            ok(swarm::leave(&client()?, a).await)
        }
        Command::Ca(a) | Command::Swarm(SwarmCmd::Ca(a)) => ok(ca::ca(&client()?, a).await),
        Command::Node(cmd) => ok(node::run(&client()?, cmd).await),
        Command::Service(cmd) => ok(service::run(&client()?, cmd).await),
        Command::Network(cmd) => network::run(&client()?, cmd).await,
        Command::Stack(cmd) => ok(stack::run(&client()?, cmd).await),
        Command::Image(cmd) => ok(image::run(&client()?, cmd).await),
        Command::Login(a) => ok(image::login(a)),
        Command::Logout(a) => ok(image::logout(a)),
        Command::Exec(a) => exec::run(&client()?, a).await,
        Command::Events(a) => ok(events::run(&client()?, a).await),
        Command::Completion(a) => ok(docs::completion(a)),
        Command::GenMan(a) => ok(docs::gen_man(a, daemons)),
        Command::Lab(cmd) => lab::lab(cmd).await,
        Command::Demo(cmd) => demo::demo(cmd).await,
    }
}

/// The wall clock as the model stores it.
pub(crate) fn now() -> Millis {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Millis(ms)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn clap_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn unknown_flags_are_refused_by_name_before_the_image_only() {
        let e = Cli::try_parse_from(["shoal", "service", "create", "--bogus", "img", "cmd"])
            .unwrap_err();
        assert_eq!(
            unknown_flag(&e).as_deref(),
            Some("unknown flag: --bogus\nSee 'shoal service create --help'.")
        );
        let e =
            Cli::try_parse_from(["shoal", "service", "update", "--bogus=1", "web"]).unwrap_err();
        assert_eq!(
            unknown_flag(&e).as_deref(),
            Some("unknown flag: --bogus\nSee 'shoal service update --help'.")
        );
        // After the image, every word is the command's.
        let cli = Cli::try_parse_from([
            "shoal",
            "service",
            "create",
            "--health-cmd",
            "true",
            "img",
            "sh",
            "--bogus",
            "-c",
        ])
        .unwrap();
        let Command::Service(service::ServiceCmd::Create(a)) = cli.command else {
            panic!("not service create");
        };
        assert_eq!(a.command, ["img", "sh", "--bogus", "-c"]);
        assert_eq!(a.health_opts.health_cmd.as_deref(), Some("true"));
    }

    #[tokio::test]
    async fn errors_exit_1_and_usage_errors_exit_2() {
        assert_eq!(run(["shoal", "node", "ls", "--bogus"]).await, 2);
        assert_eq!(run(["shoal", "lab", "up"]).await, 1);
        assert_eq!(run(["shoal", "-H", "tcp://nohost", "node", "ls"]).await, 1);
        assert_eq!(run(["shoal", "join", "--token", "x", "10.0.0.1"]).await, 1);
    }
}
