//! `neon-emulator`: runs the Neon control-plane emulator until SIGTERM or
//! SIGINT, printing one JSON line on stdout when ready
//! (`{"api": ..., "emulator": ..., "proxy": ..., "ca": ..., "domain": ...}`).
//! Logs go to stderr (`RUST_LOG`, default `info`).

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio::signal::unix::{signal, SignalKind};

/// A Neon API v2 emulator with real PostgreSQL behind it.
#[derive(Parser, Debug)]
#[command(name = "neon-emulator", version)]
struct Args {
    /// Where clusters and the CA go.
    #[arg(long)]
    data_dir: PathBuf,
    /// Address of the HTTP API.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Address of the Postgres (SNI) proxy.
    #[arg(long, default_value = "127.0.0.1:0")]
    proxy_listen: SocketAddr,
    /// Accepted API key (repeatable; also NEON_EMULATOR_API_KEY).
    #[arg(long = "api-key", env = "NEON_EMULATOR_API_KEY", required = true)]
    api_keys: Vec<String>,
    /// Endpoint hosts are `<endpoint_id>.<domain>`.
    #[arg(long, default_value = "localtest.neon")]
    domain: String,
    /// Directory holding `postgres` and `initdb`.
    #[arg(long)]
    pg_bin: Option<PathBuf>,
    /// OS user computes run as when run as root.
    #[arg(long, default_value = "ogel")]
    os_user: String,
    /// What `suspend_timeout_seconds: 0` means.
    #[arg(long, default_value_t = 300)]
    default_suspend_timeout_seconds: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut config = ogel_neon_emulator::Config::new(args.data_dir, "");
    config.listen = args.listen;
    config.proxy_listen = args.proxy_listen;
    config.api_keys = args.api_keys;
    config.domain = args.domain;
    config.pg_bin = args.pg_bin;
    config.os_user = args.os_user;
    config.default_suspend_timeout_seconds = args.default_suspend_timeout_seconds;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let emulator = ogel_neon_emulator::serve(config).await?;
    println!("{}", emulator.ready_line());
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("stopping: every compute is shut down");
    emulator.shutdown().await;
    Ok(())
}
