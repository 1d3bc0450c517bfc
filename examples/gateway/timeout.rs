//! The per-attempt timeout, started when the request body has been sent.
//!
//! A timer that starts with the attempt would cut uploads slower than the
//! timeout; this one bounds only the wait for the response head once the
//! backend has the whole request. It runs under the health wrapper, so a
//! timed-out attempt is a failure of that backend.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

/// The error of an attempt that got no response head in time.
#[derive(Debug)]
pub(crate) struct AttemptTimedOut(pub(crate) Duration);

impl fmt::Display for AttemptTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no response head within {:?} of the end of the request body",
            self.0
        )
    }
}

impl std::error::Error for AttemptTimedOut {}

/// Set when a request body has been sent (or given up); wakes the attempt.
#[derive(Debug, Default)]
pub(crate) struct BodySent {
    done: AtomicBool,
    waker: AtomicWaker,
}

impl BodySent {
    fn set(&self) {
        self.done.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Whether the body has been sent; if not, `cx` is woken when it is.
    pub(crate) fn poll_sent(&self, cx: &mut Context<'_>) -> bool {
        if self.done.load(Ordering::Acquire) {
            return true;
        }
        self.waker.register(cx.waker());
        self.done.load(Ordering::Acquire)
    }
}

/// Sets [`BodySent`] when dropped: a body that hyper drops unfinished (the
/// backend answered early, or the connection failed) waits no longer.
#[derive(Debug)]
struct OnDrop(Arc<BodySent>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        self.0.set();
    }
}

pin_project! {
    /// A request body that reports its end to the attempt's timer.
    pub(crate) struct SignalledBody<B> {
        #[pin]
        body: B,
        sent: OnDrop,
    }
}

impl<B: Body> SignalledBody<B> {
    /// Wraps `body`; its end sets the returned flag.
    pub(crate) fn new(body: B) -> (Self, Arc<BodySent>) {
        let sent = Arc::new(BodySent::default());
        if body.is_end_stream() {
            sent.set();
        }
        let body = Self {
            body,
            sent: OnDrop(Arc::clone(&sent)),
        };
        (body, sent)
    }
}

impl<B: Body<Data = Bytes>> Body for SignalledBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let frame = std::task::ready!(this.body.as_mut().poll_frame(cx));
        if !matches!(frame, Some(Ok(_))) || this.body.is_end_stream() {
            this.sent.0.set();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<B> fmt::Debug for SignalledBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalledBody").finish_non_exhaustive()
    }
}
