//! The two health sources' settings: active checks and outlier detection.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::error::InvalidHealthConfig;
use super::probe::Probe;

/// Active health checks: a probe per endpoint, on an interval, with
/// HAProxy-style rise and fall thresholds.
///
/// Defaults: every 5 s, 2 s timeout, jitter of a tenth of the interval, 2
/// successes to come back (`rise`), 3 failures to leave (`fall`).
#[must_use]
pub struct ActiveChecks<K> {
    pub(crate) probe: Arc<dyn Probe<K>>,
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
    pub(crate) jitter: Option<Duration>,
    pub(crate) rise: u32,
    pub(crate) fall: u32,
    pub(crate) seed: Option<u64>,
}

impl<K> Clone for ActiveChecks<K> {
    fn clone(&self) -> Self {
        Self {
            probe: Arc::clone(&self.probe),
            ..*self
        }
    }
}

impl<K> fmt::Debug for ActiveChecks<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActiveChecks")
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("jitter", &self.jitter_or_default())
            .field("rise", &self.rise)
            .field("fall", &self.fall)
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

impl<K> ActiveChecks<K> {
    /// Checks every endpoint with `probe`.
    pub fn new(probe: impl Probe<K> + 'static) -> Self {
        Self {
            probe: Arc::new(probe),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            jitter: None,
            rise: 2,
            fall: 3,
            seed: None,
        }
    }

    /// Time from the start of one probe of an endpoint to the next (before
    /// jitter). Must not be zero.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// How long one probe may take before it counts as failed. Must not be
    /// zero; it may exceed the interval (the next probe then waits for it).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Each gap between two probes of an endpoint is the interval plus a
    /// seeded random amount in `-jitter..=jitter`, so that endpoints drift
    /// apart. At most half the interval; the default is a tenth of it.
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = Some(jitter);
        self
    }

    /// Consecutive successful probes that bring an unhealthy endpoint back
    /// (HAProxy's `rise`). At least 1.
    pub fn rise(mut self, rise: u32) -> Self {
        self.rise = rise;
        self
    }

    /// Consecutive failed probes that take a healthy endpoint out (HAProxy's
    /// `fall`). At least 1.
    pub fn fall(mut self, fall: u32) -> Self {
        self.fall = fall;
        self
    }

    /// Seeds the jitter and the spread of first probes, for reproducible
    /// schedules (tests). Unseeded, both come from process entropy.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    pub(crate) fn jitter_or_default(&self) -> Duration {
        self.jitter.unwrap_or(self.interval / 10)
    }

    pub(crate) fn validate(&self) -> Result<(), InvalidHealthConfig> {
        if self.interval.is_zero() {
            return Err(InvalidHealthConfig::ZeroInterval);
        }
        if self.timeout.is_zero() {
            return Err(InvalidHealthConfig::ZeroTimeout);
        }
        let jitter = self.jitter_or_default();
        if jitter > self.interval / 2 {
            return Err(InvalidHealthConfig::JitterTooLarge {
                jitter,
                interval: self.interval,
            });
        }
        if self.rise == 0 || self.fall == 0 {
            return Err(InvalidHealthConfig::ZeroThreshold);
        }
        self.probe.validate()
    }
}

/// Passive outlier detection: the balancer's responses decide.
///
/// After `consecutive_failures` failed responses in a row an endpoint is
/// ejected. The n-th ejection lasts `base_ejection × n`, capped at
/// `max_ejection`; the count n shrinks by one for every `base_ejection` the
/// endpoint then stays in rotation, so an endpoint that fails once a day is
/// not punished for last week. At most `max_ejected_percent` of the endpoints
/// (rounded down) are ejected at once; further failing endpoints stay in
/// rotation until an ejected one returns.
///
/// Defaults (Envoy's, except the cap): 5 failures, 30 s base, 300 s at most,
/// 50 % cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct OutlierDetection {
    pub(crate) consecutive_failures: u32,
    pub(crate) base_ejection: Duration,
    pub(crate) max_ejection: Duration,
    pub(crate) max_ejected_percent: u8,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        Self::new()
    }
}

impl OutlierDetection {
    /// Outlier detection with the defaults.
    pub const fn new() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 50,
        }
    }

    /// Failed responses in a row that eject an endpoint. At least 1.
    pub const fn consecutive_failures(mut self, failures: u32) -> Self {
        self.consecutive_failures = failures;
        self
    }

    /// How long the first ejection lasts; later ones last a multiple of it.
    /// Must not be zero.
    pub const fn base_ejection(mut self, base: Duration) -> Self {
        self.base_ejection = base;
        self
    }

    /// The longest any ejection lasts. Not below the base ejection time.
    pub const fn max_ejection(mut self, max: Duration) -> Self {
        self.max_ejection = max;
        self
    }

    /// The largest share of endpoints, in percent (0 to 100), ejected at
    /// once; the count is rounded down, so with 50 % one of three endpoints
    /// can be ejected and none of one.
    pub const fn max_ejected_percent(mut self, percent: u8) -> Self {
        self.max_ejected_percent = percent;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), InvalidHealthConfig> {
        if self.consecutive_failures == 0 {
            return Err(InvalidHealthConfig::ZeroConsecutiveFailures);
        }
        if self.base_ejection.is_zero() {
            return Err(InvalidHealthConfig::ZeroEjectionTime);
        }
        if self.max_ejection < self.base_ejection {
            return Err(InvalidHealthConfig::MaxEjectionBelowBase);
        }
        if self.max_ejected_percent > 100 {
            return Err(InvalidHealthConfig::EjectedPercentOver100(
                self.max_ejected_percent,
            ));
        }
        Ok(())
    }
}
