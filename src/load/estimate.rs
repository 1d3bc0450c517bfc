//! A Peak-EWMA latency estimate that is read and updated without a lock.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// What a failed request adds to an endpoint's round-trip estimate: 100 ms
/// (see [`Latency`](super::Latency), "Failures").
pub const DEFAULT_FAILURE_PENALTY: Duration = Duration::from_millis(100);

/// The estimate clock's resolution: a millisecond.
const NANOS_PER_TICK: f64 = 1_000_000.0;

/// Readings rewrite an estimate last updated this many ticks ago (about 70
/// minutes), so the stored tick never falls a half wrap (24 days) behind
/// while the endpoint is in use.
const REFRESH_TICKS: i32 = 1 << 22;

/// One endpoint's round-trip-time estimate.
///
/// The estimate and the time of its last update live in one `AtomicU64` (an
/// `f32` of nanoseconds and a `u32` of milliseconds since `epoch`), so a
/// reader never sees one without the other and a sample is a single
/// compare-and-swap. Tower's `Latency` keeps them behind a mutex instead.
pub(crate) struct Estimate {
    epoch: Instant,
    decay_ns: f64,
    /// Nanoseconds (`f64` bits) a failed request adds to the estimate.
    failure_penalty: AtomicU64,
    /// Halvings of the estimate a tick: `ln 2` half-lives a time constant.
    ticks_per_halving_inv: f64,
    state: AtomicU64,
}

impl Estimate {
    /// An estimate of `default_rtt` until the first sample, that forgets with
    /// time constant `decay` (at least a nanosecond, so that a zero decay
    /// does not divide by zero: it then keeps only the latest sample).
    pub(crate) fn new(default_rtt: Duration, decay: Duration) -> Self {
        let decay_ns = nanos(decay).max(1.0);
        Self {
            epoch: Instant::now(),
            decay_ns,
            ticks_per_halving_inv: NANOS_PER_TICK / decay_ns / std::f64::consts::LN_2,
            failure_penalty: AtomicU64::new(nanos(DEFAULT_FAILURE_PENALTY).to_bits()),
            state: AtomicU64::new(pack(nanos(default_rtt), 0)),
        }
    }

    /// The estimate in nanoseconds at `now`: the stored value, decayed
    /// towards zero for the time since it was stored, so that an endpoint
    /// that has been slow is tried again once it has had time to recover.
    pub(crate) fn rtt_ns(&self, now: Instant) -> f64 {
        let state = self.state.load(Ordering::Relaxed);
        self.rtt_ns_at_tick(state, self.tick(now))
    }

    fn rtt_ns_at_tick(&self, state: u64, now: u32) -> f64 {
        let (rtt, at) = unpack(state);
        let elapsed = elapsed(at, now);
        let value = rtt * self.keep(elapsed);
        if elapsed >= REFRESH_TICKS {
            // One attempt: if a sample raced in, its value is fresher anyway.
            let _ = self.state.compare_exchange(
                state,
                pack(value, now),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        value
    }

    /// Like [`rtt_ns`](Self::rtt_ns), for the pick path: no refresh of a
    /// long-unused estimate unless needed.
    pub(crate) fn load_ns(&self, now: Instant) -> f64 {
        let state = self.state.load(Ordering::Relaxed);
        let (rtt, at) = unpack(state);
        let now = self.tick(now);
        let elapsed = elapsed(at, now);
        if elapsed == 0 {
            return rtt;
        }
        if elapsed >= REFRESH_TICKS {
            return self.rtt_ns_at_tick(state, now);
        }
        rtt * decay_factor(f64::from(elapsed) * self.ticks_per_halving_inv)
    }

    /// Takes the round trip of a request sent at `sent_at` and finished at
    /// `now`: a sample above the current estimate replaces it (the peak),
    /// a lower one pulls it down by a weight that grows with the time since
    /// the last update.
    pub(crate) fn sample(&self, sent_at: Instant, now: Instant) {
        let rtt = nanos(now.saturating_duration_since(sent_at));
        self.sample_ns(rtt, now);
    }

    /// Sets what a failure adds (finite and not negative, else 0).
    pub(crate) fn set_failure_penalty(&self, penalty_ns: f64) {
        let penalty = if penalty_ns.is_finite() && penalty_ns > 0.0 {
            penalty_ns
        } else {
            0.0
        };
        self.failure_penalty
            .store(penalty.to_bits(), Ordering::Relaxed);
    }

    /// Takes the round trip of a failed request: never lower than the
    /// current estimate, plus the failure penalty, so that a fast failure
    /// does not make the endpoint look fast. Capped at an hour, so that a
    /// long run of failures cannot push the estimate to infinity.
    pub(crate) fn sample_failure(&self, sent_at: Instant, now: Instant) {
        let rtt = nanos(now.saturating_duration_since(sent_at));
        let penalty = f64::from_bits(self.failure_penalty.load(Ordering::Relaxed));
        let current = self.rtt_ns(now);
        let sample = (rtt.max(current) + penalty).min(3.6e12).max(current);
        self.sample_ns(sample, now);
    }

    fn sample_ns(&self, rtt: f64, now: Instant) {
        let now = self.tick(now);
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            let (stored, at) = unpack(state);
            let elapsed = elapsed(at, now);
            // A racing sample may have stored a later tick than ours; time
            // does not go back.
            let tick = if at.wrapping_sub(now) as i32 > 0 {
                at
            } else {
                now
            };
            let keep = self.keep(elapsed);
            let current = stored * keep;
            let next = if rtt > current {
                rtt
            } else {
                current * keep + rtt * (1.0 - keep)
            };
            match self.state.compare_exchange_weak(
                state,
                pack(next, tick),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => state = actual,
            }
        }
    }

    /// The share of the old estimate kept after `elapsed` ticks:
    /// `e^(-elapsed / decay)`, by [`decay_factor`].
    fn keep(&self, elapsed: i32) -> f64 {
        decay_factor(f64::from(elapsed) * self.ticks_per_halving_inv)
    }

    /// Milliseconds since the epoch, wrapping at `u32::MAX`.
    fn tick(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.epoch).as_millis() as u32
    }
}

/// `2^-halvings` (that is `e^(-t/τ)` for `halvings = t / τ / ln 2`) without
/// `exp`: the whole halvings go straight into the exponent bits of the
/// result, the fraction `f` into a degree-8 Taylor polynomial of
/// `e^(-f ln 2)`, whose relative error is below 4e-7 on `[0, 1)`. About a
/// nanosecond, against 10–20 for `exp`.
pub(crate) fn decay_factor(halvings: f64) -> f64 {
    // Past 1022 halvings the result is below f64's normal range: zero will do.
    if halvings.is_nan() || halvings >= 1022.0 {
        return 0.0;
    }
    if halvings <= 0.0 {
        return 1.0;
    }
    let whole = halvings.floor();
    let y = (halvings - whole) * std::f64::consts::LN_2;
    // e^-y = 1 - y + y²/2 - y³/6 + …, by Horner.
    let mut p = 1.0 - y / 8.0;
    p = 1.0 - y / 7.0 * p;
    p = 1.0 - y / 6.0 * p;
    p = 1.0 - y / 5.0 * p;
    p = 1.0 - y / 4.0 * p;
    p = 1.0 - y / 3.0 * p;
    p = 1.0 - y / 2.0 * p;
    p = 1.0 - y * p;
    // 2^-whole, exactly: an exponent field of 1023 - whole, at least 1.
    let scale = f64::from_bits((1023 - whole as u64) << 52);
    p * scale
}

/// Ticks from `at` to `now`, taking the wrapped difference as signed so that
/// a tick stored just after `now` was read counts as no time at all.
fn elapsed(at: u32, now: u32) -> i32 {
    (now.wrapping_sub(at) as i32).max(0)
}

fn pack(rtt_ns: f64, tick: u32) -> u64 {
    // `as f32` saturates to infinity past f32::MAX; a Duration's nanoseconds
    // (at most 1.8e28) stay far below it.
    (u64::from((rtt_ns as f32).to_bits()) << 32) | u64::from(tick)
}

fn unpack(state: u64) -> (f64, u32) {
    (
        f64::from(f32::from_bits((state >> 32) as u32)),
        state as u32,
    )
}

pub(crate) fn nanos(duration: Duration) -> f64 {
    duration.as_nanos() as f64
}

impl fmt::Debug for Estimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (rtt, _) = unpack(self.state.load(Ordering::Relaxed));
        f.debug_struct("Estimate")
            .field("stored_rtt_ns", &rtt)
            .field("decay_ns", &self.decay_ns)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test(start_paused = true)]
    async fn default_rtt_holds_until_time_passes() {
        let estimate = Estimate::new(100 * MS, Duration::from_secs(1));
        assert_eq!(estimate.rtt_ns(Instant::now()), 100e6);
    }

    #[tokio::test(start_paused = true)]
    async fn decays_towards_zero_with_the_time_constant() {
        let estimate = Estimate::new(100 * MS, Duration::from_secs(1));
        let later = Instant::now() + Duration::from_secs(1);
        let value = estimate.rtt_ns(later);
        assert!((value - 100e6 / std::f64::consts::E).abs() < 1e3, "{value}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_peak_replaces_and_a_low_sample_pulls_down() {
        let estimate = Estimate::new(10 * MS, Duration::from_secs(1));
        let start = Instant::now();
        estimate.sample(start, start + 500 * MS);
        assert_eq!(estimate.rtt_ns(start + 500 * MS), 500e6);

        // A fast sample right after barely moves it; one much later moves it
        // most of the way.
        estimate.sample(start + 500 * MS, start + 501 * MS);
        let soon = estimate.rtt_ns(start + 501 * MS);
        assert!(soon > 400e6 && soon < 500e6, "{soon}");
        let then = start + 5001 * MS;
        estimate.sample(then - MS, then);
        let late = estimate.rtt_ns(then);
        assert!(late < 2e6, "{late}");
    }

    #[test]
    fn zero_and_huge_settings_stay_finite() {
        let now = Instant::now();
        for (rtt, decay) in [
            (Duration::ZERO, Duration::ZERO),
            (Duration::MAX, Duration::ZERO),
            (Duration::MAX, Duration::MAX),
            (Duration::ZERO, Duration::MAX),
        ] {
            let estimate = Estimate::new(rtt, decay);
            estimate.sample(now, now + Duration::from_secs(3600));
            estimate.sample(now + Duration::from_secs(3600), now);
            for at in [now, now + Duration::from_secs(1 << 40)] {
                let value = estimate.rtt_ns(at);
                assert!(
                    value.is_finite() && value >= 0.0,
                    "{rtt:?} {decay:?}: {value}"
                );
            }
        }
    }

    #[test]
    fn elapsed_is_signed_across_the_wrap() {
        assert_eq!(elapsed(10, 15), 5);
        assert_eq!(elapsed(15, 10), 0);
        assert_eq!(elapsed(u32::MAX - 1, 3), 5);
        assert_eq!(unpack(pack(1.5, 42)), (1.5, 42));
    }

    #[test]
    fn concurrent_samples_keep_the_peak() {
        let estimate = Estimate::new(MS, Duration::from_secs(10));
        let start = Instant::now();
        std::thread::scope(|scope| {
            for i in 0..4u32 {
                let estimate = &estimate;
                scope.spawn(move || {
                    for j in 0..1000u32 {
                        estimate.sample(
                            start,
                            start + Duration::from_micros(u64::from(i * 1000 + j)),
                        );
                    }
                });
            }
        });
        // The largest sample (3.999 ms) is a peak and replaces the estimate
        // whatever the interleaving; smaller ones can only move it by about a
        // ten-thousandth per millisecond of time since.
        let value = estimate.rtt_ns(start);
        assert!((3.0e6..=3.999e6 + 1.0).contains(&value), "{value}");
    }

    #[test]
    fn decay_factor_follows_exp() {
        for k in 0..20_000 {
            let halvings = f64::from(k) * 0.0537;
            let exact = (-halvings * std::f64::consts::LN_2).exp();
            let fast = decay_factor(halvings);
            assert!(
                (fast - exact).abs() <= exact * 4e-7 + 1e-300,
                "{halvings}: {fast} against {exact}"
            );
        }
        assert_eq!(decay_factor(0.0), 1.0);
        assert_eq!(decay_factor(-3.0), 1.0);
        assert_eq!(decay_factor(5000.0), 0.0);
        assert_eq!(decay_factor(f64::INFINITY), 0.0);
        assert_eq!(decay_factor(f64::NAN), 0.0);
    }

    #[tokio::test(start_paused = true)]
    async fn load_reads_match_the_exact_estimate() {
        let estimate = Estimate::new(100 * MS, Duration::from_secs(1));
        let start = Instant::now();
        estimate.sample(start, start + 300 * MS);
        for ms in [0u64, 1, 7, 250, 1000, 4321, 60_000] {
            let at = start + 300 * MS + Duration::from_millis(ms);
            let elapsed = Duration::from_millis(ms).as_secs_f64();
            let exact = 300e6 * (-elapsed).exp();
            let (fast, read) = (estimate.load_ns(at), estimate.rtt_ns(at));
            assert_eq!(fast, read);
            assert!(
                (fast - exact).abs() <= exact * 4e-7 + 1e-9,
                "{ms}: {fast} {exact}"
            );
        }
    }
}
