//! Passive outlier detection: outcomes reported by the request path, and
//! the ejections they cause.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{is_healthy, nanos, EndpointState, EJECTED, PROBATION, PROBATION_PASSES, REMOVED};
use crate::health::checks::OutlierDetection;

impl EndpointState {
    #[inline]
    pub(crate) fn record_success(&self) {
        // Load first: the common case writes nothing, so healthy endpoints
        // do not bounce a cache line between cores.
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.flags() & PROBATION != 0 {
            self.probation_passed();
        }
    }

    /// One more success on probation: twice as many requests may run at
    /// once, and after `PROBATION_PASSES` the probation is over.
    fn probation_passed(&self) {
        let passes = self.probation_passes.fetch_add(1, Ordering::AcqRel) + 1;
        if passes >= PROBATION_PASSES && self.update(|flags| flags & !PROBATION).is_some() {
            tracing::info!(endpoint = %self.key, passes, "endpoint passed its probation");
        }
    }

    pub(crate) fn record_failure(&self) {
        let Some(detection) = self.core.passive else {
            return;
        };
        let failures = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        // On probation one failure is enough: the endpoint was ejected for
        // failing and has not yet shown that it stopped.
        if failures >= detection.consecutive_failures || self.flags() & PROBATION != 0 {
            self.try_eject(&detection, failures);
        }
    }

    fn try_eject(&self, detection: &OutlierDetection, failures: u32) {
        if self.flags() & (EJECTED | REMOVED) != 0 {
            return;
        }
        if !self.core.reserve_ejection(detection.max_ejected_percent) {
            if failures == detection.consecutive_failures || self.flags() & PROBATION != 0 {
                tracing::warn!(
                    endpoint = %self.key,
                    failures,
                    ejected = self.core.ejected(),
                    "endpoint not ejected: the cap on ejected endpoints is reached"
                );
            }
            return;
        }
        let now = self.core.now();
        let base = nanos(detection.base_ejection);
        let healthy_for = now.saturating_sub(self.healthy_since.load(Ordering::Acquire));
        let decay = u32::try_from(healthy_for / base).unwrap_or(u32::MAX);
        let penalty = self
            .penalty
            .load(Ordering::Relaxed)
            .saturating_sub(decay)
            .saturating_add(1);
        let duration = base
            .saturating_mul(u64::from(penalty))
            .min(nanos(detection.max_ejection));
        // Stored before the flag, so the task woken by it reads this time.
        self.ejected_until
            .store(now.saturating_add(duration), Ordering::Release);
        if self.take_out(EJECTED).is_none() {
            self.core.release_ejection();
            return;
        }
        self.penalty.store(penalty, Ordering::Relaxed);
        let ejections = self.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        self.failures.store(0, Ordering::Relaxed);
        // Probes that passed before the ejection say nothing of what follows.
        self.probe_successes.store(0, Ordering::Relaxed);
        tracing::info!(
            endpoint = %self.key,
            failures,
            ejections,
            ejection = ?Duration::from_nanos(duration),
            "endpoint ejected after consecutive failures"
        );
        self.wake.notify_one();
    }

    /// When the current ejection ends (nanoseconds since the set's epoch).
    pub(crate) fn ejection_ends(&self) -> Option<u64> {
        (self.flags() & EJECTED != 0).then(|| self.ejected_until.load(Ordering::Acquire))
    }

    /// The ejection's time is over: the endpoint comes back on probation
    /// (one request at a time, more as they succeed; one failure ejects it
    /// again, for longer).
    pub(crate) fn end_ejection(&self) {
        self.probation_passes.store(0, Ordering::Release);
        if self.recover_onto(EJECTED, PROBATION).is_some() {
            tracing::info!(
                endpoint = %self.key,
                healthy = is_healthy(self.flags()),
                "endpoint returned from ejection on probation: its time is over"
            );
        }
    }
}

impl crate::classify::LateVerdict for EndpointState {
    fn failed_late(&self) {
        tracing::debug!(endpoint = %self.key, "a response failed after its head");
        self.record_failure();
    }
}
