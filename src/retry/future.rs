//! The retry layer's response future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::request::Parts;
use http::Request;
use http_body::Body;
use pin_project_lite::pin_project;
use tower::retry::Policy;
use tower::Service;

use super::body::Collected;
use super::service::track_attempts;
use super::{ReplayBody, RetryPolicy};
use crate::error::BoxError;

type Inner<S> = tower::retry::Retry<RetryPolicy, S>;
type Attempts<S, B> = tower::retry::future::ResponseFuture<RetryPolicy, S, Request<ReplayBody<B>>>;

pin_project! {
    /// The future returned by [`Retry`](super::Retry): it buffers the request
    /// body when it is to be replayed, then drives tower's retry future
    /// (attempt, classify, back off, attempt again).
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<ReplayBody<B>>, Error = BoxError>,
        RetryPolicy: Policy<Request<ReplayBody<B>>, S::Response, BoxError>,
    {
        #[pin]
        state: State<S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<ReplayBody<B>>, Error = BoxError>,
        RetryPolicy: Policy<Request<ReplayBody<B>>, S::Response, BoxError>,
    {
        Buffering {
            // Taken when the body is complete; `None` only after that.
            service: Option<Inner<S>>,
            parts: Option<Parts>,
            body: Option<Pin<Box<B>>>,
            collected: Collected,
            limit: usize,
        },
        Called { #[pin] future: Attempts<S, B> },
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<ReplayBody<B>>, Error = BoxError>,
    RetryPolicy: Policy<Request<ReplayBody<B>>, S::Response, BoxError>,
{
    pub(crate) fn called(future: Attempts<S, B>) -> Self {
        Self {
            state: State::Called { future },
        }
    }

    pub(crate) fn buffering(
        service: Inner<S>,
        parts: Parts,
        body: Pin<Box<B>>,
        limit: usize,
    ) -> Self {
        Self {
            state: State::Buffering {
                service: Some(service),
                parts: Some(parts),
                body: Some(body),
                collected: Collected::default(),
                limit,
            },
        }
    }
}

impl<S, B> Future for ResponseFuture<S, B>
where
    S: Service<Request<ReplayBody<B>>, Error = BoxError> + Clone,
    RetryPolicy: Policy<Request<ReplayBody<B>>, S::Response, BoxError> + Clone,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Called { future } => return future.poll(cx),
                StateProj::Buffering {
                    service,
                    parts,
                    body,
                    collected,
                    limit,
                } => {
                    let Some(stream) = body.as_mut() else {
                        return Poll::Ready(Err("retry future polled after completion".into()));
                    };
                    let replay = match ready!(stream.as_mut().poll_frame(cx)) {
                        Some(Ok(frame)) => {
                            match frame.into_data() {
                                Ok(data) => collected.push(data),
                                Err(frame) => {
                                    if let Ok(trailers) = frame.into_trailers() {
                                        collected
                                            .trailers
                                            .get_or_insert_with(Default::default)
                                            .extend(trailers);
                                    }
                                }
                            }
                            if collected.len() <= *limit {
                                continue;
                            }
                            // Over the cap: send what was read, then the rest,
                            // once. Never truncated, never retried.
                            let prefix = std::mem::take(collected).into_bytes();
                            ReplayBody::spilled(prefix, body.take().expect("checked above"))
                        }
                        Some(Err(error)) => {
                            *body = None;
                            return Poll::Ready(Err(error.into()));
                        }
                        None => {
                            *body = None;
                            let mut whole = std::mem::take(collected);
                            let trailers = whole.trailers.take();
                            ReplayBody::replay(whole.into_bytes(), trailers)
                        }
                    };
                    let (Some(mut service), Some(mut parts)) = (service.take(), parts.take())
                    else {
                        return Poll::Ready(Err("retry future polled after completion".into()));
                    };
                    if replay.is_replayable() {
                        track_attempts(&mut parts.extensions);
                    }
                    let future = service.call(Request::from_parts(parts, replay));
                    this.state.set(State::Called { future });
                }
            }
        }
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<ReplayBody<B>>, Error = BoxError>,
    RetryPolicy: Policy<Request<ReplayBody<B>>, S::Response, BoxError>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Buffering { collected, .. } => {
                format!("buffering the body ({} bytes)", collected.len())
            }
            State::Called { .. } => "attempting".to_owned(),
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
