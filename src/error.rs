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
