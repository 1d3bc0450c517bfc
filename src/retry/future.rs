//! The retry layer's response future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::request::Parts;
use http::Request;
use http_body::Body;
use pin_project_lite::pin_project;
use tower::retry::Policy;
use tower::Service;

use super::body::Collected;
use super::scoped::{track_attempts, Scoped};
use super::{ReplayBody, RetryPolicy};
use crate::error::BoxError;

type Inner<S> = tower::retry::Retry<RetryPolicy, Scoped<S>>;
type Attempts<S, B> =
    tower::retry::future::ResponseFuture<RetryPolicy, Scoped<S>, Request<ReplayBody<B>>>;

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
            // Off: stop at the first frame that is not ready.
            wait: bool,
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
        wait: bool,
    ) -> Self {
        Self {
            state: State::Buffering {
                service: Some(service),
                parts: Some(parts),
                body: Some(body),
                collected: Collected::default(),
                limit,
                wait,
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
                    wait,
                } => {
                    let Some(mut stream) = body.take() else {
                        return Poll::Ready(Err("retry future polled after completion".into()));
                    };
                    let replay = match stream.as_mut().poll_frame(cx) {
                        Poll::Pending if *wait => {
                            *body = Some(stream);
                            return Poll::Pending;
                        }
                        // Not ready, and not to be waited for: send what was
                        // read, then the rest as it comes. Not retried.
                        Poll::Pending => {
                            ReplayBody::spilled(std::mem::take(collected).into_bytes(), stream)
                        }
                        Poll::Ready(Some(Ok(frame))) => {
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
                                *body = Some(stream);
                                continue;
                            }
                            // Over the cap: send what was read, then the rest,
                            // once. Never truncated, never retried.
                            ReplayBody::spilled(std::mem::take(collected).into_bytes(), stream)
                        }
                        Poll::Ready(Some(Err(error))) => return Poll::Ready(Err(error.into())),
                        Poll::Ready(None) => {
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http::{HeaderMap, Response, StatusCode};
    use http_body::Frame;
    use http_body_util::{BodyExt, StreamBody};
    use tower::{Layer, ServiceExt};

    use super::*;
    use crate::balance::TriedEndpoints;
    use crate::retry::RetryLayer;

    type Chunks =
        StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, BoxError>>>>;

    /// What each attempt received: its body and its trailers.
    type Seen = Arc<Mutex<Vec<(Bytes, Option<HeaderMap>)>>>;

    fn stream(frames: Vec<Result<Frame<Bytes>, BoxError>>) -> Chunks {
        StreamBody::new(futures_util::stream::iter(frames))
    }

    /// An inner service that answers 503 to every attempt and records what
    /// each one received: body bytes and trailers.
    fn recording(
        seen: Seen,
    ) -> impl Service<
        Request<ReplayBody<Chunks>>,
        Response = Response<()>,
        Error = BoxError,
        Future = impl Send,
    > + Clone {
        tower::service_fn(move |req: Request<ReplayBody<Chunks>>| {
            let seen = Arc::clone(&seen);
            async move {
                assert!(req.extensions().get::<TriedEndpoints>().is_some());
                let collected = req.into_body().collect().await?;
                let trailers = collected.trailers().cloned();
                seen.lock().unwrap().push((collected.to_bytes(), trailers));
                let mut response = Response::new(());
                *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                Ok::<_, BoxError>(response)
            }
        })
    }

    #[tokio::test(start_paused = true)]
    async fn chunks_and_trailers_are_replayed() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let layer = RetryLayer::new(crate::retry::RetryPolicy::new().max_attempts(2))
            .buffer_unknown_length(true);
        let svc = layer.layer(recording(Arc::clone(&seen)));
        let mut trailers = HeaderMap::new();
        trailers.insert("digest", "abc".parse().unwrap());
        let body = stream(vec![
            Ok(Frame::data(Bytes::from("ab"))),
            Ok(Frame::data(Bytes::from("cd"))),
            Ok(Frame::trailers(trailers.clone())),
        ]);
        let response = svc
            .oneshot(Request::get("/").body(body).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        for (bytes, got) in seen.iter() {
            assert_eq!(bytes, "abcd");
            assert_eq!(got.as_ref(), Some(&trailers));
        }
    }

    #[tokio::test]
    async fn a_body_error_while_buffering_fails_the_call_unsent() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let layer = RetryLayer::new(crate::retry::RetryPolicy::new()).buffer_unknown_length(true);
        let svc = layer.layer(recording(Arc::clone(&seen)));
        let body = stream(vec![
            Ok(Frame::data(Bytes::from("ab"))),
            Err("disk gone".into()),
        ]);
        let error = svc
            .oneshot(Request::get("/").body(body).unwrap())
            .await
            .unwrap_err();
        assert_eq!(error.to_string(), "disk gone");
        assert!(seen.lock().unwrap().is_empty(), "nothing was sent");
    }
}
