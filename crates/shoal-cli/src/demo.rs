//! `shoal demo`: the seed walkthrough's two apps, shipped so that no image registry is needed.
//! - `vote`: an HTTP server whose page says `Processed by container ID <hostname>` (the
//!   task's short id), like the seed's voting app.
//! - `client`: an idle task to `shoal exec` into (the seed's `ping anoyi.com` has no target
//!   in a lab with no route out).

use std::net::{Ipv6Addr, SocketAddr};

use anyhow::{Context, Result};
use axum::Router;
use axum::response::Html;
use axum::routing::get;
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum DemoCmd {
    /// An HTTP server that answers with the container (task) id that processed the request.
    Vote(VoteArgs),
    /// Wait idly until stopped, to exec into.
    Client,
}

#[derive(Debug, Args)]
pub struct VoteArgs {
    /// TCP port to listen on (all addresses).
    #[arg(long, default_value_t = 80)]
    pub port: u16,
}

pub async fn demo(cmd: DemoCmd) -> Result<i32> {
    match cmd {
        DemoCmd::Vote(args) => vote(args.port).await,
        DemoCmd::Client => {
            terminated().await;
            Ok(0)
        }
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// The page, with the line the seed's walkthrough looks for.
pub fn page(id: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html><head><title>Cats vs Dogs!</title></head>\n<body>\n<h3>Cats vs Dogs!</h3>\n\
         <p>Processed by container ID {id}</p>\n</body></html>\n"
    )
}

async fn vote(port: u16) -> Result<i32> {
    let body = page(&hostname());
    // GET routes answer HEAD too (axum drops the body).
    let app = Router::new().fallback(get(move || {
        let body = body.clone();
        async move { Html(body) }
    }));
    // One dual-stack socket: IPv4 and IPv6 clients alike.
    let addr = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(_) => tokio::net::TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port)))
            .await
            .with_context(|| format!("failed to listen on port {port}"))?,
    };
    println!("vote: serving on port {port} as container {}", hostname());
    // On SIGTERM: stop accepting, finish the requests in flight, exit.
    axum::serve(listener, app)
        .with_graceful_shutdown(terminated())
        .await
        .context("the HTTP server failed")?;
    println!("vote: stopped");
    Ok(0)
}

async fn terminated() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_page_names_the_container() {
        assert!(super::page("4f2c1a9e0b1d").contains("Processed by container ID 4f2c1a9e0b1d<"));
    }
}
