//! What failed, and whether it may be sent again.

use std::error::Error;
use std::fmt;
use std::io;

use http::{HeaderMap, Method, StatusCode};

use crate::classify::is_request_fault;
use crate::error::{BoxError, NoEndpoints, Saturated};
use crate::health::NoHealthyEndpoints;

/// Why an attempt failed in a way that a retry may fix; the `reason` field
/// of every retry event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetryReason {
    /// The endpoint refused the connection: nothing was sent. The first
    /// retry after it is not delayed.
    ConnectionRefused,
    /// Another error while connecting (hyper-util's `Error::is_connect`,
    /// with the `hyper-util` feature): nothing was sent.
    Connect,
    /// The endpoint turned the request away before sending it (tower's
    /// `load_shed::error::Overloaded`): nothing was sent.
    NotSent,
    /// The attempt timed out (tower's `timeout::error::Elapsed`); the
    /// endpoint may have received the request.
    Timeout,
    /// Another error; the endpoint may have received the request.
    Error,
    /// The endpoint answered with a status in the policy's retryable set.
    Status(StatusCode),
    /// The policy's classifier ([`RetryPolicy::classify`](super::RetryPolicy::classify))
    /// called the response a failure from its head; this is its HTTP status.
    Classified(StatusCode),
    /// The policy's classifier called the response a failure, and its head
    /// carries this `grpc-status` (a gRPC "trailers-only" answer).
    GrpcStatus(i32),
}

impl RetryReason {
    /// Whether the failed attempt surely never reached the endpoint, so
    /// that sending it again is safe whatever the method.
    pub fn not_sent(&self) -> bool {
        matches!(
            self,
            Self::ConnectionRefused | Self::Connect | Self::NotSent
        )
    }

    /// Whether the policy's classifier called the response a failure.
    pub fn classified(&self) -> bool {
        matches!(self, Self::Classified(_) | Self::GrpcStatus(_))
    }
}

impl fmt::Display for RetryReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ConnectionRefused => f.write_str("connection refused"),
            Self::Connect => f.write_str("connect error"),
            Self::NotSent => f.write_str("not sent: endpoint overloaded"),
            Self::Timeout => f.write_str("attempt timed out"),
            Self::Error => f.write_str("error after sending"),
            Self::Status(status) => write!(f, "status {status}"),
            Self::Classified(status) => write!(f, "classified as a failure (status {status})"),
            Self::GrpcStatus(code) => write!(f, "grpc-status {code}"),
        }
    }
}

/// A request extension that lets this one request be resent after it may
/// have reached an endpoint, whatever its method.
///
/// Use it for a non-idempotent request the backend deduplicates (an
/// idempotency key, a conditional update). Requests that surely were not
/// sent (a refused connection) are retried without it.
///
/// ```
/// let mut req = http::Request::post("http://orders/").body(()).unwrap();
/// req.extensions_mut().insert(tower_lb::retry::RetryNonIdempotent);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetryNonIdempotent;

/// Classifies an attempt's error by walking its source chain; `None` for an
/// error that no other attempt can fix ([`NoEndpoints`]: another pick would
/// wait for the same set; [`NoHealthyEndpoints`]: every endpoint is down,
/// and a retry would only add load when one comes back; a
/// [request fault](crate::classify::is_request_fault): the request itself
/// failed, and would fail again; [`Saturated`]: the request was shed, and
/// retrying at once would defeat the shedding).
pub(crate) fn classify_error(error: &BoxError) -> Option<RetryReason> {
    if is_request_fault(&**error) {
        return None;
    }
    let mut reason = RetryReason::Error;
    let mut next: Option<&(dyn Error + 'static)> = Some(&**error);
    while let Some(error) = next {
        if error.is::<NoEndpoints>() || error.is::<NoHealthyEndpoints>() || error.is::<Saturated>()
        {
            return None;
        }
        if let Some(io) = error.downcast_ref::<io::Error>() {
            if io.kind() == io::ErrorKind::ConnectionRefused {
                return Some(RetryReason::ConnectionRefused);
            }
        }
        if error.is::<tower::load_shed::error::Overloaded>() {
            reason = RetryReason::NotSent;
        } else if error.is::<tower::timeout::error::Elapsed>() && reason == RetryReason::Error {
            reason = RetryReason::Timeout;
        }
        if let Some(client) = error.downcast_ref::<hyper_util::client::legacy::Error>() {
            if client.is_connect() {
                // Keep walking: its source may say the connection was refused.
                reason = RetryReason::Connect;
            }
        }
        next = error.source();
    }
    Some(reason)
}

/// The methods RFC 9110 calls idempotent (§9.2.2): GET, HEAD,
/// OPTIONS, TRACE, PUT and DELETE.
pub(crate) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// A set of status codes, as a bitmap over 0..1024 (every valid status is
/// 100..=999), so a lookup is one shift and mask.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct StatusSet([u64; 16]);

impl StatusSet {
    pub(crate) fn new(statuses: impl IntoIterator<Item = StatusCode>) -> Self {
        let mut bits = [0; 16];
        for status in statuses {
            let code = status.as_u16() as usize;
            bits[code / 64] |= 1 << (code % 64);
        }
        Self(bits)
    }

    pub(crate) fn contains(&self, status: StatusCode) -> bool {
        let code = status.as_u16() as usize;
        self.0[code / 64] & (1 << (code % 64)) != 0
    }

    fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (100..1000u16).filter(|&code| self.0[code as usize / 64] & (1 << (code % 64)) != 0)
    }
}

impl fmt::Debug for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// The `grpc-status` in `headers`, if there is one that reads as a number.
pub(crate) fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(e: impl Error + Send + Sync + 'static) -> BoxError {
        Box::new(e)
    }

    /// An error that wraps another, as client errors wrap io errors.
    #[derive(Debug)]
    struct Wrap(BoxError);
    impl fmt::Display for Wrap {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapped")
        }
    }
    impl Error for Wrap {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn errors_are_classified_through_their_sources() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(
            classify_error(&boxed(Wrap(boxed(refused)))),
            Some(RetryReason::ConnectionRefused)
        );
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(classify_error(&boxed(reset)), Some(RetryReason::Error));
        assert_eq!(
            classify_error(&boxed(tower::timeout::error::Elapsed::new())),
            Some(RetryReason::Timeout)
        );
        assert_eq!(
            classify_error(&boxed(tower::load_shed::error::Overloaded::new())),
            Some(RetryReason::NotSent)
        );
        let none = NoEndpoints {
            waited: std::time::Duration::ZERO,
            known: 0,
        };
        assert_eq!(classify_error(&boxed(Wrap(boxed(none)))), None);
        let down = NoHealthyEndpoints { known: 3 };
        assert_eq!(classify_error(&boxed(down)), None);
        assert_eq!(classify_error(&"plain".into()), Some(RetryReason::Error));
    }

    #[test]
    fn idempotent_methods() {
        for m in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] {
            assert!(is_idempotent(&m.parse().unwrap()), "{m}");
        }
        for m in ["POST", "PATCH", "CONNECT", "PURGE"] {
            assert!(!is_idempotent(&m.parse().unwrap()), "{m}");
        }
    }

    #[test]
    fn status_sets() {
        let set = StatusSet::new([StatusCode::BAD_GATEWAY, StatusCode::from_u16(999).unwrap()]);
        assert!(set.contains(StatusCode::BAD_GATEWAY));
        assert!(set.contains(StatusCode::from_u16(999).unwrap()));
        assert!(!set.contains(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(format!("{set:?}"), "{502, 999}");
    }
}
