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
mod tests {
    use std::io;
    use std::time::Duration;

    use http::StatusCode;
    use tower::retry::budget::Budget;

    use super::*;
    use crate::error::NoEndpoints;
    use crate::retry::RetryNonIdempotent;

    type Req = Request<ReplayBody<String>>;

    fn req(method: &str) -> Req {
        let body = ReplayBody::replay(bytes::Bytes::from("x"), None);
        Request::builder().method(method).body(body).unwrap()
    }

    fn status(code: u16) -> Result<Response<()>, BoxError> {
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::from_u16(code).unwrap();
        Ok(response)
    }

    fn refused() -> Result<Response<()>, BoxError> {
        Err(io::Error::from(io::ErrorKind::ConnectionRefused).into())
    }

    /// `clone_request` with the response type pinned down.
    fn copy(policy: &mut RetryPolicy, req: &Req) -> Option<Req> {
        Policy::<Req, Response<()>, BoxError>::clone_request(policy, req)
    }

    /// Whether a fresh request's first failure would be retried.
    fn retries(
        policy: &RetryPolicy,
        mut req: Req,
        mut result: Result<Response<()>, BoxError>,
    ) -> bool {
        let mut policy = policy.clone();
        policy.retry(&mut req, &mut result).is_some()
    }

    #[test]
    fn what_is_retried() {
        let policy = RetryPolicy::new().seed(1);
        assert!(retries(&policy, req("GET"), status(503)));
        assert!(retries(&policy, req("DELETE"), status(502)));
        assert!(!retries(&policy, req("GET"), status(500)));
        assert!(!retries(&policy, req("GET"), status(200)));
        assert!(!retries(&policy, req("POST"), status(503)));
        assert!(retries(&policy, req("POST"), refused()), "never sent");
        assert!(!retries(&policy, req("POST"), Err("reset".into())));
        let mut opted = req("POST");
        opted.extensions_mut().insert(RetryNonIdempotent);
        assert!(retries(&policy, opted, status(503)));
        assert!(retries(
            &policy.clone().retry_non_idempotent(true),
            req("PATCH"),
            status(503)
        ));
        let none = NoEndpoints {
            waited: Duration::ZERO,
            known: 0,
        };
        assert!(!retries(&policy, req("GET"), Err(none.into())));
        let fault = crate::classify::RequestFault::new("the body stream ended early");
        assert!(
            !retries(&policy, req("GET"), Err(fault.into())),
            "the request's own fault is not retried"
        );
        let teapots = policy.clone().retry_statuses([StatusCode::IM_A_TEAPOT]);
        assert!(retries(&teapots, req("GET"), status(418)));
        assert!(!retries(&teapots, req("GET"), status(503)));
    }

    #[test]
    fn attempts_are_counted_per_request() {
        let service_level = RetryPolicy::new()
            .max_attempts(3)
            .backoff(Duration::ZERO, Duration::ZERO);
        let mut policy = service_level.clone();
        let mut req = req("GET");
        assert!(copy(&mut policy, &req).is_some());
        assert!(policy.retry(&mut req, &mut status(503)).is_some());
        assert!(copy(&mut policy, &req).is_some());
        assert!(policy.retry(&mut req, &mut status(503)).is_some());
        // The third attempt is the last: no copy kept, no retry after it.
        assert!(copy(&mut policy, &req).is_none());
        assert!(policy.retry(&mut req, &mut status(503)).is_none());
        // The service's own copy is untouched, for the next request.
        assert_eq!(service_level.attempt, 1);
        assert!(!retries(
            &service_level.clone().max_attempts(0),
            req.map(|b| b),
            status(503)
        ));
    }

    #[test]
    fn streamed_bodies_are_not_copied() {
        let mut policy = RetryPolicy::new();
        let streamed: Req = Request::new(ReplayBody::stream(String::from("once")));
        assert!(copy(&mut policy, &streamed).is_none());
    }

    #[test]
    fn the_budget_has_the_last_word() {
        struct Never;
        impl Budget for Never {
            fn deposit(&self) {}
            fn withdraw(&self) -> bool {
                false
            }
        }
        let policy = RetryPolicy::new().custom_budget(Never);
        assert!(!retries(&policy, req("GET"), refused()));
        assert!(format!("{policy:?}").contains("custom"));
    }

    #[test]
    fn out_of_range_budget_settings_are_clamped() {
        // Each would trip an assertion inside `TpsBudget::new`.
        let policy = RetryPolicy::new()
            .budget_ratio(f32::NAN)
            .budget_ratio(f32::INFINITY)
            .budget_ratio(-1.0)
            .budget_floor(u32::MAX)
            .budget_window(Duration::ZERO)
            .budget_window(Duration::MAX);
        // Ratio 0 and an enormous floor: the floor still allows retries.
        assert!(retries(&policy, req("GET"), status(503)));
        let stingy = RetryPolicy::new().budget_ratio(0.0).budget_floor(0);
        assert!(!retries(&stingy, req("GET"), status(503)));
    }
}
