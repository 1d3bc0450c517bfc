//! Passive outlier detection: outcomes reported by the request path, and
//! the ejections they cause.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{is_healthy, nanos, EndpointState, EJECTED, REMOVED};
use crate::health::checks::OutlierDetection;

impl EndpointState {
    #[inline]
    pub(crate) fn record_success(&self) {
        // Load first: the common case writes nothing, so healthy endpoints
        // do not bounce a cache line between cores.
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
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
        if failures >= detection.consecutive_failures {
            self.try_eject(&detection, failures);
        }
    }

    fn try_eject(&self, detection: &OutlierDetection, failures: u32) {
        if self.flags() & (EJECTED | REMOVED) != 0 {
            return;
        }
        if !self.core.reserve_ejection(detection.max_ejected_percent) {
            if failures == detection.consecutive_failures {
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
        // Active checks end an ejection early only with `rise` successes
        // counted from now.
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

    pub(crate) fn end_ejection(&self) {
        if self.recover(EJECTED).is_some() {
            tracing::info!(
                endpoint = %self.key,
                healthy = is_healthy(self.flags()),
                "endpoint returned from ejection: its time is over"
            );
        }
    }
}
