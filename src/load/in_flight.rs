//! Requests in flight as an endpoint's load.

use std::fmt;
use std::task::{Context, Poll};

use tower::load::{Load, TrackCompletion};
use tower::Service;

use super::wrapper::impl_counted_wrapper;
use super::{CompleteOnBodyEnd, Counter, Handle, ResponseFuture};

/// Wraps an endpoint service and counts its requests in flight, as its
/// [`Load`].
///
/// A request counts from `call` until the completion strategy `C` lets go of
/// its [`Handle`]: with the default [`CompleteOnBodyEnd`], when the response
/// body is finished; with [`CompleteOnResponse`](super::CompleteOnResponse),
/// when the response arrives; at once when the call fails. Clones share one
/// count, so the copies a balancer makes of one endpoint add up to that
/// endpoint's load.
///
/// The wrapper passes the inner service's
/// [`Endpoint`](crate::endpoint::Endpoint) and availability through. See the
/// [module docs](super) for an example.
pub struct InFlight<S, C = CompleteOnBodyEnd> {
    inner: S,
    counter: Counter,
    completion: C,
}

/// The load of an [`InFlight`]: its requests in flight.
///
/// Ordered like the number; converts into `f64` and `usize` for pickers that
/// weigh it, such as [`LeastConnections`](crate::pick::LeastConnections).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Count(usize);

impl Count {
    /// The number of requests in flight.
    pub const fn get(self) -> usize {
        self.0
    }
}

impl From<Count> for f64 {
    fn from(count: Count) -> f64 {
        // Exact below 2^53 requests, which no endpoint reaches.
        count.0 as f64
    }
}

impl crate::endpoint::ClientLoad for Count {
    fn in_flight(&self) -> usize {
        self.0
    }
}

impl From<Count> for usize {
    fn from(count: Count) -> usize {
        count.0
    }
}

impl<S> InFlight<S> {
    /// Counts requests to `inner` until their response bodies end.
    pub fn new(inner: S) -> Self {
        Self::with_completion(inner, CompleteOnBodyEnd)
    }
}

impl<S, C> InFlight<S, C> {
    /// Counts requests to `inner` until `completion` lets go of them.
    pub fn with_completion(inner: S, completion: C) -> Self {
        Self {
            inner,
            counter: Counter::new(),
            completion,
        }
    }
}

impl_counted_wrapper!(InFlight);

impl<S: Clone, C: Clone> Clone for InFlight<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            counter: self.counter.clone(),
            completion: self.completion.clone(),
        }
    }
}

impl<S: fmt::Debug, C: fmt::Debug> fmt::Debug for InFlight<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlight")
            .field("inner", &self.inner)
            .field("counter", &self.counter)
            .field("completion", &self.completion)
            .finish()
    }
}

impl<S, C> Load for InFlight<S, C> {
    type Metric = Count;

    fn load(&self) -> Count {
        Count(self.counter.in_flight())
    }
}

impl<S, C, Req> Service<Req> for InFlight<S, C>
where
    S: Service<Req>,
    C: TrackCompletion<Handle, S::Response>,
{
    type Response = C::Output;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, C, Handle>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        // Counted before the inner call, so a call that panics still
        // releases its count as the handle unwinds.
        let handle = self.counter.start();
        let future = self.inner.call(request);
        ResponseFuture::new(future, handle, self.completion.clone())
    }
}

#[cfg(test)]
mod tests;
