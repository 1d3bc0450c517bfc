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
}

/// The methods a gateway forwards, for `Allow` on a 405.
pub const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, DELETE, OPTIONS, TRACE, PATCH";

impl Refusal {
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::Connect => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::Host => StatusCode::BAD_REQUEST,
        }
    }

    /// The message as a line of text.
    pub fn line(self) -> &'static str {
        match self {
            Refusal::Connect => "CONNECT is not supported: this is a reverse proxy\n",
            Refusal::Host => "a request needs exactly one Host header\n",
        }
    }
}

/// Whether a request must be refused, and why. Either way the connection
/// is closed after the answer: whatever follows a CONNECT was meant for a
/// tunnel, and a request with two Hosts is read differently by others.
pub fn refusal<B>(request: &Request<B>) -> Option<Refusal> {
    if request.method() == Method::CONNECT {
        return Some(Refusal::Connect);
    }
    let hosts = request.headers().get_all(HOST).iter().count();
    if hosts > 1 || (hosts == 0 && request.version() == Version::HTTP_11) {
        return Some(Refusal::Host);
    }
    None
}
