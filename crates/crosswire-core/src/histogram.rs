//! A latency histogram of relaxed atomics: cheap enough to observe on a hot path (three
//! uncontended atomic adds), read as a [`HistogramSnapshot`] by whoever exports metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds: 100 µs to 10 s, roughly ×2.5 apart (an
/// observation above the last bound counts in `+Inf` only).
pub const BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The bounds of [`BUCKETS`] in microseconds, for comparing without floating point.
const BOUNDS_MICROS: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// Durations counted in the buckets of [`BUCKETS`], with their count and sum.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per bucket (not cumulative); the last slot is above every bound.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one duration.
    pub fn observe(&self, duration: Duration) {
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        let slot = BOUNDS_MICROS.partition_point(|&bound| bound < micros);
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut buckets = [0; BUCKETS.len() + 1];
        for (slot, n) in buckets.iter_mut().zip(&self.buckets) {
            *slot = n.load(Ordering::Relaxed);
        }
        HistogramSnapshot {
            // Summed from the buckets, so `count` always matches them even when an
            // observation lands between the loads.
            count: buckets.iter().sum(),
            sum: Duration::from_micros(self.sum_micros.load(Ordering::Relaxed)),
            buckets,
        }
    }
}

/// What a [`Histogram`] had counted at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Observations.
    pub count: u64,
    /// Their sum (microsecond resolution).
    pub sum: Duration,
    /// Per bucket, not cumulative: `buckets[i]` observations took more than `BUCKETS[i - 1]`
    /// and at most `BUCKETS[i]` seconds; the last slot counts those above every bound.
    pub buckets: [u64; BUCKETS.len() + 1],
}

impl HistogramSnapshot {
    /// `(upper bound in seconds, cumulative count)` per bound, as Prometheus exports them
    /// (the `+Inf` bucket is [`HistogramSnapshot::count`]).
    pub fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        BUCKETS
            .iter()
            .zip(&self.buckets)
            .scan(0, |below, (&bound, &n)| {
                *below += n;
                Some((bound, *below))
            })
    }

    /// `(upper bound in seconds, count)` per bucket, `f64::MAX` standing for `+Inf` last.
    pub fn per_bucket(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .zip(self.buckets.iter().copied())
    }

    /// The mean duration, if anything was observed.
    pub fn mean(&self) -> Option<Duration> {
        u32::try_from(self.count)
            .ok()
            .filter(|&n| n > 0)
            .map(|n| self.sum / n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_right_buckets() {
        let h = Histogram::new();
        h.observe(Duration::from_micros(50)); // ≤ 100 µs
        h.observe(Duration::from_micros(100)); // ≤ 100 µs (bounds are inclusive)
        h.observe(Duration::from_micros(101)); // ≤ 250 µs
        h.observe(Duration::from_millis(3)); // ≤ 5 ms
        h.observe(Duration::from_secs(60)); // +Inf only
        let s = h.snapshot();
        assert_eq!(s.count, 5);
        assert_eq!(s.buckets[0], 2);
        assert_eq!(s.buckets[1], 1);
        assert_eq!(s.buckets[5], 1);
        assert_eq!(s.buckets[BUCKETS.len()], 1);
        let cumulative: Vec<u64> = s.cumulative().map(|(_, n)| n).collect();
        assert_eq!(cumulative[0], 2);
        assert_eq!(cumulative[1], 3);
        assert_eq!(cumulative[4], 3);
        assert_eq!(cumulative[5], 4);
        assert_eq!(cumulative[BUCKETS.len() - 1], 4);
        assert_eq!(s.per_bucket().last(), Some((f64::MAX, 1)));
        assert_eq!(s.per_bucket().map(|(_, n)| n).sum::<u64>(), s.count);
        assert_eq!(
            s.sum,
            Duration::from_micros(50 + 100 + 101 + 3_000 + 60_000_000)
        );
        assert_eq!(Histogram::new().snapshot().mean(), None);
    }

    #[test]
    fn bounds_agree() {
        for (secs, micros) in BUCKETS.iter().zip(BOUNDS_MICROS) {
            assert_eq!((secs * 1e6).round() as u64, micros);
        }
    }
}
