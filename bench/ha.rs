//! `ha-bench`: leader failover of a 3-gateway cluster on a 3-member etcd
//! cluster, all on loopback (bench/ha.sh runs it). Each round kills the
//! leader with SIGKILL and times, on the survivors' `GET /v1/cluster`
//! (polled every 10 ms), how long until one of them leads with a newer
//! generation; then starts the killed gateway again on its data dir and
//! name. Meanwhile one client per surviving gateway runs `SELECT 1` on a
//! database that gateway serves, in a loop, and every error is counted
//! (the goal: none). Prints p50/p99/max beside Patroni's documented
//! defaults (ttl 30 s, loop_wait 10 s).

use anyhow::{bail, Context};
use clap::Parser;
use ogel_e2e::etcd::EtcdCluster;
use ogel_e2e::Gateway;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Leader kills.
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// `[cluster] lease_ttl`, seconds.
    #[arg(long, default_value_t = 1.0)]
    lease_ttl: f64,
}

struct Node {
    name: String,
    gateway: Gateway,
    /// Its database's owner password.
    password: String,
}

impl Node {
    /// Its database on this gateway only (a restarted gateway listens on a
    /// new port): the client measures it, not the URL's other gateways.
    fn url(&self) -> String {
        format!(
            "postgresql://db_{0}_owner:{1}@{2}/db_{0}",
            self.name, self.password, self.gateway.pg_addr
        )
    }
}

fn env_for(etcd: &EtcdCluster, name: &str, ttl: f64) -> Vec<(String, String)> {
    let mut env = etcd.gateway_env(name, Duration::from_secs_f64(ttl));
    env.push(("OGEL_LOG".into(), "warn".into()));
    env
}

async fn start(
    etcd: &EtcdCluster,
    name: &str,
    ttl: f64,
    data_dir: &std::path::Path,
) -> anyhow::Result<Gateway> {
    let env = env_for(etcd, name, ttl);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Gateway::start_in(data_dir, &env).await
}

async fn view(gw: &Gateway) -> Option<serde_json::Value> {
    let (status, body) = gw.api("GET", "/v1/cluster", None).await;
    (status == 200).then_some(body)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    eprintln!("ha-bench: a 3-member etcd cluster and 3 gateways on loopback");
    let etcd = EtcdCluster::start(3).await;
    let root = tempfile::Builder::new()
        .prefix("ogel-ha-")
        .tempdir_in("/tmp")?;
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        let dir = root.path().join(name).join("data");
        std::fs::create_dir_all(&dir)?;
        let gateway = start(&etcd, name, args.lease_ttl, &dir).await?;
        let db = format!("db_{name}");
        let url = gateway.create_db(&db, Some(0)).await;
        nodes.push(Node {
            name: name.to_string(),
            gateway,
            password: ogel_e2e::password_of(&url).to_string(),
        });
    }
    let mut times = Vec::new();
    let mut errors_total = 0u64;
    for round in 0..args.rounds {
        // The leader, as the first node sees it.
        let mut leader = None;
        let mut generation = 0;
        for _ in 0..1000 {
            if let Some(v) = view(&nodes[0].gateway).await {
                if let (Some(l), Some(g)) = (v["leader"].as_str(), v["generation"].as_i64()) {
                    if nodes.iter().all(|n| n.gateway.pid() > 0) {
                        leader = Some(l.to_string());
                        generation = g;
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let Some(leader) = leader else {
            bail!("round {round}: no leader");
        };
        let killed = nodes
            .iter()
            .position(|n| n.name == leader)
            .context("the leader is one of ours")?;
        // Clients on the survivors, counting errors while it fails over.
        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(AtomicU64::new(0));
        let mut clients = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            if i == killed {
                continue;
            }
            let (url, stop, errors) = (node.url(), stop.clone(), errors.clone());
            let name = node.name.clone();
            clients.push(tokio::spawn(async move {
                let report = |e: &dyn std::fmt::Display| {
                    if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("    client error on {name}: {e}");
                    }
                };
                let client = match ogel_e2e::connect(&url).await {
                    Ok(c) => c,
                    Err(e) => {
                        report(&ogel_e2e::error_text(&e));
                        return;
                    }
                };
                while !stop.load(Ordering::Relaxed) {
                    if let Err(e) = client.simple_query("SELECT 1").await {
                        report(&ogel_e2e::error_text(&e));
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let killed_at = Instant::now();
        nodes[killed].gateway.kill9();
        let survivor = if killed == 0 { 1 } else { 0 };
        let elapsed = loop {
            if let Some(v) = view(&nodes[survivor].gateway).await {
                if v["generation"].as_i64().is_some_and(|g| g > generation)
                    && v["leader"].as_str().is_some_and(|l| l != leader)
                {
                    break killed_at.elapsed();
                }
            }
            if killed_at.elapsed() > Duration::from_secs(60) {
                bail!("round {round}: no new leader within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            let _ = c.await;
        }
        let errs = errors.load(Ordering::Relaxed);
        errors_total += errs;
        times.push(elapsed.as_secs_f64());
        eprintln!(
            "round {:>2}: killed leader {leader} (generation {generation}); new leader after {:.0} ms; client errors on the survivors {errs}",
            round + 1,
            elapsed.as_secs_f64() * 1000.0
        );
        // The killed one back, on its data dir (its computes adopted).
        let dir = nodes[killed].gateway.data_dir.clone();
        let name = nodes[killed].name.clone();
        let mut restarted = None;
        for _ in 0..100 {
            match start(&etcd, &name, args.lease_ttl, &dir).await {
                Ok(gw) => {
                    restarted = Some(gw);
                    break;
                }
                // Its name is free once its old lease has expired.
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        nodes[killed].gateway = restarted.context("the killed gateway did not come back")?;
    }
    times.sort_by(f64::total_cmp);
    let (p50, p99, max) = (
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times[times.len() - 1],
    );
    println!();
    println!(
        "leader failover over {} SIGKILLs (lease_ttl {} s, etcd 3 members, 3 gateways, loopback)",
        times.len(),
        args.lease_ttl
    );
    println!("{:<44} {:>10} {:>10} {:>10}", "", "p50", "p99", "max");
    println!(
        "{:<44} {:>9.2}s {:>9.2}s {:>9.2}s",
        "ogel: kill -9 → new leader", p50, p99, max
    );
    // Patroni's defaults: the leader key lives ttl (30 s) after its last
    // update; updates every loop_wait (10 s): it expires 20–30 s after the
    // kill, and a replica takes over on its next loop (≤ 10 s later).
    println!(
        "{:<44} {:>10} {:>10} {:>10}",
        "Patroni defaults (ttl 30 s, loop_wait 10 s)", "20–40 s", "", ""
    );
    println!(
        "ogel p50 ÷ Patroni's ttl (30 s): {:.3}; goal ≤ 2 s: {}",
        p50 / 30.0,
        if p99 <= 2.0 { "met" } else { "not met" }
    );
    println!("client errors on surviving gateways: {errors_total} (goal 0)");
    Ok(())
}
