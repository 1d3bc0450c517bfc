//! The balancer's response future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tower::Service;

use crate::error::BoxError;

/// The slow path: the request waits for the set to offer an endpoint.
pub(crate) type Wait<S, Req> = Pin<Box<dyn Future<Output = Result<(S, Req), BoxError>> + Send>>;

pin_project! {
    /// The future returned by [`Balance`](super::Balance): it drives the
    /// picked endpoint's readiness, then its call.
    ///
    /// When no endpoint could be picked it first waits (up to the balancer's
    /// configured wait) for the set to change, then fails with
    /// [`NoEndpoints`](crate::error::NoEndpoints).
    pub struct ResponseFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, Req>,
        span: tracing::Span,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req>
    where
        S: Service<Req>,
    {
        Waiting { wait: Wait<S, Req> },
        Failed { error: Option<BoxError> },
        Ready { service: S, request: Option<Req> },
        Calling { #[pin] future: S::Future },
    }
}

impl<S: Service<Req>, Req> ResponseFuture<S, Req> {
    pub(crate) fn ready(service: S, request: Req, span: tracing::Span) -> Self {
        Self {
            state: State::Ready {
                service,
                request: Some(request),
            },
            span,
        }
    }

    /// A request that fails without being sent (it was shed).
    pub(crate) fn failed(error: BoxError) -> Self {
        Self {
            state: State::Failed { error: Some(error) },
            span: tracing::Span::none(),
        }
    }

    pub(crate) fn waiting(wait: Wait<S, Req>, span: tracing::Span) -> Self {
        Self {
            state: State::Waiting { wait },
            span,
        }
    }
}

impl<S, Req> Future for ResponseFuture<S, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let _entered = this.span.enter();
        loop {
            match this.state.as_mut().project() {
                StateProj::Waiting { wait } => {
                    let (service, request) = ready!(wait.as_mut().poll(cx))?;
                    this.state.set(State::Ready {
                        service,
                        request: Some(request),
                    });
                }
                StateProj::Failed { error } => {
                    let error = error
                        .take()
                        .unwrap_or_else(|| "response future polled after failure".into());
                    return Poll::Ready(Err(error));
                }
                StateProj::Ready { service, request } => {
                    ready!(service.poll_ready(cx)).map_err(Into::into)?;
                    let Some(request) = request.take() else {
                        // Only reachable if polled again after a panic in
                        // `call`; report it rather than panic again.
                        return Poll::Ready(Err("response future polled after failure".into()));
                    };
                    let future = service.call(request);
                    this.state.set(State::Calling { future });
                }
                StateProj::Calling { future } => {
                    return future.poll(cx).map_err(Into::into);
                }
            }
        }
    }
}

impl<S, Req> fmt::Debug for ResponseFuture<S, Req>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Waiting { .. } => "waiting for an endpoint",
            State::Failed { .. } => "failed before sending",
            State::Ready { .. } => "driving endpoint readiness",
            State::Calling { .. } => "calling endpoint",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
