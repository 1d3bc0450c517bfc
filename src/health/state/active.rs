//! Active checks: probe outcomes and the rise and fall thresholds.

use std::sync::atomic::Ordering;

use super::{is_healthy, EndpointState, DOWN};

impl EndpointState {
    pub(crate) fn record_probe(&self, ok: bool) {
        self.probes.fetch_add(1, Ordering::Relaxed);
        if ok {
            self.probe_failures.store(0, Ordering::Relaxed);
            let successes = self
                .probe_successes
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1);
            // Probes end what probes started, never an ejection: a server
            // can answer its health path and still fail every real request,
            // and only real requests (on probation) can show otherwise.
            if successes >= self.core.rise
                && self.flags() & DOWN != 0
                && self.recover(DOWN).is_some()
            {
                let what = if is_healthy(self.flags()) {
                    "endpoint healthy again: active checks passed"
                } else {
                    "active checks passed; the endpoint stays ejected until its time is over"
                };
                tracing::info!(endpoint = %self.key, successes, "{}", what);
            }
        } else {
            self.probe_successes.store(0, Ordering::Relaxed);
            let failures = self
                .probe_failures
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1);
            if failures >= self.core.fall && self.take_out(DOWN).is_some() {
                tracing::info!(
                    endpoint = %self.key,
                    failures,
                    "endpoint unhealthy: active checks failed"
                );
            }
        }
        self.core.changed.notify_waiters();
    }
}
