//! `shoal service create|ls|ps|inspect|scale|update|rollback|rm|logs`.

use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use shoal_api::{Client, ServiceView, TaskFilter};
use shoal_types::{ServiceMode, ServiceSpec, short_id};

use crate::format::Format;
use crate::list;
use crate::node::render_inspect;
use crate::spec::{CreateArgs, UpdateArgs, apply_update, build_spec, timeout};
use crate::{now, progress};

#[derive(Debug, Subcommand)]
pub enum ServiceCmd {
    /// Create a new service.
    Create(CreateArgs),
    /// List services.
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// List the tasks of one or more services.
    Ps(PsArgs),
    /// Display detailed information on one or more services.
    Inspect(InspectArgs),
    /// Scale one or multiple replicated services.
    Scale(ScaleArgs),
    /// Update a service.
    Update(UpdateArgs),
    /// Revert changes to a service's configuration.
    Rollback(RollbackArgs),
    /// Remove one or more services.
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
    /// Fetch the logs of a service.
    Logs(LogsArgs),
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
    #[arg(required = true, value_name = "SERVICE")]
    pub services: Vec<String>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Format output using a template ('json' prints one object per line).
    #[arg(short, long)]
    pub format: Option<String>,
    /// Print the information in a human friendly format.
    #[arg(long)]
    pub pretty: bool,
    #[arg(required = true, value_name = "SERVICE")]
    pub services: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// Exit immediately instead of waiting for the services to converge.
    #[arg(short, long)]
    pub detach: bool,
    /// How long to wait for each service to converge.
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub timeout: String,
    #[arg(required = true, value_name = "SERVICE=REPLICAS")]
    pub scales: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Exit immediately instead of waiting for the rollback to complete.
    #[arg(short, long)]
    pub detach: bool,
    /// How long to wait for the rollback to complete.
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub timeout: String,
    #[arg(value_name = "SERVICE")]
    pub service: String,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    #[arg(required = true, value_name = "SERVICE")]
    pub services: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Follow log output.
    #[arg(short, long)]
    pub follow: bool,
    /// Do not truncate task ids.
    #[arg(long)]
    pub no_trunc: bool,
    /// Number of lines to show from the end of each task's log.
    #[arg(short = 'n', long, value_name = "N")]
    pub tail: Option<usize>,
    /// Show timestamps (containers' lines).
    #[arg(short, long)]
    pub timestamps: bool,
    /// Show lines since a time (RFC 3339) or for a duration back (10m).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    #[arg(value_name = "SERVICE")]
    pub service: String,
}

pub async fn run(client: &Client, cmd: ServiceCmd) -> Result<()> {
    match cmd {
        ServiceCmd::Create(a) => create(client, a).await,
        ServiceCmd::Ls(a) => ls(client, a).await,
        ServiceCmd::Ps(a) => ps(client, a).await,
        ServiceCmd::Inspect(a) => inspect(client, a).await,
        ServiceCmd::Scale(a) => scale(client, a).await,
        ServiceCmd::Update(a) => update(client, a).await,
        ServiceCmd::Rollback(a) => {
            let limit = timeout(&a.timeout)?;
            rollback(client, &a.service, a.detach, limit).await
        }
        ServiceCmd::Rm(a) => rm(client, a).await,
        ServiceCmd::Logs(a) => logs(client, a).await,
    }
}

async fn create(client: &Client, a: CreateArgs) -> Result<()> {
    let spec = build_spec(&a)?;
    let limit = timeout(&a.timeout)?;
    let image = spec.task_template.container_spec.image.as_deref();
    let opts = crate::image::service_options(&a.image_opts, image)?;
    let created = client.create_service_with(&spec, &opts).await?;
    println!("{}", created.id);
    crate::image::print_warnings(&created.warnings);
    if !a.detach {
        progress::wait(client, &created.id, limit).await?;
    }
    Ok(())
}

async fn ls(client: &Client, a: LsArgs) -> Result<()> {
    let format = Format::parse(a.format.as_deref()).map_err(anyhow::Error::msg)?;
    let mut services = client.services().await?;
    services.sort_by(|x, y| x.service.spec.name.cmp(&y.service.spec.name));
    print_services(&services, a.quiet, &format)
}

/// `service ls` and `stack services`: ids only with `-q`, else the table or `--format`.
pub(crate) fn print_services(services: &[ServiceView], quiet: bool, format: &Format) -> Result<()> {
    if quiet {
        services
            .iter()
            .for_each(|s| println!("{}", short_id(&s.service.id)));
        return Ok(());
    }
    let rows: Vec<_> = services.iter().map(list::service_row).collect();
    print!(
        "{}",
        list::render_services(&rows, format).map_err(anyhow::Error::msg)?
    );
    Ok(())
}

async fn ps(client: &Client, a: PsArgs) -> Result<()> {
    let format = Format::parse(a.format.as_deref()).map_err(anyhow::Error::msg)?;
    let mut services = Vec::new();
    let mut tasks = Vec::new();
    for key in &a.services {
        let view = client.service(key).await?;
        let filter = TaskFilter {
            service: Some(view.service.id.clone()),
            node: None,
        };
        tasks.extend(client.tasks(&filter).await?);
        services.push(view);
    }
    list::sort_tasks(&mut tasks);
    if a.quiet {
        for t in &tasks {
            println!(
                "{}",
                if a.no_trunc {
                    t.task.id.as_str()
                } else {
                    short_id(&t.task.id)
                }
            );
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

async fn inspect(client: &Client, a: InspectArgs) -> Result<()> {
    let format = Format::parse(a.format.as_deref()).map_err(anyhow::Error::msg)?;
    let mut views = Vec::new();
    for key in &a.services {
        views.push(client.service(key).await?);
    }
    if a.pretty {
        if !matches!(format, Format::Default) {
            bail!("--format and --pretty can't be used together: pick one");
        }
        let texts: Vec<String> = views.iter().map(pretty).collect();
        print!("{}", texts.join("\n\n"));
        return Ok(());
    }
    let values = views
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<Vec<_>, _>>()?;
    print!("{}", render_inspect(&values, &format)?);
    Ok(())
}

/// `service inspect --pretty`.
fn pretty(v: &ServiceView) -> String {
    let spec = &v.service.spec;
    let cs = &spec.task_template.container_spec;
    let rp = &spec.task_template.restart_policy;
    let mut out = format!("ID:\t\t{}\nName:\t\t{}\n", v.service.id, spec.name);
    if !spec.labels.is_empty() {
        out.push_str("Labels:\n");
        spec.labels
            .iter()
            .for_each(|(k, v)| out.push_str(&format!(" {k}={v}\n")));
    }
    match spec.mode {
        ServiceMode::Replicated { replicas } => out.push_str(&format!(
            "Service Mode:\tReplicated\n Replicas:\t{replicas}\n"
        )),
        ServiceMode::Global {} => out.push_str("Service Mode:\tGlobal\n"),
    }
    let constraints = &spec.task_template.placement.constraints;
    if !constraints.is_empty() {
        out.push_str("Placement:\n Constraints:\t[");
        out.push_str(
            &constraints
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(" "),
        );
        out.push_str("]\n");
    }
    if let Some(u) = &v.service.update_status {
        out.push_str(&format!(
            "UpdateStatus:\n State:\t\t{}\n Message:\t{}\n",
            u.state, u.message
        ));
    }
    out.push_str(&format!(
        "RestartPolicy:\n Condition:\t{}\n Delay:\t\t{}ms\n MaxAttempts:\t{}\n",
        rp.condition, rp.delay_ms, rp.max_attempts
    ));
    for (title, c) in [
        ("UpdateConfig", &spec.update_config),
        ("RollbackConfig", &spec.rollback_config),
    ] {
        out.push_str(&format!(
            "{title}:\n Parallelism:\t{}\n Delay:\t\t{}ms\n On failure:\t{}\n Monitoring Period: {}ms\n Max failure ratio: {}\n Order:\t\t{}\n",
            c.parallelism, c.delay_ms, c.failure_action, c.monitor_ms, c.max_failure_ratio.0, c.order
        ));
    }
    out.push_str(&format!(
        "ContainerSpec:\n Command:\t{}\n",
        cs.command.join(" ")
    ));
    if !cs.env.is_empty() {
        out.push_str(&format!(" Env:\t\t{}\n", cs.env.join(" ")));
    }
    if let Some(dir) = &cs.dir {
        out.push_str(&format!(" Dir:\t\t{dir}\n"));
    }
    out.push_str(&format!(
        " StopGracePeriod: {}ms\n",
        cs.stop_grace_period_ms
    ));
    let networks = &spec.task_template.networks;
    if !networks.is_empty() {
        out.push_str("Networks:");
        networks
            .iter()
            .for_each(|n| out.push_str(&format!(" {}", n.target)));
        out.push('\n');
    }
    out.push_str(&format!("Endpoint Mode:\t{}\n", spec.endpoint_spec.mode));
    if v.status.endpoint_nodes > 0 {
        out.push_str(&format!(
            "Endpoints: synced on {}/{} nodes\n",
            v.status.endpoint_nodes_synced, v.status.endpoint_nodes
        ));
    }
    if !spec.endpoint_spec.ports.is_empty() {
        out.push_str("Ports:\n");
        for p in &spec.endpoint_spec.ports {
            if let Some(pp) = p.published_port {
                out.push_str(&format!(" PublishedPort = {pp}\n"));
            }
            out.push_str(&format!(
                "  Protocol = {}\n  TargetPort = {}\n  PublishMode = {}\n",
                p.protocol, p.target_port, p.publish_mode
            ));
        }
    }
    out
}

/// `vote=3` -> ("vote", 3).
pub fn parse_scale(s: &str) -> Result<(String, u64)> {
    match s.split_once('=') {
        Some((name, n)) if !name.is_empty() => match n.parse() {
            Ok(n) => Ok((name.to_string(), n)),
            Err(_) => {
                bail!("invalid replicas value {n:?} in {s:?}: expected a number, e.g. {name}=3")
            }
        },
        _ => bail!("invalid scale specifier {s:?}: expected SERVICE=REPLICAS, e.g. vote=3"),
    }
}

async fn scale(client: &Client, a: ScaleArgs) -> Result<()> {
    let limit = timeout(&a.timeout)?;
    let scales = a
        .scales
        .iter()
        .map(|s| parse_scale(s))
        .collect::<Result<Vec<_>>>()?;
    let mut failed = Vec::new();
    for (name, n) in scales {
        let result = async {
            let view = client.service(&name).await?;
            let mut spec = view.service.spec.clone();
            match &mut spec.mode {
                ServiceMode::Replicated { replicas } => *replicas = n,
                ServiceMode::Global {} => {
                    bail!("{name}: scale can only be used with replicated mode")
                }
            }
            client.update_service(&view.service.id, &spec).await?;
            println!("{name} scaled to {n}");
            if !a.detach {
                progress::wait(client, &view.service.id, limit).await?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            failed.push(e.to_string());
        }
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("\n"));
    }
    Ok(())
}

async fn update(client: &Client, a: UpdateArgs) -> Result<()> {
    let limit: Duration = timeout(&a.timeout)?;
    let view = client.service(&a.service).await?;
    let spec: ServiceSpec = apply_update(view.service.spec.clone(), &a)?;
    if a.rollback {
        if spec != view.service.spec || a.image_opts.with_registry_auth {
            bail!("other flags may not be combined with --rollback");
        }
        return rollback(client, &a.service, a.detach, limit).await;
    }
    // With nothing changed, an update resumes a paused rollout (as docker's).
    let paused = view
        .service
        .update_status
        .as_ref()
        .is_some_and(|s| s.state.paused());
    if spec == view.service.spec && !a.image_opts.with_registry_auth && !paused {
        bail!(
            "nothing to update: give a flag such as --replicas, --env-add, --args or --force (see `shoal service update --help`)"
        );
    }
    let image = spec.task_template.container_spec.image.as_deref();
    let opts = crate::image::service_options(&a.image_opts, image)?;
    let updated = client
        .update_service_with(&view.service.id, &spec, &opts)
        .await?;
    println!("{}", a.service);
    crate::image::print_warnings(&updated.warnings);
    if !a.detach {
        // The version this update makes: a rollout it began says so.
        let follow = progress::Follow::Update {
            since: view.service.version + 1,
        };
        progress::wait_for(client, &view.service.id, limit, follow).await?;
    }
    Ok(())
}

/// `service rollback` and `service update --rollback`.
async fn rollback(client: &Client, key: &str, detach: bool, limit: Duration) -> Result<()> {
    let view = client.service(key).await?;
    client.rollback_service(&view.service.id).await?;
    println!("{key}");
    if !detach {
        let follow = progress::Follow::Rollback {
            since: view.service.version + 1,
        };
        progress::wait_for(client, &view.service.id, limit, follow).await?;
    }
    Ok(())
}

async fn rm(client: &Client, a: RmArgs) -> Result<()> {
    let mut failed = Vec::new();
    for key in &a.services {
        match client.remove_service(key).await {
            Ok(()) => println!("{key}"),
            Err(e) => failed.push(e.to_string()),
        }
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("\n"));
    }
    Ok(())
}

/// `vote.1.<24 hex>` -> `vote.1.<12 hex>`, as docker shortens task names in logs.
fn short_task_name(name: &str) -> String {
    match name.rsplit_once('.') {
        Some((slot, id)) if id.len() > 12 && shoal_types::ids::is_hex(id) => {
            format!("{slot}.{}", short_id(id))
        }
        _ => name.to_string(),
    }
}

pub fn log_prefix(task: &str, node: &str, no_trunc: bool) -> String {
    let task = if no_trunc {
        task.to_string()
    } else {
        short_task_name(task)
    };
    format!("{task}@{node}    | ")
}

async fn logs(client: &Client, a: LogsArgs) -> Result<()> {
    crate::logs::run(client, &a).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_specifiers() {
        assert_eq!(parse_scale("vote=3").unwrap(), ("vote".to_string(), 3));
        assert_eq!(
            parse_scale("vote").unwrap_err().to_string(),
            "invalid scale specifier \"vote\": expected SERVICE=REPLICAS, e.g. vote=3"
        );
        assert!(
            parse_scale("vote=x")
                .unwrap_err()
                .to_string()
                .contains("expected a number")
        );
        assert!(parse_scale("=3").is_err());
    }

    #[test]
    fn log_prefixes() {
        assert_eq!(
            log_prefix("vote.1.0123456789abcdef01234567", "node1", false),
            "vote.1.0123456789ab@node1    | "
        );
        assert_eq!(
            log_prefix("vote.1.0123456789abcdef01234567", "node1", true),
            "vote.1.0123456789abcdef01234567@node1    | "
        );
    }

    #[test]
    fn pretty_inspect() {
        let v = ServiceView {
            service: shoal_types::fixtures::service("s1", shoal_types::fixtures::spec("vote", 2)),
            status: Default::default(),
        };
        let text = pretty(&v);
        assert!(
            text.starts_with(
                "ID:\t\ts1\nName:\t\tvote\nService Mode:\tReplicated\n Replicas:\t2\n"
            ),
            "{text}"
        );
        assert!(text.contains(" Command:\tsleep 1000\n"), "{text}");
        assert!(
            text.contains("UpdateConfig:\n Parallelism:\t1\n Delay:\t\t0ms\n On failure:\tpause\n Monitoring Period: 5000ms\n Max failure ratio: 0\n Order:\t\tstart-first\n"),
            "{text}"
        );
        assert!(!text.contains("Endpoints:"), "{text}");
        let v = ServiceView {
            status: shoal_api::ServiceStatus {
                endpoint_nodes_synced: 2,
                endpoint_nodes: 3,
                ..Default::default()
            },
            ..v
        };
        let text = pretty(&v);
        assert!(
            text.contains("Endpoint Mode:\tvip\nEndpoints: synced on 2/3 nodes\n"),
            "{text}"
        );
    }
}
