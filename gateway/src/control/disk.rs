//! The disk under the gateway's data directory (where native computes,
//! their standbys and local snapshots live): its use is a gauge in
//! `/metrics` (`ogel_data_disk_used_ratio`), and at 90% or more a warning
//! is logged — on crossing, then every five minutes while it stays — and
//! an all-clear once it drops below. Whatever else happens, a filling disk
//! is said before Postgres stops on it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Use at which the warning starts.
pub const ALERT_AT: f64 = 0.90;
/// How often a disk still over the mark is warned about again.
const REMIND_EVERY: Duration = Duration::from_secs(300);
/// How often the disk is looked at.
const CHECK_EVERY: Duration = Duration::from_secs(10);

/// The last reading, in millionths (for `/metrics`; 0 before the first).
static USED_MILLIONTHS: AtomicU64 = AtomicU64::new(0);

/// The last reading of the data disk's use (0.0–1.0).
pub fn used_ratio() -> f64 {
    USED_MILLIONTHS.load(Ordering::Relaxed) as f64 / 1e6
}

/// What a reading calls for.
#[derive(Debug, PartialEq)]
pub enum Alert {
    /// Over the mark: warn.
    Full,
    /// Back under it.
    Clear,
}

/// Decides when to warn, from successive readings.
#[derive(Default)]
pub struct DiskAlert {
    warned_at: Option<Instant>,
}

impl DiskAlert {
    /// A reading of `used` (0.0–1.0) at `now`.
    pub fn observe(&mut self, used: f64, now: Instant) -> Option<Alert> {
        if used >= ALERT_AT {
            let due = self
                .warned_at
                .is_none_or(|at| now.duration_since(at) >= REMIND_EVERY);
            if due {
                self.warned_at = Some(now);
                return Some(Alert::Full);
            }
            None
        } else if self.warned_at.take().is_some() {
            Some(Alert::Clear)
        } else {
            None
        }
    }
}

/// The used share of the filesystem holding `path`.
fn used(path: &std::path::Path) -> Option<f64> {
    ogel_plugin_kit::disk::usage(path).map(|d| ogel_plugin_kit::disk::used_ratio(&d))
}

/// Watches the disk of `data_dir` until `stop` resolves.
pub async fn run(data_dir: PathBuf, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    let mut alert = DiskAlert::default();
    loop {
        if let Some(ratio) = used(&data_dir) {
            USED_MILLIONTHS.store((ratio * 1e6) as u64, Ordering::Relaxed);
            match alert.observe(ratio, Instant::now()) {
                Some(Alert::Full) => tracing::warn!(
                    data_dir = %data_dir.display(),
                    used_percent = format!("{:.1}", ratio * 100.0),
                    "the data disk is {:.0}% full: free space (delete branches, snapshots or databases; move idle ones to a tier) before Postgres stops on it",
                    ratio * 100.0
                ),
                Some(Alert::Clear) => tracing::info!(
                    data_dir = %data_dir.display(),
                    used_percent = format!("{:.1}", ratio * 100.0),
                    "the data disk is below 90% again"
                ),
                None => {}
            }
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(CHECK_EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_on_crossing_then_every_five_minutes_then_clears_once() {
        let mut a = DiskAlert::default();
        let t = Instant::now();
        assert_eq!(a.observe(0.50, t), None);
        assert_eq!(a.observe(0.91, t), Some(Alert::Full));
        assert_eq!(a.observe(0.95, t + Duration::from_secs(60)), None);
        assert_eq!(
            a.observe(0.95, t + Duration::from_secs(300)),
            Some(Alert::Full)
        );
        assert_eq!(
            a.observe(0.80, t + Duration::from_secs(310)),
            Some(Alert::Clear)
        );
        assert_eq!(a.observe(0.80, t + Duration::from_secs(320)), None);
        assert_eq!(
            a.observe(0.90, t + Duration::from_secs(330)),
            Some(Alert::Full)
        );
    }

    #[test]
    fn reads_a_real_filesystem() {
        let ratio = used(std::path::Path::new("/")).expect("statvfs of /");
        assert!((0.0..=1.0).contains(&ratio) && ratio > 0.0, "{ratio}");
    }
}
