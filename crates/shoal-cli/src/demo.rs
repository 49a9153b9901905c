//! `shoal demo`: the seed walkthrough's two apps, shipped so that no image registry is needed.
//! - `vote`: an HTTP server whose page says `Processed by container ID <hostname>` (the
//!   task's short id), like the seed's voting app, and the address the request came from;
//!   optionally a UDP responder saying the same.
//! - `client`: an idle task to `shoal exec` into (the seed's `ping anoyi.com` has no target
//!   in a lab with no route out).
//! - `udp-send`: one datagram and its reply, to try UDP services from inside a task.

use std::net::{Ipv6Addr, SocketAddr};

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::ConnectInfo;
use axum::response::Html;
use axum::routing::get;
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum DemoCmd {
    /// An HTTP server that answers with the container (task) id that processed the request.
    Vote(VoteArgs),
    /// Wait idly until stopped, to exec into.
    Client,
    /// Send one UDP datagram and print the reply.
    UdpSend(UdpSendArgs),
    /// Sequential HTTP requests for a while; prints how many failed (to watch a service
    /// while its tasks change).
    Load(LoadArgs),
    /// Every step of Swarm's service-discovery tutorial on a 2-node lab, checked.
    Walkthrough(crate::walkthrough::WalkArgs),
}

#[derive(Debug, Args)]
pub struct VoteArgs {
    /// TCP port to listen on (all addresses).
    #[arg(long, default_value_t = 80)]
    pub port: u16,
    /// Also answer UDP datagrams on this port with the container id.
    #[arg(long)]
    pub udp: Option<u16>,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// HOST:PORT to send `GET /` to, one connection per request.
    pub target: String,
    /// For how long, e.g. 5s.
    #[arg(long, default_value = "5s")]
    pub duration: String,
}

#[derive(Debug, Args)]
pub struct UdpSendArgs {
    /// HOST:PORT to send to (names resolve through the task's DNS).
    pub target: String,
    /// What to send.
    #[arg(default_value = "hello")]
    pub message: String,
    /// How long to wait for the reply, e.g. 2s.
    #[arg(long, default_value = "2s")]
    pub timeout: String,
    /// Send from this source port (0: any), so that runs in a row are one UDP flow, as a
    /// long-lived client's would be (to watch a flow move when its task goes).
    #[arg(long, default_value_t = 0)]
    pub source_port: u16,
}

pub async fn demo(cmd: DemoCmd) -> Result<i32> {
    match cmd {
        DemoCmd::Vote(args) => {
            if let Some(port) = args.udp {
                let socket = tokio::net::UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], port)))
                    .await
                    .with_context(|| format!("failed to listen on UDP port {port}"))?;
                tokio::spawn(udp_echo(socket));
            }
            vote(args.port).await
        }
        DemoCmd::Client => {
            terminated().await;
            Ok(0)
        }
        DemoCmd::UdpSend(args) => udp_send(&args).await,
        DemoCmd::Load(args) => load(&args).await,
        DemoCmd::Walkthrough(args) => crate::walkthrough::run(args).await,
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// The page, with the line the seed's walkthrough looks for, and the address the request
/// came from (to see which load-balancing paths keep it).
pub fn page(id: &str, client: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html><head><title>Cats vs Dogs!</title></head>\n<body>\n<h3>Cats vs Dogs!</h3>\n\
         <p>Processed by container ID {id}</p>\n<p>Client address {client}</p>\n</body></html>\n"
    )
}

/// How long `vote` goes on serving after SIGTERM. shoal takes a task out of every path
/// before SIGTERM, but a client may have connected a moment before: its connection is in
/// the listen backlog, or accepted with its request not yet read, and a graceful shutdown
/// at once would reset the first and close the second unanswered (hyper closes connections
/// it sees idle). Serving a little longer, as a Kubernetes preStop sleep does, answers them.
const LAME_DUCK: std::time::Duration = std::time::Duration::from_millis(500);

async fn vote(port: u16) -> Result<i32> {
    let id = hostname();
    // GET routes answer HEAD too (axum drops the body).
    let app = Router::new().fallback(get(move |ConnectInfo(peer): ConnectInfo<SocketAddr>| {
        let body = page(&id, &peer.ip().to_canonical().to_string());
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
    // On SIGTERM: serve for LAME_DUCK more, then stop accepting, finish the requests in
    // flight and exit.
    let stop = async {
        terminated().await;
        println!("vote: SIGTERM; serving {LAME_DUCK:?} more, then stopping");
        tokio::time::sleep(LAME_DUCK).await;
    };
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stop)
    .await
    .context("the HTTP server failed")?;
    println!("vote: stopped");
    Ok(0)
}

/// Answers every datagram with the container id.
async fn udp_echo(socket: tokio::net::UdpSocket) {
    let reply = format!("Processed by container ID {}\n", hostname());
    let mut buf = [0u8; 2048];
    while let Ok((_, from)) = socket.recv_from(&mut buf).await {
        let _ = socket.send_to(reply.as_bytes(), from).await;
    }
}

async fn udp_send(args: &UdpSendArgs) -> Result<i32> {
    let timeout =
        shoal_types::time::parse_duration_ms(&args.timeout).map_err(anyhow::Error::msg)?;
    let target = tokio::net::lookup_host(&args.target)
        .await
        .with_context(|| format!("failed to resolve {}", args.target))?
        .find(|a| a.is_ipv4())
        .with_context(|| format!("{} has no IPv4 address", args.target))?;
    let socket = tokio::net::UdpSocket::bind(("0.0.0.0", args.source_port))
        .await
        .with_context(|| format!("failed to open a UDP socket on port {}", args.source_port))?;
    socket
        .send_to(args.message.as_bytes(), target)
        .await
        .with_context(|| format!("failed to send to {target}"))?;
    let mut buf = [0u8; 2048];
    match tokio::time::timeout(
        std::time::Duration::from_millis(timeout),
        socket.recv_from(&mut buf),
    )
    .await
    {
        Ok(Ok((n, _))) => {
            print!("{}", String::from_utf8_lossy(&buf[..n]));
            Ok(0)
        }
        Ok(Err(e)) => anyhow::bail!("no reply from {target}: {e}"),
        Err(_) => anyhow::bail!("no reply from {target} within {}", args.timeout),
    }
}

/// One request on a fresh connection; Err says why it failed (the step, or what came back
/// instead of a 200).
async fn one_request(target: SocketAddr) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(target)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: load\r\n\r\n")
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut reply = Vec::new();
    stream
        .read_to_end(&mut reply)
        .await
        .map_err(|e| format!("receive: {e}"))?;
    if reply.starts_with(b"HTTP/1.1 200") || reply.starts_with(b"HTTP/1.0 200") {
        Ok(())
    } else if reply.is_empty() {
        Err("the connection closed with no answer".into())
    } else {
        let line = String::from_utf8_lossy(&reply);
        Err(format!("answer {:?}", line.lines().next().unwrap_or("")))
    }
}

async fn load(args: &LoadArgs) -> Result<i32> {
    let duration =
        shoal_types::time::parse_duration_ms(&args.duration).map_err(anyhow::Error::msg)?;
    let target = tokio::net::lookup_host(&args.target)
        .await
        .with_context(|| format!("failed to resolve {}", args.target))?
        .find(|a| a.is_ipv4())
        .with_context(|| format!("{} has no IPv4 address", args.target))?;
    let end = std::time::Instant::now() + std::time::Duration::from_millis(duration);
    let (mut ok, mut failed) = (0u64, 0u64);
    let mut first_error = None;
    while std::time::Instant::now() < end {
        match tokio::time::timeout(std::time::Duration::from_secs(2), one_request(target)).await {
            Ok(Ok(())) => ok += 1,
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
            Err(_) => {
                failed += 1;
                first_error.get_or_insert("timed out".into());
            }
        }
    }
    println!(
        "requests {} failed {}{}",
        ok + failed,
        failed,
        first_error
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
    Ok(if failed == 0 { 0 } else { 1 })
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
    fn the_page_names_the_container_and_the_client() {
        let page = super::page("4f2c1a9e0b1d", "10.0.0.3");
        assert!(page.contains("Processed by container ID 4f2c1a9e0b1d<"));
        assert!(page.contains("Client address 10.0.0.3<"));
    }
}
