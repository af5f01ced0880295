//! Warm compute: keeping computes running before clients need them.
//!
//! - `min_warm`: a database's first N computes (main, then branches) are
//!   never left suspended — the keeper wakes them again.
//! - Pre-wake: a [`Predictor`] learns when each compute's clients usually
//!   arrive after an idle spell (arrival times modulo a period, a day by
//!   default) and wakes the compute `lead` ahead of the next expected
//!   arrival once at least `min_history` earlier periods agree. Each
//!   pre-wake is scored: a hit if a client arrives before the expected time
//!   plus `lead`, a miss otherwise.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Arrivals kept per compute.
const HISTORY_MAX: usize = 64;

/// How the predictor works.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PredictorSettings {
    /// The rhythm clients follow (a day by default).
    pub period: Duration,
    /// How early to wake, and how far from the expected time an arrival
    /// still counts (as agreeing history, or as a hit).
    pub lead: Duration,
    /// Earlier periods that must show an arrival at that time.
    pub min_history: usize,
}

impl Default for PredictorSettings {
    fn default() -> Self {
        PredictorSettings {
            period: Duration::from_secs(24 * 3600),
            lead: Duration::from_secs(60),
            min_history: 2,
        }
    }
}

/// Pre-wake counters of one compute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrewakeStats {
    /// Pre-wakes done.
    pub prewakes: u64,
    /// Followed by a client in time.
    pub hits: u64,
    /// Not followed by a client in time.
    pub misses: u64,
}

#[derive(Default)]
struct Compute {
    /// Arrival times (Unix ms) after idle spells, oldest first.
    arrivals: VecDeque<u64>,
    /// A pre-wake: when it was made, and until when a client may come.
    pending: Option<(u64, u64)>,
    /// Expected arrival of the last pre-wake (never pre-wake twice for one).
    last_target: u64,
    /// Last arrival of any client (Unix ms).
    last_seen: u64,
}

/// Learns arrival times and says which computes to wake now.
pub struct Predictor {
    settings: PredictorSettings,
    computes: Mutex<HashMap<String, Compute>>,
    prewakes: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    per_compute: Mutex<HashMap<String, PrewakeStats>>,
}

fn now_ms() -> u64 {
    ogel_plugin_kit::time::unix_millis()
}

impl Predictor {
    /// An empty predictor.
    pub fn new(settings: PredictorSettings) -> Self {
        Predictor {
            settings,
            computes: Mutex::new(HashMap::new()),
            prewakes: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            per_compute: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Compute>> {
        self.computes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A client connected to `name`; `after_idle` when no other client was
    /// connected (the arrivals the predictor learns from).
    pub fn arrived(&self, name: &str, after_idle: bool) {
        self.arrived_at(name, after_idle, now_ms());
    }

    fn arrived_at(&self, name: &str, after_idle: bool, at: u64) {
        let mut computes = self.lock();
        let c = computes.entry(name.to_string()).or_default();
        c.last_seen = at;
        if after_idle {
            c.arrivals.push_back(at);
            if c.arrivals.len() > HISTORY_MAX {
                c.arrivals.pop_front();
            }
        }
    }

    /// Computes to wake now; also scores pre-wakes whose time has passed.
    pub fn due(&self) -> Vec<String> {
        self.due_at(now_ms())
    }

    fn due_at(&self, now: u64) -> Vec<String> {
        let period = self.settings.period.as_millis().max(1) as u64;
        let lead = self.settings.lead.as_millis() as u64;
        let mut wake = Vec::new();
        let mut computes = self.lock();
        for (name, c) in computes.iter_mut() {
            if let Some((woken_at, deadline)) = c.pending {
                if (woken_at..=deadline).contains(&c.last_seen) {
                    self.score(name, true);
                    c.pending = None;
                } else if now > deadline {
                    self.score(name, false);
                    c.pending = None;
                }
            }
            if c.pending.is_some() {
                continue;
            }
            // The next expected arrival within `lead` from now that enough
            // distinct earlier periods agree on.
            for &a in c.arrivals.iter().rev() {
                if a >= now {
                    continue;
                }
                let k = (now - a).div_ceil(period);
                let next = a + k * period;
                if next <= now || next - now > lead || next.abs_diff(c.last_target) < period / 2 {
                    continue;
                }
                let periods: std::collections::HashSet<u64> = c
                    .arrivals
                    .iter()
                    .filter(|&&b| {
                        let phase = (next % period) as i64 - (b % period) as i64;
                        let d = phase
                            .rem_euclid(period as i64)
                            .min((-phase).rem_euclid(period as i64));
                        (d as u64) <= lead
                    })
                    .map(|&b| b / period)
                    .collect();
                if periods.len() >= self.settings.min_history {
                    c.last_target = next;
                    c.pending = Some((now, next + lead));
                    wake.push(name.clone());
                    break;
                }
            }
        }
        drop(computes);
        for name in &wake {
            self.prewakes.fetch_add(1, Ordering::Relaxed);
            self.per_compute
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(name.clone())
                .or_default()
                .prewakes += 1;
        }
        wake
    }

    fn score(&self, name: &str, hit: bool) {
        let counter = if hit { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        let mut stats = self.per_compute.lock().unwrap_or_else(|p| p.into_inner());
        let s = stats.entry(name.to_string()).or_default();
        if hit {
            s.hits += 1;
        } else {
            s.misses += 1;
        }
    }

    /// Counters per compute.
    pub fn stats(&self) -> Vec<(String, PrewakeStats)> {
        let mut list: Vec<_> = self
            .per_compute
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list
    }
}

/// Runs until `shutdown`: every second, wakes what `keep` lists (min_warm)
/// and what the predictor expects clients for. `wake` is a no-op for a
/// compute already running.
pub async fn run<K, W, Fut, E>(
    predictor: std::sync::Arc<Predictor>,
    keep: K,
    wake: W,
    prewake: bool,
    shutdown: impl std::future::Future<Output = ()>,
) where
    K: Fn() -> Vec<String>,
    W: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    tokio::pin!(shutdown);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = ticker.tick() => {}
        }
        let due = if prewake { predictor.due() } else { Vec::new() };
        for name in due {
            tracing::info!(compute = %name, "pre-waking ahead of its clients' usual arrival");
            if let Err(e) = wake(name.clone()).await {
                tracing::warn!(compute = %name, error = %e, "pre-wake failed");
            }
        }
        for name in keep() {
            if let Err(e) = wake(name.clone()).await {
                tracing::warn!(compute = %name, error = %e, "keeping a warm compute failed; will retry");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn predictor() -> Predictor {
        Predictor::new(PredictorSettings {
            period: Duration::from_secs(100),
            lead: Duration::from_secs(5),
            min_history: 2,
        })
    }

    #[test]
    fn wakes_ahead_of_a_habit_once_and_scores_it() {
        let p = predictor();
        // Arrivals at phase 50 in periods 0 and 1.
        p.arrived_at("shop", true, 50_000);
        p.arrived_at("shop", true, 150_500);
        assert!(p.due_at(200_000).is_empty(), "too early");
        assert_eq!(
            p.due_at(246_000),
            vec!["shop".to_string()],
            "4 s before phase 50"
        );
        assert!(p.due_at(247_000).is_empty(), "once per expected arrival");
        p.arrived_at("shop", true, 250_200);
        assert!(p.due_at(251_000).is_empty());
        assert_eq!(
            p.stats()[0].1,
            PrewakeStats {
                prewakes: 1,
                hits: 1,
                misses: 0
            }
        );
    }

    #[test]
    fn one_period_is_not_a_habit_and_no_show_is_a_miss() {
        let p = predictor();
        p.arrived_at("a", true, 50_000);
        assert!(p.due_at(146_000).is_empty(), "a single earlier arrival");
        p.arrived_at("b", true, 10_000);
        p.arrived_at("b", true, 110_000);
        p.arrived_at("b", false, 130_000); // not after idle: not learned
        assert_eq!(p.due_at(206_000), vec!["b".to_string()]);
        assert!(p.due_at(216_000).is_empty());
        assert_eq!(
            p.stats()[0].1,
            PrewakeStats {
                prewakes: 1,
                hits: 0,
                misses: 1
            }
        );
    }
}
