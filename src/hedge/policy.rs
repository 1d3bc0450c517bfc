//! Which requests may be hedged, and how they are copied.

use http::{Method, Request};

/// Copies a request for a hedge, or says it must not be hedged.
pub trait CloneRequest<Req> {
    /// A copy of `req` to send to another endpoint, or `None` to send `req`
    /// only once.
    fn clone_request(&self, req: &Req) -> Option<Req>;
}

impl<Req, F> CloneRequest<Req> for F
where
    F: Fn(&Req) -> Option<Req>,
{
    fn clone_request(&self, req: &Req) -> Option<Req> {
        self(req)
    }
}

/// Copies HTTP requests whose method is idempotent (RFC 9110 §9.2.2: GET,
/// HEAD, OPTIONS, TRACE, PUT, DELETE) and whose body is `Clone` (`Full`,
/// `Empty`, `String`, `Bytes`); others go once, unless
/// [`non_idempotent`](Idempotent::non_idempotent) opts in.
///
/// Method, URI, version, headers and body are copied; extensions are not
/// (they need not be `Clone`), so a copy carries none of the original's.
///
/// ```
/// use tower_lb::hedge::{CloneRequest, Idempotent};
///
/// let get = http::Request::get("/").body(String::new()).unwrap();
/// let post = http::Request::post("/").body(String::from("order")).unwrap();
/// assert!(Idempotent::new().clone_request(&get).is_some());
/// assert!(Idempotent::new().clone_request(&post).is_none());
/// assert!(Idempotent::new().non_idempotent(true).clone_request(&post).is_some());
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Idempotent {
    non_idempotent: bool,
}

impl Idempotent {
    /// Hedges idempotent methods only.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            non_idempotent: false,
        }
    }

    /// Whether to hedge every method: for endpoints that deduplicate (an
    /// idempotency key) or requests that change nothing whatever their
    /// method.
    #[must_use]
    pub const fn non_idempotent(mut self, hedge: bool) -> Self {
        self.non_idempotent = hedge;
        self
    }
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

impl<B: Clone> CloneRequest<Request<B>> for Idempotent {
    fn clone_request(&self, req: &Request<B>) -> Option<Request<B>> {
        if !self.non_idempotent && !is_idempotent(req.method()) {
            return None;
        }
        let mut copy = Request::new(req.body().clone());
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.version_mut() = req.version();
        *copy.headers_mut() = req.headers().clone();
        Some(copy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_idempotent_methods_whole() {
        let req = Request::put("http://a/x?y")
            .header("x-id", "1")
            .body(String::from("v"))
            .unwrap();
        let copy = Idempotent::new().clone_request(&req).unwrap();
        assert_eq!(copy.method(), Method::PUT);
        assert_eq!(copy.uri(), req.uri());
        assert_eq!(copy.headers(), req.headers());
        assert_eq!(copy.body(), "v");
        for m in ["POST", "PATCH", "CONNECT"] {
            let req = Request::builder().method(m).body(()).unwrap();
            assert!(Idempotent::new().clone_request(&req).is_none(), "{m}");
        }
    }
}
