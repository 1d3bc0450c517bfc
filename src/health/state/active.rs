//! Active checks: probe outcomes and the rise and fall thresholds.

use std::sync::atomic::Ordering;

use super::{is_healthy, EndpointState, DOWN, EJECTED};

impl EndpointState {
    pub(crate) fn record_probe(&self, ok: bool) {
        self.probes.fetch_add(1, Ordering::Relaxed);
        if ok {
            self.probe_failures.store(0, Ordering::Relaxed);
            let successes = self
                .probe_successes
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1);
            if successes >= self.core.rise && !is_healthy(self.flags()) {
                let old = self.flags();
                if self.recover(DOWN | EJECTED).is_some() {
                    let what = if old & DOWN != 0 {
                        "endpoint healthy again: active checks passed"
                    } else {
                        "endpoint returned early from ejection: active checks passed"
                    };
                    tracing::info!(endpoint = %self.key, successes, "{}", what);
                }
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
