//! `shoald`: parse flags, set up logging, run the daemon.
use clap::Parser;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SHOAL_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = shoald::Args::parse();
    if let Err(e) = shoald::run(args).await {
        eprintln!("shoald: {e:#}");
        std::process::exit(1);
    }
}
