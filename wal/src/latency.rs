//! A lock-free histogram of durations for operations the log and the engine time (fsyncs,
//! checkpoints), read by the server's `/metrics`. Fixed log2 buckets from 10 µs to about
//! 10 s, so recording is one relaxed increment per counter and needs no dependency.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Finite bucket bounds: 10 µs × 2^k for k in 0..BUCKETS.
const BUCKETS: usize = 21;
const FIRST_BOUND_NANOS: u64 = 10_000;

/// Durations counted by bucket, with their sum.
#[derive(Debug, Default)]
pub struct Latency {
    /// Observations per bucket; the last one has no upper bound.
    buckets: [AtomicU64; BUCKETS + 1],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

/// A copy of a [`Latency`] for exposition.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencySnapshot {
    /// `(upper bound in seconds, observations in this bucket)`, not cumulative; the last
    /// bound is `f64::MAX` (+Inf).
    pub buckets: Vec<(f64, u64)>,
    /// Sum of the observations, seconds.
    pub sum_seconds: f64,
    /// Observations.
    pub count: u64,
}

impl Latency {
    /// Counts one duration.
    pub fn record(&self, duration: Duration) {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        let index = (0..BUCKETS)
            .find(|&k| nanos <= FIRST_BOUND_NANOS << k)
            .unwrap_or(BUCKETS);
        if let Some(bucket) = self.buckets.get(index) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts now (each counter read once; concurrent records may be half-visible).
    pub fn snapshot(&self) -> LatencySnapshot {
        #[allow(clippy::cast_precision_loss, reason = "bounds and sums for people")]
        let buckets = self
            .buckets
            .iter()
            .enumerate()
            .map(|(k, count)| {
                let bound = if k < BUCKETS {
                    (FIRST_BOUND_NANOS << k) as f64 / 1e9
                } else {
                    f64::MAX
                };
                (bound, count.load(Ordering::Relaxed))
            })
            .collect();
        #[allow(clippy::cast_precision_loss, reason = "a sum for people")]
        let sum_seconds = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        LatencySnapshot {
            buckets,
            sum_seconds,
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "a wrong index fails the test")]
mod tests {
    use super::*;

    #[test]
    fn durations_land_in_their_log2_bucket() {
        let latency = Latency::default();
        latency.record(Duration::from_micros(5)); // ≤ 10 µs
        latency.record(Duration::from_micros(15)); // ≤ 20 µs
        latency.record(Duration::from_millis(3)); // ≤ 5.12 ms
        latency.record(Duration::from_secs(3600)); // +Inf
        let snapshot = latency.snapshot();
        assert_eq!(snapshot.count, 4);
        assert_eq!(snapshot.buckets.len(), BUCKETS + 1);
        let counts: Vec<u64> = snapshot.buckets.iter().map(|(_, count)| *count).collect();
        assert_eq!(counts[0], 1);
        assert_eq!(counts[1], 1);
        assert_eq!(counts[9], 1, "{:?}", snapshot.buckets[9]);
        assert_eq!(counts[BUCKETS], 1);
        assert!((snapshot.buckets[9].0 - 0.005_12).abs() < 1e-12);
        assert!((snapshot.sum_seconds - 3_600.003_02).abs() < 1e-6);
    }
}
