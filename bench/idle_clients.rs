//! `idle-clients`: opens N authenticated connections to a Postgres server
//! (or a pooler in front of one), runs `SELECT 1` once on each, and holds
//! them open, idle, so that the memory of whatever serves them can be
//! measured while they are held.
//!
//! Prints `connected K/N` every 1,000 connections and then one line
//! `ready OK failed FAILED` on stdout (the first error, if any, goes to
//! stderr), and holds the connections until stdin reaches end of file or a
//! SIGTERM/SIGINT arrives. Exits non-zero if any connection failed or was
//! lost while held.
//!
//! `bench/pool.sh` drives it; see there.

use anyhow::{bail, Context, Result};
use clap::Parser;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tokio_postgres::{Client, NoTls};

/// How often progress is printed (in connections).
const PROGRESS_EVERY: usize = 1_000;
/// Default time one connect + `SELECT 1` may take (a URL may set its own
/// `connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long closing the held connections may take before we stop waiting.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Holds many idle, authenticated client connections open.
#[derive(Debug, Parser)]
#[command(name = "idle-clients", about)]
struct Args {
    /// Postgres URL to connect to, with user and password
    /// (postgresql://user:password@host:port/dbname).
    #[arg(long)]
    url: String,
    /// How many connections to open and hold.
    #[arg(long)]
    count: usize,
    /// How many connection attempts may be in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Connect over TLS (sslmode=require, whatever the URL says), trusting
    /// the CA certificate in this PEM file.
    #[arg(long)]
    ca: Option<std::path::PathBuf>,
}

/// How the connections are made.
#[derive(Clone)]
enum Transport {
    Plain,
    Tls(tokio_postgres_rustls::MakeRustlsConnect),
}

/// A TLS connector trusting the CA in `pem_file`.
fn tls_connector(pem_file: &std::path::Path) -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
    let pem = std::fs::read(pem_file)
        .with_context(|| format!("reading the CA file {}", pem_file.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots
            .add(cert.context("a certificate in the CA file")?)
            .context("adding the CA certificate")?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// One held connection: the client and its connection task.
struct Held {
    _client: Client,
    task: JoinHandle<()>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let mut config: tokio_postgres::Config = args
        .url
        .parse()
        // The parser's messages name the option, never the URL (which
        // holds the password).
        .context("invalid --url")?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    let transport = match &args.ca {
        Some(ca) => {
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
            Transport::Tls(tls_connector(ca)?)
        }
        None => Transport::Plain,
    };

    let limit = raise_nofile_limit()?;
    // Each connection is one descriptor; leave some for the runtime.
    if (args.count as u64).saturating_add(64) > limit {
        eprintln!(
            "idle-clients: warning: the open-files limit is {limit}, \
             too low for {} connections (raise the hard limit: ulimit -Hn)",
            args.count
        );
    }

    eprintln!(
        "idle-clients: opening {} connections ({} at a time)",
        args.count, args.concurrency
    );
    let started = Instant::now();
    let lost = Arc::new(AtomicUsize::new(0));
    let first_lost: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let permits = Arc::new(Semaphore::new(args.concurrency));
    let mut attempts = JoinSet::new();
    for _ in 0..args.count {
        let permits = Arc::clone(&permits);
        let config = config.clone();
        let lost = Arc::clone(&lost);
        let first_lost = Arc::clone(&first_lost);
        let transport = transport.clone();
        attempts.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            open_one(&config, &transport, lost, first_lost).await
        });
    }

    let mut held: Vec<Held> = Vec::with_capacity(args.count);
    let mut failed = 0usize;
    let mut first_error: Option<String> = None;
    let mut next_progress = PROGRESS_EVERY;
    while let Some(joined) = attempts.join_next().await {
        let outcome = match joined {
            Ok(outcome) => outcome,
            Err(e) => Err(anyhow::Error::new(e).context("a connection task failed")),
        };
        match outcome {
            Ok(one) => {
                held.push(one);
                if held.len() == next_progress {
                    println!("connected {}/{}", held.len(), args.count);
                    next_progress += PROGRESS_EVERY;
                }
            }
            Err(e) => {
                failed += 1;
                if first_error.is_none() {
                    first_error = Some(format!("{e:#}"));
                }
            }
        }
    }
    let elapsed = started.elapsed();
    eprintln!(
        "idle-clients: {} connected, {failed} failed in {:.1}s",
        held.len(),
        elapsed.as_secs_f64()
    );
    if let Some(e) = &first_error {
        eprintln!("idle-clients: first error: {e}");
    }
    println!("ready {} failed {failed}", held.len());

    eprintln!("idle-clients: holding the connections until end of input or SIGTERM/SIGINT");
    wait_for_release().await?;

    let still_open = held.len().saturating_sub(lost.load(Ordering::Relaxed));
    eprintln!("idle-clients: closing {still_open} connections");
    let tasks: Vec<JoinHandle<()>> = held
        .into_iter()
        .map(|one| one.task) // dropping the client makes its task terminate
        .collect();
    let closing = async {
        for task in tasks {
            // A task that panicked has nothing left to close.
            let _ = task.await;
        }
    };
    if tokio::time::timeout(CLOSE_TIMEOUT, closing).await.is_err() {
        eprintln!(
            "idle-clients: warning: connections still closing after {}s; exiting anyway",
            CLOSE_TIMEOUT.as_secs()
        );
    }

    let lost = lost.load(Ordering::Relaxed);
    if lost > 0 {
        let first = first_lost
            .lock()
            .ok()
            .and_then(|guard| guard.clone())
            .unwrap_or_default();
        eprintln!(
            "idle-clients: {lost} connection(s) were closed by the server while held: {first}"
        );
    }
    if failed > 0 || lost > 0 {
        // An expected outcome, not a bug: no backtrace.
        eprintln!(
            "idle-clients: {failed} of {} connections failed, {lost} lost while held",
            args.count
        );
        std::process::exit(1);
    }
    Ok(())
}

/// Connects, runs `SELECT 1`, and returns the open connection. A connection
/// that ends before we close it is counted in `lost`.
async fn open_one(
    config: &tokio_postgres::Config,
    transport: &Transport,
    lost: Arc<AtomicUsize>,
    first_lost: Arc<Mutex<Option<String>>>,
) -> Result<Held> {
    let (client, task) = match transport {
        Transport::Plain => {
            let (client, connection) = config.connect(NoTls).await.context("connect")?;
            (client, watch(connection, lost, first_lost))
        }
        Transport::Tls(tls) => {
            let (client, connection) = config.connect(tls.clone()).await.context("connect")?;
            (client, watch(connection, lost, first_lost))
        }
    };
    let rows = client.simple_query("SELECT 1").await.context("SELECT 1")?;
    if rows.is_empty() {
        bail!("SELECT 1 returned nothing");
    }
    Ok(Held {
        _client: client,
        task,
    })
}

/// Drives a connection in a task of its own, counting it in `lost` if it
/// ends with an error before we close it.
fn watch<F>(
    connection: F,
    lost: Arc<AtomicUsize>,
    first_lost: Arc<Mutex<Option<String>>>,
) -> JoinHandle<()>
where
    F: std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        let ended = connection.await;
        // `Ok` is also how a connection ends when we drop the client, so
        // only an error means it was lost early.
        if let Err(e) = ended {
            lost.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut first) = first_lost.lock() {
                if first.is_none() {
                    *first = Some(e.to_string());
                }
            }
        }
    })
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the new limit.
fn raise_nofile_limit() -> Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) =
        getrlimit(Resource::RLIMIT_NOFILE).context("reading the open-files limit")?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
            .with_context(|| format!("raising the open-files limit from {soft} to {hard}"))?;
    }
    Ok(hard)
}

/// Returns when stdin reaches end of file or on SIGTERM/SIGINT.
async fn wait_for_release() -> Result<()> {
    let mut term = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    let stdin_eof = async {
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 4096];
        loop {
            match stdin.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        _ = stdin_eof => eprintln!("idle-clients: end of input"),
        _ = term.recv() => eprintln!("idle-clients: SIGTERM"),
        _ = int.recv() => eprintln!("idle-clients: SIGINT"),
    }
    Ok(())
}
