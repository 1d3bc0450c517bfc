//! Errors returned by the balancer.

use std::fmt;
use std::time::Duration;

/// A type-erased error, as tower's middleware returns them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// No endpoint could take the request within the configured wait.
///
/// Returned (boxed as [`BoxError`]) when the set was empty, every endpoint had
/// weight 0, or the picker found none it may use, and the set did not change
/// to allow one before [`BalanceLayer::wait`](crate::balance::BalanceLayer::wait)
/// ran out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoEndpoints {
    pub(crate) waited: Duration,
    pub(crate) known: usize,
}

impl NoEndpoints {
    /// How long the request waited for an endpoint.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// How many endpoints the balancer knew of (none of them usable).
    pub fn known(&self) -> usize {
        self.known
    }
}

impl fmt::Display for NoEndpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.known == 0 {
            write!(f, "no endpoints: the set was empty for {:?}", self.waited)
        } else {
            write!(
                f,
                "no usable endpoint among {} known after waiting {:?}",
                self.known, self.waited
            )
        }
    }
}

impl std::error::Error for NoEndpoints {}

/// Every endpoint that could take the request is saturated, and the
/// request's priority is below the shedding threshold: it fails at once.
///
/// Returned (boxed as [`BoxError`]) by the balancer when its picker sheds
/// the request (the [`Scored`](crate::pick::llm::Scored) picker's saturation
/// admission). The request was sent nowhere, so it is safe to retry after
/// [`retry_after`](Saturated::retry_after). The HTTP preset's
/// `http::saturated_response` (feature `http`) turns it into
/// `429 Too Many Requests` with `Retry-After`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Saturated {
    pub(crate) eligible: usize,
    pub(crate) priority: i32,
    pub(crate) retry_after: Duration,
}

impl Saturated {
    /// A saturation error: `eligible` endpoints could serve the request and
    /// all were saturated; the request had `priority`; callers should wait
    /// `retry_after` before trying again.
    pub const fn new(eligible: usize, priority: i32, retry_after: Duration) -> Self {
        Self {
            eligible,
            priority,
            retry_after,
        }
    }

    /// How many endpoints could have served the request (all saturated).
    pub fn eligible(&self) -> usize {
        self.eligible
    }

    /// The request's priority.
    pub fn priority(&self) -> i32 {
        self.priority
    }

    /// How long a caller should wait before trying again.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

impl fmt::Display for Saturated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "saturated: all {} eligible endpoints are saturated; request of priority {} shed",
            self.eligible, self.priority
        )
    }
}

impl std::error::Error for Saturated {}
