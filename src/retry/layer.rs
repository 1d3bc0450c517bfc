//! `RetryLayer`: the retry layer's configuration.

use tower::Layer;

use super::{Retry, RetryPolicy};

/// The default cap on a buffered request body: 64 KiB.
pub(crate) const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// Wraps a service (a [`Balance`](crate::Balance), or a timeout around one)
/// in [`Retry`]; holds configuration only.
///
/// ```
/// use std::time::Duration;
/// use tower_lb::retry::{RetryLayer, RetryPolicy};
///
/// let layer = RetryLayer::new(RetryPolicy::new().max_attempts(2))
///     .body_limit(16 * 1024)
///     .buffer_unknown_length(true);
/// # let _ = layer;
/// ```
///
/// Every service built from one layer shares the policy's budget.
#[derive(Clone, Debug, Default)]
pub struct RetryLayer {
    policy: RetryPolicy,
    rules: BodyRules,
}

/// Which request bodies are buffered for replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BodyRules {
    pub(crate) limit: usize,
    pub(crate) unknown_length: bool,
}

impl Default for BodyRules {
    fn default() -> Self {
        Self {
            limit: DEFAULT_BODY_LIMIT,
            unknown_length: false,
        }
    }
}

impl RetryLayer {
    /// A layer that retries by `policy`, buffering bodies of known length up
    /// to 64 KiB.
    pub fn new(policy: RetryPolicy) -> Self {
        Self {
            policy,
            rules: BodyRules::default(),
        }
    }

    /// The largest request body, in bytes, that is buffered so that it can
    /// be replayed; a larger one is sent once and not retried.
    #[must_use]
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.rules.limit = bytes;
        self
    }

    /// Whether bodies of unknown length (no upper bound in their
    /// `size_hint`: streams, chunked uploads) are buffered up to the limit
    /// before the first attempt. Off by default: such a body is sent once,
    /// as it comes, and not retried.
    ///
    /// Turn it on only when those bodies end without waiting for the
    /// response: a body that waits for the server (a bidirectional stream)
    /// would never be sent while the layer waits for it to end. With it
    /// off, a gRPC call's body is still read as far as it goes without
    /// waiting (see the [module docs](super#classifiers-and-grpc)).
    #[must_use]
    pub fn buffer_unknown_length(mut self, buffer: bool) -> Self {
        self.rules.unknown_length = buffer;
        self
    }

    /// The retry policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry::from_parts(inner, self.policy.clone(), self.rules)
    }
}
