//! `ogel`: the OgelBase gateway binary. `ogel up` runs the gateway
//! (Postgres wire front end + HTTP API); the other commands are API clients.
//!
//! A connection's path through the modules: `frontend` (accept, negotiate)
//! → `auth` (SCRAM against the `catalog`'s role store) → `service` and
//! `ogel_policies::Lifecycle` (wake the compute) → `compute` (log in to it)
//! → `pooler` (a server connection per transaction or session, relayed);
//! `cancel` forwards CancelRequests; `admin` is the console database.

mod access;
mod admin;
mod api;
mod auth;
mod backends;
mod branches;
mod cancel;
mod catalog;
mod cli;
mod client_stream;
mod compute;
mod config;
mod conformance;
mod error;
mod frontend;
mod limits;
mod metrics;
mod pooler;
mod protocol;
mod server;
mod server_stream;
mod service;
mod tls;
mod tokens;

use clap::Parser;
use cli::{Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OGEL_LOG")
                .unwrap_or_else(|_| "ogel=info,ogel_policies=info,ogel_backend_native=info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ogel: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Up { listen, config } => {
                let overrides = config::Overrides {
                    data_dir: cli.data_dir.clone(),
                    listen: listen.clone(),
                    api: cli.api.clone(),
                };
                let loaded = config::Config::load(config, &overrides)
                    .map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
                server::up(loaded, Some((config.clone(), overrides))).await
            }
            Command::Plugins(cli::PluginsCommand::Check { file, config }) => {
                conformance::check(file, config.as_deref()).await
            }
            _ => cli::run_client(&cli).await,
        }
    });
    // A plugin call that hung holds a blocking thread forever; do not wait
    // for it at exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ogel: {e:#}");
            ExitCode::FAILURE
        }
    }
}
