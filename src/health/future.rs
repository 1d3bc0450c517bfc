//! The response future of a health-checked endpoint.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;

use super::error::NoHealthyEndpoints;
use super::state::{EndpointState, ProbationSlot};
use crate::classify::{is_busy, is_request_fault, Classify, LateFailure, LateVerdict};
use crate::error::BoxError;

pin_project! {
    /// The future of [`Healthy`](super::Healthy): the endpoint's own
    /// future, whose outcome is reported to outlier detection when it
    /// completes, or an immediate
    /// [`NoHealthyEndpoints`].
    pub struct ResponseFuture<F, C, Res> {
        #[pin]
        state: State<F, C, Res>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, C, Res> {
        Calling {
            #[pin]
            future: F,
            endpoint: Arc<EndpointState>,
            classify: C,
            // Held until the outcome is known, while the endpoint is on
            // probation.
            probation: Option<ProbationSlot>,
            _response: PhantomData<fn() -> Res>,
        },
        Failed { error: Option<NoHealthyEndpoints> },
    }
}

impl<F, C, Res> ResponseFuture<F, C, Res> {
    pub(crate) fn calling(
        future: F,
        endpoint: Arc<EndpointState>,
        classify: C,
        probation: Option<ProbationSlot>,
    ) -> Self {
        Self {
            state: State::Calling {
                future,
                endpoint,
                classify,
                probation,
                _response: PhantomData,
            },
        }
    }

    pub(crate) fn failed(error: NoHealthyEndpoints) -> Self {
        Self {
            state: State::Failed { error: Some(error) },
        }
    }
}

impl<F, C, Res, E> Future for ResponseFuture<F, C, Res>
where
    F: Future<Output = Result<Res, E>>,
    E: Into<BoxError>,
    C: Classify<Res>,
{
    type Output = Result<Res, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Calling {
                future,
                endpoint,
                classify,
                probation,
                ..
            } => Poll::Ready(match ready!(future.poll(cx)) {
                Ok(mut response) => {
                    if classify.is_failure(&response) {
                        endpoint.record_failure();
                    } else {
                        endpoint.record_success();
                        classify.attach(&mut response, || {
                            LateFailure::new(Arc::clone(endpoint) as Arc<dyn LateVerdict>)
                        });
                    }
                    if let Some(pause) = classify.pushback(&response) {
                        endpoint.pause_for(pause);
                    }
                    Ok(response)
                }
                Err(error) => {
                    let error = error.into();
                    // The request's own fault (its body failed, it could not
                    // be sent) says nothing about the endpoint, nor does a
                    // busy endpoint's timeout (it answered others meanwhile).
                    if !is_request_fault(&*error) && !is_busy(&*error) {
                        endpoint.record_failure();
                    }
                    Err(error)
                }
            })
            .map(|outcome| {
                probation.take();
                outcome
            }),
            StateProj::Failed { error } => Poll::Ready(Err(match error.take() {
                Some(error) => error.into(),
                None => "health response future polled after completion".into(),
            })),
        }
    }
}

impl<F, C, Res> fmt::Debug for ResponseFuture<F, C, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (state, key) = match &self.state {
            State::Calling { endpoint, .. } => ("calling", Some(&*endpoint.key)),
            State::Failed { .. } => ("failed: no healthy endpoint", None),
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("endpoint", &key)
            .finish()
    }
}
