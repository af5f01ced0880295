//! `ogel`: the OgelBase gateway binary. It parses the command line and calls
//! into the `ogel` library: `ogel up` runs the gateway (`app::up`), `ogel
//! plugins check` the conformance kit, the other commands are API clients.

use clap::Parser;
use ogel::cli::{self, conformance, Cli, Command};
use ogel::{app, config};
use std::process::ExitCode;

/// mimalloc rather than glibc's malloc: each size class has pages of its
/// own and freed pages go back to the system, where glibc's arenas keep
/// the holes a login's short-lived buffers leave between long-lived client
/// state (measured in `bench/pool.sh`: 10,000 idle clients held 9.5 MB in
/// 21 MB of glibc arenas).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Runs when a runtime thread goes idle: at most once a second per thread,
/// mimalloc gives back the pages this thread freed. It would otherwise do
/// so only on the thread's later allocations, so a burst (10,000 logins,
/// each task freed when its client is parked) would stay resident.
fn give_back_freed_memory() {
    thread_local! {
        static LAST: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
    }
    LAST.with(|last| {
        let now = std::time::Instant::now();
        if last
            .get()
            .is_some_and(|t| now.duration_since(t) < std::time::Duration::from_secs(1))
        {
            return;
        }
        last.set(Some(now));
        // SAFETY: `mi_collect` takes no pointers and may be called on any
        // thread at any time; `false` only frees what is already unused.
        unsafe { libmimalloc_sys::mi_collect(false) };
    });
}

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
        .on_thread_park(give_back_freed_memory)
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
