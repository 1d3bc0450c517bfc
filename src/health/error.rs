//! Errors of the health module.

use std::fmt;
use std::time::Duration;

/// A health setting that cannot work, found when a
/// [`HealthLayer`](super::HealthLayer) or [`HealthDiscover`](super::HealthDiscover)
/// is built from a [`HealthConfig`](super::HealthConfig).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidHealthConfig {
    /// The probe interval is zero: probes would run back to back.
    ZeroInterval,
    /// The probe timeout is zero: every probe would fail.
    ZeroTimeout,
    /// The jitter is more than half the interval, so two probes of one
    /// endpoint could run back to back.
    JitterTooLarge {
        /// The jitter asked for.
        jitter: Duration,
        /// The probe interval.
        interval: Duration,
    },
    /// A rise or fall threshold of 0: a state change needs at least one probe.
    ZeroThreshold,
    /// Zero consecutive failures would eject an endpoint that never failed.
    ZeroConsecutiveFailures,
    /// The base ejection time is zero: ejections would end at once.
    ZeroEjectionTime,
    /// The longest ejection is shorter than the base ejection time.
    MaxEjectionBelowBase,
    /// The cap on ejected endpoints is above 100 percent.
    EjectedPercentOver100(u8),
    /// The slow-start window is zero.
    ZeroSlowStart,
    /// The probe's own settings are wrong (an HTTP path that is not a path,
    /// an empty status range).
    Probe(String),
}

impl fmt::Display for InvalidHealthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroInterval => f.write_str("the probe interval must not be zero"),
            Self::ZeroTimeout => f.write_str("the probe timeout must not be zero"),
            Self::JitterTooLarge { jitter, interval } => write!(
                f,
                "the probe jitter ({jitter:?}) must be at most half the interval ({interval:?})"
            ),
            Self::ZeroThreshold => f.write_str("rise and fall thresholds must be at least 1"),
            Self::ZeroConsecutiveFailures => {
                f.write_str("consecutive failures before ejection must be at least 1")
            }
            Self::ZeroEjectionTime => f.write_str("the base ejection time must not be zero"),
            Self::MaxEjectionBelowBase => {
                f.write_str("the longest ejection must not be shorter than the base ejection time")
            }
            Self::EjectedPercentOver100(percent) => {
                write!(
                    f,
                    "at most 100% of endpoints can be ejected, not {percent}%"
                )
            }
            Self::ZeroSlowStart => f.write_str("the slow-start window must not be zero"),
            Self::Probe(reason) => write!(f, "invalid probe: {reason}"),
        }
    }
}

impl std::error::Error for InvalidHealthConfig {}

/// Every endpoint is unhealthy and the balancer is set to fail fast
/// ([`AllUnhealthy::FailFast`](super::AllUnhealthy::FailFast), the default).
///
/// Returned at once (boxed as [`BoxError`](crate::BoxError)) instead of
/// waiting: the set is not empty, every endpoint in it is known to be bad.
/// Compare [`NoEndpoints`](crate::NoEndpoints), returned after a wait when
/// no endpoint can be picked at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoHealthyEndpoints {
    pub(crate) known: usize,
}

impl NoHealthyEndpoints {
    /// How many endpoints the health checks knew of (all unhealthy).
    pub fn known(&self) -> usize {
        self.known
    }
}

impl fmt::Display for NoHealthyEndpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no healthy endpoint: all {} known endpoints are unhealthy or ejected",
            self.known
        )
    }
}

impl std::error::Error for NoHealthyEndpoints {}

/// An HTTP probe got a response whose status is outside the expected range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnexpectedStatus {
    pub(crate) status: http::StatusCode,
}

impl UnexpectedStatus {
    /// The status the endpoint answered with.
    pub fn status(&self) -> http::StatusCode {
        self.status
    }
}

impl fmt::Display for UnexpectedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "health probe answered {}", self.status)
    }
}

impl std::error::Error for UnexpectedStatus {}
