//! What counts as a failure of an endpoint: the one place the health layer
//! and the retry layer learn it from.
//!
//! [`Classify`] judges a response; [`ServerErrors`] (a 5xx status fails) is
//! the default for HTTP, [`ErrorsOnly`] for services that are not HTTP. With
//! the `http` feature every tower-http classifier is a `Classify` too
//! (`GrpcErrorsAsFailures`, `StatusInRangeAsFailures`, ...).

use http::Response;

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
}

/// A response with a 5xx status is a failure; so is every error. The
/// default classifier of the health layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerErrors;

impl<B> Classify<Response<B>> for ServerErrors {
    fn is_failure(&self, response: &Response<B>) -> bool {
        response.status().is_server_error()
    }
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
    fn errors_only_passes_every_response() {
        assert!(!ErrorsOnly.is_failure(&response(503, None)));
        assert!(!ErrorsOnly.is_failure(&"anything"));
    }
}
