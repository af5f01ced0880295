//! `ogel cluster status` (a client of `GET /v1/cluster`) and `ogel cluster
//! import` (moves a single gateway's embedded catalog into etcd once; run
//! with that gateway stopped, on its machine).

use super::ApiClient;
use crate::api::ClusterStatus;
use crate::catalog::etcd::EtcdStore;
use crate::catalog::Catalog;
use anyhow::{anyhow, bail};
use clap::Subcommand;
use reqwest::Method;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// `ogel cluster …`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Nodes, the leader and its generation, each node's computes and clients.
    Status,
    /// Copy this gateway's embedded catalog (<data-dir>/catalog.redb) into
    /// etcd, once, before its first `ogel up --etcd`; its databases are
    /// then served by NODE_NAME. Stop the gateway first.
    Import {
        /// etcd client URLs (comma-separated).
        #[arg(long, value_delimiter = ',', required = true)]
        etcd: Vec<String>,
        /// The name this gateway will run under (`ogel up --node-name`).
        #[arg(long)]
        node_name: String,
        /// Key prefix in etcd (`[cluster] prefix`).
        #[arg(long, default_value = "/ogel")]
        prefix: String,
    },
}

/// Runs a `status` against the API.
pub(super) async fn status(api: &ApiClient) -> anyhow::Result<()> {
    let status: ClusterStatus = api.call(Method::GET, "/v1/cluster", None).await?;
    let view = &status.view;
    println!(
        "node {}  role {:?}  leader {}  generation {}  etcd {}",
        view.node,
        view.role,
        view.leader.as_deref().unwrap_or("-"),
        view.generation
            .map_or_else(|| "-".to_string(), |g| g.to_string()),
        if view.etcd_reachable {
            "reachable"
        } else {
            "UNREACHABLE (failsafe: clients served, no control-plane writes)"
        },
    );
    if view.fenced_writes > 0 {
        println!(
            "late leader beats refused by the fence: {}",
            view.fenced_writes
        );
    }
    println!(
        "{:<16} {:<24} {:<24} {:>8} {:>8}",
        "NODE", "POSTGRES", "API", "COMPUTES", "CLIENTS"
    );
    for node in &view.nodes {
        println!(
            "{:<16} {:<24} {:<24} {:>8} {:>8}",
            node.name, node.postgres, node.api, node.computes_running, node.clients
        );
    }
    Ok(())
}

/// `ogel cluster import`: refuses when etcd already holds a catalog.
pub(super) fn import(
    data_dir: &Path,
    etcd: &[String],
    node_name: &str,
    prefix: &str,
) -> anyhow::Result<()> {
    let path = data_dir.join("catalog.redb");
    if !path.exists() {
        bail!(
            "no embedded catalog at {}; pass the gateway's --data-dir",
            path.display()
        );
    }
    let local = Catalog::open(&path).map_err(|e| {
        anyhow!(
            "{}: {e}; is its gateway still running? stop it first",
            path.display()
        )
    })?;
    let store = EtcdStore::connect(etcd, prefix, Duration::from_secs(5))
        .map_err(|e| anyhow!("{}", crate::error::chain(&e)))?;
    let shared = Catalog::over(Arc::new(store));
    if !shared.is_empty()? {
        bail!(
            "etcd already holds a catalog under {prefix}; import only once, into an empty prefix"
        );
    }
    crate::cluster::backend_key::propose(&shared, &data_dir.join("native"))?;
    let written = local.copy_into(&shared, node_name)?;
    println!(
        "imported {written} records from {} into etcd ({prefix}); start this gateway with `ogel up --etcd {} --node-name {node_name}`",
        path.display(),
        etcd.join(",")
    );
    Ok(())
}
