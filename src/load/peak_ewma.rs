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
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    use tower::{service_fn, ServiceExt};

    use super::*;
    use crate::endpoint::{Endpoint, Weighted};
    use crate::load::test_body::{channel_body, ChannelBody, Gated};
    use crate::load::CompleteOnResponse;

    const MS: Duration = Duration::from_millis(1);

    /// An endpoint that takes the requested time to answer, with an empty body.
    fn slow(
        default_rtt: Duration,
        decay: Duration,
    ) -> Latency<
        impl Service<Duration, Response = http::Response<Empty<Bytes>>, Error = Infallible> + Clone,
    > {
        let svc = service_fn(|delay: Duration| async move {
            tokio::time::sleep(delay).await;
            Ok::<_, Infallible>(http::Response::new(Empty::new()))
        });
        Latency::new(svc, default_rtt, decay)
    }

    fn close(actual: f64, expected: f64) -> bool {
        (actual - expected).abs() <= expected * 1e-3 + 1.0
    }

    #[tokio::test(start_paused = true)]
    async fn default_rtt_applies_before_any_sample() {
        let svc = slow(DEFAULT_RTT, DEFAULT_DECAY);
        assert_eq!(svc.rtt_estimate(), DEFAULT_RTT);
        assert!(close(svc.load().get(), 30e6));
    }

    #[tokio::test(start_paused = true)]
    async fn requests_in_flight_multiply_the_cost() {
        let mut svc = slow(100 * MS, DEFAULT_DECAY);
        let first = svc.call(Duration::from_secs(60));
        let second = svc.call(Duration::from_secs(60));
        assert_eq!(svc.in_flight(), 2);
        assert!(close(svc.load().get(), 3.0 * 100e6), "{:?}", svc.load());
        drop((first, second));
        assert_eq!(svc.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_response_raises_the_cost_and_decay_lowers_it() {
        let mut svc = slow(10 * MS, Duration::from_secs(1));
        svc.ready().await.unwrap().call(500 * MS).await.unwrap();
        assert_eq!(svc.in_flight(), 0);
        assert_eq!(svc.rtt_estimate(), 500 * MS, "a peak replaces the estimate");
        let peak = svc.load();
        assert!(close(peak.get(), 500e6));

        tokio::time::advance(Duration::from_secs(1)).await;
        // A load read takes the time of the last request on this thread.
        assert_eq!(svc.load(), peak);
        let mut other = slow(10 * MS, Duration::from_secs(1));
        let _sent = other.call(Duration::from_secs(60));
        let decayed = svc.load();
        assert!(decayed < peak);
        assert!(
            close(decayed.get(), 500e6 / std::f64::consts::E),
            "{decayed:?}"
        );

        tokio::time::advance(Duration::from_secs(60)).await;
        // Reading the estimate reads the clock.
        assert!(svc.rtt_estimate() < MS);
        // Fully decayed, the cost still ranks by requests in flight.
        let _pending = svc.call(Duration::from_secs(60));
        assert_eq!(svc.load(), LatencyCost::of(2.0));
    }

    #[tokio::test(start_paused = true)]
    async fn fast_responses_pull_the_estimate_down() {
        let mut svc = slow(10 * MS, Duration::from_secs(1));
        svc.call(500 * MS).await.unwrap();
        let after_peak = svc.rtt_estimate();
        for _ in 0..20 {
            tokio::time::advance(100 * MS).await;
            svc.call(MS).await.unwrap();
        }
        let after_fast = svc.rtt_estimate();
        assert!(after_fast < 20 * MS, "{after_peak:?} -> {after_fast:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn latency_ends_at_the_end_of_the_body() {
        let mut svc = Latency::new(
            service_fn(|body: ChannelBody| async move {
                Ok::<_, Infallible>(http::Response::new(body))
            }),
            MS,
            Duration::from_secs(10),
        );
        let (tx, body) = channel_body();
        let mut body = svc.call(body).await.unwrap().into_body();
        assert_eq!(svc.in_flight(), 1);
        tx.send(Ok(Bytes::from_static(b"first token"))).unwrap();
        body.frame().await.unwrap().unwrap();
        tokio::time::advance(Duration::from_secs(2)).await;
        drop(tx);
        assert!(body.frame().await.is_none());
        assert_eq!(svc.in_flight(), 0);
        assert_eq!(svc.rtt_estimate(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_call_ends_its_round_trip() {
        let mut svc = Latency::with_completion(
            service_fn(|()| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                Err::<(), _>("refused")
            }),
            MS,
            Duration::from_secs(10),
            CompleteOnResponse::default(),
        );
        assert_eq!(svc.call(()).await.unwrap_err(), "refused");
        assert_eq!(svc.in_flight(), 0);
        // A failure ends the round trip too, and adds the failure penalty.
        assert_eq!(
            svc.rtt_estimate(),
            Duration::from_secs(3) + crate::load::DEFAULT_FAILURE_PENALTY
        );
    }

    #[tokio::test(start_paused = true)]
    async fn clones_share_one_estimate_and_count() {
        let mut a = slow(10 * MS, Duration::from_secs(10));
        let b = a.clone();
        a.call(200 * MS).await.unwrap();
        assert_eq!(b.rtt_estimate(), 200 * MS);
        assert_eq!(b.requests(), 1);
        assert!(a.counter().same_as(&b.counter()));
    }

    #[tokio::test(start_paused = true)]
    async fn zero_and_huge_durations_do_not_panic() {
        for (rtt, decay) in [
            (Duration::ZERO, Duration::ZERO),
            (Duration::MAX, Duration::MAX),
            (Duration::ZERO, Duration::MAX),
            (Duration::MAX, Duration::ZERO),
        ] {
            let mut svc = slow(rtt, decay);
            let before = svc.load().get();
            assert!(
                before.is_finite() && before >= 1.0,
                "{rtt:?} {decay:?}: {before}"
            );
            svc.call(5 * MS).await.unwrap();
            tokio::time::advance(Duration::from_secs(3600)).await;
            let after = svc.load().get();
            assert!(
                after.is_finite() && after >= 1.0,
                "{rtt:?} {decay:?}: {after}"
            );
            let _ = svc.rtt_estimate();
        }
        // A zero decay keeps only the latest sample once time has moved.
        let mut svc = slow(Duration::from_secs(1), Duration::ZERO);
        tokio::time::advance(MS).await;
        svc.call(5 * MS).await.unwrap();
        assert_eq!(svc.rtt_estimate(), 5 * MS);
    }

    #[test]
    fn forwards_weight_and_availability() {
        let plain = Latency::new(Weighted::new((), 4), DEFAULT_RTT, DEFAULT_DECAY);
        assert_eq!(plain.weight(), 4);
        assert!(plain.is_available());
        const { assert!(!<Latency<Weighted<()>> as Endpoint>::CHECKS_AVAILABILITY) };

        let down = Latency::new(Gated(3, false), DEFAULT_RTT, DEFAULT_DECAY);
        const { assert!(<Latency<Gated> as Endpoint>::CHECKS_AVAILABILITY) };
        assert_eq!(down.weight(), 3);
        assert!(!down.is_available());
        assert_eq!(down.into_inner().weight(), 3);
    }

    #[test]
    fn cost_converts_and_orders() {
        assert!(LatencyCost::of(1.0) < LatencyCost::of(2.0));
        assert_eq!(f64::from(LatencyCost::of(2.5)), 2.5);
        assert_eq!(LatencyCost::of(4.0).get(), 4.0);
    }
}
