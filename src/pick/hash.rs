//! The request's hash key, read by the hashing pickers.

/// Extracts a request's hash key for the hashing pickers.
///
/// Returns `None` when the request has no key (a missing header, no client
/// address); each picker documents what it does then. Implemented for
/// closures `Fn(&Req) -> Option<u64>`, so a key can be anything the request
/// carries:
///
/// ```
/// use tower_lb::pick::{ConsistentHash, key::hash_bytes};
///
/// let by_tenant = ConsistentHash::new(|req: &http::Request<()>| {
///     req.headers().get("x-tenant").map(|v| hash_bytes(v.as_bytes()))
/// });
/// # let _ = by_tenant;
/// ```
pub trait HashKey<Req>: Send + Sync + 'static {
    /// The request's key hash, or `None` when it has none.
    fn hash_key(&self, req: &Req) -> Option<u64>;
}

impl<Req, F> HashKey<Req> for F
where
    F: Fn(&Req) -> Option<u64> + Send + Sync + 'static,
{
    fn hash_key(&self, req: &Req) -> Option<u64> {
        self(req)
    }
}
