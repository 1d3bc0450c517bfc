//! The hedging service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::Service;

use super::delay::Shared;
use super::future::ResponseFuture;
use super::CloneRequest;
use crate::balance::TriedEndpoints;

/// Sends a copy of a slow request to another endpoint; made by
/// [`HedgeLayer`](super::HedgeLayer). Clones share one budget and one
/// latency record.
pub struct Hedge<S, P> {
    inner: S,
    policy: P,
    shared: Arc<Shared>,
}

impl<S, P> Hedge<S, P> {
    pub(crate) fn new(inner: S, policy: P, shared: Arc<Shared>) -> Self {
        Self {
            inner,
            policy,
            shared,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The delay a request sent now would wait before its first copy;
    /// `None` while a percentile delay has too few answers to go on.
    pub fn current_delay(&self) -> Option<Duration> {
        self.shared.delay()
    }
}

impl<S: Clone, P: Clone> Clone for Hedge<S, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            policy: self.policy.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, P> fmt::Debug for Hedge<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hedge")
            .field("inner", &self.inner)
            .field("policy", &std::any::type_name::<P>())
            .field("delay", &self.shared.delay())
            .field("max_attempts", &self.shared.max_attempts)
            .finish()
    }
}

impl<S, P, Req> Service<Req> for Hedge<S, P>
where
    S: Service<Req> + Clone,
    P: CloneRequest<Req> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, Req, P>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.shared.budget.deposit();
        // A retry layer above may have made its attempt set current: the
        // copies then avoid the endpoints its earlier attempts tried too.
        let tried = TriedEndpoints::current().unwrap_or_default();
        let copy = if self.shared.max_attempts > 1 {
            self.shared
                .delay()
                .and_then(|delay| Some((delay, self.policy.clone_request(&req)?)))
        } else {
            None
        };
        let first = tried.scope(|| self.inner.call(req));
        let hedging = copy.map(|(delay, template)| {
            let spare = self.inner.clone();
            (delay, template, spare, self.policy.clone())
        });
        ResponseFuture::new(first, hedging, tried, Arc::clone(&self.shared))
    }
}
