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
mod tests;
