//! What all endpoints of one health-checked set share: settings, counts
//! across endpoints (for the ejection cap and the all-unhealthy rule), the
//! clock origin and the change notification.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::checks::OutlierDetection;
use super::config::AllUnhealthy;
use crate::util::Rng;

/// `counts` packs the endpoints registered (high half) and, of those, the
/// healthy ones (low half), so one load sees both consistently.
const TOTAL_ONE: u64 = 1 << 32;
const HEALTHY_MASK: u64 = (1 << 32) - 1;

#[derive(Debug)]
pub(crate) struct Core {
    epoch: Instant,
    counts: AtomicU64,
    /// Healthy endpoints still in slow start.
    ramping: AtomicUsize,
    /// Endpoints ejected by outlier detection (for the cap).
    ejected: AtomicUsize,
    /// Healthy endpoints paused at their own request (`Retry-After`).
    paused: AtomicUsize,
    /// The longest pause an endpoint may ask for; zero ignores them.
    pub(crate) max_pushback: Duration,
    /// Endpoint tasks alive (probing and timers).
    pub(crate) tasks: AtomicUsize,
    /// Woken on every transition, probe and task exit.
    pub(crate) changed: Notify,
    pub(crate) passive: Option<OutlierDetection>,
    pub(crate) slow_start: Option<Duration>,
    pub(crate) mode: AllUnhealthy,
    pub(crate) rise: u32,
    pub(crate) fall: u32,
    /// Spreads first probes and draws jitter.
    pub(crate) rng: Rng,
    /// Where in the probe interval the set's first endpoint is probed.
    phase_offset: u64,
    seq: AtomicU64,
}

impl Core {
    pub(crate) fn new(
        passive: Option<OutlierDetection>,
        slow_start: Option<Duration>,
        mode: AllUnhealthy,
        (rise, fall): (u32, u32),
        seed: Option<u64>,
    ) -> Self {
        let rng = seed.map_or_else(Rng::from_entropy, Rng::from_seed);
        let phase_offset = rng.next_u64();
        Self {
            epoch: Instant::now(),
            counts: AtomicU64::new(0),
            ramping: AtomicUsize::new(0),
            ejected: AtomicUsize::new(0),
            paused: AtomicUsize::new(0),
            max_pushback: Duration::ZERO,
            tasks: AtomicUsize::new(0),
            changed: Notify::new(),
            passive,
            slow_start,
            mode,
            rise,
            fall,
            rng,
            phase_offset,
            seq: AtomicU64::new(0),
        }
    }

    pub(crate) fn with_max_pushback(mut self, max: Duration) -> Self {
        self.max_pushback = max;
        self
    }

    /// Now, as nanoseconds since this set's creation.
    pub(crate) fn now(&self) -> u64 {
        self.since_epoch(Instant::now())
    }

    pub(crate) fn since_epoch(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX)
    }

    pub(crate) fn instant(&self, nanos: u64) -> Instant {
        self.epoch + Duration::from_nanos(nanos)
    }

    pub(crate) fn phase_offset(&self) -> u64 {
        self.phase_offset
    }

    pub(crate) fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// (registered, healthy)
    pub(crate) fn counts(&self) -> (usize, usize) {
        let counts = self.counts.load(Ordering::Acquire);
        ((counts >> 32) as usize, (counts & HEALTHY_MASK) as usize)
    }

    /// Whether every registered endpoint is unhealthy (and there is one).
    pub(crate) fn all_down(&self) -> bool {
        let counts = self.counts.load(Ordering::Acquire);
        counts >= TOTAL_ONE && (counts & HEALTHY_MASK) == 0
    }

    /// Healthy endpoints past their slow start.
    pub(crate) fn steady(&self) -> usize {
        let (_, healthy) = self.counts();
        healthy.saturating_sub(self.ramping.load(Ordering::Relaxed))
    }

    pub(crate) fn ejected(&self) -> usize {
        self.ejected.load(Ordering::Relaxed)
    }

    pub(crate) fn add_endpoint(&self, healthy: bool, ramping: bool) {
        self.counts
            .fetch_add(TOTAL_ONE + u64::from(healthy), Ordering::AcqRel);
        if ramping {
            self.ramping.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn remove_endpoint(&self, healthy: bool, ramping: bool, ejected: bool) {
        self.counts
            .fetch_sub(TOTAL_ONE + u64::from(healthy), Ordering::AcqRel);
        if ramping {
            self.ramping.fetch_sub(1, Ordering::Relaxed);
        }
        if ejected {
            self.release_ejection();
        }
    }

    /// Counts one endpoint turning healthy (`true`) or unhealthy; logs when
    /// the set as a whole enters or leaves the all-unhealthy state.
    pub(crate) fn healthy_changed(&self, healthy: bool) {
        let counts = if healthy {
            self.counts.fetch_add(1, Ordering::AcqRel) + 1
        } else {
            self.counts.fetch_sub(1, Ordering::AcqRel) - 1
        };
        let (total, now_healthy) = ((counts >> 32) as usize, counts & HEALTHY_MASK);
        match (healthy, now_healthy) {
            (false, 0) => match self.mode {
                AllUnhealthy::FailFast => tracing::warn!(
                    endpoints = total,
                    "no healthy endpoint: requests fail fast until one recovers"
                ),
                AllUnhealthy::Panic => tracing::warn!(
                    endpoints = total,
                    "no healthy endpoint: panic mode, requests go to every endpoint"
                ),
            },
            (true, 1) => tracing::info!(endpoints = total, "a healthy endpoint is back"),
            _ => {}
        }
    }

    /// Counts a healthy endpoint entering (`true`) or leaving a pause.
    pub(crate) fn paused_changed(&self, paused: bool) {
        if paused {
            self.paused.fetch_add(1, Ordering::Relaxed);
        } else {
            self.paused.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Whether every healthy endpoint is paused: then pauses are ignored,
    /// rather than leave no endpoint to pick.
    pub(crate) fn all_paused(&self) -> bool {
        let (_, healthy) = self.counts();
        self.paused.load(Ordering::Relaxed) >= healthy
    }

    pub(crate) fn ramping_changed(&self, ramping: bool) {
        if ramping {
            self.ramping.fetch_add(1, Ordering::Relaxed);
        } else {
            self.ramping.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Takes one of the ejection slots the cap allows, if one is free.
    pub(crate) fn reserve_ejection(&self, max_percent: u8) -> bool {
        let (total, _) = self.counts();
        let cap = total * usize::from(max_percent) / 100;
        self.ejected
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |ejected| {
                (ejected < cap).then_some(ejected + 1)
            })
            .is_ok()
    }

    pub(crate) fn release_ejection(&self) {
        self.ejected.fetch_sub(1, Ordering::AcqRel);
    }
}
