//! Reading health: per-endpoint snapshots.

use tokio::time::Instant;

use super::state::{EndpointState, DOWN, EJECTED, PROBATION, RAMP};

/// Where an endpoint stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HealthState {
    /// In rotation with its full share.
    Healthy,
    /// In rotation, its share still ramping up: in slow start, or on
    /// probation after an ejection (a few requests at a time).
    SlowStart,
    /// Out of rotation: active checks failed `fall` times in a row. Reported
    /// even if it is also ejected: it comes back only when the checks pass.
    Unhealthy,
    /// Out of rotation: ejected by outlier detection until its time is
    /// over; passing active checks do not end it early.
    Ejected,
}

impl HealthState {
    pub(crate) fn from_flags(flags: u32) -> Self {
        if flags & DOWN != 0 {
            Self::Unhealthy
        } else if flags & EJECTED != 0 {
            Self::Ejected
        } else if flags & (RAMP | PROBATION) != 0 {
            Self::SlowStart
        } else {
            Self::Healthy
        }
    }

    /// Healthy or in slow start: the endpoint takes new requests.
    pub fn in_rotation(self) -> bool {
        matches!(self, Self::Healthy | Self::SlowStart)
    }
}

/// One endpoint's health at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointHealth<K> {
    key: K,
    state: HealthState,
    consecutive_failures: u32,
    ejections: u32,
    probes: u64,
    ejected_until: Option<Instant>,
    paused_until: Option<Instant>,
    share_permille: u32,
}

impl<K> EndpointHealth<K> {
    pub(crate) fn read(key: K, endpoint: &EndpointState) -> Self {
        let report = endpoint.report();
        let state = HealthState::from_flags(report.flags);
        Self {
            key,
            state,
            consecutive_failures: report.failures,
            ejections: report.ejections,
            probes: report.probes,
            ejected_until: report.ejected_until.map(|at| endpoint.core.instant(at)),
            paused_until: report.paused_until.map(|at| endpoint.core.instant(at)),
            share_permille: match state {
                HealthState::Healthy => 1000,
                HealthState::SlowStart => report.ramp_permille,
                HealthState::Unhealthy | HealthState::Ejected => 0,
            },
        }
    }

    /// The endpoint's discovery key.
    pub fn key(&self) -> &K {
        &self.key
    }

    /// Where the endpoint stands.
    pub fn state(&self) -> HealthState {
        self.state
    }

    /// Failed responses in a row, as outlier detection counts them (reset
    /// by a success and by an ejection).
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// How many times outlier detection has ejected the endpoint.
    pub fn ejections(&self) -> u32 {
        self.ejections
    }

    /// How many active probes have completed (passed or failed).
    pub fn probes(&self) -> u64 {
        self.probes
    }

    /// When the current ejection ends, if the endpoint is ejected.
    pub fn ejected_until(&self) -> Option<Instant> {
        self.ejected_until
    }

    /// When the pause the endpoint asked for (`Retry-After`,
    /// `grpc-retry-pushback-ms`) ends, if it is paused.
    pub fn paused_until(&self) -> Option<Instant> {
        self.paused_until
    }

    /// The share of its normal traffic the endpoint admits, in per mille:
    /// 1000 when healthy, rising during slow start, 0 when out of rotation
    /// (panic mode aside).
    pub fn share_permille(&self) -> u32 {
        self.share_permille
    }
}
