//! Peak-EWMA latency as an endpoint's load.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower::load::{Load, TrackCompletion};
use tower::Service;

use super::clock;
use super::estimate::Estimate;
use super::wrapper::impl_counted_wrapper;
use super::{CompleteOnBodyEnd, Counter, Handle, ResponseFuture};

/// The round-trip time assumed for an endpoint before its first request
/// completes: 30 ms.
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);

/// How long the Peak-EWMA estimate takes to forget: 10 s (the time constant
/// of its exponential decay).
pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);

/// Wraps an endpoint service and reports a Peak-EWMA latency cost as its
/// [`Load`]: the endpoint's recent round-trip time, times its requests in
/// flight plus one.
///
/// The round trip of a request runs from `call` until the completion strategy
/// `C` lets go of its handle: with the default [`CompleteOnBodyEnd`] that is
/// the end of the response body, so a slow stream counts as slow. A round
/// trip longer than the estimate replaces it at once (the *peak*); a shorter
/// one pulls it down by a weight that grows with the time since the last
/// update, and while no request completes the estimate decays towards zero
/// with time constant `decay`, so an endpoint that was slow gets tried again.
///
/// # Failures
///
/// An endpoint that answers `503` or `429` at once would look like the
/// fastest endpoint of all, and draw more traffic the worse it fails. So a
/// failed request (the call fails, or, with [`CompleteOnBodyEnd`], the
/// answer's status is 5xx or 429) never lowers the estimate: its sample is
/// the larger of its round trip and the current estimate, plus a penalty
/// ([`DEFAULT_FAILURE_PENALTY`](super::DEFAULT_FAILURE_PENALTY), 100 ms; see
/// [`failure_penalty`](Latency::failure_penalty)). As a sample above the
/// estimate replaces it, each failure raises the cost by the penalty; the
/// usual decay lets a recovered endpoint back in. Pair this with health
/// checks, which take a failing endpoint out altogether.
///
/// Every time setting is a [`Duration`]. A zero `decay` is taken as one
/// nanosecond (the estimate keeps only the latest sample), a zero
/// `default_rtt` starts the endpoint at the lowest cost; huge values are kept as
/// they are (`Duration::MAX` as a decay never forgets). Time is tokio's
/// clock, so tests can pause it.
///
/// Reading the load and recording a sample are lock-free (one atomic word
/// holds the estimate and its timestamp). Reading the load, which a picker
/// does for several endpoints a request, reads no clock: it takes the time
/// of the last request this thread sent or finished through any `Latency`
/// (each of those reads the clock anyway), so on a busy balancer it is
/// microseconds old. After a lull the first pick sees the estimates as they
/// were when the lull began, decayed a little less than the clock would
/// say; its own request brings the time up to date.
/// [`rtt_estimate`](Latency::rtt_estimate) reads the clock. Clones share one estimate and one
/// count. The wrapper passes the inner service's
/// [`Endpoint`](crate::endpoint::Endpoint) and availability through. See the
/// [module docs](super) for an example.
pub struct Latency<S, C = CompleteOnBodyEnd> {
    inner: S,
    counter: Counter,
    estimate: Arc<Estimate>,
    completion: C,
}

/// A failure penalty in nanoseconds, shared with the handles.
fn penalty_ns(penalty: Duration) -> f64 {
    super::estimate::nanos(penalty)
}

/// The load of a [`Latency`]: the latency estimate in nanoseconds times
/// the requests in flight plus one.
///
/// The estimate counts as at least one nanosecond here, so that between two
/// endpoints whose estimates have decayed to nothing the one with fewer
/// requests in flight still costs less.
///
/// Costs compare by that product alone; the parts stay readable for
/// pickers that score on them ([`ClientLoad`](crate::endpoint::ClientLoad)).
#[derive(Clone, Copy, Debug, Default)]
pub struct LatencyCost {
    cost: f64,
    rtt_ns: f64,
    in_flight: usize,
}

impl LatencyCost {
    /// The cost as a number (nanoseconds × requests).
    pub const fn get(self) -> f64 {
        self.cost
    }

    #[cfg(test)]
    pub(crate) const fn of(cost: f64) -> Self {
        Self {
            cost,
            rtt_ns: cost,
            in_flight: 0,
        }
    }
}

impl PartialEq for LatencyCost {
    fn eq(&self, other: &Self) -> bool {
        self.cost == other.cost
    }
}

impl PartialOrd for LatencyCost {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        self.cost.partial_cmp(&other.cost)
    }
}

impl From<LatencyCost> for f64 {
    fn from(cost: LatencyCost) -> f64 {
        cost.cost
    }
}

impl crate::endpoint::ClientLoad for LatencyCost {
    fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn latency(&self) -> Option<Duration> {
        Some(Duration::from_nanos(self.rtt_ns as u64))
    }
}

/// One request in flight on a [`Latency`]: when dropped, it records the
/// round trip since the call and stops counting the request.
pub struct LatencyHandle {
    sent_at: Instant,
    estimate: Arc<Estimate>,
    failed: bool,
    in_flight: Handle,
}

impl LatencyHandle {
    /// When the request was sent.
    pub fn sent_at(&self) -> Instant {
        self.sent_at
    }

    /// The counter this handle holds a request in.
    pub fn counter(&self) -> &Counter {
        self.in_flight.counter()
    }
}

impl Drop for LatencyHandle {
    fn drop(&mut self) {
        // Runs before the in-flight handle (a field) is dropped, so the new
        // estimate is in place by the time the count falls.
        if self.failed {
            self.estimate.sample_failure(self.sent_at, clock::now());
        } else {
            self.estimate.sample(self.sent_at, clock::now());
        }
    }
}

impl super::AnswerHandle for LatencyHandle {
    fn answer_failed(&mut self) {
        self.failed = true;
    }
}

impl fmt::Debug for LatencyHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatencyHandle")
            .field("sent_at", &self.sent_at)
            .field("failed", &self.failed)
            .field("in_flight", &self.in_flight)
            .finish()
    }
}

impl<S> Latency<S> {
    /// Estimates `inner`'s latency up to the end of each response body,
    /// starting from `default_rtt` and forgetting with time constant `decay`.
    pub fn new(inner: S, default_rtt: Duration, decay: Duration) -> Self {
        Self::with_completion(inner, default_rtt, decay, CompleteOnBodyEnd)
    }
}

impl<S, C> Latency<S, C> {
    /// Like [`Latency::new`], with round trips ending when `completion` lets
    /// go of their handles.
    pub fn with_completion(
        inner: S,
        default_rtt: Duration,
        decay: Duration,
        completion: C,
    ) -> Self {
        Self {
            inner,
            counter: Counter::new(),
            estimate: Arc::new(Estimate::new(default_rtt, decay)),
            completion,
        }
    }

    /// The same wrapper with each failed request adding `penalty` to the
    /// estimate (see "Failures" above); `Duration::ZERO` still keeps a
    /// failure from lowering it.
    #[must_use]
    pub fn failure_penalty(self, penalty: Duration) -> Self {
        self.estimate.set_failure_penalty(penalty_ns(penalty));
        self
    }

    /// The latency estimate now, before it is multiplied by the requests in
    /// flight (saturating at `u64::MAX` nanoseconds).
    pub fn rtt_estimate(&self) -> Duration {
        Duration::from_nanos(self.estimate.rtt_ns(clock::now()) as u64)
    }
}

impl_counted_wrapper!(Latency);

impl<S: Clone, C: Clone> Clone for Latency<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            counter: self.counter.clone(),
            estimate: Arc::clone(&self.estimate),
            completion: self.completion.clone(),
        }
    }
}

impl<S: fmt::Debug, C: fmt::Debug> fmt::Debug for Latency<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Latency")
            .field("inner", &self.inner)
            .field("counter", &self.counter)
            .field("estimate", &self.estimate)
            .field("completion", &self.completion)
            .finish()
    }
}

impl<S, C> Load for Latency<S, C> {
    type Metric = LatencyCost;

    /// No clock read and no `exp`: the time is that of the last request sent
    /// or finished on this thread (see the type's docs), and the decay is a
    /// polynomial within a millionth of the exact one.
    fn load(&self) -> LatencyCost {
        let rtt = self.estimate.load_ns(clock::recent()).max(1.0);
        // Exact below 2^53 requests, which no endpoint reaches.
        let in_flight = self.counter.in_flight();
        LatencyCost {
            cost: rtt * (in_flight as f64 + 1.0),
            rtt_ns: rtt,
            in_flight,
        }
    }
}

impl<S, C, Req> Service<Req> for Latency<S, C>
where
    S: Service<Req>,
    C: TrackCompletion<LatencyHandle, S::Response>,
{
    type Response = C::Output;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, C, LatencyHandle>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let handle = LatencyHandle {
            sent_at: clock::now(),
            estimate: Arc::clone(&self.estimate),
            failed: false,
            in_flight: self.counter.start(),
        };
        let future = self.inner.call(request);
        ResponseFuture::new(future, handle, self.completion.clone())
    }
}

#[cfg(test)]
mod tests;
