//! Whose fault a failed attempt is: the request's (its body stream erred or
//! ended early, it was malformed) or the backend's.

use std::error::Error;

/// True when the error chain says the request or its body caused the
/// failure: the proxy answers 400 (or the client is gone) and no backend is
/// blamed.
///
/// hyper's client reports a request body that failed as a "user" error
/// whose source is the body's own error (here, the error of the client's
/// request body: a malformed chunk, a connection closed mid-upload).
pub(crate) fn is_request_fault(error: &(dyn Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(error) = error.downcast_ref::<hyper::Error>() {
            if error.is_user() || error.is_body_write_aborted() {
                return true;
            }
        }
        next = error.source();
    }
    false
}
