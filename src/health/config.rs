//! Health settings: active checks, outlier detection, slow start, and what
//! to do when every endpoint is unhealthy.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower_http::classify::ServerErrorsAsFailures;

use super::error::InvalidHealthConfig;
use super::probe::Probe;

/// What a balancer does when no endpoint is healthy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AllUnhealthy {
    /// Requests fail at once with
    /// [`NoHealthyEndpoints`](super::NoHealthyEndpoints). The default: an
    /// unhealthy endpoint gets no request, ever.
    #[default]
    FailFast,
    /// "Panic mode", as Envoy calls it: while no endpoint is healthy, every
    /// endpoint takes requests as if it were, in the picker's usual
    /// proportions. Choose it when a wrong health verdict (a broken health
    /// path, a shared dependency down) is likelier than a whole fleet down.
    Panic,
}

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

    fn validate(&self) -> Result<(), InvalidHealthConfig> {
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

    fn validate(&self) -> Result<(), InvalidHealthConfig> {
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

/// All health settings of one balancer; checked when a
/// [`HealthLayer`](super::HealthLayer) or [`HealthDiscover`](super::HealthDiscover)
/// is built from it.
///
/// Nothing is on by default: with no active checks and no outlier detection
/// every endpoint stays healthy. `C` decides which responses are failures
/// (see [`Classify`](super::Classify)); the default is tower-http's
/// [`ServerErrorsAsFailures`] (5xx and errors fail).
#[must_use]
pub struct HealthConfig<K, C = ServerErrorsAsFailures> {
    pub(crate) active: Option<ActiveChecks<K>>,
    pub(crate) passive: Option<OutlierDetection>,
    pub(crate) slow_start: Option<Duration>,
    pub(crate) all_unhealthy: AllUnhealthy,
    pub(crate) classify: C,
}

impl<K, C: Clone> Clone for HealthConfig<K, C> {
    fn clone(&self) -> Self {
        Self {
            active: self.active.clone(),
            passive: self.passive,
            slow_start: self.slow_start,
            all_unhealthy: self.all_unhealthy,
            classify: self.classify.clone(),
        }
    }
}

impl<K, C: fmt::Debug> fmt::Debug for HealthConfig<K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthConfig")
            .field("active", &self.active)
            .field("passive", &self.passive)
            .field("slow_start", &self.slow_start)
            .field("all_unhealthy", &self.all_unhealthy)
            .field("classify", &self.classify)
            .finish()
    }
}

impl<K> Default for HealthConfig<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K> HealthConfig<K> {
    /// No checks, fail fast when all are unhealthy, 5xx responses are failures.
    pub fn new() -> Self {
        Self {
            active: None,
            passive: None,
            slow_start: None,
            all_unhealthy: AllUnhealthy::FailFast,
            classify: ServerErrorsAsFailures::new(),
        }
    }
}

impl<K, C> HealthConfig<K, C> {
    /// Probes every endpoint.
    pub fn active(mut self, checks: ActiveChecks<K>) -> Self {
        self.active = Some(checks);
        self
    }

    /// Ejects endpoints whose responses fail.
    pub fn passive(mut self, detection: OutlierDetection) -> Self {
        self.passive = Some(detection);
        self
    }

    /// Ramps a new or returning endpoint's share of requests up over
    /// `window` (see the [module docs](super#slow-start)). Must not be zero.
    pub fn slow_start(mut self, window: Duration) -> Self {
        self.slow_start = Some(window);
        self
    }

    /// What to do when no endpoint is healthy.
    pub fn all_unhealthy(mut self, mode: AllUnhealthy) -> Self {
        self.all_unhealthy = mode;
        self
    }

    /// Decides which responses count as failures for outlier detection:
    /// any tower-http classifier (`ServerErrorsAsFailures`,
    /// `GrpcErrorsAsFailures`, `StatusInRangeAsFailures`) for HTTP
    /// responses, or [`ErrorsOnly`](super::ErrorsOnly) for other services.
    pub fn classify<C2>(self, classify: C2) -> HealthConfig<K, C2> {
        HealthConfig {
            active: self.active,
            passive: self.passive,
            slow_start: self.slow_start,
            all_unhealthy: self.all_unhealthy,
            classify,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), InvalidHealthConfig> {
        if let Some(active) = &self.active {
            active.validate()?;
        }
        if let Some(passive) = &self.passive {
            passive.validate()?;
        }
        if self.slow_start.is_some_and(|window| window.is_zero()) {
            return Err(InvalidHealthConfig::ZeroSlowStart);
        }
        Ok(())
    }
}
