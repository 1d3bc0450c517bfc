//! How long an attempt waits for its answer before a copy goes out, and the
//! lock-free latency histogram a percentile delay is read from.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tower::retry::budget::Budget;

/// How long the latest attempt goes without an answer before the next copy
/// is sent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum HedgeDelay {
    /// Always this long.
    Fixed(Duration),
    /// This percentile of the latency of recent answers through the layer
    /// (those of roughly the last thousand requests count most), once at
    /// least `min_samples` answers are known; no hedge before that.
    Percentile {
        /// In `0.0..=100.0`; a value outside is clamped, NaN counts as 100.
        percentile: f64,
        /// Answers to know before the first hedge.
        min_samples: u64,
    },
}

impl HedgeDelay {
    /// The `percentile` of recent latency, after 100 answers.
    pub const fn percentile(percentile: f64) -> Self {
        Self::Percentile {
            percentile,
            min_samples: 100,
        }
    }
}

/// Bucket boundaries grow by 2^(1/4) (19 %): four buckets a doubling.
const SUB_BUCKETS: u32 = 4;
/// Up to 2^32 µs (71 minutes); slower answers count in the last bucket.
const BUCKETS: usize = 32 * SUB_BUCKETS as usize;
/// Once this many answers are counted, every count is halved, so old
/// answers fade.
const WINDOW: u64 = 2000;
/// The percentile is recomputed every this many answers.
const REFRESH: u64 = 32;

/// Answers' latency in logarithmic buckets of microseconds, with the
/// percentile delay kept ready: recording is two relaxed `fetch_add`s, and
/// every [`REFRESH`]-th answer recomputes the delay (a scan of 128 buckets),
/// so reading it is one atomic load.
pub(crate) struct Latencies {
    buckets: [AtomicU64; BUCKETS],
    total: AtomicU64,
    recorded: AtomicU64,
    /// The current delay in nanoseconds; `u64::MAX` when unknown.
    delay_ns: AtomicU64,
    percentile: f64,
    min_samples: u64,
}

impl Latencies {
    pub(crate) fn new(percentile: f64, min_samples: u64) -> Self {
        let percentile = if percentile.is_nan() {
            100.0
        } else {
            percentile.clamp(0.0, 100.0)
        };
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            total: AtomicU64::new(0),
            recorded: AtomicU64::new(0),
            delay_ns: AtomicU64::new(u64::MAX),
            percentile,
            min_samples,
        }
    }

    /// The delay to wait, if enough answers are known.
    pub(crate) fn delay(&self) -> Option<Duration> {
        match self.delay_ns.load(Ordering::Relaxed) {
            u64::MAX => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    pub(crate) fn record(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket(micros)].fetch_add(1, Ordering::Relaxed);
        let total = self.total.fetch_add(1, Ordering::Relaxed) + 1;
        let recorded = self.recorded.fetch_add(1, Ordering::Relaxed) + 1;
        if recorded.is_multiple_of(REFRESH) || recorded == self.min_samples {
            self.refresh(total, recorded);
        }
    }

    fn refresh(&self, total: u64, recorded: u64) {
        if total >= WINDOW {
            // Racing records may land between the halvings; the counts stay
            // a fair picture of recent answers.
            let mut kept = 0;
            for b in &self.buckets {
                let v = b.load(Ordering::Relaxed);
                b.fetch_sub(v / 2, Ordering::Relaxed);
                kept += v - v / 2;
            }
            self.total.store(kept, Ordering::Relaxed);
        }
        if recorded < self.min_samples.max(1) {
            return;
        }
        let counts: [u64; BUCKETS] =
            std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed));
        let sum: u64 = counts.iter().sum();
        let target = (sum as f64 * self.percentile / 100.0).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &c) in counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                let ns = upper_micros(i).saturating_mul(1000);
                self.delay_ns.store(ns.min(u64::MAX - 1), Ordering::Relaxed);
                return;
            }
        }
    }
}

/// The bucket of `micros`: four a power of two of `micros + 1`.
fn bucket(micros: u64) -> usize {
    let v = micros.saturating_add(1);
    let exp = 63 - v.leading_zeros();
    let frac = if exp >= 2 {
        (v >> (exp - 2)) & 3
    } else {
        (v << (2 - exp)) & 3
    };
    ((exp * SUB_BUCKETS) as usize + frac as usize).min(BUCKETS - 1)
}

/// The largest latency, in µs, that falls in bucket `i`.
fn upper_micros(i: usize) -> u64 {
    let exp = i as u32 / SUB_BUCKETS;
    let frac = u64::from(i as u32 % SUB_BUCKETS);
    match exp {
        // `micros + 1` is 1: only 0 µs.
        0 => 0,
        // `micros + 1` is 2 (fractions 0 and 1) or 3 (2 and 3).
        1 => 1 + frac / 2,
        // Bucket i holds `micros + 1` in [(4 + frac) × 2^(exp-2),
        // (5 + frac) × 2^(exp-2)).
        _ => ((5 + frac) << (exp - 2)) - 2,
    }
}

pub(crate) enum When {
    Fixed(Duration),
    Learnt(Box<Latencies>),
}

pub(crate) struct Shared {
    pub(crate) when: When,
    pub(crate) budget: Arc<dyn Budget + Send + Sync>,
    pub(crate) max_attempts: u32,
}

impl Shared {
    /// How long to wait for an answer before the next copy, if known.
    pub(crate) fn delay(&self) -> Option<Duration> {
        match &self.when {
            When::Fixed(delay) => Some(*delay),
            When::Learnt(latencies) => latencies.delay(),
        }
    }

    pub(crate) fn record(&self, latency: Duration) {
        if let When::Learnt(latencies) = &self.when {
            latencies.record(latency);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_bounded() {
        let mut last = 0;
        for micros in (0..100_000u64).chain([u64::MAX / 2, u64::MAX]) {
            let b = bucket(micros);
            assert!(b >= last && b < BUCKETS, "{micros}");
            if b < BUCKETS - 1 {
                assert!(micros <= upper_micros(b), "{micros} above bucket {b}");
            }
            last = b;
        }
    }

    #[test]
    fn the_percentile_follows_recent_answers() {
        let latencies = Latencies::new(95.0, 100);
        for i in 0..99u64 {
            latencies.record(Duration::from_millis(1 + i % 10));
        }
        assert_eq!(latencies.delay(), None, "too few answers");
        latencies.record(Duration::from_millis(1));
        let p95 = latencies.delay().unwrap();
        // The 95th of 1..=10 ms is 10 ms, within a bucket (19 %).
        assert!(
            p95 >= Duration::from_millis(9) && p95 <= Duration::from_millis(12),
            "{p95:?}"
        );
        // The fleet slows down tenfold: old answers fade.
        for i in 0..5000u64 {
            latencies.record(Duration::from_millis(10 * (1 + i % 10)));
        }
        let p95 = latencies.delay().unwrap();
        assert!(
            p95 >= Duration::from_millis(85) && p95 <= Duration::from_millis(120),
            "{p95:?}"
        );
    }

    #[test]
    fn odd_percentiles_do_not_panic() {
        for p in [f64::NAN, -1.0, 0.0, 100.0, 1e9] {
            let latencies = Latencies::new(p, 0);
            latencies.record(Duration::ZERO);
            latencies.record(Duration::MAX);
            for _ in 0..64 {
                latencies.record(Duration::from_millis(3));
            }
            assert!(latencies.delay().is_some(), "{p}");
        }
    }
}
