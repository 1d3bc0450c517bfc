//! A retry policy decided by a tower-http classifier.

use std::fmt;
use std::future::{ready, Ready};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tower::retry::Policy;
use tower_http::classify::{ClassifiedResponse, ClassifyResponse};

/// A retry policy whose only notion of failure is a tower-http classifier:
/// a response or error it classifies as a failure is sent again, once.
#[derive(Clone)]
pub struct RetryOnFailure<C> {
    pub classifier: C,
    pub retries_left: usize,
    pub retries: Arc<AtomicUsize>,
}

impl<C, B, E> Policy<Request<Full<Bytes>>, Response<B>, E> for RetryOnFailure<C>
where
    C: ClassifyResponse + Clone,
    E: fmt::Display + 'static,
{
    type Future = Ready<()>;

    fn retry(
        &mut self,
        _request: &mut Request<Full<Bytes>>,
        result: &mut Result<Response<B>, E>,
    ) -> Option<Ready<()>> {
        let failed = match result {
            Ok(response) => match self.classifier.clone().classify_response(response) {
                ClassifiedResponse::Ready(class) => class.is_err(),
                // Known only at the end of the body: too late to retry.
                ClassifiedResponse::RequiresEos(_) => false,
            },
            Err(error) => {
                let _class = self.classifier.clone().classify_error(error);
                true
            }
        };
        if !failed || self.retries_left == 0 {
            return None;
        }
        self.retries_left -= 1;
        self.retries.fetch_add(1, Ordering::SeqCst);
        Some(ready(()))
    }

    fn clone_request(&mut self, request: &Request<Full<Bytes>>) -> Option<Request<Full<Bytes>>> {
        let mut clone = Request::new(request.body().clone());
        *clone.method_mut() = request.method().clone();
        *clone.uri_mut() = request.uri().clone();
        *clone.headers_mut() = request.headers().clone();
        Some(clone)
    }
}
