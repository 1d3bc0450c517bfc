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

#[cfg(test)]
mod tests;

pub use self::backoff::Delay;
pub use self::body::ReplayBody;
pub use self::classify::{RetryNonIdempotent, RetryReason};
pub use self::future::ResponseFuture;
pub use self::grpc::GrpcCode;
pub use self::layer::RetryLayer;
pub use self::policy::RetryPolicy;
pub use self::service::Retry;
