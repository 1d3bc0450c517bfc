//! The response future of `AddRequestInfo`: read the body, then call.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http::Request;
use http_body::Body;
use http_body_util::{Either, Full};
use pin_project_lite::pin_project;
use tower::Service;

use super::{parse, PromptBody, RequestInfoError, Settings, UsageFilter};
use crate::error::BoxError;
use crate::pick::llm::{RequestInfo, ScoredRequest};

pin_project! {
    /// The response future of [`AddRequestInfo`](super::AddRequestInfo).
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<PromptBody<B>>>,
    {
        #[pin]
        state: State<S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<PromptBody<B>>>,
    {
        Collect {
            #[pin]
            body: B,
            parts: Option<http::request::Parts>,
            inner: Option<S>,
            read: BytesMut,
            limit: usize,
            settings: Settings,
        },
        Call {
            #[pin]
            future: S::Future,
            // Whether the usage event of the answer is to be kept from the
            // client (the router asked for it, not the client).
            strip: bool,
        },
        Failed {
            error: Option<RequestInfoError>,
        },
    }
}

impl<S, B> std::fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<PromptBody<B>>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<PromptBody<B>>>,
{
    pub(super) fn call(future: S::Future) -> Self {
        Self {
            state: State::Call {
                future,
                strip: false,
            },
        }
    }

    pub(super) fn fail(error: RequestInfoError) -> Self {
        Self {
            state: State::Failed { error: Some(error) },
        }
    }

    pub(super) fn collect(request: Request<B>, inner: S, limit: usize, settings: Settings) -> Self {
        let (parts, body) = request.into_parts();
        Self {
            state: State::Collect {
                body,
                parts: Some(parts),
                inner: Some(inner),
                read: BytesMut::new(),
                limit,
                settings,
            },
        }
    }
}

/// The request to send: the info of `bytes` in its extensions, `bytes` as
/// its body (with the usage asked for, when `ask_usage` and the client did
/// not: then also `true`); or why not.
pub(super) fn request<B>(
    mut parts: http::request::Parts,
    mut bytes: Bytes,
    settings: Settings,
) -> Result<(Request<PromptBody<B>>, bool), RequestInfoError> {
    let Settings {
        blocks,
        json,
        ask_usage,
        strict,
        per_token,
    } = settings;
    let mut asked = false;
    match parse::Head::read(&bytes) {
        Ok(head) => {
            let model = head.model().map_err(|()| RequestInfoError::BadModel)?;
            if let Some(per_token) = per_token {
                parts.extensions.insert(head.own_deadline(per_token));
            }
            let prompt = head.prompt(&bytes, blocks);
            let model = model.map(str::to_owned);
            if ask_usage {
                if let Some(changed) = head.ask_for_usage(&bytes) {
                    bytes = Bytes::from(changed);
                    if parts.headers.contains_key(http::header::CONTENT_LENGTH) {
                        parts
                            .headers
                            .insert(http::header::CONTENT_LENGTH, bytes.len().into());
                    }
                    asked = true;
                }
            }
            // Headers name the adapter and priority, and the model when the
            // body does not.
            let probe = Request::from_parts(parts, ());
            let seen = probe.info();
            let facts = RequestInfo {
                model: model.map(Into::into).or(seen.model.map(Into::into)),
                adapter: seen.adapter.map(Into::into),
                priority: seen.priority,
            };
            parts = probe.into_parts().0;
            parts.extensions.insert(facts);
            if let Some(prompt) = prompt {
                parts.extensions.insert(prompt);
            }
        }
        Err(e) if json => {
            return Err(RequestInfoError::Malformed {
                message: e.to_string(),
            })
        }
        Err(_) if strict => return Err(RequestInfoError::NotJson),
        // Undeclared and not JSON: routed without facts.
        Err(_) => {}
    }
    Ok((
        Request::from_parts(parts, Either::Left(Full::new(bytes))),
        asked,
    ))
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<PromptBody<B>>, Response = http::Response<ResBody>>,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Output = Result<http::Response<UsageFilter<ResBody>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Collect {
                    body,
                    parts,
                    inner,
                    read,
                    limit,
                    settings,
                } => match ready!(body.poll_frame(cx)) {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            if read.len() + data.len() > *limit {
                                let error = RequestInfoError::TooLarge { limit: *limit };
                                state.set(State::Failed { error: Some(error) });
                                continue;
                            }
                            read.extend_from_slice(&data);
                        }
                    }
                    Some(Err(e)) => {
                        let error = RequestInfoError::Body(e.into());
                        state.set(State::Failed { error: Some(error) });
                    }
                    None => {
                        let (Some(parts), Some(mut inner)) = (parts.take(), inner.take()) else {
                            return Poll::Ready(Err("polled after completion".into()));
                        };
                        let bytes = read.split().freeze();
                        match request(parts, bytes, *settings) {
                            Ok((request, strip)) => {
                                let future = inner.call(request);
                                state.set(State::Call { future, strip });
                            }
                            Err(error) => state.set(State::Failed { error: Some(error) }),
                        }
                    }
                },
                StateProj::Call { future, strip } => {
                    let strip = *strip;
                    let response = ready!(future.poll(cx)).map_err(Into::into)?;
                    return Poll::Ready(Ok(response.map(|body| UsageFilter::new(body, strip))));
                }
                StateProj::Failed { error } => {
                    let error: BoxError = match error.take() {
                        Some(error) => error.into(),
                        None => "polled after completion".into(),
                    };
                    return Poll::Ready(Err(error));
                }
            }
        }
    }
}
