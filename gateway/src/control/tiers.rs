//! Tiers as the gateway drives them: `ogel db tier NAME hot|warm|cold` by
//! hand, and the `[tiers]` policy that moves a suspended database with no
//! connections down after `warm_after` / `cold_after`. A move suspends the
//! compute (its sessions end, as with `ogel db suspend`) and holds it
//! exclusively, so no client is handed it midway; a client that connects to
//! a warm or cold database waits (up to `tiers.restore_timeout`) while the
//! backend brings it back.

use super::databases::Databases;
use super::operations::Operations;
use crate::config::TiersConfig;
use crate::error::ControlError;
use crate::names::{self, compute_name};
use crate::pool::Pools;
use ogel_plugin_sdk::Tier;
use std::sync::Arc;
use std::time::Duration;

/// The tiers service.
pub struct Tiers {
    databases: Arc<Databases>,
    pools: Arc<Pools>,
    operations: Arc<Operations>,
}

impl Tiers {
    /// The service.
    pub fn new(databases: Arc<Databases>, pools: Arc<Pools>, operations: Arc<Operations>) -> Self {
        Tiers {
            databases,
            pools,
            operations,
        }
    }

    /// The tier of a branch's data (`None`: the backend has no tiers).
    pub async fn tier(&self, database: &str, branch: &str) -> Result<Option<Tier>, ControlError> {
        let record = self.databases.ready(database)?;
        let lifecycle = self.databases.lifecycle(&record)?;
        let name = compute_name(database, branch);
        Ok(lifecycle.backend().tier(&name.as_str().into()).await?)
    }

    /// Moves a branch's data to `tier`, suspending its compute first.
    pub async fn set_tier(
        &self,
        database: &str,
        branch: &str,
        tier: Tier,
    ) -> Result<(), ControlError> {
        names::validate_branch(branch)?;
        let record = self.databases.ready(database)?;
        if branch != "main" && !self.databases.branch_exists(database, branch) {
            return Err(ControlError::NotFound(format!(
                "database \"{database}\" has no branch \"{branch}\"; see `ogel branch list {database}`"
            )));
        }
        let lifecycle = self.databases.lifecycle(&record)?;
        let name = compute_name(database, branch);
        let kind = match tier {
            Tier::Hot => "move to hot",
            Tier::Warm => "move to warm",
            Tier::Cold => "move to cold",
        };
        let _op = self.operations.start(&name, kind);
        if tier != Tier::Hot {
            lifecycle.suspend(&name).await?;
            for pool in self.pools.find_all(&name) {
                pool.pool.close_idle();
            }
        }
        let compute = name.clone();
        lifecycle
            .exclusive(&name, "move tiers", move |backend| async move {
                backend.set_tier(&compute.as_str().into(), tier).await
            })
            .await?;
        Ok(())
    }

    /// Applies `config`'s policy every `check` until `stop` resolves: a
    /// database (main branch) suspended and without clients for
    /// `cold_after` goes cold, for `warm_after` warm. Failures are logged
    /// and tried again at the next check.
    pub async fn run_policy(
        self: Arc<Self>,
        config: TiersConfig,
        check: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(check) => {}
            }
            // Computes kept warm (`min_warm`) or never suspended are left hot.
            for (lifecycle, name, window) in self.databases.idle_policies() {
                if window.is_none() {
                    continue;
                }
                let compute = names::split_compute(&name);
                let Some(fence) = self
                    .databases
                    .ready(&compute.database)
                    .ok()
                    .and_then(|record| self.databases.acts_for(&record))
                else {
                    continue;
                };
                let policy = config.policy(&compute.database);
                if policy.warm_after.is_none() && policy.cold_after.is_none() {
                    continue;
                }
                let stats = lifecycle.stats(&name);
                if stats.active_clients > 0 {
                    continue;
                }
                let idle = Duration::from_secs(stats.idle_secs);
                let due = if policy.cold_after.is_some_and(|d| idle >= d) {
                    Tier::Cold
                } else if policy.warm_after.is_some_and(|d| idle >= d) {
                    Tier::Warm
                } else {
                    continue;
                };
                let current = match lifecycle.backend().tier(&name.as_str().into()).await {
                    Ok(Some(tier)) => tier,
                    _ => continue, // no tiers, or unknown right now
                };
                // Down only: a cold one is not warmed by the policy.
                let rank = |t: Tier| match t {
                    Tier::Hot => 0,
                    Tier::Warm => 1,
                    Tier::Cold => 2,
                };
                if rank(current) >= rank(due) {
                    continue;
                }
                let moved = self.set_tier(&compute.database, &compute.branch, due);
                match crate::cluster::fenced(fence, moved).await {
                    Ok(()) => {
                        tracing::info!(compute = %name, tier = %due, idle_secs = stats.idle_secs, "moved down by the tier policy")
                    }
                    Err(e) => {
                        tracing::warn!(compute = %name, tier = %due, error = %e, "tier policy: the move failed; retried at the next check")
                    }
                }
            }
        }
    }
}
