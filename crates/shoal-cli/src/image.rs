//! `image ls|rm|prune` (this node's images), `login`/`logout` (the docker CLI's
//! `config.json`), and the image flags of `service create|update` (`--with-registry-auth`,
//! `--no-resolve-image`).

use std::io::Read;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::json;
use shoal_api::{Client, ImageSummary, ServiceOptions};
use shoal_image::{DockerConfig, ImageRef, auth, human_size};

use crate::format::Format;
use crate::table::{self, Columns, Row, cell};

/// The image flags of `service create|update`.
#[derive(Debug, Args, Default, Clone)]
pub struct ImageOpts {
    /// Send the registry login (`shoal login`) to the nodes that run the tasks.
    #[arg(long)]
    pub with_registry_auth: bool,
    /// Do not query the registry to pin the image to a digest.
    #[arg(long)]
    pub no_resolve_image: bool,
}

/// The API options for `image` under `opts`: the stored login for the image's registry
/// when `--with-registry-auth` is given (an error when there is none, naming the server).
pub fn service_options(opts: &ImageOpts, image: Option<&str>) -> Result<ServiceOptions> {
    let mut out = ServiceOptions {
        query_registry: !opts.no_resolve_image,
        registry_auth: None,
        version: None,
    };
    if !opts.with_registry_auth {
        return Ok(out);
    }
    let Some(image) = image else {
        bail!("--with-registry-auth needs a service that runs an image");
    };
    let registry = ImageRef::parse(image)?.registry().to_string();
    let path = auth::config_path();
    let config = DockerConfig::load(&path)?;
    match config.get(&registry).map_err(anyhow::Error::msg)? {
        Some(login) => out.registry_auth = Some(login.to_header()),
        None => bail!(
            "no login for {registry} in {}: run `shoal login {registry}` first",
            path.display()
        ),
    }
    Ok(out)
}

/// docker prints these on stderr after create/update.
pub fn print_warnings(warnings: &[String]) {
    for w in warnings {
        eprintln!("{}", w.trim_end());
    }
}

#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// List this node's images.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Remove images from this node.
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Remove the images no task on this node uses.
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only show image ids.
    #[arg(short, long)]
    pub quiet: bool,
    /// Show full image ids.
    #[arg(long)]
    pub no_trunc: bool,
    /// Pretty-print with a Go template, `table ...`, or `json`.
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove every unused image (what shoal always does: its images have tags or none).
    #[arg(short, long)]
    pub all: bool,
    /// Do not ask for confirmation (shoal never asks).
    #[arg(short, long)]
    pub force: bool,
}

pub async fn run(client: &Client, cmd: ImageCmd) -> Result<()> {
    match cmd {
        ImageCmd::Ls(a) => ls(client, a).await,
        ImageCmd::Rm(a) => rm(client, a).await,
        ImageCmd::Prune(_) => prune(client).await,
    }
}

/// docker's CREATED: "5 minutes ago" (go-units' HumanDuration).
pub fn ago(created: &str, now: SystemTime) -> String {
    let Ok(at) = humantime::parse_rfc3339_weak(created.trim_end_matches('Z')) else {
        return String::new();
    };
    let d = now.duration_since(at).unwrap_or(Duration::ZERO);
    let seconds = d.as_secs();
    let minutes = seconds / 60;
    // go-units rounds hours to the nearest.
    let hours = (d.as_secs_f64() / 3600.0 + 0.5) as u64;
    let text = if seconds < 1 {
        "Less than a second".to_string()
    } else if seconds == 1 {
        "1 second".to_string()
    } else if seconds < 60 {
        format!("{seconds} seconds")
    } else if minutes == 1 {
        "About a minute".to_string()
    } else if minutes < 60 {
        format!("{minutes} minutes")
    } else if hours == 1 {
        "About an hour".to_string()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", hours / 24 / 365)
    };
    format!("{text} ago")
}

/// Rows of `image ls`: one per tag, or one `<none>` row for an image no tag names.
pub fn rows(images: &[ImageSummary], now: SystemTime, no_trunc: bool) -> Vec<Row> {
    let mut out = Vec::new();
    for i in images {
        let hex = i.id.strip_prefix("sha256:").unwrap_or(&i.id);
        let id = if no_trunc {
            i.id.clone()
        } else {
            hex[..hex.len().min(12)].to_string()
        };
        let tags: Vec<(String, String)> = if i.repo_tags.is_empty() {
            vec![("<none>".into(), "<none>".into())]
        } else {
            i.repo_tags
                .iter()
                .map(
                    |t| match t.rsplit_once(':').filter(|(_, tag)| !tag.contains('/')) {
                        Some((r, tag)) => (r.to_string(), tag.to_string()),
                        None => (t.clone(), "<none>".into()),
                    },
                )
                .collect()
        };
        for (repo, tag) in tags {
            let row = json!({
                "Repository": repo,
                "Tag": tag,
                "ID": id,
                "CreatedSince": ago(&i.created, now),
                "CreatedAt": i.created,
                "Size": human_size(i.size),
                "Containers": i.containers.join(","),
            });
            if let serde_json::Value::Object(m) = row {
                out.push(m);
            }
        }
    }
    out.sort_by_key(|r| cell(r, "Repository"));
    out
}

const KEYS: &[&str] = &["Repository", "Tag", "ID", "CreatedSince", "Size"];

fn cells(r: &Row) -> Vec<String> {
    KEYS.iter().map(|k| cell(r, k)).collect()
}

pub fn render(rows: &[Row], format: &Format) -> Result<String, String> {
    let columns = Columns {
        headers: &["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"],
        cells: &cells,
    };
    table::list(rows, KEYS, columns, format)
}

async fn ls(client: &Client, a: LsArgs) -> Result<()> {
    let format = Format::parse(a.format.as_deref()).map_err(anyhow::Error::msg)?;
    let images = client.images().await?;
    let rows = rows(&images, SystemTime::now(), a.no_trunc);
    if a.quiet {
        let mut ids: Vec<String> = rows.iter().map(|r| cell(r, "ID")).collect();
        ids.dedup();
        for id in ids {
            println!("{id}");
        }
        return Ok(());
    }
    print!("{}", render(&rows, &format).map_err(anyhow::Error::msg)?);
    Ok(())
}

async fn rm(client: &Client, a: RmArgs) -> Result<()> {
    let mut failed = Vec::new();
    for name in &a.images {
        match client.remove_image(name).await {
            Ok(lines) => lines.iter().for_each(|l| println!("{l}")),
            Err(e) => failed.push(e.to_string()),
        }
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("\n"));
    }
    Ok(())
}

async fn prune(client: &Client) -> Result<()> {
    let pruned = client.prune_images().await?;
    if !pruned.images_deleted.is_empty() {
        println!("Deleted Images:");
        for l in &pruned.images_deleted {
            println!("{l}");
        }
        println!();
    }
    println!(
        "Total reclaimed space: {}",
        human_size(pruned.space_reclaimed)
    );
    Ok(())
}

/// `shoal login [SERVER]`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Username.
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password (visible in the process list: prefer --password-stdin).
    #[arg(short, long)]
    pub password: Option<String>,
    /// Read the password from stdin.
    #[arg(long)]
    pub password_stdin: bool,
    /// The registry (`host[:port]`); Docker Hub when not given.
    pub server: Option<String>,
}

/// `shoal logout [SERVER]`.
#[derive(Debug, Args)]
pub struct LogoutArgs {
    pub server: Option<String>,
}

/// `host[:port]` of the server argument (`https://host:5000/` is accepted as docker does).
fn registry_of(server: Option<&str>) -> String {
    let s = server.unwrap_or("docker.io");
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let host = s.split('/').next().unwrap_or(s);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        h => h.to_string(),
    }
}

pub fn login(a: LoginArgs) -> Result<()> {
    let registry = registry_of(a.server.as_deref());
    let Some(username) = a.username.filter(|u| !u.is_empty()) else {
        bail!("give the username with -u (shoal does not prompt)");
    };
    let password = match (a.password, a.password_stdin) {
        (Some(_), true) => bail!("--password and --password-stdin are mutually exclusive"),
        (Some(p), false) => {
            eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
            p
        }
        (None, true) => {
            let mut p = String::new();
            std::io::stdin()
                .read_to_string(&mut p)
                .context("reading the password from stdin")?;
            p.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) => bail!("give the password with --password-stdin (shoal does not prompt)"),
    };
    if password.is_empty() {
        bail!("the password is empty");
    }
    let path = auth::config_path();
    let mut config = DockerConfig::load(&path)?;
    config.set(&registry, &username, &password);
    config.save(&path)?;
    // docker's daemon checks the login with the registry first; shoal checks it at the
    // first pull that uses it (service create --with-registry-auth pins with it).
    println!(
        "Login saved for {} in {} (the registry checks it at the first pull)",
        auth::server_key(&registry),
        path.display()
    );
    Ok(())
}

pub fn logout(a: LogoutArgs) -> Result<()> {
    let registry = registry_of(a.server.as_deref());
    let path = auth::config_path();
    let mut config = DockerConfig::load(&path)?;
    let key = auth::server_key(&registry);
    if config.remove(&registry) {
        config.save(&path)?;
        println!("Removing login credentials for {key}");
    } else {
        println!("Not logged in to {key}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_reads_as_docker_prints_it() {
        let now = humantime::parse_rfc3339("2026-12-01T12:00:00Z").unwrap();
        assert_eq!(ago("2026-12-01T11:55:00Z", now), "5 minutes ago");
        assert_eq!(ago("2026-12-01T10:00:00.123Z", now), "2 hours ago");
        assert_eq!(ago("2026-11-28T12:00:00Z", now), "3 days ago");
        assert_eq!(ago("", now), "");
    }

    #[test]
    fn image_ls_has_dockers_columns() {
        let now = humantime::parse_rfc3339("2026-12-01T12:00:00Z").unwrap();
        let images = vec![ImageSummary {
            repo_tags: vec!["127.0.0.1:5000/lab/busybox:1".into()],
            repo_digests: vec![],
            id: format!("sha256:{}", "ab".repeat(32)),
            created: "2026-12-01T11:00:00Z".into(),
            size: 1_234_567,
            containers: vec!["web.1.x".into()],
        }];
        let out = render(&rows(&images, now, false), &Format::parse(None).unwrap()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("REPOSITORY"), "{out}");
        for h in ["TAG", "IMAGE ID", "CREATED", "SIZE"] {
            assert!(lines[0].contains(h), "{out}");
        }
        for c in [
            "127.0.0.1:5000/lab/busybox",
            " 1 ",
            "abababababab",
            "About an hour ago",
            "1.23MB",
        ] {
            assert!(lines[1].contains(c), "{c:?} in {out}");
        }
    }

    #[test]
    fn login_servers_normalise_as_docker() {
        assert_eq!(registry_of(None), "docker.io");
        assert_eq!(
            registry_of(Some("https://index.docker.io/v1/")),
            "docker.io"
        );
        assert_eq!(registry_of(Some("http://10.0.0.1:5000/")), "10.0.0.1:5000");
        assert_eq!(registry_of(Some("reg.lab:5000")), "reg.lab:5000");
    }
}
