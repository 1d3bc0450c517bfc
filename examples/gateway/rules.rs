//! The HTTP rules every gateway listener enforces before forwarding:
//! requests it must not pass on.

use http::header::HOST;
use http::{Method, Request, StatusCode, Version};

/// Why a request is answered by the gateway itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// CONNECT: this is no forward proxy (405, with `Allow`).
    Connect,
    /// An HTTP/1.1 request without exactly one Host (RFC 9112 §3.2),
    /// which backends could read in different ways (400).
    Host,
    /// Request headers larger than the listener's limit (431): refused
    /// here rather than passed to a backend that may refuse them, which
    /// would count against it.
    HeadersTooLarge,
}

/// The methods a gateway forwards, for `Allow` on a 405.
pub const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, DELETE, OPTIONS, TRACE, PATCH";

impl Refusal {
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::Connect => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::Host => StatusCode::BAD_REQUEST,
            Refusal::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        }
    }

    /// The message as a line of text.
    pub fn line(self) -> &'static str {
        match self {
            Refusal::Connect => "CONNECT is not supported: this is a reverse proxy\n",
            Refusal::Host => "a request needs exactly one Host header\n",
            Refusal::HeadersTooLarge => "the request headers are too large\n",
        }
    }
}

/// The bytes of a request's headers, as sent: each name and value with
/// its colon, space and line end.
pub fn header_bytes<B>(request: &Request<B>) -> usize {
    request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

/// Whether a request must be refused, and why: headers over
/// `max_header_bytes` (hyper's read buffer bounds only a head that arrives
/// in pieces, so they are counted here), CONNECT, or a Host that is not
/// one. The connection is closed after the answer: whatever follows a
/// CONNECT was meant for a tunnel, and a request with two Hosts is read
/// differently by others.
pub fn refusal<B>(request: &Request<B>, max_header_bytes: Option<usize>) -> Option<Refusal> {
    if max_header_bytes.is_some_and(|max| header_bytes(request) > max) {
        return Some(Refusal::HeadersTooLarge);
    }
    if request.method() == Method::CONNECT {
        return Some(Refusal::Connect);
    }
    let hosts = request.headers().get_all(HOST).iter().count();
    if hosts > 1 || (hosts == 0 && request.version() == Version::HTTP_11) {
        return Some(Refusal::Host);
    }
    None
}
