//! What counts as a failure of an endpoint: the one place the health layer
//! and the retry layer learn it from.
//!
//! [`Classify`] judges a response; [`ServerErrors`] (a 5xx status fails) is
//! the default for HTTP, [`ErrorsOnly`] for services that are not HTTP. With
//! the `http` feature every tower-http classifier is a `Classify` too
//! (`GrpcErrorsAsFailures`, `StatusInRangeAsFailures`, ...).
//!
//! # Whose fault it is
//!
//! An error is the endpoint's fault unless the request caused it:
//! [`is_request_fault`] says which. A request fault (the caller's body
//! stream failed or ended early, the request could not be encoded) is never
//! counted against the endpoint by the health layer, and never retried. Wrap
//! an error of your own in [`RequestFault`] to mark it so. A [`Busy`]
//! endpoint's error (out of time while it answered other requests) is not
//! counted against it either, and is retried elsewhere ([`is_busy`]).
//!
//! # Backpressure
//!
//! A server that answers 429 or 503 with `Retry-After`, or a gRPC status
//! with `grpc-retry-pushback-ms`, asks for a pause: [`pushback`] reads it,
//! and the health layer keeps that endpoint out of rotation for that long
//! (capped, see `HealthConfig::max_pushback`).

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{Response, StatusCode};

use crate::error::BoxError;

/// Decides whether a successful call's response is a failure of the
/// endpoint. An `Err` from the endpoint (a refused connection, a reset, the
/// error of a timeout layer wrapped around the endpoint under the health
/// wrapper) is always a failure and never reaches this. A call dropped
/// before it finished (a timeout or a caller above the balancer giving up)
/// is neither a success nor a failure.
///
/// [`ServerErrors`] (5xx fail) is the default. With the `http` feature every
/// tower-http `ClassifyResponse` is a `Classify` for HTTP responses:
/// `ServerErrorsAsFailures`, `GrpcErrorsAsFailures` (a non-OK
/// `grpc-status`), `StatusInRangeAsFailures`. Responses are judged on their
/// head: a classifier that needs the end of the body (a
/// gRPC status sent in trailers after streamed messages) counts the response
/// as a success. A gRPC server that fails before answering sends its status
/// in the head ("trailers-only"), and that is seen.
///
/// For services that are not HTTP, use [`ErrorsOnly`], or implement this
/// trait for your response type.
///
/// The retry layer reuses it: `RetryPolicy::classify` (feature `http`)
/// takes a `Classify<Response<()>>` and judges each response's head by it.
pub trait Classify<Res>: Clone + Send + Sync + 'static {
    /// Whether `response` means the endpoint failed.
    fn is_failure(&self, response: &Res) -> bool;

    /// How long the endpoint asked not to be sent requests, if it did: for
    /// HTTP responses, [`pushback`]. `None` by default.
    fn pushback(&self, response: &Res) -> Option<Duration> {
        let _ = response;
        None
    }

    /// Hands `response` a way to report later that its endpoint failed
    /// after all (made by `late` only if needed). Nothing by default;
    /// [`LateFailures`] puts a [`LateFailure`] in an HTTP response's
    /// extensions.
    fn attach(&self, response: &mut Res, late: impl FnOnce() -> LateFailure) {
        let _ = (response, late);
    }
}

/// Reports that the endpoint of a response already judged a success
/// failed after all: its streamed body stalled or broke. The health layer
/// counts it as one failed response of that endpoint.
///
/// Found in a response's extensions when its endpoint's health layer uses
/// [`LateFailures`]; whatever reads the body (an idle timeout, see
/// [`IdleTimeoutBody`](crate::http::IdleTimeoutBody)) takes it out and
/// calls [`failed`](Self::failed) at most once.
#[derive(Clone)]
pub struct LateFailure(Arc<dyn LateVerdict>);

/// What a [`LateFailure`] tells.
pub(crate) trait LateVerdict: Send + Sync + 'static {
    fn failed_late(&self);
}

impl LateFailure {
    pub(crate) fn new(to: Arc<dyn LateVerdict>) -> Self {
        Self(to)
    }

    /// Counts one failure against the response's endpoint.
    pub fn failed(self) {
        self.0.failed_late();
    }
}

impl fmt::Debug for LateFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LateFailure")
    }
}

/// Judges responses as `C` does, and gives each HTTP response a
/// [`LateFailure`] in its extensions, so a failure seen in its body (a
/// stalled stream) counts against its endpoint too.
///
/// Cost: a reference count and an extension insert per response (which
/// allocates the extension map when the response has none).
#[derive(Clone, Copy, Debug, Default)]
pub struct LateFailures<C = ServerErrors>(pub C);

impl<C, B> Classify<Response<B>> for LateFailures<C>
where
    C: Classify<Response<B>>,
{
    fn is_failure(&self, response: &Response<B>) -> bool {
        self.0.is_failure(response)
    }

    fn pushback(&self, response: &Response<B>) -> Option<Duration> {
        self.0.pushback(response)
    }

    fn attach(&self, response: &mut Response<B>, late: impl FnOnce() -> LateFailure) {
        response.extensions_mut().insert(late());
    }
}

#[cfg(feature = "http")]
impl<C, B> Classify<Response<B>> for C
where
    C: tower_http::classify::ClassifyResponse + Clone + Send + Sync + 'static,
{
    fn is_failure(&self, response: &Response<B>) -> bool {
        matches!(
            self.clone().classify_response(response),
            tower_http::classify::ClassifiedResponse::Ready(Err(_))
        )
    }

    fn pushback(&self, response: &Response<B>) -> Option<Duration> {
        pushback(response)
    }
}

/// A response with a 5xx status is a failure; so is every error. The
/// default classifier of the health layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerErrors;

impl<B> Classify<Response<B>> for ServerErrors {
    fn is_failure(&self, response: &Response<B>) -> bool {
        response.status().is_server_error()
    }

    fn pushback(&self, response: &Response<B>) -> Option<Duration> {
        pushback(response)
    }
}

/// How long a response asks its server to be left alone:
///
/// * `grpc-retry-pushback-ms: N` (gRPC), N milliseconds; a negative or
///   unreadable value is no pushback;
/// * `Retry-After` on a 429 or 503, as seconds (`Retry-After: 3`) or as an
///   HTTP date (a date in the past is no pushback).
///
/// Anything malformed reads as no pushback: a server cannot make a client
/// fail by sending garbage.
pub fn pushback<B>(response: &Response<B>) -> Option<Duration> {
    let headers = response.headers();
    if let Some(value) = headers.get("grpc-retry-pushback-ms") {
        let millis: u64 = value.to_str().ok()?.trim().parse().ok()?;
        return Some(Duration::from_millis(millis));
    }
    if !matches!(
        response.status(),
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) {
        return None;
    }
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    at.duration_since(SystemTime::now()).ok()
}

/// An error caused by the request, not by the endpoint it was sent to: the
/// caller's body stream failed or ended early, or the request could not be
/// sent as it was. The health layer does not count it against the endpoint
/// and the retry layer does not retry it.
#[derive(Debug)]
pub struct RequestFault {
    source: BoxError,
}

impl RequestFault {
    /// Marks `error` as caused by the request.
    pub fn new(error: impl Into<BoxError>) -> Self {
        Self {
            source: error.into(),
        }
    }
}

impl fmt::Display for RequestFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the request failed: {}", self.source)
    }
}

impl Error for RequestFault {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.source)
    }
}

/// An endpoint that was busy, not broken: the attempt ran out of time
/// while the endpoint kept answering other requests (a queue there longer
/// than the attempt's time). The health layer does not count it against
/// the endpoint, so load alone cannot eject a working server; the retry
/// layer retries it elsewhere like any error.
/// [`Prefill`](crate::load::Prefill) marks its timeouts so.
#[derive(Debug)]
pub struct Busy {
    source: BoxError,
}

impl Busy {
    /// Marks `error` as the endpoint being busy.
    pub fn new(error: impl Into<BoxError>) -> Self {
        Self {
            source: error.into(),
        }
    }
}

impl fmt::Display for Busy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the endpoint was busy: {}", self.source)
    }
}

impl Error for Busy {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.source)
    }
}

/// Whether `error` is a [`Busy`] endpoint's, anywhere in its `source()`
/// chain.
pub fn is_busy(error: &(dyn Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if error.is::<Busy>() {
            return true;
        }
        next = error.source();
    }
    false
}

/// Whether `error` was caused by the request rather than the endpoint: a
/// [`RequestFault`] anywhere in its `source()` chain, or (feature `http`) a
/// hyper error that hyper blames on the caller's side: the request body
/// stream yielded an error or was aborted, or the request could not be
/// encoded (`hyper::Error::is_user`).
pub fn is_request_fault(error: &(dyn Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if error.is::<RequestFault>() {
            return true;
        }
        #[cfg(feature = "http")]
        if let Some(hyper) = error.downcast_ref::<hyper::Error>() {
            // The first hyper error decides: a user error is the request's.
            return hyper.is_user() || hyper.is_body_write_aborted();
        }
        next = error.source();
    }
    false
}

/// Only errors count as failures; every response is a success. For
/// endpoints that are not HTTP services.
#[derive(Clone, Copy, Debug, Default)]
pub struct ErrorsOnly;

impl<Res> Classify<Res> for ErrorsOnly {
    fn is_failure(&self, _response: &Res) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, grpc: Option<&str>) -> Response<()> {
        let mut builder = Response::builder().status(status);
        if let Some(code) = grpc {
            builder = builder.header("grpc-status", code);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn server_errors_fail() {
        let classify = ServerErrors;
        assert!(classify.is_failure(&response(503, None)));
        assert!(classify.is_failure(&response(500, None)));
        assert!(!classify.is_failure(&response(404, None)));
        assert!(!classify.is_failure(&response(200, None)));
    }

    #[cfg(feature = "http")]
    #[test]
    fn grpc_status_in_the_head_fails() {
        let classify = tower_http::classify::GrpcErrorsAsFailures::new();
        assert!(classify.is_failure(&response(200, Some("14"))));
        assert!(!classify.is_failure(&response(200, Some("0"))));
        // The status will come in trailers: judged a success at the head.
        assert!(!classify.is_failure(&response(200, None)));
    }

    #[test]
    fn pushback_reads_retry_after_and_grpc_pushback() {
        let with = |status: u16, name: &str, value: &str| {
            Response::builder()
                .status(status)
                .header(name, value)
                .body(())
                .unwrap()
        };
        assert_eq!(
            pushback(&with(429, "retry-after", "3")),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            pushback(&with(503, "retry-after", " 0 ")),
            Some(Duration::ZERO)
        );
        // Only 429 and 503 ask for a pause with Retry-After.
        assert_eq!(pushback(&with(500, "retry-after", "3")), None);
        assert_eq!(pushback(&with(429, "retry-after", "soon")), None);
        assert_eq!(pushback(&with(429, "retry-after", "-1")), None);
        let past = "Sun, 06 Nov 1994 08:49:37 GMT";
        assert_eq!(pushback(&with(503, "retry-after", past)), None);
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        let pause = pushback(&with(503, "retry-after", &later)).unwrap();
        assert!(pause > Duration::from_secs(100) && pause <= Duration::from_secs(120));
        let grpc = with(200, "grpc-retry-pushback-ms", "250");
        assert_eq!(pushback(&grpc), Some(Duration::from_millis(250)));
        assert_eq!(pushback(&with(200, "grpc-retry-pushback-ms", "-5")), None);
        assert_eq!(
            ServerErrors.pushback(&with(429, "retry-after", "1")),
            Some(Duration::from_secs(1))
        );
        assert_eq!(ErrorsOnly.pushback(&with(429, "retry-after", "1")), None);
    }

    #[test]
    fn request_faults_are_found_anywhere_in_the_chain() {
        #[derive(Debug)]
        struct Outer(BoxError);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("outer")
            }
        }
        impl Error for Outer {
            fn source(&self) -> Option<&(dyn Error + 'static)> {
                Some(&*self.0)
            }
        }
        let plain = std::io::Error::other("reset");
        assert!(!is_request_fault(&plain));
        let fault = RequestFault::new("the body stream ended early");
        assert!(is_request_fault(&fault));
        assert!(fault.to_string().contains("ended early"));
        let wrapped = Outer(Box::new(RequestFault::new(plain)));
        assert!(is_request_fault(&wrapped));
        assert!(!is_request_fault(&Outer("endpoint".into())));
    }

    #[test]
    fn errors_only_passes_every_response() {
        assert!(!ErrorsOnly.is_failure(&response(503, None)));
        assert!(!ErrorsOnly.is_failure(&"anything"));
    }
}
