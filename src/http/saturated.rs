//! Shed requests as HTTP answers: 429 with `Retry-After`.

use std::error::Error;

use http::{header, HeaderValue, StatusCode};

use crate::error::{BoxError, Saturated};

/// The answer for a request the balancer shed: `429 Too Many Requests` with
/// `Retry-After` (whole seconds, at least 1), or `None` when `error` (or an
/// error in its source chain) is not [`Saturated`].
///
/// The [`Balancer`](super::Balancer) preset is a client: it returns the
/// error, and the server that calls it answers its own caller. A gateway
/// (axum, hyper) maps the balancer's error with this function and passes
/// any other error on as it did before:
///
/// ```
/// use std::time::Duration;
/// use tower_lb::error::Saturated;
///
/// let error: tower_lb::BoxError = Saturated::new(3, -1, Duration::from_millis(1500)).into();
/// let answer: http::Response<String> = tower_lb::http::saturated_response(&error).unwrap();
/// assert_eq!(answer.status(), 429);
/// assert_eq!(answer.headers()["retry-after"], "2");
/// ```
pub fn saturated_response<B: Default>(error: &BoxError) -> Option<http::Response<B>> {
    let mut next: Option<&(dyn Error + 'static)> = Some(&**error);
    while let Some(error) = next {
        if let Some(saturated) = error.downcast_ref::<Saturated>() {
            let wait = saturated.retry_after();
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let mut answer = http::Response::new(B::default());
            *answer.status_mut() = StatusCode::TOO_MANY_REQUESTS;
            answer
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            return Some(answer);
        }
        next = error.source();
    }
    None
}
