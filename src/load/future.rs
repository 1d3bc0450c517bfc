//! The response future of the load wrappers.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tower::load::TrackCompletion;

pin_project! {
    /// The future of [`InFlight`](super::InFlight) and
    /// [`Latency`](super::Latency): it holds the request's handle `H` while
    /// the endpoint works, then gives the handle and the response to the
    /// completion strategy `C`.
    ///
    /// If the endpoint fails, or the future is dropped first, the handle is
    /// dropped with it and the request stops counting.
    ///
    /// # Panics
    ///
    /// When polled again after it returned `Ready`, as futures may.
    pub struct ResponseFuture<F, C, H> {
        #[pin]
        inner: F,
        handle: Option<H>,
        completion: C,
    }
}

impl<F, C, H> ResponseFuture<F, C, H> {
    pub(crate) fn new(inner: F, handle: H, completion: C) -> Self {
        Self {
            inner,
            handle: Some(handle),
            completion,
        }
    }
}

impl<F, C, H, T, E> Future for ResponseFuture<F, C, H>
where
    F: Future<Output = Result<T, E>>,
    C: TrackCompletion<H, T>,
    H: super::AnswerHandle,
{
    type Output = Result<C::Output, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        // Taken on every outcome, so an error releases the handle now rather
        // than when the future is dropped.
        let mut handle = this
            .handle
            .take()
            .expect("load::ResponseFuture polled after completion");
        if result.is_err() {
            handle.answer_failed();
        }
        Poll::Ready(result.map(|response| this.completion.track_completion(handle, response)))
    }
}

impl<F, C: fmt::Debug, H: fmt::Debug> fmt::Debug for ResponseFuture<F, C, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("handle", &self.handle)
            .field("completion", &self.completion)
            .finish_non_exhaustive()
    }
}
