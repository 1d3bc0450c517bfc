//! `RetryPolicy`: what is retried, how often, and how soon.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use tower::retry::budget::{Budget, TpsBudget};

use super::backoff::Backoff;
use super::classify::{is_idempotent, StatusSet};
use super::failures::Failures;
use super::{RetryNonIdempotent, RetryReason};
use crate::classify::Classify;
use crate::util::Rng;

/// The retry rules: a `tower::retry::Policy` for HTTP requests behind a
/// [`Balance`](crate::Balance). See the [module docs](super) for what is
/// retried and why.
///
/// | setting | default |
/// |---|---|
/// | [`max_attempts`](Self::max_attempts) | 3 (the first attempt and two retries) |
/// | [`budget_ratio`](Self::budget_ratio) | 0.2: retries up to 20 % of requests |
/// | [`budget_floor`](Self::budget_floor) | 10 retries a second, whatever the traffic |
/// | [`budget_window`](Self::budget_window) | 10 s |
/// | [`backoff`](Self::backoff) | base 25 ms, cap 1 s, full jitter |
/// | [`retry_statuses`](Self::retry_statuses) or [`classify`](Self::classify) | statuses 502, 503, 504 |
/// | [`retry_non_idempotent`](Self::retry_non_idempotent) | `false` |
/// | [`retry_classified_non_idempotent`](Self::retry_classified_non_idempotent) | `false` |
///
/// [`RetryPolicy::grpc`] is the policy for gRPC calls.
///
/// tower's `TpsBudget` rotates its window under a short mutex on each
/// deposit and withdrawal, once per request; where many threads send at very
/// high rates, a lock-free [`Budget`] can replace it
/// ([`custom_budget`](Self::custom_budget)).
///
/// Clones share the budget and the jitter generator, so every service built
/// from one policy draws on one budget. Each request works on its own copy
/// (tower's `Retry` clones the policy per request), which counts its
/// attempts.
#[derive(Clone)]
#[must_use]
pub struct RetryPolicy {
    pub(super) config: Arc<Config>,
    /// The attempt in flight for this request: 1 for the first.
    pub(super) attempt: u32,
}

#[derive(Clone)]
pub(super) struct Config {
    pub(super) max_attempts: u32,
    pub(super) budget: Arc<dyn Budget + Send + Sync>,
    /// `(ratio, floor per second, window)`, or `None` for a custom budget.
    tps: Option<(f32, u32, Duration)>,
    pub(super) backoff: Backoff,
    pub(super) failures: Failures,
    non_idempotent: bool,
    classified_non_idempotent: bool,
    pub(super) rng: Arc<Rng>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl RetryPolicy {
    /// The default policy (see the table above), with jitter seeded from the
    /// process's randomness.
    pub fn new() -> Self {
        let tps = (0.2, 10, Duration::from_secs(10));
        Self {
            config: Arc::new(Config {
                max_attempts: 3,
                budget: Arc::new(tps_budget(tps)),
                tps: Some(tps),
                backoff: Backoff {
                    base: Duration::from_millis(25),
                    cap: Duration::from_secs(1),
                },
                failures: Failures::Statuses(StatusSet::new([
                    StatusCode::BAD_GATEWAY,
                    StatusCode::SERVICE_UNAVAILABLE,
                    StatusCode::GATEWAY_TIMEOUT,
                ])),
                non_idempotent: false,
                classified_non_idempotent: false,
                rng: Arc::new(Rng::from_entropy()),
            }),
            attempt: 1,
        }
    }

    pub(super) fn with(mut self, change: impl FnOnce(&mut Config)) -> Self {
        change(Arc::make_mut(&mut self.config));
        self
    }

    fn with_tps(self, change: impl FnOnce(&mut (f32, u32, Duration))) -> Self {
        self.with(|config| {
            let mut tps = config.tps.unwrap_or((0.2, 10, Duration::from_secs(10)));
            change(&mut tps);
            config.budget = Arc::new(tps_budget(tps));
            config.tps = Some(tps);
        })
    }

    /// How many attempts a request gets in all, the first included. 0 and 1
    /// both mean no retry.
    pub fn max_attempts(self, attempts: u32) -> Self {
        self.with(|config| config.max_attempts = attempts.max(1))
    }

    /// The share of requests that may be retried on top of the floor: 0.2
    /// lets 20 retries through for every 100 requests in the window. Each
    /// request deposits, each retry withdraws. Clamped to 0..=1000; NaN
    /// counts as 0.
    ///
    /// tower's `TpsBudget` keeps whole tokens, so a ratio `r` ≤ 1 acts as
    /// 1/⌊1/r⌋ (0.3 acts as ⅓); ratios of the form 1/n are exact.
    pub fn budget_ratio(self, ratio: f32) -> Self {
        self.with_tps(|tps| tps.0 = ratio)
    }

    /// Retries allowed per second whatever the traffic, so that a client
    /// with few requests can still retry: over one window, `floor ×
    /// window` retries (in whole seconds).
    pub fn budget_floor(self, per_second: u32) -> Self {
        self.with_tps(|tps| tps.1 = per_second)
    }

    /// How long a request's deposit and a retry's withdrawal count. Clamped
    /// to 1..=60 seconds, the range `TpsBudget` accepts.
    pub fn budget_window(self, window: Duration) -> Self {
        self.with_tps(|tps| tps.2 = window)
    }

    /// Any other `tower` budget, shared by every clone of this policy;
    /// replaces the ratio, floor and window settings.
    pub fn custom_budget(self, budget: impl Budget + Send + Sync + 'static) -> Self {
        self.with(|config| {
            config.budget = Arc::new(budget);
            config.tps = None;
        })
    }

    /// Exponential backoff: the delay before retry `n` is drawn uniformly
    /// from `0..=min(cap, base × 2ⁿ⁻¹)` (full jitter). The first retry after
    /// a refused connection is not delayed. A zero `base` never waits.
    pub fn backoff(self, base: Duration, cap: Duration) -> Self {
        self.with(|config| config.backoff = Backoff { base, cap })
    }

    /// The response statuses that are retried (for requests that may be
    /// resent), replacing the default 502, 503 and 504, and any
    /// [`classify`](Self::classify)er set before.
    pub fn retry_statuses(self, statuses: impl IntoIterator<Item = StatusCode>) -> Self {
        self.with(|config| config.failures = Failures::Statuses(StatusSet::new(statuses)))
    }

    /// Lets `classifier` decide which responses are retried, in place of the
    /// status set: any tower-http `ClassifyResponse`, such as
    /// `ServerErrorsAsFailures` (every 5xx, 500 included),
    /// `StatusInRangeAsFailures`, or `GrpcErrorsAsFailures`; or your own
    /// [`Classify`] of `Response<()>`.
    ///
    /// A response is retried when the classifier calls it a failure from
    /// its head (`ClassifiedResponse::Ready(Err(_))`). One whose
    /// classification waits for the end of the stream (`RequiresEos`, as a
    /// gRPC status in trailers does) is not retried: its body is already
    /// on its way to the caller. The classifier is shown a `Response<()>`
    /// holding the head; it never sees the body.
    ///
    /// One rule applies at a time: this replaces the status set, and
    /// [`retry_statuses`](Self::retry_statuses) called afterwards replaces
    /// the classifier. Which requests may be resent is unchanged: a
    /// non-idempotent one only with [`RetryNonIdempotent`],
    /// [`retry_non_idempotent`](Self::retry_non_idempotent) or
    /// [`retry_classified_non_idempotent`](Self::retry_classified_non_idempotent).
    /// For gRPC, [`grpc`](Self::grpc) sets both, retrying only the codes
    /// that mean "try elsewhere" (`GrpcErrorsAsFailures` alone would retry
    /// every non-OK code).
    ///
    /// ```
    /// use tower_http::classify::ServerErrorsAsFailures;
    /// use tower_lb::retry::RetryPolicy;
    ///
    /// let policy = RetryPolicy::new().classify(ServerErrorsAsFailures::new());
    /// # let _ = policy;
    /// ```
    pub fn classify<C: Classify<Response<()>>>(self, classifier: C) -> Self {
        self.with(|config| config.failures = Failures::classifier(classifier))
    }

    /// Whether requests with non-idempotent methods (POST, PATCH, …) are
    /// resent after they may have reached an endpoint (an error after
    /// sending, a timeout, a retryable status). Off by default; one request
    /// can opt in with the [`RetryNonIdempotent`] extension.
    pub fn retry_non_idempotent(self, retry: bool) -> Self {
        self.with(|config| config.non_idempotent = retry)
    }

    /// Whether a response the [`classify`](Self::classify)er (or
    /// [`grpc_codes`](Self::grpc_codes)) calls a failure is retried whatever
    /// the request's method: such a failure then means the server did not
    /// process the request, as gRPC's `UNAVAILABLE` does. Errors after
    /// sending (timeouts, resets) still follow the method rules, and a
    /// status set is not affected. Off by default; [`grpc`](Self::grpc)
    /// turns it on.
    ///
    /// Leave it off for classifiers of plain HTTP statuses: a 500 to a POST
    /// may come after the order was placed.
    pub fn retry_classified_non_idempotent(self, retry: bool) -> Self {
        self.with(|config| config.classified_non_idempotent = retry)
    }

    /// Seeds the jitter, for reproducible delays in tests.
    pub fn seed(self, seed: u64) -> Self {
        self.with(|config| config.rng = Arc::new(Rng::from_seed(seed)))
    }

    /// The longest delay before retry `retry` (1 for the first retry).
    pub fn max_delay(&self, retry: u32) -> Duration {
        self.config.backoff.ceiling(retry)
    }

    /// Whether `req` may be sent again after it may have reached an
    /// endpoint and failed for `reason`.
    pub(super) fn may_resend<B>(&self, req: &Request<B>, reason: RetryReason) -> bool {
        is_idempotent(req.method())
            || self.config.non_idempotent
            || (self.config.classified_non_idempotent && reason.classified())
            || req.extensions().get::<RetryNonIdempotent>().is_some()
    }
}

fn tps_budget((ratio, floor, window): (f32, u32, Duration)) -> TpsBudget {
    // TpsBudget asserts on these ranges; clamp rather than panic.
    let ratio = if ratio.is_nan() {
        0.0
    } else {
        ratio.clamp(0.0, 1000.0)
    };
    let window = window.clamp(Duration::from_secs(1), Duration::from_secs(60));
    TpsBudget::new(window, floor.min(i32::MAX as u32 - 1), ratio)
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = &*self.config;
        let mut d = f.debug_struct("RetryPolicy");
        d.field("max_attempts", &config.max_attempts);
        match config.tps {
            Some((ratio, floor, window)) => d
                .field("budget_ratio", &ratio)
                .field("budget_floor", &floor)
                .field("budget_window", &window),
            None => d.field("budget", &"custom"),
        };
        d.field("backoff", &config.backoff);
        match &config.failures {
            Failures::Statuses(statuses) => d.field("retry_statuses", statuses),
            classifier => d.field("classify", classifier),
        };
        d.field("retry_non_idempotent", &config.non_idempotent)
            .field(
                "retry_classified_non_idempotent",
                &config.classified_non_idempotent,
            )
            .field("attempt", &self.attempt)
            .finish()
    }
}
