use clap::Parser;
#[tokio::main]
async fn main() {
    tracing_subscriber::fmt().with_env_filter("info").init();
    shoald::run(shoald::Args::parse()).await.unwrap();
}
