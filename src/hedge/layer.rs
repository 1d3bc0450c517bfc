//! The hedging layer: configuration only.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower::retry::budget::{Budget, TpsBudget};
use tower_layer::Layer;

use super::delay::Latencies;
use super::delay::{Shared, When};
use super::service::Hedge;
use super::{HedgeDelay, MAX_ATTEMPTS};

/// Wraps a service (a [`Balance`](crate::Balance), or a stack above one) in
/// [`Hedge`]; see the [module docs](super) for the rules.
///
/// Defaults: the 95th percentile of recent latency as the delay (after 100
/// answers), at most [`MAX_ATTEMPTS`] attempts, a budget of 10 % of requests
/// plus 10 a second over 10 seconds.
#[derive(Clone)]
#[must_use]
pub struct HedgeLayer<P> {
    policy: P,
    delay: HedgeDelay,
    max_attempts: u32,
    budget: Option<Arc<dyn Budget + Send + Sync>>,
}

impl<P> HedgeLayer<P> {
    /// Hedges the requests `policy` copies (a
    /// [`CloneRequest`](super::CloneRequest): [`Idempotent`](super::Idempotent)
    /// for HTTP, or a closure).
    pub fn new(policy: P) -> Self {
        Self {
            policy,
            delay: HedgeDelay::percentile(95.0),
            max_attempts: MAX_ATTEMPTS,
            budget: None,
        }
    }

    /// When copies go out.
    pub fn delay(mut self, delay: HedgeDelay) -> Self {
        self.delay = delay;
        self
    }

    /// Attempts a request gets at most, the first included: clamped to
    /// `1..=5` (1 turns hedging off).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.clamp(1, MAX_ATTEMPTS);
        self
    }

    /// The budget copies draw on, in place of the default; share one with a
    /// retry layer's to bound the extra traffic of both together.
    pub fn budget(mut self, budget: impl Budget + Send + Sync + 'static) -> Self {
        self.budget = Some(Arc::new(budget));
        self
    }
}

impl<P> fmt::Debug for HedgeLayer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeLayer")
            .field("policy", &std::any::type_name::<P>())
            .field("delay", &self.delay)
            .field("max_attempts", &self.max_attempts)
            .field("custom_budget", &self.budget.is_some())
            .finish()
    }
}

impl<S, P: Clone> Layer<S> for HedgeLayer<P> {
    type Service = Hedge<S, P>;

    fn layer(&self, inner: S) -> Hedge<S, P> {
        let when = match self.delay {
            HedgeDelay::Fixed(delay) => When::Fixed(delay),
            HedgeDelay::Percentile {
                percentile,
                min_samples,
            } => When::Learnt(Box::new(Latencies::new(percentile, min_samples))),
        };
        let budget = self
            .budget
            .clone()
            .unwrap_or_else(|| Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.1)));
        let shared = Shared {
            when,
            budget,
            max_attempts: self.max_attempts,
        };
        Hedge::new(inner, self.policy.clone(), Arc::new(shared))
    }
}
