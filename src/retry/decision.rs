//! The decision after each attempt: retry or not, and after what delay.

use http::{Request, Response};
use tower::retry::Policy;

use super::backoff::Delay;
use super::classify::classify_error;
use super::{ReplayBody, RetryPolicy};
use crate::balance::TriedEndpoints;
use crate::error::BoxError;

impl<B, Rb> Policy<Request<ReplayBody<B>>, Response<Rb>, BoxError> for RetryPolicy {
    type Future = Delay;

    fn retry(
        &mut self,
        req: &mut Request<ReplayBody<B>>,
        result: &mut Result<Response<Rb>, BoxError>,
    ) -> Option<Delay> {
        let reason = match result {
            Ok(response) => self.config.failures.reason(response)?,
            Err(error) => classify_error(error)?,
        };
        // Named as the balancer and the health layer name it.
        let endpoint = req
            .extensions()
            .get::<TriedEndpoints>()
            .and_then(TriedEndpoints::last_endpoint)
            .unwrap_or_else(|| String::from("unknown"));
        let attempt = self.attempt;
        if !reason.not_sent() && !self.may_resend(req, reason) {
            tracing::debug!(attempt, %endpoint, %reason, method = %req.method(),
                "not retried: the request may have reached the endpoint and is not idempotent");
            return None;
        }
        if attempt >= self.config.max_attempts {
            tracing::debug!(attempt, %endpoint, %reason, "not retried: no attempts left");
            return None;
        }
        if !self.config.budget.withdraw() {
            tracing::debug!(attempt, %endpoint, %reason, "not retried: retry budget exhausted");
            return None;
        }
        let delay = self.config.backoff.delay(attempt, reason, &self.config.rng);
        self.attempt += 1;
        tracing::info!(
            attempt = self.attempt,
            endpoint = %endpoint,
            %reason,
            ?delay,
            method = %req.method(),
            "retrying on another endpoint"
        );
        // The path can be a hash key and the query anything a client sent:
        // never at info level.
        tracing::debug!(
            attempt = self.attempt,
            path = req.uri().path(),
            "retried request"
        );
        Some(Delay::new(delay))
    }

    fn clone_request(&mut self, req: &Request<ReplayBody<B>>) -> Option<Request<ReplayBody<B>>> {
        if self.attempt == 1 {
            // Called once per request, before its first attempt: every
            // request counts as traffic, replayable or not.
            self.config.budget.deposit();
        }
        if self.attempt >= self.config.max_attempts {
            return None;
        }
        let body = req.body().try_clone()?;
        let mut clone = Request::new(body);
        *clone.method_mut() = req.method().clone();
        *clone.uri_mut() = req.uri().clone();
        *clone.version_mut() = req.version();
        *clone.headers_mut() = req.headers().clone();
        *clone.extensions_mut() = req.extensions().clone();
        Some(clone)
    }
}

#[cfg(test)]
mod tests;
