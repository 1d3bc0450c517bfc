//! Counting an HTTP request until its response body ends.

use std::fmt;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::load::TrackCompletion;

/// A completion strategy for HTTP services: the request counts until the
/// response body is finished, not when the headers arrive.
///
/// It wraps the response body in a [`TrackedBody`] that holds the request's
/// handle and lets go of it at the first of:
///
/// * the body is already at its end when the response arrives
///   ([`Body::is_end_stream`]), as an empty body is;
/// * a frame is read after which the body reports its end, or reading yields
///   `None`;
/// * reading yields an error;
/// * the body is dropped (the caller stopped reading).
///
/// So a streamed answer (server-sent events, an LLM's tokens) keeps its
/// endpoint counted until its last frame. For services whose response is not
/// an `http::Response`, use tower's [`CompleteOnResponse`](super::CompleteOnResponse)
/// (`CompleteOnResponse::default()`).
///
/// An answer with status 5xx or 429 is a failure: the strategy tells the
/// handle so ([`AnswerHandle::answer_failed`]), and
/// [`Latency`](super::Latency) does not let it lower the endpoint's cost.
#[derive(Clone, Copy, Debug, Default)]
pub struct CompleteOnBodyEnd;

impl<H, B> TrackCompletion<H, http::Response<B>> for CompleteOnBodyEnd
where
    H: AnswerHandle,
    B: Body,
{
    type Output = http::Response<TrackedBody<B, H>>;

    fn track_completion(&self, mut handle: H, response: http::Response<B>) -> Self::Output {
        let status = response.status();
        if status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS {
            handle.answer_failed();
        }
        response.map(|body| TrackedBody::new(body, handle))
    }
}

/// A request's handle that can hear that its answer is a failure: a call
/// that failed, or (with [`CompleteOnBodyEnd`]) an answer of status 5xx or
/// 429.
///
/// [`Handle`](super::Handle) ignores it; [`LatencyHandle`](super::LatencyHandle)
/// records the round trip as a failure (see [`Latency`](super::Latency)).
/// Implement it for your own handle type to use it with this module's
/// completion strategies and futures.
pub trait AnswerHandle {
    /// The answer is a failure.
    fn answer_failed(&mut self) {}
}

pin_project! {
    /// A response body that holds a handle `H` until the body is finished;
    /// see [`CompleteOnBodyEnd`] for when that is.
    ///
    /// Frames, errors, [`size_hint`](Body::size_hint) and
    /// [`is_end_stream`](Body::is_end_stream) are those of the inner body.
    pub struct TrackedBody<B, H> {
        #[pin]
        inner: B,
        handle: Option<H>,
    }
}

impl<B: Body, H> TrackedBody<B, H> {
    /// Wraps `inner`, holding `handle` until it is finished; a body that is
    /// already at its end lets go of the handle at once.
    pub fn new(inner: B, handle: H) -> Self {
        let handle = if inner.is_end_stream() {
            None
        } else {
            Some(handle)
        };
        Self { inner, handle }
    }
}

impl<B, H> TrackedBody<B, H> {
    /// Whether the body still holds its handle (it is not finished yet).
    pub fn is_tracking(&self) -> bool {
        self.handle.is_some()
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// Unwraps the body, letting go of the handle.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B: Body, H> Body for TrackedBody<B, H> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        let finished = match &frame {
            // A reader such as hyper stops at `is_end_stream` and never polls
            // for the `None`, so the last frame has to end the count itself.
            Some(Ok(_)) => this.inner.is_end_stream(),
            Some(Err(_)) | None => true,
        };
        if finished {
            this.handle.take();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: fmt::Debug, H> fmt::Debug for TrackedBody<B, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrackedBody")
            .field("inner", &self.inner)
            .field("tracking", &self.is_tracking())
            .finish()
    }
}
