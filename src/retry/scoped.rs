//! Handing each attempt's set of tried endpoints down to the balancer.

use std::task::{Context, Poll};

use http::Request;
use tower::Service;

use crate::balance::TriedEndpoints;

/// The service tower's retry drives: every attempt's `call` runs inside the
/// request's [`TriedEndpoints::scope`], so the balancer beneath picks with
/// the endpoints this request already tried ruled out.
#[derive(Clone, Debug)]
pub(crate) struct Scoped<S> {
    inner: S,
}

impl<S> Scoped<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self { inner }
    }

    pub(crate) fn get_ref(&self) -> &S {
        &self.inner
    }

    pub(crate) fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for Scoped<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> S::Future {
        match request.extensions().get::<TriedEndpoints>().cloned() {
            Some(tried) => tried.scope(|| self.inner.call(request)),
            None => self.inner.call(request),
        }
    }
}

/// Gives a replayable request the set its attempts share, unless the caller
/// put one in already.
pub(crate) fn track_attempts(extensions: &mut http::Extensions) {
    if extensions.get::<TriedEndpoints>().is_none() {
        extensions.insert(TriedEndpoints::new());
    }
}
