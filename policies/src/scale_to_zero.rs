//! Scale to zero: a loop that suspends every compute whose database has had
//! no client for its `suspend_after`.

use crate::lifecycle::Lifecycle;
use std::sync::Arc;
use std::time::Duration;

/// How often idle computes are looked for. Suspend happens at most this
/// much later than `suspend_after`.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// Runs until `shutdown` resolves. `policies` lists each database with the
/// lifecycle of its backend and its idle window; `None` means never suspend.
pub async fn run<F>(policies: F, shutdown: impl std::future::Future<Output = ()>)
where
    F: Fn() -> Vec<(Arc<Lifecycle>, String, Option<Duration>)>,
{
    tokio::pin!(shutdown);
    let mut ticker = tokio::time::interval(CHECK_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = ticker.tick() => {}
        }
        for (lifecycle, db, suspend_after) in policies() {
            let Some(idle) = suspend_after else { continue };
            if let Err(e) = lifecycle.suspend_if_idle(&db, idle).await {
                tracing::warn!(database = %db, error = %e, "idle suspend failed; will retry");
            }
        }
    }
}
