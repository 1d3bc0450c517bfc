//! A balancer's health settings: which checks, slow start, and what to do
//! when every endpoint is unhealthy.

use std::fmt;
use std::time::Duration;

use crate::classify::ServerErrors;

use super::checks::{ActiveChecks, OutlierDetection};
use super::error::InvalidHealthConfig;

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

/// All health settings of one balancer; checked when a
/// [`HealthLayer`](super::HealthLayer) or [`HealthDiscover`](super::HealthDiscover)
/// is built from it.
///
/// Nothing is on by default: with no active checks and no outlier detection
/// every endpoint stays healthy. `C` decides which responses are failures
/// (see [`Classify`](crate::classify::Classify)); the default is
/// [`ServerErrors`] (5xx and errors fail).
#[must_use]
pub struct HealthConfig<K, C = ServerErrors> {
    pub(crate) active: Option<ActiveChecks<K>>,
    pub(crate) passive: Option<OutlierDetection>,
    pub(crate) slow_start: Option<Duration>,
    pub(crate) all_unhealthy: AllUnhealthy,
    pub(crate) max_pushback: Duration,
    pub(crate) classify: C,
}

/// The longest pause an endpoint's `Retry-After` or
/// `grpc-retry-pushback-ms` can ask for, by default: 30 s.
pub const DEFAULT_MAX_PUSHBACK: Duration = Duration::from_secs(30);

impl<K, C: Clone> Clone for HealthConfig<K, C> {
    fn clone(&self) -> Self {
        Self {
            active: self.active.clone(),
            passive: self.passive,
            slow_start: self.slow_start,
            all_unhealthy: self.all_unhealthy,
            max_pushback: self.max_pushback,
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
            .field("max_pushback", &self.max_pushback)
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
            max_pushback: DEFAULT_MAX_PUSHBACK,
            classify: ServerErrors,
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

    /// The longest pause an endpoint can ask for ([`DEFAULT_MAX_PUSHBACK`],
    /// 30 s, by default). An answer that carries `Retry-After` (on 429 or
    /// 503) or `grpc-retry-pushback-ms` takes its endpoint out of rotation
    /// for the time it asks, at most this long (see
    /// [`classify::pushback`](crate::classify::pushback)); `Duration::ZERO`
    /// ignores such requests. When every healthy endpoint is paused, the
    /// pauses are ignored rather than fail requests.
    pub fn max_pushback(mut self, max: Duration) -> Self {
        self.max_pushback = max;
        self
    }

    /// Decides which responses count as failures for outlier detection:
    /// [`ServerErrors`] or, with the `http` feature, any tower-http
    /// classifier (`GrpcErrorsAsFailures`, `StatusInRangeAsFailures`) for
    /// HTTP responses; [`ErrorsOnly`](crate::classify::ErrorsOnly) for other
    /// services.
    pub fn classify<C2>(self, classify: C2) -> HealthConfig<K, C2> {
        HealthConfig {
            active: self.active,
            passive: self.passive,
            slow_start: self.slow_start,
            all_unhealthy: self.all_unhealthy,
            max_pushback: self.max_pushback,
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
