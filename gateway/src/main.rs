//! `ogel`: the OgelBase gateway binary. It parses the command line and calls
//! into the `ogel` library: `ogel up` runs the gateway (`app::up`), `ogel
//! plugins check` the conformance kit, the other commands are API clients.

use clap::Parser;
use ogel::cli::{self, conformance, Cli, Command};
use ogel::{app, config};
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
            Command::Up {
                listen,
                config,
                etcd,
                node_name,
                advertise,
            } => {
                let overrides = config::Overrides {
                    data_dir: cli.data_dir.clone(),
                    listen: listen.clone(),
                    api: cli.api.clone(),
                    cluster: config::ClusterOverrides {
                        etcd: etcd.clone(),
                        node_name: node_name.clone(),
                        advertise: advertise.clone(),
                    },
                };
                let loaded = config::Config::load(config, &overrides)
                    .map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
                app::up(loaded, Some((config.clone(), overrides))).await
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
