//! Time to live: a loop that deletes what has expired (preview branches).
//! Expiry times are absolute and kept by the caller (the gateway's
//! catalog), so a restart neither forgets nor postpones them: the first
//! pass runs at start-up.

use std::future::Future;
use std::time::Duration;

/// How often expired items are looked for.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Runs until `shutdown` resolves: every `interval`, `delete`s each item
/// `expired` returns. A failed delete is logged and retried next pass.
pub async fn run<T, E, D, Fut, Error>(
    interval: Duration,
    expired: E,
    delete: D,
    shutdown: impl Future<Output = ()>,
) where
    T: std::fmt::Debug,
    E: Fn() -> Vec<T>,
    D: Fn(T) -> Fut,
    Fut: Future<Output = Result<(), Error>>,
    Error: std::fmt::Display,
{
    tokio::pin!(shutdown);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = ticker.tick() => {}
        }
        for item in expired() {
            let label = format!("{item:?}");
            match delete(item).await {
                Ok(()) => tracing::info!(item = %label, "expired: deleted"),
                Err(e) => {
                    tracing::warn!(item = %label, error = %e, "deleting an expired item failed; will retry")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn deletes_what_expired_and_retries_failures() {
        let items = Arc::new(Mutex::new(vec![1, 2, 3]));
        let attempts = Arc::new(Mutex::new(0));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let list = items.clone();
        let tries = attempts.clone();
        let task = tokio::spawn(run(
            Duration::from_millis(10),
            move || {
                list.lock()
                    .unwrap()
                    .iter()
                    .copied()
                    .filter(|i| *i != 3)
                    .collect::<Vec<_>>()
            },
            move |i: i32| {
                let items = items.clone();
                let tries = tries.clone();
                async move {
                    let mut n = tries.lock().unwrap();
                    *n += 1;
                    if i == 2 && *n < 3 {
                        return Err("busy".to_string());
                    }
                    items.lock().unwrap().retain(|x| *x != i);
                    Ok(())
                }
            },
            async {
                let _ = rx.await;
            },
        ));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = tx.send(());
        task.await.unwrap();
        assert!(
            *attempts.lock().unwrap() >= 3,
            "the failed delete was retried"
        );
        // (3 never expired; 1 and 2 were deleted)
    }
}
