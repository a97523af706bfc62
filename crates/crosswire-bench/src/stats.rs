//! Latency histograms, percentile summaries and per-receiver sequence tracking.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::sync::Mutex;

/// Highest latency the histograms track, in microseconds (larger values are clamped).
pub const MAX_TRACKABLE_US: u64 = 600_000_000;

/// Creates an empty latency histogram (µs, 3 significant digits, 1 µs .. 10 min).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKABLE_US, 3).expect("constant histogram bounds are valid")
}

/// Records `value_us` into `hist`, clamping it into the trackable range.
pub fn record(hist: &mut Histogram<u64>, value_us: u64) {
    let v = value_us.clamp(1, MAX_TRACKABLE_US);
    let _ = hist.record(v);
}

/// Percentile summary of a latency histogram, all values in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Number of samples.
    pub count: u64,
    /// Smallest sample.
    pub min_us: u64,
    /// Arithmetic mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest sample.
    pub max_us: u64,
}

impl LatencySummary {
    /// Summarises `hist`; an empty histogram gives all zeros.
    pub fn from_histogram(hist: &Histogram<u64>) -> Self {
        if hist.is_empty() {
            return Self::default();
        }
        Self {
            count: hist.len(),
            min_us: hist.min(),
            mean_us: hist.mean(),
            p50_us: hist.value_at_quantile(0.50),
            p90_us: hist.value_at_quantile(0.90),
            p99_us: hist.value_at_quantile(0.99),
            p999_us: hist.value_at_quantile(0.999),
            max_us: hist.max(),
        }
    }
}

/// A set of mutex-protected histograms so that many receiver tasks can record concurrently
/// with little contention; merged once at the end of a run.
pub struct ShardedHistogram {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl ShardedHistogram {
    /// Creates `shards` (at least one) empty histograms.
    pub fn new(shards: usize) -> Self {
        Self {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(new_histogram()))
                .collect(),
        }
    }

    /// Records `value_us` into the shard chosen by `key`.
    pub fn record(&self, key: usize, value_us: u64) {
        let shard = &self.shards[key % self.shards.len()];
        let mut h = shard.lock().unwrap_or_else(|e| e.into_inner());
        record(&mut h, value_us);
    }

    /// Records a batch of samples into the shard chosen by `key` (one lock).
    pub fn record_all(&self, key: usize, values_us: &[u64]) {
        let shard = &self.shards[key % self.shards.len()];
        let mut h = shard.lock().unwrap_or_else(|e| e.into_inner());
        for &v in values_us {
            record(&mut h, v);
        }
    }

    /// Merges every shard into one histogram.
    pub fn merged(&self) -> Histogram<u64> {
        let mut out = new_histogram();
        for shard in &self.shards {
            let h = shard.lock().unwrap_or_else(|e| e.into_inner());
            let _ = out.add(&*h);
        }
        out
    }
}

/// What [`SeqTracker::observe`] found out about one received sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// First time this sequence number was seen.
    New,
    /// Already seen before.
    Duplicate,
    /// Beyond the tracker's limit: a corrupt or foreign stamp.
    Invalid,
}

/// Tracks which sequence numbers one receiver has seen: counts unique deliveries, duplicates
/// and out-of-order arrivals (a new sequence number lower than the highest one seen so far).
#[derive(Debug, Clone, Default)]
pub struct SeqTracker {
    seen: Vec<u64>,
    max_seen: Option<u64>,
    limit: u64,
    /// Unique sequence numbers received.
    pub unique: u64,
    /// Sequence numbers received more than once (each extra copy counts).
    pub duplicates: u64,
    /// New sequence numbers that arrived after a higher one.
    pub out_of_order: u64,
    /// Stamps whose sequence number is beyond the limit.
    pub invalid: u64,
}

impl SeqTracker {
    /// Creates a tracker accepting sequence numbers below `limit`.
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            ..Self::default()
        }
    }

    /// Records one received sequence number.
    pub fn observe(&mut self, seq: u64) -> Observation {
        if seq >= self.limit {
            self.invalid += 1;
            return Observation::Invalid;
        }
        let word = (seq / 64) as usize;
        let bit = 1u64 << (seq % 64);
        if word >= self.seen.len() {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & bit != 0 {
            self.duplicates += 1;
            return Observation::Duplicate;
        }
        self.seen[word] |= bit;
        self.unique += 1;
        match self.max_seen {
            Some(max) if seq < max => self.out_of_order += 1,
            _ => self.max_seen = Some(seq),
        }
        Observation::New
    }
}

/// Operations per second; zero when the elapsed time is zero.
pub fn per_second(count: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: u64, expected: u64) -> bool {
        let tol = (expected as f64 * 0.001).max(1.0);
        (actual as f64 - expected as f64).abs() <= tol
    }

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let mut h = new_histogram();
        for v in 1..=10_000u64 {
            record(&mut h, v);
        }
        let s = LatencySummary::from_histogram(&h);
        assert_eq!(s.count, 10_000);
        assert_eq!(s.min_us, 1);
        assert!(close(s.p50_us, 5_000), "{s:?}");
        assert!(close(s.p90_us, 9_000), "{s:?}");
        assert!(close(s.p99_us, 9_900), "{s:?}");
        assert!(close(s.p999_us, 9_990), "{s:?}");
        assert!(close(s.max_us, 10_000), "{s:?}");
        assert!((s.mean_us - 5_000.5).abs() < 10.0);
    }

    #[test]
    fn percentiles_see_a_tail() {
        let mut h = new_histogram();
        for _ in 0..990 {
            record(&mut h, 100);
        }
        for _ in 0..10 {
            record(&mut h, 50_000);
        }
        let s = LatencySummary::from_histogram(&h);
        assert!(close(s.p50_us, 100));
        assert!(close(s.p99_us, 100));
        assert!(close(s.p999_us, 50_000));
        assert!(close(s.max_us, 50_000));
    }

    #[test]
    fn empty_and_clamped() {
        assert_eq!(
            LatencySummary::from_histogram(&new_histogram()),
            LatencySummary::default()
        );
        let mut h = new_histogram();
        record(&mut h, 0);
        record(&mut h, u64::MAX);
        assert_eq!(h.len(), 2);
        assert_eq!(h.min(), 1);
        assert!(h.max() >= MAX_TRACKABLE_US);
    }

    #[test]
    fn sharded_histogram_merges() {
        let sh = ShardedHistogram::new(4);
        for i in 0..100usize {
            sh.record(i, 10);
        }
        sh.record_all(3, &[20, 30]);
        let m = sh.merged();
        assert_eq!(m.len(), 102);
        assert!(close(m.max(), 30));
    }

    #[test]
    fn seq_tracker_counts_dups_and_reordering() {
        let mut t = SeqTracker::new(1000);
        for s in [0, 1, 2, 5, 3, 3, 4, 130, 129, 5] {
            t.observe(s);
        }
        assert_eq!(t.unique, 8);
        assert_eq!(t.duplicates, 2);
        // 3 and 4 arrive after 5, 129 after 130.
        assert_eq!(t.out_of_order, 3);
        assert_eq!(t.observe(1000), Observation::Invalid);
        assert_eq!(t.invalid, 1);
    }

    #[test]
    fn rates() {
        assert_eq!(per_second(10, 0.0), 0.0);
        assert_eq!(per_second(10, 2.0), 5.0);
    }
}
