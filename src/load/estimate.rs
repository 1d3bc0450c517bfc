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
mod tests;
