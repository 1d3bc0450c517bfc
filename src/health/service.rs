//! `Healthy`: an endpoint service wrapped with its health state.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::classify::ServerErrors;
use tower::load::Load;
use tower::Service;

use super::error::NoHealthyEndpoints;
use super::future::ResponseFuture;
use super::report::{EndpointHealth, HealthState};
use super::state::EndpointState;
use crate::classify::Classify;
use crate::endpoint::Endpoint;
use crate::error::BoxError;

/// An endpoint service with its health: what [`HealthDiscover`](super::HealthDiscover)
/// yields for every endpoint.
///
/// * As a [`Endpoint`] it is *gated*: the balancer asks
///   [`is_available`](Endpoint::is_available) of it on every pick, which is
///   one atomic load (two during slow start), so every picker skips it while
///   it is unhealthy. The weight and the inner service's own availability
///   pass through.
/// * As a `Service` it reports each outcome to outlier detection: an error
///   is a failure, a response is judged by the classifier `C`.
/// * [`Load`] passes through, so least-connections and power-of-two-choices
///   pickers work over it.
///
/// Clones share one state: the balancer's copy, the copies in flight and the
/// endpoint's health task see the same counters.
pub struct Healthy<S, C = ServerErrors> {
    inner: S,
    state: Arc<EndpointState>,
    classify: C,
}

impl<S, C> Healthy<S, C> {
    pub(crate) fn new(inner: S, state: Arc<EndpointState>, classify: C) -> Self {
        Self {
            inner,
            state,
            classify,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// This endpoint's health now, reported under `key`.
    pub fn health<K>(&self, key: K) -> EndpointHealth<K> {
        EndpointHealth::read(key, &self.state)
    }

    /// Whether the endpoint is healthy (not failed by active checks, not
    /// ejected), whatever the all-unhealthy setting lets through.
    pub fn is_healthy(&self) -> bool {
        matches!(
            HealthState::from_flags(self.state.flags()),
            HealthState::Healthy | HealthState::SlowStart
        )
    }
}

impl<S: Clone, C: Clone> Clone for Healthy<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            state: Arc::clone(&self.state),
            classify: self.classify.clone(),
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for Healthy<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Healthy")
            .field("inner", &self.inner)
            .field("key", &self.state.key)
            .field("state", &HealthState::from_flags(self.state.flags()))
            .finish()
    }
}

impl<S: Endpoint, C> Endpoint for Healthy<S, C> {
    const CHECKS_AVAILABILITY: bool = true;

    fn weight(&self) -> u32 {
        self.inner.weight()
    }

    fn zone(&self) -> Option<&str> {
        self.inner.zone()
    }

    #[inline]
    fn is_available(&self) -> bool {
        self.state.admits() && (!S::CHECKS_AVAILABILITY || self.inner.is_available())
    }

    fn report(&self) -> Option<&crate::endpoint::ReportCell> {
        self.inner.report()
    }

    fn prefill(&self) -> Option<&crate::endpoint::PrefillState> {
        self.inner.prefill()
    }
}

impl<S: Load, C> Load for Healthy<S, C> {
    type Metric = S::Metric;

    fn load(&self) -> S::Metric {
        self.inner.load()
    }
}

impl<S, C, Req> Service<Req> for Healthy<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(|error| {
            self.state.record_failure();
            error.into()
        })
    }

    fn call(&mut self, request: Req) -> Self::Future {
        if self.state.fails_fast() {
            let (known, _) = self.state.core.counts();
            return ResponseFuture::failed(NoHealthyEndpoints { known });
        }
        let probation = self.state.start_request();
        let future = self.inner.call(request);
        ResponseFuture::calling(
            future,
            Arc::clone(&self.state),
            self.classify.clone(),
            probation,
        )
    }
}
