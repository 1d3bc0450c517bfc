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
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http_body::Body;
    use http_body_util::{BodyExt, Empty, Full};
    use tower::{service_fn, ServiceExt};

    use super::*;
    use crate::endpoint::{Endpoint, Weighted};
    use crate::load::test_body::{channel_body, BodyError, ChannelBody, Gated};
    use crate::load::CompleteOnResponse;

    /// An endpoint that answers with the body it is given.
    fn echo() -> InFlight<
        impl Service<ChannelBody, Response = http::Response<ChannelBody>, Error = Infallible> + Clone,
    > {
        InFlight::new(service_fn(|body: ChannelBody| async move {
            Ok::<_, Infallible>(http::Response::new(body))
        }))
    }

    #[tokio::test]
    async fn counts_until_the_last_frame() {
        let mut svc = echo();
        let (tx, body) = channel_body();
        let future = svc.ready().await.unwrap().call(body);
        assert_eq!((svc.in_flight(), svc.requests()), (1, 1));
        assert_eq!(svc.load(), Count(1));

        let mut body = future.await.unwrap().into_body();
        assert_eq!(svc.in_flight(), 1, "headers are not the end of the request");
        tx.send(Ok(Bytes::from_static(b"token"))).unwrap();
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "token");
        assert_eq!(svc.in_flight(), 1, "still streaming");
        assert!(body.is_tracking());

        drop(tx);
        assert!(body.frame().await.is_none());
        assert_eq!(svc.in_flight(), 0);
        assert!(!body.is_tracking());
        assert_eq!(svc.requests(), 1);
    }

    #[tokio::test]
    async fn releases_when_the_body_is_dropped_early() {
        let mut svc = echo();
        let (tx, body) = channel_body();
        let response = svc.call(body).await.unwrap();
        tx.send(Ok(Bytes::from_static(b"partial"))).unwrap();
        let mut body = response.into_body();
        body.frame().await.unwrap().unwrap();
        assert_eq!(svc.in_flight(), 1);
        drop(body);
        assert_eq!(svc.in_flight(), 0);
    }

    #[tokio::test]
    async fn releases_when_the_body_errors() {
        let mut svc = echo();
        let (tx, body) = channel_body();
        let mut body = svc.call(body).await.unwrap().into_body();
        tx.send(Err(BodyError)).unwrap();
        assert_eq!(body.frame().await.unwrap().unwrap_err(), BodyError);
        assert_eq!(svc.in_flight(), 0, "released before the body is dropped");
        drop(tx);
    }

    #[tokio::test]
    async fn releases_at_once_for_a_body_already_ended() {
        let mut svc = InFlight::new(service_fn(|()| async {
            Ok::<_, Infallible>(http::Response::new(Empty::<Bytes>::new()))
        }));
        let response = svc.call(()).await.unwrap();
        assert!(response.body().is_end_stream());
        assert_eq!(svc.in_flight(), 0);
        assert_eq!(svc.requests(), 1);
    }

    #[tokio::test]
    async fn releases_after_a_frame_that_ends_the_body() {
        let mut svc = InFlight::new(service_fn(|()| async {
            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"all"))))
        }));
        let mut body = svc.call(()).await.unwrap().into_body();
        assert_eq!(body.size_hint().exact(), Some(3));
        assert_eq!(svc.in_flight(), 1);
        body.frame().await.unwrap().unwrap();
        // Released without polling for the `None` a reader such as hyper skips.
        assert!(body.is_end_stream());
        assert_eq!(svc.in_flight(), 0);
    }

    #[tokio::test]
    async fn releases_on_a_call_error() {
        let mut svc = InFlight::new(service_fn(|fail: bool| async move {
            if fail {
                Err("refused")
            } else {
                Ok(http::Response::new(Empty::<Bytes>::new()))
            }
        }));
        let future = svc.call(true);
        assert_eq!(svc.in_flight(), 1);
        assert_eq!(future.await.unwrap_err(), "refused");
        assert_eq!(svc.in_flight(), 0);
    }

    #[tokio::test]
    async fn releases_when_the_response_future_is_dropped() {
        let mut svc = echo();
        let (_tx, body) = channel_body();
        let future = svc.call(body);
        assert_eq!(svc.in_flight(), 1);
        drop(future);
        assert_eq!(svc.in_flight(), 0);
    }

    #[tokio::test]
    async fn clones_share_one_count() {
        let mut a = echo();
        let mut b = a.clone();
        let (_tx1, body1) = channel_body();
        let (_tx2, body2) = channel_body();
        let first = a.call(body1).await.unwrap();
        let second = b.call(body2).await.unwrap();
        let counter = a.counter();
        assert_eq!(
            (a.in_flight(), b.in_flight(), counter.in_flight()),
            (2, 2, 2)
        );
        assert_eq!(b.requests(), 2);
        drop(first);
        assert_eq!(b.load(), Count(1));
        drop(second);
        assert_eq!(counter.in_flight(), 0);
        // A fresh wrapper is a different endpoint.
        assert!(!echo().counter().same_as(&counter));
    }

    #[tokio::test]
    async fn complete_on_response_releases_at_the_response() {
        let mut svc = InFlight::with_completion(
            service_fn(|()| async { Ok::<_, Infallible>("done") }),
            CompleteOnResponse::default(),
        );
        let future = svc.call(());
        assert_eq!(svc.in_flight(), 1);
        assert_eq!(future.await.unwrap(), "done");
        assert_eq!(svc.in_flight(), 0);
    }

    #[tokio::test]
    async fn towers_complete_on_response_works_too() {
        let mut svc = InFlight::with_completion(
            service_fn(|()| async { Ok::<_, Infallible>("done") }),
            tower::load::CompleteOnResponse::default(),
        );
        assert_eq!(svc.call(()).await.unwrap(), "done");
        assert_eq!((svc.in_flight(), svc.requests()), (0, 1));
    }

    #[test]
    fn count_converts_and_orders() {
        assert!(Count(1) < Count(2));
        assert_eq!(f64::from(Count(3)), 3.0);
        assert_eq!(usize::from(Count(3)), 3);
        assert_eq!(Count(4).get(), 4);
    }

    #[test]
    fn forwards_weight_and_availability() {
        let plain = InFlight::new(Weighted::new((), 5));
        assert_eq!(plain.weight(), 5);
        assert!(plain.is_available());
        const { assert!(!<InFlight<Weighted<()>> as Endpoint>::CHECKS_AVAILABILITY) };

        let down = InFlight::new(Gated(7, false));
        const { assert!(<InFlight<Gated> as Endpoint>::CHECKS_AVAILABILITY) };
        assert_eq!(down.weight(), 7);
        assert!(!down.is_available());
        assert!(InFlight::new(Gated(7, true)).is_available());
    }

    #[test]
    fn accessors_reach_the_inner_service() {
        let mut svc = InFlight::new(Weighted::new((), 2));
        assert_eq!(svc.get_ref().weight(), 2);
        *svc.get_mut() = Weighted::new((), 3);
        assert_eq!(svc.into_inner().weight(), 3);
        let debug = format!("{:?}", InFlight::new(()));
        assert!(debug.contains("in_flight: 0"), "{debug}");
    }
}
