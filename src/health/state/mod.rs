//! One endpoint's health: a word of flags and a few counters, all atomics,
//! changed by the request path (passive), the endpoint's task (probes,
//! timers) and the discovery adapter (insert, remove). The passive and
//! active transitions are in their own files.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::config::AllUnhealthy;
use super::core::Core;

mod active;
mod passive;

/// Active checks failed `fall` times in a row.
pub(crate) const DOWN: u32 = 1;
/// Ejected by outlier detection until `ejected_until`.
pub(crate) const EJECTED: u32 = 2;
/// Healthy and in slow start: admits a share of picks.
pub(crate) const RAMP: u32 = 4;
/// Removed from discovery: no more transitions, no more counting.
pub(crate) const REMOVED: u32 = 8;
/// Asked for a pause (`Retry-After`) until `paused_until`.
pub(crate) const PAUSED: u32 = 16;
/// Back from an ejection and on probation: admits a few requests at a
/// time, and one failure ejects it again at once.
pub(crate) const PROBATION: u32 = 32;

/// Successes on probation that end it; the k-th success lets 2^k requests
/// run at once.
pub(crate) const PROBATION_PASSES: u32 = 4;

/// Share of picks a slow-starting endpoint admits at first, per mille.
pub(crate) const RAMP_FLOOR: u32 = 100;
/// How many times the share is raised over the slow-start window.
pub(crate) const RAMP_STEPS: u32 = 20;

pub(crate) fn is_healthy(flags: u32) -> bool {
    flags & (DOWN | EJECTED) == 0
}

fn is_ramping(flags: u32) -> bool {
    is_healthy(flags) && flags & RAMP != 0
}

/// Healthy and paused: what the set's count of paused endpoints counts.
fn is_paused(flags: u32) -> bool {
    is_healthy(flags) && flags & PAUSED != 0
}

#[derive(Debug)]
pub(crate) struct EndpointState {
    pub(crate) core: Arc<Core>,
    /// The key as `Debug` prints it, for logs.
    pub(crate) key: Box<str>,
    pub(crate) seq: u64,
    flags: AtomicU32,
    failures: AtomicU32,
    ejections: AtomicU32,
    /// The multiplier of the next ejection, before decay.
    penalty: AtomicU32,
    ejected_until: AtomicU64,
    paused_until: AtomicU64,
    healthy_since: AtomicU64,
    ramp_permille: AtomicU32,
    admitted: AtomicU64,
    probe_successes: AtomicU32,
    probe_failures: AtomicU32,
    probes: AtomicU64,
    /// Successes since probation began.
    probation_passes: AtomicU32,
    /// Requests on probation not yet judged.
    probation_in_flight: AtomicU32,
    /// Tells the endpoint's task that its timers changed.
    pub(crate) wake: Notify,
}

/// What a snapshot reads of one endpoint.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Report {
    pub(crate) flags: u32,
    pub(crate) failures: u32,
    pub(crate) ejections: u32,
    pub(crate) probes: u64,
    pub(crate) ejected_until: Option<u64>,
    pub(crate) paused_until: Option<u64>,
    pub(crate) ramp_permille: u32,
}

impl EndpointState {
    /// A new endpoint, counted in its set at once: healthy, and in slow
    /// start if the set has one.
    pub(crate) fn register(core: Arc<Core>, key: Box<str>) -> Self {
        let ramp = core.slow_start.is_some();
        let now = core.now();
        core.add_endpoint(true, ramp);
        let seq = core.next_seq();
        Self {
            key,
            seq,
            flags: AtomicU32::new(if ramp { RAMP } else { 0 }),
            failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            penalty: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            paused_until: AtomicU64::new(0),
            healthy_since: AtomicU64::new(now),
            ramp_permille: AtomicU32::new(RAMP_FLOOR),
            admitted: AtomicU64::new(0),
            probe_successes: AtomicU32::new(0),
            probe_failures: AtomicU32::new(0),
            probes: AtomicU64::new(0),
            probation_passes: AtomicU32::new(0),
            probation_in_flight: AtomicU32::new(0),
            wake: Notify::new(),
            core,
        }
    }

    /// Takes the endpoint out of its set's counts; later transitions of
    /// clones still in flight are ignored.
    pub(crate) fn deregister(&self) {
        let old = self.flags.fetch_or(REMOVED, Ordering::AcqRel);
        if old & REMOVED == 0 {
            if is_paused(old) {
                self.core.paused_changed(false);
            }
            self.core
                .remove_endpoint(is_healthy(old), is_ramping(old), old & EJECTED != 0);
            self.core.changed.notify_waiters();
        }
    }

    pub(crate) fn flags(&self) -> u32 {
        self.flags.load(Ordering::Acquire)
    }

    // ===== the request path =====

    /// Whether a picker may choose this endpoint now.
    #[inline]
    pub(crate) fn admits(&self) -> bool {
        let flags = self.flags.load(Ordering::Relaxed);
        if !is_healthy(flags) {
            // Panic mode and fail-fast both let the pick through when no
            // endpoint is healthy; `fails_fast` then answers the call.
            return self.core.all_down();
        }
        if flags & PAUSED != 0 && !self.pause_over() {
            return self.core.all_paused();
        }
        if flags & PROBATION != 0 && !self.probation_admits() {
            return false;
        }
        if flags & RAMP != 0 {
            return self.ramp_admits();
        }
        true
    }

    /// On probation, 2^k requests may run at once after k successes: one
    /// at first. Unless no other endpoint is healthy to take the rest.
    fn probation_admits(&self) -> bool {
        let passes = self.probation_passes.load(Ordering::Relaxed);
        let allowed = 1u32 << passes.min(PROBATION_PASSES);
        let (_, healthy) = self.core.counts();
        self.probation_in_flight.load(Ordering::Relaxed) < allowed || healthy <= 1
    }

    /// A request starts on this endpoint: on probation, it holds one of
    /// the few places until it is judged (or dropped).
    pub(crate) fn start_request(self: &Arc<Self>) -> Option<ProbationSlot> {
        if self.flags.load(Ordering::Relaxed) & PROBATION == 0 {
            return None;
        }
        self.probation_in_flight.fetch_add(1, Ordering::AcqRel);
        Some(ProbationSlot(Arc::clone(self)))
    }

    /// Takes the endpoint out of rotation for `pause` (at most the set's
    /// `max_pushback`), as its answer asked.
    pub(crate) fn pause_for(&self, pause: std::time::Duration) {
        let pause = pause.min(self.core.max_pushback);
        if pause.is_zero() {
            return;
        }
        let until = self.core.now().saturating_add(nanos(pause));
        self.paused_until.fetch_max(until, Ordering::AcqRel);
        if self.update(|flags| flags | PAUSED).is_some() {
            tracing::debug!(endpoint = %self.key, ?pause, "endpoint paused at its own request");
        }
    }

    /// Whether a pause has run out; clears it if so. Reads the clock, but
    /// only for a paused endpoint.
    fn pause_over(&self) -> bool {
        let now = self.core.now();
        if now < self.paused_until.load(Ordering::Acquire) {
            return false;
        }
        self.update(|flags| {
            if now >= self.paused_until.load(Ordering::Acquire) {
                flags & !PAUSED
            } else {
                flags
            }
        });
        true
    }

    /// Admits `ramp_permille` of every thousand asks, evenly spaced, unless
    /// no endpoint past its slow start is there to take the rest.
    fn ramp_admits(&self) -> bool {
        if self.core.steady() == 0 {
            return true;
        }
        let share = u64::from(self.ramp_permille.load(Ordering::Relaxed));
        let n = self.admitted.fetch_add(1, Ordering::Relaxed) % 1000;
        (n + 1) * share / 1000 > n * share / 1000
    }

    /// Whether a call picked onto this endpoint must fail at once with
    /// `NoHealthyEndpoints` instead of reaching it.
    #[inline]
    pub(crate) fn fails_fast(&self) -> bool {
        self.core.mode == AllUnhealthy::FailFast
            && !is_healthy(self.flags.load(Ordering::Relaxed))
            && self.core.all_down()
    }

    /// Clears `clear`; if that makes the endpoint healthy, restarts its
    /// clocks and its slow start.
    fn recover(&self, clear: u32) -> Option<(u32, u32)> {
        self.recover_onto(clear, 0)
    }

    /// Clears `clear` and sets `set` (with `clear`'s effects of
    /// [`recover`](Self::recover)).
    fn recover_onto(&self, clear: u32, set: u32) -> Option<(u32, u32)> {
        // Stored first, so that nothing sees the endpoint healthy with the
        // old start time or the old share; harmless if nothing changes.
        let now = self.core.now();
        let ramp = self.core.slow_start.is_some();
        let changed = self.update(|flags| {
            let cleared = (flags & !clear) | set;
            if !is_healthy(flags) && is_healthy(cleared) {
                self.healthy_since.store(now, Ordering::Release);
                self.ramp_permille.store(RAMP_FLOOR, Ordering::Release);
                if ramp {
                    return cleared | RAMP;
                }
            }
            cleared
        });
        if let Some((old, _)) = changed {
            if old & EJECTED != 0 && clear & EJECTED != 0 {
                self.failures.store(0, Ordering::Relaxed);
            }
            self.wake.notify_one();
        }
        changed
    }

    /// Sets `reason` (`DOWN` or `EJECTED`), which ends any slow start and
    /// probation: they start again on recovery. `None` when `reason` was
    /// already set.
    fn take_out(&self, reason: u32) -> Option<(u32, u32)> {
        self.update(|flags| {
            if flags & reason != 0 {
                flags
            } else {
                (flags | reason) & !(RAMP | PROBATION)
            }
        })
    }

    pub(crate) fn is_ramping(&self) -> bool {
        is_ramping(self.flags())
    }

    /// Raises the slow-start share for `now`; returns when to raise it
    /// next, or `None` once the window is over.
    pub(crate) fn ramp_tick(&self, now: u64) -> Option<u64> {
        let window = nanos(self.core.slow_start?);
        if !self.is_ramping() {
            return None;
        }
        let elapsed = now.saturating_sub(self.healthy_since.load(Ordering::Acquire));
        if elapsed >= window {
            if self.update(|flags| flags & !RAMP).is_some() {
                tracing::info!(endpoint = %self.key, "endpoint slow start over: full share");
            }
            return None;
        }
        let share = (u128::from(elapsed) * 1000 / u128::from(window)) as u32;
        self.ramp_permille
            .store(share.max(RAMP_FLOOR), Ordering::Release);
        Some(now + (window / u64::from(RAMP_STEPS)).max(1))
    }

    pub(crate) fn report(&self) -> Report {
        let flags = self.flags();
        Report {
            flags,
            failures: self.failures.load(Ordering::Relaxed),
            ejections: self.ejections.load(Ordering::Relaxed),
            probes: self.probes.load(Ordering::Relaxed),
            ejected_until: (flags & EJECTED != 0)
                .then(|| self.ejected_until.load(Ordering::Acquire)),
            paused_until: (flags & PAUSED != 0)
                .then(|| self.paused_until.load(Ordering::Acquire))
                .filter(|&until| until > self.core.now()),
            ramp_permille: self.ramp_permille.load(Ordering::Relaxed),
        }
    }

    /// Applies `change` to the flags unless the endpoint was removed, keeps
    /// the set's counts in step, and tells waiters. `None` when nothing
    /// changed.
    fn update(&self, change: impl Fn(u32) -> u32) -> Option<(u32, u32)> {
        let mut old = self.flags();
        let new = loop {
            if old & REMOVED != 0 {
                return None;
            }
            let new = change(old);
            if new == old {
                return None;
            }
            match self
                .flags
                .compare_exchange_weak(old, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break new,
                Err(actual) => old = actual,
            }
        };
        if is_healthy(old) != is_healthy(new) {
            self.core.healthy_changed(is_healthy(new));
        }
        if is_ramping(old) != is_ramping(new) {
            self.core.ramping_changed(is_ramping(new));
        }
        if is_paused(old) != is_paused(new) {
            self.core.paused_changed(is_paused(new));
        }
        if old & EJECTED != 0 && new & EJECTED == 0 {
            self.core.release_ejection();
        }
        self.core.changed.notify_waiters();
        Some((old, new))
    }
}

/// A request on probation, until it is judged or dropped.
#[derive(Debug)]
pub(crate) struct ProbationSlot(Arc<EndpointState>);

impl Drop for ProbationSlot {
    fn drop(&mut self) {
        self.0.probation_in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}
