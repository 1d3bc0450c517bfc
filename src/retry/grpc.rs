//! gRPC retries: which `grpc-status` codes are retried, and why a POST may
//! be resent.

use http::{Response, StatusCode};
pub use tower_http::classify::GrpcCode;
use tower_http::classify::GrpcErrorsAsFailures;

use super::classify::grpc_status;
use super::failures::Failures;
use super::RetryPolicy;
use crate::classify::Classify;

impl RetryPolicy {
    /// The policy for gRPC calls: [`new`](Self::new)'s settings, with
    /// responses judged by their gRPC status (only `UNAVAILABLE` is
    /// retried, see [`grpc_codes`](Self::grpc_codes)) and
    /// [`retry_classified_non_idempotent`](Self::retry_classified_non_idempotent)
    /// on.
    ///
    /// Every gRPC call is a POST, so without that last setting a call would
    /// be retried only when it surely was not sent. gRPC's own retry design
    /// leaves the choice of retryable codes to the service owner, and
    /// `UNAVAILABLE` is the usual one: the server turned the call away
    /// before processing it (shutting down, overloaded, no backend). Calls
    /// whose server may answer `UNAVAILABLE` after acting on them (gRPC's
    /// status docs warn it is not always safe for non-idempotent calls) want
    /// `grpc_codes([])`, or a policy of their own. Timeouts and errors after
    /// sending are still not retried for POSTs.
    ///
    /// tonic's request bodies do not state their length; the
    /// [`Retry`](super::Retry) layer reads a gRPC request's body as far as it
    /// goes without waiting, which holds the whole of a unary or
    /// server-streaming call (see the [module docs](super#classifiers-and-grpc)).
    ///
    /// ```
    /// use tower_lb::retry::{GrpcCode, RetryLayer, RetryPolicy};
    ///
    /// let layer = RetryLayer::new(RetryPolicy::grpc());
    /// // Also retry RESOURCE_EXHAUSTED, as another server may have room.
    /// let policy =
    ///     RetryPolicy::grpc().grpc_codes([GrpcCode::Unavailable, GrpcCode::ResourceExhausted]);
    /// # let _ = (layer, policy);
    /// ```
    pub fn grpc() -> Self {
        Self::new()
            .grpc_codes([GrpcCode::Unavailable])
            .retry_classified_non_idempotent(true)
    }

    /// Judges responses as gRPC answers, in place of the status set or any
    /// classifier: a response is retried when its head carries a
    /// `grpc-status` in `codes` (a "trailers-only" answer, what a server
    /// sends when it fails before its first message), as tower-http's
    /// `GrpcErrorsAsFailures` reads it.
    ///
    /// A response without `grpc-status` in its head is judged by its HTTP
    /// status as gRPC clients map it (429, 502, 503 and 504 are
    /// `UNAVAILABLE`, 400 `INTERNAL`, 401 `UNAUTHENTICATED`, 403
    /// `PERMISSION_DENIED`, 404 `UNIMPLEMENTED`, others `UNKNOWN`), except
    /// HTTP 200: its status comes in the trailers, after messages already on
    /// their way to the caller, and it is not retried. A code outside gRPC's
    /// 0 to 16 counts as `UNKNOWN`. `OK` is never retried.
    ///
    /// This does not change which methods are resent; see
    /// [`grpc`](Self::grpc).
    pub fn grpc_codes(self, codes: impl IntoIterator<Item = GrpcCode>) -> Self {
        let codes = GrpcCodes::new(codes);
        let name = format!("gRPC codes {:?}", codes.numbers().collect::<Vec<_>>());
        self.with(|config| config.failures = Failures::from_fn(name, move |h| codes.is_failure(h)))
    }
}

/// Every gRPC code, by its number.
const CODES: [GrpcCode; 17] = [
    GrpcCode::Ok,
    GrpcCode::Cancelled,
    GrpcCode::Unknown,
    GrpcCode::InvalidArgument,
    GrpcCode::DeadlineExceeded,
    GrpcCode::NotFound,
    GrpcCode::AlreadyExists,
    GrpcCode::PermissionDenied,
    GrpcCode::ResourceExhausted,
    GrpcCode::FailedPrecondition,
    GrpcCode::Aborted,
    GrpcCode::OutOfRange,
    GrpcCode::Unimplemented,
    GrpcCode::Internal,
    GrpcCode::Unavailable,
    GrpcCode::DataLoss,
    GrpcCode::Unauthenticated,
];

/// A code's number, spelled out rather than cast so that it never depends
/// on the order of tower-http's variants.
fn number(code: GrpcCode) -> u32 {
    match code {
        GrpcCode::Ok => 0,
        GrpcCode::Cancelled => 1,
        GrpcCode::Unknown => 2,
        GrpcCode::InvalidArgument => 3,
        GrpcCode::DeadlineExceeded => 4,
        GrpcCode::NotFound => 5,
        GrpcCode::AlreadyExists => 6,
        GrpcCode::PermissionDenied => 7,
        GrpcCode::ResourceExhausted => 8,
        GrpcCode::FailedPrecondition => 9,
        GrpcCode::Aborted => 10,
        GrpcCode::OutOfRange => 11,
        GrpcCode::Unimplemented => 12,
        GrpcCode::Internal => 13,
        GrpcCode::Unavailable => 14,
        GrpcCode::DataLoss => 15,
        GrpcCode::Unauthenticated => 16,
    }
}

/// The retryable codes of [`RetryPolicy::grpc_codes`].
#[derive(Clone, Debug)]
struct GrpcCodes {
    /// Bit `n` set: code `n` is retried. Never bit 0 (`OK`).
    retried: u32,
    /// tower-http's reading of `grpc-status`, with every code outside the
    /// set counted as a success.
    classifier: GrpcErrorsAsFailures,
}

impl GrpcCodes {
    fn new(codes: impl IntoIterator<Item = GrpcCode>) -> Self {
        let retried = codes
            .into_iter()
            .map(number)
            .fold(0, |bits, n| bits | 1 << n)
            & !1;
        let classifier = CODES
            .into_iter()
            .filter(|&code| retried & 1 << number(code) == 0)
            .fold(GrpcErrorsAsFailures::new(), |classifier, code| {
                classifier.with_success(code)
            });
        Self {
            retried,
            classifier,
        }
    }

    fn retries(&self, code: u32) -> bool {
        code < 32 && self.retried & 1 << code != 0
    }

    fn numbers(&self) -> impl Iterator<Item = u32> + '_ {
        (0..17).filter(|&n| self.retries(n))
    }

    fn is_failure(&self, head: &Response<()>) -> bool {
        if !head.headers().contains_key("grpc-status") {
            return http_as_grpc(head.status()).is_some_and(|code| self.retries(code));
        }
        match grpc_status(head.headers()) {
            Some(0..=16) => self.classifier.is_failure(head),
            // gRPC clients read a code they do not know as UNKNOWN, where
            // tower-http would call it a failure whatever the set.
            Some(_) => self.retries(2),
            // Unreadable: tower-http counts it a success, and so do we.
            None => false,
        }
    }
}

/// The gRPC code that clients read from the HTTP status of an answer
/// without `grpc-status` in its head; `None` for 200, whose code comes in
/// the trailers.
fn http_as_grpc(status: StatusCode) -> Option<u32> {
    Some(match status.as_u16() {
        200 => return None,
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    })
}
