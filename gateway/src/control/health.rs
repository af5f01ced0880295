//! The health model of a primary that has a standby: trends over a
//! window of readings, not single readings, deciding when to switch over
//! **before** the primary fails. The watch ([`super::standby`]) feeds it
//! one [`Reading`] per health probe; [`Health::verdict`] says whether the
//! signs call for a preemptive switchover and why.
//!
//! The signs, each needing a trend (a single spike never switches over):
//! - **restarts**: the primary crashed and reinitialised (a new
//!   incarnation answered the probe) `max_restarts` times within the window;
//! - **flapping**: at least half of the last ten probes failed, while
//!   never `probe_failures` in a row (which would be a failover);
//! - **disk**: a least-squares fit over the window says the primary's
//!   filesystem is full within `horizon` — acted on only when the standby
//!   is on another filesystem (otherwise a switchover would not help, and
//!   the model says so).
//!
//! - **WAL fsync**: the primary's mean WAL fsync time, per probe interval
//!   (`pg_stat_wal`), is at least 100 ms in the median of the window's
//!   intervals and in the last one (a disk failing slowly; one slow
//!   interval is not a trend) — acted on, like the disk, only when the
//!   standby is on another filesystem.
//!
//! And one veto: a standby whose replay lag grows all through the window
//! (and is past 16 MiB) is falling behind; switching over to it would
//! pause writes for as long as it takes to catch up, so the model waits.

use ogel_plugin_sdk::DiskUse;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A standby this far behind, and getting further, vetoes a switchover.
const LAG_VETO_BYTES: u64 = 16 << 20;
/// Flapping is judged over this many latest probes.
const FLAPPING_PROBES: usize = 10;
/// Fewest disk readings, and the shortest span of them, a fit needs.
const MIN_DISK_READINGS: usize = 5;
const MIN_DISK_SPAN: Duration = Duration::from_secs(5);
/// A WAL fsync this slow, sustained, means a failing disk.
const FSYNC_SLOW_MS: f64 = 100.0;
/// Fewest probe intervals with fsyncs that make a trend.
const MIN_FSYNC_INTERVALS: usize = 5;

/// The model's settings (`[failover]`).
#[derive(Clone, Debug)]
pub struct HealthSettings {
    /// Readings older than this are forgotten.
    pub window: Duration,
    /// Crash restarts within the window that call for a switchover.
    pub max_restarts: u32,
    /// Switch over when the primary's disk is projected full within this.
    pub horizon: Duration,
}

/// One health probe's findings.
#[derive(Clone, Debug, Default)]
pub struct Reading {
    /// The probe answered.
    pub ok: bool,
    /// Which incarnation of the primary's server answered (it changes when
    /// Postgres crashes and reinitialises).
    pub incarnation: Option<String>,
    /// The primary's disk.
    pub primary_disk: Option<DiskUse>,
    /// The standby's disk.
    pub standby_disk: Option<DiskUse>,
    /// WAL bytes the standby has not replayed.
    pub replay_lag_bytes: Option<u64>,
    /// The standby is on another gateway's disk (whatever its reading).
    pub standby_elsewhere: bool,
    /// The primary's WAL fsyncs so far and their total time in
    /// milliseconds (cumulative; they restart from 0 after a crash).
    pub wal_syncs: Option<(u64, f64)>,
}

/// What the model says.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Verdict {
    /// Switch over now, for this reason.
    pub switch_over: Option<String>,
    /// Signs seen that do not (or cannot) call for a switchover.
    pub warnings: Vec<String>,
    /// Crash restarts within the window.
    pub restarts: u32,
    /// Seconds until the primary's disk is full, at the current trend.
    pub disk_full_in_secs: Option<u64>,
    /// Replay lag growth, bytes per second, over the window.
    pub lag_growth_bytes_per_sec: Option<i64>,
    /// Mean WAL fsync time in the last probe interval with fsyncs, ms.
    pub wal_fsync_ms: Option<u64>,
}

/// The readings of one primary.
#[derive(Default)]
pub struct Health {
    readings: VecDeque<(Instant, Reading)>,
    /// Crash restarts seen, with when.
    restarts: VecDeque<Instant>,
    last_incarnation: Option<String>,
}

impl Health {
    /// Adds a reading taken at `at`.
    pub fn observe(&mut self, at: Instant, reading: Reading, settings: &HealthSettings) {
        if let Some(now) = &reading.incarnation {
            if self
                .last_incarnation
                .as_ref()
                .is_some_and(|last| last != now)
            {
                self.restarts.push_back(at);
            }
            self.last_incarnation = Some(now.clone());
        }
        self.readings.push_back((at, reading));
        while let Some((first, _)) = self.readings.front() {
            if at.duration_since(*first) > settings.window {
                self.readings.pop_front();
            } else {
                break;
            }
        }
        while self
            .restarts
            .front()
            .is_some_and(|r| at.duration_since(*r) > settings.window)
        {
            self.restarts.pop_front();
        }
    }

    /// Forgets everything (after a switchover or failover: a new primary).
    pub fn reset(&mut self) {
        *self = Health::default();
    }

    /// What the readings in the window call for.
    pub fn verdict(&self, settings: &HealthSettings) -> Verdict {
        let mut v = Verdict {
            restarts: self.restarts.len() as u32,
            ..Verdict::default()
        };
        let mut reasons = Vec::new();
        if settings.max_restarts > 0 && v.restarts >= settings.max_restarts {
            reasons.push(format!(
                "the primary crashed and restarted {} times in {}",
                v.restarts,
                humantime::format_duration(settings.window)
            ));
        } else if v.restarts > 0 {
            v.warnings.push(format!(
                "the primary restarted after a crash {} time(s) in the window",
                v.restarts
            ));
        }
        let probes = self.readings.len().min(FLAPPING_PROBES);
        let failed = self
            .readings
            .iter()
            .rev()
            .take(probes)
            .filter(|(_, r)| !r.ok)
            .count();
        if probes == FLAPPING_PROBES && failed * 2 >= probes {
            reasons.push(format!(
                "{failed} of the last {probes} health probes failed"
            ));
        }
        let disk: Vec<(Instant, DiskUse)> = self
            .readings
            .iter()
            .filter_map(|(at, r)| r.primary_disk.map(|d| (*at, d)))
            .collect();
        if let Some(secs) = seconds_to_full(&disk) {
            v.disk_full_in_secs = Some(secs as u64);
            if secs < settings.horizon.as_secs_f64() {
                let when = humantime::format_duration(Duration::from_secs(secs as u64));
                let primary_dev = disk.last().map(|(_, d)| d.device);
                let last = self.readings.back().map(|(_, r)| r);
                let standby_dev = last.and_then(|r| r.standby_disk).map(|d| d.device);
                let elsewhere = last.is_some_and(|r| r.standby_elsewhere);
                match (primary_dev, standby_dev) {
                    (Some(p), s) if elsewhere || s.is_some_and(|s| s != p) => {
                        reasons.push(format!("the primary's disk is full in about {when}"))
                    }
                    _ => v.warnings.push(format!(
                        "the primary's disk is full in about {when}; the standby shares it, so a switchover would not help: free space"
                    )),
                }
            }
        }
        // Mean fsync time per probe interval (intervals without fsyncs,
        // or across a crash that reset the counters, say nothing).
        let fsync: Vec<f64> = self
            .readings
            .iter()
            .filter_map(|(_, r)| r.wal_syncs)
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[1].0 > w[0].0 && w[1].1 >= w[0].1)
            .map(|w| (w[1].1 - w[0].1) / (w[1].0 - w[0].0) as f64)
            .collect();
        v.wal_fsync_ms = fsync.last().map(|ms| ms.round() as u64);
        if fsync.len() >= MIN_FSYNC_INTERVALS {
            let mut sorted = fsync.clone();
            sorted.sort_by(f64::total_cmp);
            let median = sorted[sorted.len() / 2];
            let last = fsync.last().copied().unwrap_or_default();
            if median >= FSYNC_SLOW_MS && last >= FSYNC_SLOW_MS {
                let elsewhere = self.readings.back().is_some_and(|(_, r)| {
                    r.standby_elsewhere
                        || matches!((r.primary_disk, r.standby_disk), (Some(p), Some(s)) if p.device != s.device)
                });
                let what = format!(
                    "WAL fsync takes {median:.0} ms (median of the last {} intervals): the primary's disk is failing",
                    fsync.len()
                );
                if elsewhere {
                    reasons.push(what);
                } else {
                    v.warnings.push(format!(
                        "{what}; the standby shares it, so a switchover would not help"
                    ));
                }
            }
        }
        let lag: Vec<(Instant, f64)> = self
            .readings
            .iter()
            .filter_map(|(at, r)| r.replay_lag_bytes.map(|b| (*at, b as f64)))
            .collect();
        let growth = slope(&lag);
        v.lag_growth_bytes_per_sec = growth.map(|g| g as i64);
        let behind = lag.last().is_some_and(|(_, b)| *b as u64 > LAG_VETO_BYTES)
            && growth.is_some_and(|g| g > 0.0)
            && lag.windows(2).filter(|w| w[1].1 >= w[0].1).count() * 4 >= (lag.len() - 1) * 3;
        if behind {
            v.warnings.push(format!(
                "the standby is falling behind ({} bytes and growing)",
                lag.last().map(|(_, b)| *b as u64).unwrap_or_default()
            ));
        }
        if !reasons.is_empty() {
            if behind {
                v.warnings.push(format!(
                    "not switching over ({}): the standby is falling behind",
                    reasons.join("; ")
                ));
            } else {
                v.switch_over = Some(reasons.join("; "));
            }
        }
        v
    }
}

/// The least-squares slope of `points` (y per second).
fn slope(points: &[(Instant, f64)]) -> Option<f64> {
    let (t0, _) = *points.first()?;
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let xs: Vec<f64> = points
        .iter()
        .map(|(t, _)| t.duration_since(t0).as_secs_f64())
        .collect();
    let mean_x = xs.iter().sum::<f64>() / n;
    let mean_y = points.iter().map(|(_, y)| y).sum::<f64>() / n;
    let sxx: f64 = xs.iter().map(|x| (x - mean_x).powi(2)).sum();
    if sxx <= f64::EPSILON {
        return None;
    }
    let sxy: f64 = xs
        .iter()
        .zip(points)
        .map(|(x, (_, y))| (x - mean_x) * (y - mean_y))
        .sum();
    Some(sxy / sxx)
}

/// Seconds until the disk is full at the trend of `readings`, if it is
/// filling: a fit over at least [`MIN_DISK_READINGS`] readings spanning
/// [`MIN_DISK_SPAN`], whose growth held in most steps (a single jump of
/// an otherwise flat disk is not a trend).
fn seconds_to_full(readings: &[(Instant, DiskUse)]) -> Option<f64> {
    let (first, _) = readings.first()?;
    let (last_at, last) = readings.last()?;
    if readings.len() < MIN_DISK_READINGS || last_at.duration_since(*first) < MIN_DISK_SPAN {
        return None;
    }
    let rising = readings
        .windows(2)
        .filter(|w| w[1].1.used_bytes > w[0].1.used_bytes)
        .count();
    if rising * 2 < readings.len() - 1 {
        return None;
    }
    let points: Vec<(Instant, f64)> = readings
        .iter()
        .map(|(at, d)| (*at, d.used_bytes as f64))
        .collect();
    let per_sec = slope(&points).filter(|s| *s > 0.0)?;
    let free = last.size_bytes.saturating_sub(last.used_bytes) as f64;
    Some(free / per_sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> HealthSettings {
        HealthSettings {
            window: Duration::from_secs(60),
            max_restarts: 3,
            horizon: Duration::from_secs(600),
        }
    }

    fn disk(used_mb: u64, device: u64) -> Option<DiskUse> {
        Some(DiskUse {
            used_bytes: used_mb << 20,
            size_bytes: 1000 << 20,
            device,
        })
    }

    fn ok() -> Reading {
        Reading {
            ok: true,
            incarnation: Some("100".into()),
            ..Reading::default()
        }
    }

    #[test]
    fn one_crash_is_noise_three_are_a_trend() {
        let s = settings();
        let t = Instant::now();
        let mut h = Health::default();
        h.observe(t, ok(), &s);
        let crashed = |pid: u32| Reading {
            incarnation: Some(pid.to_string()),
            ..ok()
        };
        h.observe(t + Duration::from_secs(1), crashed(101), &s);
        let v = h.verdict(&s);
        assert_eq!(v.switch_over, None);
        assert_eq!(v.restarts, 1);
        assert!(v.warnings[0].contains("restarted"), "{v:?}");
        h.observe(t + Duration::from_secs(2), crashed(102), &s);
        h.observe(t + Duration::from_secs(3), crashed(103), &s);
        let v = h.verdict(&s);
        assert!(
            v.switch_over.as_deref().unwrap_or("").contains("3 times"),
            "{v:?}"
        );
        // Old restarts leave the window.
        h.observe(t + Duration::from_secs(62), crashed(103), &s);
        assert_eq!(h.verdict(&s).switch_over, None);
        // A failed probe (no incarnation read) is not a restart.
        h.observe(t + Duration::from_secs(63), Reading::default(), &s);
        assert_eq!(h.verdict(&s).restarts, 1);
    }

    #[test]
    fn flapping_probes_switch_over_a_single_failure_does_not() {
        let s = settings();
        let t = Instant::now();
        let mut h = Health::default();
        for i in 0..10 {
            h.observe(t + Duration::from_secs(i), ok(), &s);
        }
        h.observe(t + Duration::from_secs(10), Reading::default(), &s);
        assert_eq!(h.verdict(&s).switch_over, None);
        for i in 11..22 {
            let r = if i % 2 == 0 { ok() } else { Reading::default() };
            h.observe(t + Duration::from_secs(i), r, &s);
        }
        let v = h.verdict(&s);
        assert!(
            v.switch_over
                .as_deref()
                .unwrap_or("")
                .contains("health probes failed"),
            "{v:?}"
        );
    }

    #[test]
    fn slow_wal_fsyncs_are_a_trend_one_slow_interval_is_noise() {
        let s = settings();
        let t = Instant::now();
        // (syncs, ms) cumulative: 10 fsyncs per interval, `ms` each.
        let run = |per_sync: &[f64], elsewhere: bool| {
            let mut h = Health::default();
            let (mut n, mut total) = (0u64, 0.0);
            for (i, ms) in per_sync.iter().enumerate() {
                n += 10;
                total += 10.0 * ms;
                let r = Reading {
                    wal_syncs: Some((n, total)),
                    standby_elsewhere: elsewhere,
                    ..ok()
                };
                h.observe(t + Duration::from_secs(i as u64), r, &s);
            }
            h.verdict(&s)
        };
        let spike = run(&[2.0, 2.0, 2.0, 900.0, 2.0, 2.0, 2.0], true);
        assert_eq!(spike.switch_over, None, "{spike:?}");
        assert_eq!(spike.wal_fsync_ms, Some(2));
        let failing = run(&[2.0, 150.0, 300.0, 400.0, 500.0, 600.0, 700.0], true);
        assert!(
            failing
                .switch_over
                .as_deref()
                .is_some_and(|r| r.contains("fsync")),
            "{failing:?}"
        );
        assert_eq!(failing.wal_fsync_ms, Some(700));
        let shared = run(&[2.0, 150.0, 300.0, 400.0, 500.0, 600.0, 700.0], false);
        assert_eq!(shared.switch_over, None);
        assert!(
            shared.warnings.iter().any(|w| w.contains("fsync")),
            "{shared:?}"
        );
        // Counters that went back (a crash reset them) are no interval.
        let mut h = Health::default();
        for (i, (n, ms)) in [(100u64, 100.0), (10, 5.0), (20, 10.0)]
            .into_iter()
            .enumerate()
        {
            let r = Reading {
                wal_syncs: Some((n, ms)),
                ..ok()
            };
            h.observe(t + Duration::from_secs(i as u64), r, &s);
        }
        assert_eq!(h.verdict(&s).wal_fsync_ms, Some(1));
    }

    #[test]
    fn a_filling_disk_switches_over_to_a_standby_on_another_gateway() {
        let s = settings();
        let t = Instant::now();
        let mut h = Health::default();
        for i in 0..10u64 {
            let r = Reading {
                primary_disk: disk(500 + 10 * i, 1),
                standby_elsewhere: true,
                ..ok()
            };
            h.observe(t + Duration::from_secs(i), r, &s);
        }
        let v = h.verdict(&s);
        assert!(
            v.switch_over.as_deref().is_some_and(|r| r.contains("disk")),
            "{v:?}"
        );
    }

    #[test]
    fn a_filling_disk_switches_over_only_to_another_disk() {
        let s = settings();
        let t = Instant::now();
        let fill = |standby_device| {
            let mut h = Health::default();
            for i in 0..10u64 {
                let r = Reading {
                    primary_disk: disk(500 + 10 * i, 1),
                    standby_disk: disk(300, standby_device),
                    ..ok()
                };
                h.observe(t + Duration::from_secs(i), r, &s);
            }
            h.verdict(&s)
        };
        // 10 MB/s with 410 MB free: full in about 41 s.
        let elsewhere = fill(2);
        assert!(
            elsewhere
                .switch_over
                .as_deref()
                .unwrap_or("")
                .contains("disk is full"),
            "{elsewhere:?}"
        );
        let secs = elsewhere.disk_full_in_secs.unwrap_or(0);
        assert!((38..=44).contains(&secs), "{secs}");
        let shared = fill(1);
        assert_eq!(shared.switch_over, None);
        assert!(
            shared.warnings.iter().any(|w| w.contains("shares it")),
            "{shared:?}"
        );
    }

    #[test]
    fn a_single_jump_of_a_flat_disk_is_not_a_trend() {
        let s = settings();
        let t = Instant::now();
        let mut h = Health::default();
        for i in 0..10u64 {
            let used = if i == 5 { 990 } else { 500 };
            let r = Reading {
                primary_disk: disk(used, 1),
                standby_disk: disk(300, 2),
                ..ok()
            };
            h.observe(t + Duration::from_secs(i), r, &s);
        }
        let v = h.verdict(&s);
        assert_eq!(v.switch_over, None, "{v:?}");
        assert_eq!(v.disk_full_in_secs, None);
        // A slow fill (full in hours) is beyond the horizon.
        let mut h = Health::default();
        for i in 0..10u64 {
            let r = Reading {
                primary_disk: Some(DiskUse {
                    used_bytes: (500 << 20) + i * 1000,
                    size_bytes: 1000 << 20,
                    device: 1,
                }),
                standby_disk: disk(300, 2),
                ..ok()
            };
            h.observe(t + Duration::from_secs(i), r, &s);
        }
        let v = h.verdict(&s);
        assert_eq!(v.switch_over, None);
        assert!(v.disk_full_in_secs.unwrap_or(0) > 600, "{v:?}");
    }

    #[test]
    fn a_standby_falling_behind_vetoes_the_switchover() {
        let s = settings();
        let t = Instant::now();
        let mut h = Health::default();
        for i in 0..8u64 {
            let r = Reading {
                incarnation: Some((100 + i).to_string()),
                replay_lag_bytes: Some((20 << 20) + i * (4 << 20)),
                ..ok()
            };
            h.observe(t + Duration::from_secs(i), r, &s);
        }
        let v = h.verdict(&s);
        assert_eq!(v.switch_over, None, "{v:?}");
        assert!(
            v.warnings.iter().any(|w| w.contains("falling behind")),
            "{v:?}"
        );
        assert!(v.lag_growth_bytes_per_sec.unwrap_or(0) > 0);
    }
}
