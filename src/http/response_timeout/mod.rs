//! A per-attempt timeout that starts when the request has been sent.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::Request;
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};
use tower::timeout::error::Elapsed;
use tower::Service;
use tower_layer::Layer;

use crate::classify::RequestFault;
use crate::error::BoxError;
use crate::load::TrackedBody;

mod idle;

pub use self::idle::{BodyIdle, IdleTimeoutBody};

/// Fails an HTTP attempt with tower's `Elapsed` when its response head has
/// not arrived `timeout` after the **request body was sent**: a slow
/// upload is not cut off by the timer meant for a slow server, while a
/// server that accepts the request and never answers is.
///
/// The clock starts when the body reports its end (at once for a body that
/// is empty or already complete), when it fails, or when the client drops
/// it. Put it under the health wrapper (the presets do): a timed-out
/// attempt then counts as a failure of its endpoint, so a hanging endpoint
/// is ejected by passive outlier detection alone.
///
/// A request may carry its own time in an [`OwnDeadline`] extension (a
/// long generation it asked for): the attempt then waits the longer of the
/// two, or without a limit, and a timeout past the layer's own is the
/// request's fault ([`RequestFault`]): not the endpoint's failure, not
/// retried.
///
/// Cost: a one-shot channel per request (one allocation).
///
/// ```
/// use std::time::Duration;
/// use tower::ServiceBuilder;
/// use tower_lb::http::{ResponseTimeoutLayer, SentBody};
///
/// // Any endpoint service; it sees the request body wrapped in `SentBody`.
/// let endpoint = ServiceBuilder::new()
///     .layer(ResponseTimeoutLayer::new(Duration::from_secs(30)))
///     .service_fn(|_req: http::Request<SentBody<String>>| async {
///         Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
///     });
/// # let _ = endpoint;
/// ```
#[derive(Clone, Debug)]
pub struct ResponseTimeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S> ResponseTimeout<S> {
    /// Times `inner`'s responses out `timeout` after each request is sent.
    pub fn new(inner: S, timeout: Duration) -> Self {
        Self { inner, timeout }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

/// Builds [`ResponseTimeout`]s.
#[derive(Clone, Copy, Debug)]
pub struct ResponseTimeoutLayer {
    timeout: Duration,
}

impl ResponseTimeoutLayer {
    /// Times responses out `timeout` after each request is sent.
    pub const fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl<S> Layer<S> for ResponseTimeoutLayer {
    type Service = ResponseTimeout<S>;

    fn layer(&self, inner: S) -> ResponseTimeout<S> {
        ResponseTimeout::new(inner, self.timeout)
    }
}

/// A request's own time for one attempt, as a request extension read by
/// [`ResponseTimeout`]: `Some(time)` when the request itself needs long (a
/// non-streamed answer of many tokens arrives whole, at the end), `None`
/// for no limit. Only ever lengthens the layer's timeout; the part beyond
/// it is the request's doing, so a timeout there is not the endpoint's
/// failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnDeadline(pub Option<Duration>);

/// A request body that tells its [`ResponseTimeout`] when it has been
/// sent: it holds the sending half of a channel until the body is finished
/// (at its end, at an error, or when dropped), by the rule of
/// [`CompleteOnBodyEnd`](crate::load::CompleteOnBodyEnd).
pub type SentBody<B> = TrackedBody<B, oneshot::Sender<()>>;

impl<S, B> Service<Request<B>> for ResponseTimeout<S>
where
    S: Service<Request<SentBody<B>>>,
    S::Error: Into<BoxError>,
    B: Body,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // A body already complete lets go of the sender at once, and the
        // clock starts on the first poll.
        let (timeout, own) = match request.extensions().get::<OwnDeadline>() {
            None => (Some(self.timeout), false),
            Some(OwnDeadline(None)) => (None, true),
            Some(OwnDeadline(Some(own))) if *own > self.timeout => (Some(*own), true),
            Some(_) => (Some(self.timeout), false),
        };
        let (sent, sending) = oneshot::channel();
        let request = request.map(|inner| TrackedBody::new(inner, sent));
        ResponseFuture {
            inner: self.inner.call(request),
            sending: Some(sending),
            timeout,
            own,
            // Reset to the real deadline once the body is sent.
            sleep: tokio::time::sleep_until(far_future()),
        }
    }
}

fn far_future() -> Instant {
    // About thirty years: tokio's own "never".
    Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}

pin_project! {
    /// The future of [`ResponseTimeout`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        // Until the body is sent; the clock runs from then.
        sending: Option<oneshot::Receiver<()>>,
        // `None`: no limit.
        timeout: Option<Duration>,
        // The request set the timeout: its end is the request's fault.
        own: bool,
        #[pin]
        sleep: Sleep,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("timeout", &self.timeout)
            .field("body_sent", &self.sending.is_none())
            .finish_non_exhaustive()
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            return Poll::Ready(result.map_err(Into::into));
        }
        if let Some(sending) = this.sending.as_mut() {
            // Sent or dropped, the sender's end is the body's.
            let _ = ready!(Pin::new(sending).poll(cx));
            *this.sending = None;
            match *this.timeout {
                Some(timeout) => this.sleep.as_mut().reset(Instant::now() + timeout),
                None => return Poll::Pending,
            }
        }
        if this.timeout.is_none() {
            return Poll::Pending;
        }
        ready!(this.sleep.poll(cx));
        if *this.own {
            return Poll::Ready(Err(RequestFault::new(Elapsed::new()).into()));
        }
        Poll::Ready(Err(Elapsed::new().into()))
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::Duration;

    use bytes::Bytes;
    use http::{Request, Response};
    use http_body::Frame;
    use http_body_util::{BodyExt, Empty, StreamBody};
    use tokio::sync::mpsc;
    use tower::{service_fn, Service, ServiceExt};

    use super::*;

    type Chunk = Result<Frame<Bytes>, Infallible>;

    /// A body fed by the test, frame by frame; it ends when the sender drops.
    fn fed() -> (
        mpsc::Sender<Chunk>,
        StreamBody<futures_util::stream::BoxStream<'static, Chunk>>,
    ) {
        let (tx, mut rx) = mpsc::channel(1);
        let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        (tx, StreamBody::new(Box::pin(stream)))
    }

    /// An endpoint that reads the whole body, then answers after `think`.
    fn reader<B>(
        think: Duration,
    ) -> impl Service<
        Request<B>,
        Response = Response<String>,
        Error = BoxError,
        Future = impl std::future::Future<Output = Result<Response<String>, BoxError>> + Send,
    > + Clone
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        service_fn(move |request: Request<B>| async move {
            let body = request.into_body().collect().await.map_err(Into::into)?;
            tokio::time::sleep(think).await;
            Ok::<_, BoxError>(Response::new(format!("{} bytes", body.to_bytes().len())))
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_upload_is_not_cut_off() {
        let mut timed =
            ResponseTimeout::new(reader(Duration::from_millis(50)), Duration::from_secs(1));
        let (tx, body) = fed();
        let call = timed.ready().await.unwrap().call(Request::new(body));
        let upload = tokio::spawn(async move {
            // Ten seconds of upload against a one-second response timeout.
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                tx.send(Ok(Frame::data(Bytes::from_static(b"abcd"))))
                    .await
                    .unwrap();
            }
        });
        let response = call.await.expect("answered");
        assert_eq!(response.body(), "40 bytes");
        upload.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_starts_when_the_body_is_sent() {
        let mut timed =
            ResponseTimeout::new(reader(Duration::from_secs(3600)), Duration::from_secs(2));
        let (tx, body) = fed();
        let start = tokio::time::Instant::now();
        let call = tokio::spawn(timed.ready().await.unwrap().call(Request::new(body)));
        tokio::time::sleep(Duration::from_secs(5)).await;
        tx.send(Ok(Frame::data(Bytes::from_static(b"x"))))
            .await
            .unwrap();
        drop(tx);
        let error = call.await.unwrap().expect_err("the endpoint never answers");
        assert!(error.is::<Elapsed>(), "{error}");
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(7),
            "5 s sending, then 2 s"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_body_starts_the_clock_at_once() {
        let mut timed =
            ResponseTimeout::new(reader(Duration::from_secs(3600)), Duration::from_secs(2));
        let start = tokio::time::Instant::now();
        let call = timed
            .ready()
            .await
            .unwrap()
            .call(Request::new(Empty::<Bytes>::new()));
        let error = call.await.expect_err("the endpoint never answers");
        assert!(error.is::<Elapsed>(), "{error}");
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_may_lengthen_its_own_deadline_and_owns_its_end() {
        let timeout = Duration::from_secs(1);
        let mut timed = ResponseTimeout::new(reader(Duration::from_secs(5)), timeout);
        let with = |own: Option<Duration>| {
            let mut request = Request::new(Empty::<Bytes>::new());
            request.extensions_mut().insert(OwnDeadline(own));
            request
        };
        // Five seconds of work within its own ten.
        let call = timed
            .ready()
            .await
            .unwrap()
            .call(with(Some(Duration::from_secs(10))));
        assert_eq!(call.await.unwrap().into_body(), "0 bytes");
        // Past its own three: the request's fault, not the endpoint's.
        let call = timed
            .ready()
            .await
            .unwrap()
            .call(with(Some(Duration::from_secs(3))));
        let error = call.await.unwrap_err();
        assert!(crate::classify::is_request_fault(&*error), "{error}");
        // Shorter than the layer's: the layer's timeout, the endpoint's fault.
        let call = timed
            .ready()
            .await
            .unwrap()
            .call(with(Some(Duration::from_millis(10))));
        let error = call.await.unwrap_err();
        assert!(error.is::<Elapsed>(), "{error}");
        // No limit at all.
        let call = timed.ready().await.unwrap().call(with(None));
        assert_eq!(call.await.unwrap().into_body(), "0 bytes");
    }
}
