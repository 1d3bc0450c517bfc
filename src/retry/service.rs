//! The `Retry` service.

use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::Body;
use tower::Service;

use super::future::ResponseFuture;
use super::layer::BodyRules;
use super::scoped::{track_attempts, Scoped};
use super::{ReplayBody, RetryPolicy};
use crate::error::BoxError;

/// Retries failed HTTP requests on other endpoints, within a budget; see the
/// [module docs](super). Built by [`RetryLayer`](super::RetryLayer).
///
/// It is tower's `retry::Retry` driven by a [`RetryPolicy`], behind a step
/// that makes the request body replayable. Its readiness is its inner
/// service's. Cloning clones the inner service; clones share the budget.
///
/// The inner service takes `Request<ReplayBody<B>>` and fails with
/// [`BoxError`], as the balancer and tower's timeout do; map another error
/// type with `map_err(Into::into)`.
#[derive(Clone, Debug)]
pub struct Retry<S> {
    inner: tower::retry::Retry<RetryPolicy, Scoped<S>>,
    rules: BodyRules,
}

/// What to do with one request's body.
enum Plan {
    /// Already at its end: replayable as is.
    Empty,
    /// Buffer it before the first attempt; with `wait` off, only as far as
    /// it goes without waiting.
    Buffer { wait: bool },
    /// Too large, or of unknown length: send it once.
    Stream,
}

impl<S> Retry<S> {
    /// Retries `inner` by `policy`, with the default body rules of
    /// [`RetryLayer::new`](super::RetryLayer::new).
    pub fn new(inner: S, policy: RetryPolicy) -> Self {
        Self::from_parts(inner, policy, BodyRules::default())
    }

    pub(crate) fn from_parts(inner: S, policy: RetryPolicy, rules: BodyRules) -> Self {
        Self {
            inner: tower::retry::Retry::new(policy, Scoped::new(inner)),
            rules,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        self.inner.get_ref().get_ref()
    }

    /// The inner service, consuming the layer.
    pub fn into_inner(self) -> S {
        self.inner.into_inner().into_inner()
    }
}

impl BodyRules {
    fn plan(&self, headers: &HeaderMap, body: &impl Body) -> Plan {
        if body.is_end_stream() {
            return Plan::Empty;
        }
        let hint = body.size_hint();
        let limit = self.limit as u64;
        match hint.upper() {
            _ if hint.lower() > limit => Plan::Stream,
            Some(upper) if upper <= limit => Plan::Buffer { wait: true },
            Some(_) => Plan::Stream,
            None if self.unknown_length => Plan::Buffer { wait: true },
            // tonic's bodies never state their length, but a unary or
            // server-streaming call's one message is ready at once; a client
            // stream's later messages may wait for the server, so they are
            // never waited for.
            None if is_grpc(headers) => Plan::Buffer { wait: false },
            None => Plan::Stream,
        }
    }
}

/// Whether the request is a gRPC call (`application/grpc`, `+proto` and
/// other subtypes, gRPC-Web).
fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"))
}

impl<S, B, Rb> Service<Request<B>> for Retry<S>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<Rb>, Error = BoxError> + Clone,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Response = Response<Rb>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (mut parts, body) = request.into_parts();
        match self.rules.plan(&parts.headers, &body) {
            Plan::Empty => {
                track_attempts(&mut parts.extensions);
                let body = ReplayBody::replay(Bytes::new(), None);
                ResponseFuture::called(self.inner.call(Request::from_parts(parts, body)))
            }
            Plan::Stream => {
                let body = ReplayBody::stream(body);
                ResponseFuture::called(self.inner.call(Request::from_parts(parts, body)))
            }
            Plan::Buffer { wait } => {
                // Buffering is asynchronous: the future takes the service that
                // was polled ready and leaves a fresh clone in its place.
                let fresh = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, fresh);
                let body = Box::pin(body);
                ResponseFuture::buffering(ready, parts, body, self.rules.limit, wait)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::SizeHint;

    /// A body that only reports a size hint.
    struct Hinted(SizeHint);
    impl Body for Hinted {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            Poll::Ready(None)
        }
        fn size_hint(&self) -> SizeHint {
            self.0
        }
    }

    #[test]
    fn bodies_are_planned_by_their_size_hint() {
        let rules = BodyRules {
            limit: 100,
            unknown_length: false,
        };
        let plain = HeaderMap::new();
        let mut grpc = HeaderMap::new();
        grpc.insert("content-type", "application/grpc+proto".parse().unwrap());
        let plan_for = |headers: &HeaderMap, rules: &BodyRules, lower: u64, upper: Option<u64>| {
            let mut hint = SizeHint::new();
            hint.set_lower(lower);
            if let Some(upper) = upper {
                hint.set_upper(upper);
            }
            match rules.plan(headers, &Hinted(hint)) {
                Plan::Empty => "empty",
                Plan::Buffer { wait: true } => "buffer",
                Plan::Buffer { wait: false } => "what is ready",
                Plan::Stream => "stream",
            }
        };
        let plan = |rules: &BodyRules, lower, upper| plan_for(&plain, rules, lower, upper);
        assert_eq!(plan(&rules, 100, Some(100)), "buffer");
        assert_eq!(plan(&rules, 101, Some(101)), "stream");
        assert_eq!(plan(&rules, 0, Some(5000)), "stream");
        assert_eq!(plan(&rules, 0, None), "stream");
        assert_eq!(plan(&rules, 500, None), "stream");
        let buffering = BodyRules {
            unknown_length: true,
            ..rules
        };
        assert_eq!(plan(&buffering, 0, None), "buffer");
        assert_eq!(plan(&buffering, 500, None), "stream");
        assert!(matches!(rules.plan(&plain, &String::new()), Plan::Empty));
        // gRPC calls of unknown length: what is ready, unless told to wait.
        assert_eq!(plan_for(&grpc, &rules, 0, None), "what is ready");
        assert_eq!(plan_for(&grpc, &rules, 500, None), "stream");
        assert_eq!(plan_for(&grpc, &rules, 10, Some(10)), "buffer");
        assert_eq!(plan_for(&grpc, &buffering, 0, None), "buffer");
    }
}
