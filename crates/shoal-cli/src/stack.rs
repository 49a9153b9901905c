//! `shoal stack deploy|ls|ps|services|rm`: compose files deployed natively, with the names
//! and labels `docker stack deploy` gives, so that `docker stack ls` and `shoal stack ls` see
//! the same stacks. The file's reading and the redeploy plan are shoal-compose's (pure);
//! this module reads the files and the environment and calls the API.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use shoal_api::{Client, NetworkCreate, ServiceView, TaskFilter};
use shoal_compose::{NAMESPACE_LABEL, Step};
use shoal_image::ImageRef;
use shoal_types::short_id;

use crate::format::Format;
use crate::list;
use crate::now;

#[derive(Debug, Subcommand)]
pub enum StackCmd {
    /// Deploy a new stack or update an existing one from compose files.
    #[command(visible_alias = "up")]
    Deploy(DeployArgs),
    /// List stacks.
    #[command(visible_alias = "list")]
    Ls,
    /// List the tasks in the stack.
    Ps(PsArgs),
    /// List the services in the stack.
    Services(ServicesArgs),
    /// Remove one or more stacks.
    #[command(visible_alias = "remove", visible_alias = "down")]
    Rm(RmArgs),
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Path to a compose file (repeat to merge several, later ones overriding).
    #[arg(
        short = 'c',
        long = "compose-file",
        required = true,
        value_name = "FILE"
    )]
    pub files: Vec<PathBuf>,
    /// Remove the stack's services that the files no longer name.
    #[arg(long)]
    pub prune: bool,
    #[command(flatten)]
    pub image_opts: crate::image::ImageOpts,
    #[arg(value_name = "STACK")]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Only display task IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Format output using a template.
    #[arg(long)]
    pub format: Option<String>,
    /// Do not truncate ids and errors.
    #[arg(long)]
    pub no_trunc: bool,
    #[arg(value_name = "STACK")]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct ServicesArgs {
    /// Only display IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Format output using a template.
    #[arg(long)]
    pub format: Option<String>,
    #[arg(value_name = "STACK")]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    #[arg(required = true, value_name = "STACK")]
    pub names: Vec<String>,
}

pub async fn run(client: &Client, cmd: StackCmd) -> Result<()> {
    match cmd {
        StackCmd::Deploy(a) => deploy(client, a).await,
        StackCmd::Ls => ls(client).await,
        StackCmd::Ps(a) => ps(client, a).await,
        StackCmd::Services(a) => services(client, a).await,
        StackCmd::Rm(a) => rm(client, a).await,
    }
}

fn in_stack(labels: &BTreeMap<String, String>, name: &str) -> bool {
    labels.get(NAMESPACE_LABEL).map(String::as_str) == Some(name)
}

async fn stack_services(client: &Client, name: &str) -> Result<Vec<ServiceView>> {
    let mut v: Vec<ServiceView> = client
        .services()
        .await?
        .into_iter()
        .filter(|s| in_stack(&s.service.spec.labels, name))
        .collect();
    v.sort_by(|a, b| a.service.spec.name.cmp(&b.service.spec.name));
    Ok(v)
}

/// The environment `${VAR}` reads: the process's over the `.env` beside the first file.
fn environment(first: &Path) -> Result<BTreeMap<String, String>> {
    let mut env = BTreeMap::new();
    let dotenv = first.parent().unwrap_or(Path::new(".")).join(".env");
    if dotenv.exists() {
        env.extend(read_env_file(&dotenv).map_err(anyhow::Error::msg)?);
    }
    env.extend(std::env::vars());
    Ok(env)
}

/// `KEY=VALUE` lines (dotenvy reads docker's `.env` and `env_file` format).
fn read_env_file(path: &Path) -> std::result::Result<Vec<(String, String)>, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    dotenvy::from_read_iter(f)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Whether the stored image (`familiar@digest`, as the manager pins it) is `wanted`.
fn same_image(wanted: &str, stored: &str) -> bool {
    let stored = shoal_compose::plan::unpinned(stored);
    let familiar = |s: &str| ImageRef::parse(s).map(|r| r.familiar()).ok();
    wanted == stored || (familiar(wanted).is_some() && familiar(wanted) == familiar(stored))
}

async fn deploy(client: &Client, a: DeployArgs) -> Result<()> {
    let mut files = Vec::new();
    for path in &a.files {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read the compose file {}", path.display()))?;
        files.push(shoal_compose::File {
            name: path.display().to_string(),
            text,
        });
    }
    let first = std::path::absolute(&a.files[0])?;
    let base_dir = first.parent().unwrap_or(Path::new("/")).to_path_buf();
    let env = environment(&first)?;
    let mut read = |p: &Path| read_env_file(p);
    let stack = shoal_compose::load(
        &files,
        shoal_compose::Context {
            namespace: &a.name,
            env: &env,
            base_dir: &base_dir,
            read_env_file: &mut read,
        },
    )?;
    for var in &stack.unset {
        eprintln!("The {var} variable is not set. Defaulting to a blank string.");
    }

    let existing = client.networks().await?;
    for name in &stack.external_networks {
        if !existing.iter().any(|n| &n.name == name || &n.id == name) {
            bail!(
                "network {name:?} is declared as external, but could not be found. You need to create a swarm-scoped network before the stack is deployed"
            );
        }
    }
    for net in &stack.networks {
        if let Some(n) = existing.iter().find(|n| n.name == net.name) {
            if !in_stack(&n.labels, &a.name) {
                bail!(
                    "network {} exists and is not part of stack {}: remove it or rename the stack",
                    net.name,
                    a.name
                );
            }
            continue;
        }
        println!("Creating network {}", net.name);
        client
            .create_network(&NetworkCreate {
                subnet: net.subnet.clone(),
                gateway: net.gateway.clone(),
                attachable: net.attachable,
                labels: net.labels.clone(),
                ..NetworkCreate::new(net.name.clone())
            })
            .await?;
    }
    // The cluster stores networks by id: compare and send them so.
    let ids: BTreeMap<String, String> = client
        .networks()
        .await?
        .into_iter()
        .map(|n| (n.name, n.id))
        .collect();
    let mut desired = stack.services;
    for spec in &mut desired {
        for att in &mut spec.task_template.networks {
            if let Some(id) = ids.get(&att.target) {
                att.target = id.clone();
            }
        }
    }
    let current: Vec<_> = stack_services(client, &a.name)
        .await?
        .into_iter()
        .map(|v| v.service)
        .collect();
    for step in shoal_compose::plan(desired, &current, a.prune, &same_image) {
        match step {
            Step::Create(spec) => {
                println!("Creating service {}", spec.name);
                let image = spec.task_template.container_spec.image.as_deref();
                let opts = crate::image::service_options(&a.image_opts, image)?;
                let r = client.create_service_with(&spec, &opts).await?;
                crate::image::print_warnings(&r.warnings);
            }
            Step::Update { id, version, spec } => {
                println!("Updating service {} (id: {id})", spec.name);
                let image = spec.task_template.container_spec.image.as_deref();
                let opts = shoal_api::ServiceOptions {
                    version: Some(version),
                    ..crate::image::service_options(&a.image_opts, image)?
                };
                let r = client.update_service_with(&id, &spec, &opts).await?;
                crate::image::print_warnings(&r.warnings);
            }
            Step::Unchanged { id, name } => {
                println!("Service {name} is unchanged (id: {id})");
            }
            Step::Remove { id, name } => {
                println!("Removing service {name}");
                client.remove_service(&id).await?;
            }
        }
    }
    Ok(())
}

async fn ls(client: &Client) -> Result<()> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for s in client.services().await? {
        if let Some(ns) = s.service.spec.labels.get(NAMESPACE_LABEL) {
            *counts.entry(ns.clone()).or_default() += 1;
        }
    }
    let rows: Vec<Vec<String>> = counts
        .into_iter()
        .map(|(name, n)| vec![name, n.to_string()])
        .collect();
    println!("{}", crate::table::render(&["NAME", "SERVICES"], &rows));
    Ok(())
}

fn nothing_found(name: &str) -> anyhow::Error {
    anyhow::anyhow!("nothing found in stack: {name}")
}

async fn services(client: &Client, a: ServicesArgs) -> Result<()> {
    let format = Format::parse(a.format.as_deref()).map_err(anyhow::Error::msg)?;
    let services = stack_services(client, &a.name).await?;
    if services.is_empty() {
        return Err(nothing_found(&a.name));
    }
    crate::service::print_services(&services, a.quiet, &format)
}

async fn ps(client: &Client, a: PsArgs) -> Result<()> {
    let format = Format::parse(a.format.as_deref()).map_err(anyhow::Error::msg)?;
    let services = stack_services(client, &a.name).await?;
    if services.is_empty() {
        return Err(nothing_found(&a.name));
    }
    let mut tasks = Vec::new();
    for s in &services {
        let filter = TaskFilter {
            service: Some(s.service.id.clone()),
            node: None,
        };
        tasks.extend(client.tasks(&filter).await?);
    }
    list::sort_tasks(&mut tasks);
    if a.quiet {
        for t in &tasks {
            let id = t.task.id.as_str();
            println!("{}", if a.no_trunc { id } else { short_id(id) });
        }
        return Ok(());
    }
    let rows = list::task_rows(&tasks, &services, now(), a.no_trunc);
    print!(
        "{}",
        list::render_tasks(&rows, &format).map_err(anyhow::Error::msg)?
    );
    Ok(())
}

async fn rm(client: &Client, a: RmArgs) -> Result<()> {
    let mut missing = Vec::new();
    for name in &a.names {
        let services = stack_services(client, name).await?;
        let networks: Vec<_> = client
            .networks()
            .await?
            .into_iter()
            .filter(|n| in_stack(&n.labels, name))
            .collect();
        if services.is_empty() && networks.is_empty() {
            missing.push(name.clone());
            continue;
        }
        for s in &services {
            println!("Removing service {}", s.service.spec.name);
            client.remove_service(&s.service.id).await?;
        }
        for n in &networks {
            println!("Removing network {}", n.name);
            client.remove_network(&n.id).await?;
        }
    }
    if !missing.is_empty() {
        bail!("nothing found in stack: {}", missing.join(", "));
    }
    Ok(())
}
