//! A limit on the silence between the frames of a response body.

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::classify::LateFailure;
use crate::error::BoxError;

pin_project! {
    /// A response body that ends when no frame has come for `idle`: a
    /// server that sent its head and then nothing (a stalled stream of
    /// server-sent events) cannot hold the client, nor the endpoint's
    /// count of requests in flight, forever.
    ///
    /// On a stall the inner body is dropped at once (which ends its
    /// in-flight count), the [`LateFailure`] given with
    /// [`report_to`](Self::report_to) is called (the endpoint's health
    /// counts the stall as its failure), and the body either yields the
    /// [`error_event`](Self::error_event) as its last frame and ends (so a
    /// client of server-sent events reads why), or fails with
    /// [`BodyIdle`].
    ///
    /// The clock starts when the body first has nothing ready, and restarts
    /// at every frame. Cost: one timer allocation per body that ever
    /// waits.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_lb::http::IdleTimeoutBody;
    ///
    /// let body = IdleTimeoutBody::new(String::from("data: hi\n\n"), Duration::from_secs(30))
    ///     .error_event("data: {\"error\":\"the server stalled\"}\n\n");
    /// # let _ = body;
    /// ```
    pub struct IdleTimeoutBody<B> {
        #[pin]
        inner: Option<B>,
        idle: Duration,
        // Made the first time the inner body has nothing ready.
        sleep: Option<Pin<Box<Sleep>>>,
        late: Option<LateFailure>,
        event: Option<Bytes>,
    }
}

impl<B> IdleTimeoutBody<B> {
    /// Ends `inner` after `idle` without a frame.
    pub fn new(inner: B, idle: Duration) -> Self {
        Self {
            inner: Some(inner),
            idle,
            sleep: None,
            late: None,
            event: None,
        }
    }

    /// Tells `late` (taken from the response's extensions) when the body
    /// stalls.
    #[must_use]
    pub fn report_to(mut self, late: Option<LateFailure>) -> Self {
        self.late = late;
        self
    }

    /// On a stall, yields `event` and ends instead of failing.
    #[must_use]
    pub fn error_event(mut self, event: impl Into<Bytes>) -> Self {
        self.event = Some(event.into());
        self
    }
}

impl<B: fmt::Debug> fmt::Debug for IdleTimeoutBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdleTimeoutBody")
            .field("inner", &self.inner)
            .field("idle", &self.idle)
            .finish_non_exhaustive()
    }
}

impl<B> Body for IdleTimeoutBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            return Poll::Ready(this.event.take().map(|event| Ok(Frame::data(event))));
        };
        match inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(sleep) = this.sleep.as_mut() {
                    sleep.as_mut().reset(Instant::now() + *this.idle);
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(Some(Err(error))) => {
                this.inner.set(None);
                *this.event = None;
                return Poll::Ready(Some(Err(error.into())));
            }
            Poll::Ready(None) => {
                this.inner.set(None);
                *this.event = None;
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(*this.idle)));
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        this.inner.set(None);
        *this.sleep = None;
        if let Some(late) = this.late.take() {
            late.failed();
        }
        match this.event.take() {
            Some(event) => Poll::Ready(Some(Ok(Frame::data(event)))),
            None => Poll::Ready(Some(Err(BodyIdle { idle: *this.idle }.into()))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Some(inner) => inner.is_end_stream(),
            None => self.event.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Some(inner) => inner.size_hint(),
            None => SizeHint::default(),
        }
    }
}

/// A response body had no frame for its idle limit.
#[derive(Debug)]
pub struct BodyIdle {
    idle: Duration,
}

impl fmt::Display for BodyIdle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no part of the response body came for {:?}", self.idle)
    }
}

impl Error for BodyIdle {}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use http_body_util::{BodyExt, StreamBody};

    use super::*;
    use crate::classify::LateVerdict;

    struct Count(AtomicUsize);

    impl LateVerdict for Count {
        fn failed_late(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_stream_ends_with_its_event_and_a_failure() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
        let inner = StreamBody::new(tokio_stream_of(rx));
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let late = LateFailure::new(Arc::clone(&count) as Arc<dyn LateVerdict>);
        let mut body = IdleTimeoutBody::new(inner, Duration::from_secs(5))
            .report_to(Some(late))
            .error_event("data: stalled\n\n");
        tx.send(Ok(Frame::data(Bytes::from("data: 1\n\n"))))
            .await
            .unwrap();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "data: 1\n\n");
        let start = Instant::now();
        let last = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(last, "data: stalled\n\n");
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert!(body.frame().await.is_none());
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(tx.is_closed(), "the inner body is dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn without_an_event_the_body_fails() {
        let inner = StreamBody::new(futures_util::stream::pending::<
            Result<Frame<Bytes>, BoxError>,
        >());
        let mut body = IdleTimeoutBody::new(inner, Duration::from_secs(1));
        let error = body.frame().await.unwrap().unwrap_err();
        assert!(error.is::<BodyIdle>());
    }

    fn tokio_stream_of<T>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}
