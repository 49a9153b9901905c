//! `shoal ca` (docker's `swarm ca`): print the cluster's root CA, or move the cluster to a
//! new one with `--rotate` and wait, showing progress, until every node has a certificate
//! from it (or return at once with `--detach`).

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use shoal_api::{CaRotateRequest, CaRotationStatus, Client, ClusterCa};

use crate::swarm::read_flag_file;

#[derive(Debug, Args)]
pub struct CaArgs {
    /// Only print the certificate's digest (what join tokens pin).
    #[arg(long)]
    pub digest: bool,
    /// Move the cluster to a new root CA without downtime: every node gets a certificate
    /// from it, then the old root is trusted no more and the join tokens change.
    #[arg(long)]
    pub rotate: bool,
    /// With --rotate: return once the rotation has started, without waiting for it.
    #[arg(short, long, requires = "rotate")]
    pub detach: bool,
    /// With --rotate: rotate to this root CA certificate (PEM) instead of a new one made
    /// by the manager; with --ca-key.
    #[arg(long, value_name = "FILE", requires_all = ["rotate", "ca_key"])]
    pub ca_cert: Option<std::path::PathBuf>,
    /// The new root CA's private key (PKCS#8 PEM); with --ca-cert.
    #[arg(long, value_name = "FILE", requires_all = ["rotate", "ca_cert"])]
    pub ca_key: Option<std::path::PathBuf>,
    /// Print no progress.
    #[arg(short, long)]
    pub quiet: bool,
}

/// How often a waiting `--rotate` looks at the rotation.
const POLL: Duration = Duration::from_millis(500);

pub async fn ca(client: &Client, args: CaArgs) -> Result<()> {
    if args.rotate {
        return rotate(client, args).await;
    }
    let ca = client.ca().await?;
    if let Some(r) = &ca.rotation {
        eprintln!(
            "A root CA rotation is in progress: {}. The root below stays current until it ends.",
            progress(r)
        );
    }
    print_ca(&ca, args.digest);
    Ok(())
}

async fn rotate(client: &Client, args: CaArgs) -> Result<()> {
    let req = CaRotateRequest {
        ca_cert: read_flag_file("--ca-cert", &args.ca_cert)?,
        ca_key: read_flag_file("--ca-key", &args.ca_key)?,
    };
    let started = client.rotate_ca(&req).await?;
    // The rotation may already be over (a one-node cluster renews at once).
    let target = match &started.rotation {
        Some(r) => r.digest.clone(),
        None => started.digest.clone(),
    };
    if args.detach {
        if !args.quiet {
            eprintln!("Root CA rotation to {target} started; `shoal ca` shows its progress.");
        }
        return Ok(());
    }
    let mut last = String::new();
    // A bar of the nodes renewed on a terminal; the same lines as ever elsewhere (scripts
    // read them).
    let bar = (!args.quiet && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "Rotating the root CA {spinner} [{bar:40}] {pos}/{len} nodes {msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    loop {
        let now = client.ca().await?;
        match &now.rotation {
            Some(r) => {
                if let Some(bar) = &bar {
                    bar.set_length(r.total as u64);
                    bar.set_position(r.renewed as u64);
                    bar.set_message(if r.waiting.is_empty() {
                        String::new()
                    } else {
                        format!("(waiting for {})", r.waiting.join(", "))
                    });
                    tokio::time::sleep(POLL).await;
                    continue;
                }
                let line = format!("Rotating the root CA: {}", progress(r));
                if !args.quiet && line != last {
                    eprintln!("{line}");
                    last = line;
                }
            }
            None if now.digest == target => {
                if let Some(bar) = &bar {
                    bar.finish_and_clear();
                }
                if !args.quiet {
                    eprintln!(
                        "Root CA rotation done: every node has a certificate from the new root, the old root is trusted no more, and the join tokens changed (`shoal join-token worker|manager`)."
                    );
                }
                print_ca(&now, args.digest);
                return Ok(());
            }
            None => bail!(
                "the root CA rotation to {target} ended, but the cluster's root is {}; another rotation may have replaced it",
                now.digest
            ),
        }
        tokio::time::sleep(POLL).await;
    }
}

fn progress(r: &CaRotationStatus) -> String {
    let mut s = format!(
        "{}/{} nodes have a certificate from the new root {}",
        r.renewed, r.total, r.digest
    );
    if !r.waiting.is_empty() {
        s.push_str(&format!(" (waiting for {})", r.waiting.join(", ")));
    }
    s
}

fn print_ca(ca: &ClusterCa, digest: bool) {
    if digest {
        println!("{}", ca.digest);
    } else {
        print!("{}", ca.certificate);
    }
}
