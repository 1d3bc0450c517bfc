//! Retries that turn one endpoint's failure into a success on another.
//!
//! [`RetryLayer`] wraps a [`Balance`](crate::Balance) (or a per-attempt
//! timeout around one) in [`Retry`]: tower's `retry::Retry` driven by a
//! [`RetryPolicy`], behind a step that makes the request body replayable.
//! Every attempt goes through the picker again, which rules out the
//! endpoints this request already tried.
//!
//! # What is retried
//!
//! | failure | retried for |
//! |---|---|
//! | connection refused, other connect errors, load shed before sending | every request: nothing was sent |
//! | a response status in the set (default 502, 503, 504), or a response the [classifier](#classifiers-and-grpc) calls a failure | idempotent methods (GET, HEAD, OPTIONS, TRACE, PUT, DELETE) |
//! | a timeout (tower's `Elapsed`), any other error | idempotent methods |
//! | [`NoEndpoints`](crate::NoEndpoints) | never: another pick would wait for the same set |
//! | [`NoHealthyEndpoints`](crate::health::NoHealthyEndpoints) | never: every endpoint is down |
//! | a [request fault](crate::classify::is_request_fault) (the caller's body failed, the request could not be sent) | never: the request would fail again, and it is not the endpoint's fault |
//! | [`Saturated`](crate::error::Saturated) | never: the request was shed; the caller waits `retry_after` |
//!
//! A non-idempotent request that may have reached an endpoint is retried
//! only when it opts in ([`RetryNonIdempotent`] in its extensions) or the
//! policy does ([`RetryPolicy::retry_non_idempotent`], or for classified
//! failures only [`RetryPolicy::retry_classified_non_idempotent`]). Errors are read
//! through their whole `source()` chain: an `io::Error` of kind
//! `ConnectionRefused` anywhere in it means "refused"; with the `hyper-util`
//! feature, hyper-util's client errors for which `is_connect()` holds mean
//! "not sent" whatever the connector.
//!
//! # Classifiers and gRPC
//!
//! What counts as a failed response can come from tower-http's `classify`,
//! as it does for [health checks](crate::classify::Classify):
//! [`RetryPolicy::classify`] takes any `ClassifyResponse`
//! (`ServerErrorsAsFailures` retries a 500, which the status set does not)
//! and replaces the status set; the last of `classify` and
//! `retry_statuses` called wins. A response is retried when the classifier
//! calls it a failure from its head. One that it can judge only at the end
//! of its stream (a gRPC status in trailers, after messages) is not: its
//! body is already on its way to the caller.
//!
//! A failed gRPC call is an HTTP 200 whose `grpc-status` is in the head (a
//! "trailers-only" answer), and every call is a POST. [`RetryPolicy::grpc`]
//! retries the calls answered `UNAVAILABLE` (other codes with
//! [`grpc_codes`](RetryPolicy::grpc_codes)), POST or not: by gRPC's retry
//! design the service owner names the codes that mean "not processed, try
//! elsewhere". Timeouts and errors after sending are not retried for calls.
//!
//! tonic's request bodies do not state their length, so the layer reads a
//! gRPC request's body (`content-type: application/grpc…`) as far as it goes
//! without waiting, up to the body limit: a unary or server-streaming call's
//! one message is all there, and is replayed. A client stream that waits
//! for more is sent as it comes, what was read first, and is not retried.
//! tonic's `Channel` serves only `Request<tonic::body::Body>`, so each
//! endpoint maps the body in:
//!
//! ```
//! # fn endpoint(channel: tonic::transport::Channel) -> impl Clone {
//! use tower::ServiceBuilder;
//! use tower_lb::retry::ReplayBody;
//!
//! ServiceBuilder::new()
//!     .map_request(|r: http::Request<ReplayBody<tonic::body::Body>>| {
//!         r.map(tonic::body::Body::new)
//!     })
//!     .service(channel)
//! # }
//! ```
//!
//! # Re-picking elsewhere
//!
//! Each retryable request carries a
//! [`TriedEndpoints`](crate::balance::TriedEndpoints) in its extensions,
//! shared by all its attempts, and every attempt is called inside
//! [`TriedEndpoints::scope`](crate::balance::TriedEndpoints::scope). The balancer rules those endpoints out and
//! records the one it picks, so round robin moves on, least connections and
//! P2C choose among the rest, and hash pickers walk on along their ring or
//! schedule to the key's next endpoint rather than returning to the same
//! one. When every endpoint was tried (two endpoints, three attempts) the
//! pick ignores the set rather than fail. Endpoints are named by the hash of
//! their key, so the set survives changes to the endpoint set between
//! attempts.
//!
//! # Backpressure
//!
//! An endpoint that answers 429 or 503 with `Retry-After`, or sets
//! `grpc-retry-pushback-ms`, is paused by the health layer for that long
//! (see [`classify::pushback`](crate::classify::pushback)): the retry, and
//! every other request, goes to another endpoint until the pause is over. A
//! 429 is not retried by default (it is not in the status set).
//!
//! # Budget, attempts, backoff
//!
//! Retries draw on a budget (tower's `TpsBudget`): every request deposits,
//! every retry withdraws, so over a window (10 s) retries are at most
//! `ratio` (20 %) of requests plus a floor (10 a second). A fleet that fails
//! every request therefore sees at most `requests × (1 + ratio) + floor ×
//! window` attempts, not three times its traffic. A request also gets at
//! most [`max_attempts`](RetryPolicy::max_attempts) attempts (3).
//!
//! Between attempts the policy waits an exponential backoff with full
//! jitter (uniform in `0..=min(cap, base × 2ⁿ⁻¹)`, by default base 25 ms
//! and cap 1 s), except that the first retry after a refused connection
//! goes at once: nothing was sent, and it goes to another endpoint.
//!
//! # Bodies
//!
//! To send a body again the layer must hold all of it. Before the first
//! attempt, a body whose `size_hint` says it is at most
//! [`body_limit`](RetryLayer::body_limit) bytes (64 KiB by default) is read
//! whole into [`Bytes`](bytes::Bytes) and every attempt replays it, trailers
//! included, byte for byte. A body that is larger, or says it may be, is
//! sent once as it comes and not retried. A body of unknown length (a
//! stream) is sent once too (a gRPC call's is read as far as it goes
//! without waiting, [above](#classifiers-and-grpc)), unless
//! [`buffer_unknown_length`](RetryLayer::buffer_unknown_length) is on; then
//! it is read up to the limit, and if it turns out longer, what was read is
//! sent first and the rest follows: never truncated, not retried. Endpoint
//! services therefore take `Request<`[`ReplayBody<B>`]`>`.
//!
//! # Timeouts and the order of layers
//!
//! From the caller inwards:
//!
//! 1. **overall timeout** (tower's `TimeoutLayer`): bounds the whole call,
//!    every attempt and backoff included;
//! 2. **retry** ([`RetryLayer`]);
//! 3. **per-attempt timeout** (`TimeoutLayer`): a slow endpoint costs one
//!    attempt, not the call; its `Elapsed` error is retried for idempotent
//!    requests;
//! 4. **balance** ([`BalanceLayer`](crate::BalanceLayer)): each attempt
//!    picks again;
//! 5. **per endpoint**, on the `Discover` stream: health checks and load
//!    counting, so that an attempt that fails (an error or a failure
//!    response) counts against the endpoint that failed and an ejected
//!    endpoint is not picked by the retry.
//!
//! A per-attempt timeout above the balancer cancels the attempt: the
//! endpoint's health wrapper sees a dropped call, which it cannot tell from
//! a caller that went away, so it does not count it as a failure. For
//! passive outlier detection to eject an endpoint that hangs, also put a
//! timeout on each endpoint, under the health wrapper (wrap the endpoint
//! service in `tower::timeout::Timeout` before inserting it): its `Elapsed`
//! error is then the endpoint's failure. Active checks catch a hanging
//! endpoint either way (their probes have their own timeout).
//!
//! tower-http's `TimeoutLayer` is made for servers: it answers 408 instead
//! of failing. Used as the per-attempt timeout, add 408 to
//! [`retry_statuses`](RetryPolicy::retry_statuses); as the overall timeout
//! it works unchanged.
//!
//! # Cost
//!
//! The balancer's pick stays free of locks and allocations: it copies the
//! tried set (at most eight hashes) to the stack. The retry layer itself
//! costs a replayable request about ten small allocations before its first
//! attempt (measured in `tests/retry_allocations.rs`): the tried set and its
//! slot in the request's extensions, and the copy of the request that
//! tower's retry keeps for a second attempt (headers and extensions; the
//! body is shared). A buffered body adds one box, as does a gRPC call's
//! body of unknown length; a request that cannot be retried (a streamed
//! body) costs none. Judging a response by a classifier allocates nothing.
//!
//! # Events
//!
//! Each retry is an `INFO` event, "retrying on another endpoint", with the
//! number of the attempt about to be made, the endpoint that failed (named
//! by its key, as the balancer and the health layer name it), the reason,
//! the delay and the method. A retry that was
//! wanted but refused (no attempts left, budget spent, not idempotent) is a
//! `DEBUG` event; so is each re-pick in the balancer, with the endpoint's key.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//!
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_lb::balance::TriedEndpoints;
//! use tower_lb::retry::{ReplayBody, RetryLayer, RetryPolicy};
//! use tower_lb::{discover, pick::RoundRobin, BalanceLayer, BoxError};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! // An endpoint is any service of `Request<ReplayBody<_>>`, a hyper-util
//! // client for instance; these two answer with a fixed status.
//! let endpoint = |status: StatusCode| {
//!     service_fn(move |_: Request<ReplayBody<Full<Bytes>>>| async move {
//!         Ok::<_, BoxError>(Response::builder().status(status).body(String::new())?)
//!     })
//! };
//! let (endpoints, discover) = discover::channel();
//! endpoints.insert("10.0.0.1:8080", endpoint(StatusCode::SERVICE_UNAVAILABLE))?;
//! endpoints.insert("10.0.0.2:8080", endpoint(StatusCode::OK))?;
//! // Per-endpoint health checks and load counting wrap `discover` here.
//!
//! let client = ServiceBuilder::new()
//!     .timeout(Duration::from_secs(10)) // the whole call
//!     .layer(RetryLayer::new(RetryPolicy::new().max_attempts(3)))
//!     .timeout(Duration::from_secs(2)) // each attempt
//!     .layer(BalanceLayer::new(RoundRobin::new()))
//!     .service(discover);
//!
//! let mut attempts = 0;
//! for _ in 0..4 {
//!     // Optional: a set of our own, to see where the request went.
//!     let tried = TriedEndpoints::new();
//!     let mut request = Request::get("http://api/users").body(Full::new(Bytes::new()))?;
//!     request.extensions_mut().insert(tried.clone());
//!     let response = client.clone().oneshot(request).await?;
//!     // A request that met the failing endpoint was retried on the other.
//!     assert_eq!(response.status(), StatusCode::OK);
//!     assert!(tried.picks() <= 2);
//!     attempts += tried.picks();
//! }
//! assert!(attempts > 4);
//! # Ok(())
//! # }
//! ```

mod backoff;
mod body;
mod classify;
mod decision;
mod failures;
mod future;
mod grpc;
mod layer;
mod policy;
mod scoped;
mod service;

pub use self::backoff::Delay;
pub use self::body::ReplayBody;
pub use self::classify::{RetryNonIdempotent, RetryReason};
pub use self::future::ResponseFuture;
pub use self::grpc::GrpcCode;
pub use self::layer::RetryLayer;
pub use self::policy::RetryPolicy;
pub use self::service::Retry;

#[cfg(test)]
mod tests {
    //! Classified and gRPC retries: the decisions, and how a gRPC call's body
    //! is read for replay.

    use std::io;
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http::{Request, Response, StatusCode};
    use http_body_util::BodyExt;
    use tower::retry::Policy;
    use tower::{Layer, ServiceExt};
    use tower_http::classify::{GrpcErrorsAsFailures, ServerErrorsAsFailures};

    use super::{GrpcCode, ReplayBody, RetryLayer, RetryNonIdempotent, RetryPolicy};
    use crate::balance::TriedEndpoints;
    use crate::error::BoxError;
    use crate::load::test_body::{channel_body, ChannelBody};

    type Req = Request<ReplayBody<String>>;

    fn req(method: &str) -> Req {
        let body = ReplayBody::replay(Bytes::from("x"), None);
        Request::builder().method(method).body(body).unwrap()
    }

    fn answer(status: u16, grpc_status: Option<&str>) -> Result<Response<()>, BoxError> {
        let mut builder = Response::builder().status(status);
        if let Some(code) = grpc_status {
            builder = builder.header("grpc-status", code);
        }
        Ok(builder.body(()).unwrap())
    }

    fn grpc(code: &str) -> Result<Response<()>, BoxError> {
        answer(200, Some(code))
    }

    /// Whether a fresh request's first failure would be retried.
    fn retries(
        policy: &RetryPolicy,
        mut req: Req,
        mut result: Result<Response<()>, BoxError>,
    ) -> bool {
        policy.clone().retry(&mut req, &mut result).is_some()
    }

    #[test]
    fn a_classifier_replaces_the_status_set() {
        let statuses = RetryPolicy::new().seed(1);
        assert!(!retries(&statuses, req("GET"), answer(500, None)));
        let classified = statuses.clone().classify(ServerErrorsAsFailures::new());
        assert!(retries(&classified, req("GET"), answer(500, None)));
        assert!(retries(&classified, req("GET"), answer(503, None)));
        assert!(!retries(&classified, req("GET"), answer(404, None)));
        assert!(format!("{classified:?}").contains("ServerErrorsAsFailures"));
        // The last rule set wins.
        let teapots = classified.retry_statuses([StatusCode::IM_A_TEAPOT]);
        assert!(retries(&teapots, req("GET"), answer(418, None)));
        assert!(!retries(&teapots, req("GET"), answer(500, None)));
        let again = teapots.classify(ServerErrorsAsFailures::new());
        assert!(!retries(&again, req("GET"), answer(418, None)));
    }

    #[test]
    fn a_classified_post_is_resent_only_when_opted_in() {
        let classified = RetryPolicy::new()
            .seed(2)
            .classify(ServerErrorsAsFailures::new());
        assert!(!retries(&classified, req("POST"), answer(500, None)));
        let mut opted = req("POST");
        opted.extensions_mut().insert(RetryNonIdempotent);
        assert!(retries(&classified, opted, answer(500, None)));
        let every_post = classified.clone().retry_non_idempotent(true);
        assert!(retries(&every_post, req("POST"), answer(500, None)));

        // Classified failures only: an error after sending still is not resent.
        let unprocessed = classified.retry_classified_non_idempotent(true);
        assert!(retries(&unprocessed, req("POST"), answer(500, None)));
        let timeout: BoxError = Box::new(tower::timeout::error::Elapsed::new());
        assert!(!retries(&unprocessed, req("POST"), Err(timeout)));
        // Nor is a status from a status set.
        let statuses = unprocessed.retry_statuses([StatusCode::SERVICE_UNAVAILABLE]);
        assert!(!retries(&statuses, req("POST"), answer(503, None)));
    }

    #[test]
    fn grpc_retries_unavailable_calls_only() {
        let policy = RetryPolicy::grpc().seed(3);
        assert!(retries(&policy, req("POST"), grpc("14")));
        for code in ["0", "2", "4", "8", "13", "16", "99", "-1", "fourteen"] {
            assert!(!retries(&policy, req("POST"), grpc(code)), "{code}");
        }
        // The status will come in the trailers, after the messages.
        assert!(!retries(&policy, req("POST"), answer(200, None)));
        // No gRPC status at all: the HTTP status as gRPC clients read it.
        for status in [429, 502, 503, 504] {
            assert!(
                retries(&policy, req("POST"), answer(status, None)),
                "{status}"
            );
        }
        for status in [400, 404, 500] {
            assert!(
                !retries(&policy, req("POST"), answer(status, None)),
                "{status}"
            );
        }
        // A call that failed after it was sent is not resent; one never sent is.
        let timeout: BoxError = Box::new(tower::timeout::error::Elapsed::new());
        assert!(!retries(&policy, req("POST"), Err(timeout)));
        let refused: BoxError = io::Error::from(io::ErrorKind::ConnectionRefused).into();
        assert!(retries(&policy, req("POST"), Err(refused)));
        let debug = format!("{policy:?}");
        assert!(debug.contains("gRPC codes [14]"), "{debug}");
        assert!(
            debug.contains("retry_classified_non_idempotent: true"),
            "{debug}"
        );
    }

    #[test]
    fn grpc_codes_are_configurable() {
        let policy =
            RetryPolicy::grpc().grpc_codes([GrpcCode::Unavailable, GrpcCode::ResourceExhausted]);
        assert!(retries(&policy, req("POST"), grpc("8")));
        assert!(retries(&policy, req("POST"), grpc("14")));
        assert!(!retries(&policy, req("POST"), grpc("13")));
        // Unknown codes are read as UNKNOWN; OK is never a failure.
        let unknown = RetryPolicy::grpc().grpc_codes([GrpcCode::Unknown, GrpcCode::Ok]);
        assert!(retries(&unknown, req("POST"), grpc("99")));
        assert!(retries(&unknown, req("POST"), answer(500, None)));
        assert!(!retries(&unknown, req("POST"), grpc("0")));
        let none = RetryPolicy::grpc().grpc_codes([]);
        assert!(!retries(&none, req("POST"), grpc("14")));
        assert!(!retries(&none, req("POST"), answer(503, None)));
        // Without the gRPC resend rule, a POST is not resent.
        let plain = RetryPolicy::new().grpc_codes([GrpcCode::Unavailable]);
        assert!(!retries(&plain, req("POST"), grpc("14")));
        assert!(retries(&plain, req("GET"), grpc("14")));
        // tower-http's own classifier calls every non-OK code a failure.
        let every = RetryPolicy::new().classify(GrpcErrorsAsFailures::new());
        assert!(retries(&every, req("GET"), grpc("3")));
        assert!(!retries(&every, req("GET"), answer(200, None)));
    }

    /// What each attempt's body held.
    type Seen = Arc<Mutex<Vec<(Bytes, bool)>>>;

    /// A retry layer over an endpoint that records each attempt's body (and
    /// whether it carried a tried set), and answers gRPC `UNAVAILABLE`.
    fn unavailable_endpoint(
        seen: Seen,
    ) -> impl tower::Service<
        Request<ChannelBody>,
        Response = Response<()>,
        Error = BoxError,
        Future = impl Send,
    > + Clone {
        let endpoint = tower::service_fn(move |req: Request<ReplayBody<ChannelBody>>| {
            let seen = Arc::clone(&seen);
            async move {
                let tracked = req.extensions().get::<TriedEndpoints>().is_some();
                let bytes = req.into_body().collect().await?.to_bytes();
                seen.lock().unwrap().push((bytes, tracked));
                grpc("14")
            }
        });
        RetryLayer::new(RetryPolicy::grpc().backoff(Default::default(), Default::default()))
            .layer(endpoint)
    }

    fn call(body: ChannelBody, content_type: &str) -> Request<ChannelBody> {
        Request::post("http://who/who.Who/Ask")
            .header("content-type", content_type)
            .body(body)
            .unwrap()
    }

    #[tokio::test]
    async fn a_grpc_body_that_is_ready_is_replayed() {
        let seen = Seen::default();
        let (tx, body) = channel_body();
        tx.send(Ok(Bytes::from("\0\0\0\0\x02"))).unwrap();
        tx.send(Ok(Bytes::from("hi"))).unwrap();
        drop(tx);
        let svc = unavailable_endpoint(Arc::clone(&seen));
        let response = svc.oneshot(call(body, "application/grpc")).await.unwrap();
        assert_eq!(response.headers()["grpc-status"], "14");
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3, "every attempt made");
        assert!(seen
            .iter()
            .all(|(bytes, tracked)| bytes == "\0\0\0\0\x02hi" && *tracked));
    }

    #[tokio::test]
    async fn a_grpc_body_that_waits_is_sent_once_whole() {
        let seen = Seen::default();
        let (tx, body) = channel_body();
        tx.send(Ok(Bytes::from("first"))).unwrap();
        let svc = unavailable_endpoint(Arc::clone(&seen));
        // The rest of the stream comes only after the call has started: the
        // layer must not wait for it.
        let call = tokio::spawn(svc.oneshot(call(body, "application/grpc")));
        tokio::task::yield_now().await;
        tx.send(Ok(Bytes::from(" then more"))).unwrap();
        drop(tx);
        let response = call.await.unwrap().unwrap();
        assert_eq!(response.headers()["grpc-status"], "14");
        assert_eq!(
            *seen.lock().unwrap(),
            [(Bytes::from("first then more"), false)]
        );
    }

    #[tokio::test]
    async fn a_plain_stream_is_still_not_read_ahead() {
        let seen = Seen::default();
        let (tx, body) = channel_body();
        tx.send(Ok(Bytes::from("ready"))).unwrap();
        drop(tx);
        let svc = unavailable_endpoint(Arc::clone(&seen));
        svc.oneshot(call(body, "application/json")).await.unwrap();
        assert_eq!(*seen.lock().unwrap(), [(Bytes::from("ready"), false)]);
    }
}
