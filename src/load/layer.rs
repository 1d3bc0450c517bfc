//! Layers that wrap one endpoint service in a load wrapper.

use std::time::Duration;

use tower_layer::Layer;

use super::{CompleteOnBodyEnd, InFlight, Latency, DEFAULT_DECAY, DEFAULT_RTT};

/// Wraps a service in [`InFlight`]; for building endpoint stacks with
/// `ServiceBuilder`.
///
/// ```
/// use tower::ServiceBuilder;
/// use tower_lb::load::{CompleteOnResponse, InFlightLayer};
///
/// let endpoint = ServiceBuilder::new()
///     .layer(InFlightLayer::with_completion(CompleteOnResponse::default()))
///     .service_fn(|_: ()| async { Ok::<_, std::convert::Infallible>("hi") });
/// assert_eq!(endpoint.in_flight(), 0);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct InFlightLayer<C = CompleteOnBodyEnd> {
    completion: C,
}

impl InFlightLayer {
    /// Counts requests until their response bodies end.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            completion: CompleteOnBodyEnd,
        }
    }
}

impl<C> InFlightLayer<C> {
    /// Counts requests until `completion` lets go of them.
    #[must_use]
    pub const fn with_completion(completion: C) -> Self {
        Self { completion }
    }
}

impl<S, C: Clone> Layer<S> for InFlightLayer<C> {
    type Service = InFlight<S, C>;

    fn layer(&self, inner: S) -> InFlight<S, C> {
        InFlight::with_completion(inner, self.completion.clone())
    }
}

/// Wraps a service in [`Latency`]; for building endpoint stacks with
/// `ServiceBuilder`. The default uses [`DEFAULT_RTT`] and [`DEFAULT_DECAY`].
///
/// ```
/// use std::time::Duration;
/// use tower::ServiceBuilder;
/// use tower_lb::load::{CompleteOnResponse, LatencyLayer};
///
/// let layer = LatencyLayer::with_completion(
///     Duration::from_millis(50),
///     Duration::from_secs(5),
///     CompleteOnResponse::default(),
/// );
/// assert_eq!(layer.decay(), Duration::from_secs(5));
/// let endpoint = ServiceBuilder::new()
///     .layer(layer)
///     .service_fn(|_: ()| async { Ok::<_, std::convert::Infallible>("hi") });
/// assert!(endpoint.rtt_estimate() <= Duration::from_millis(50));
/// ```
#[derive(Clone, Copy, Debug)]
pub struct LatencyLayer<C = CompleteOnBodyEnd> {
    default_rtt: Duration,
    decay: Duration,
    completion: C,
}

impl LatencyLayer {
    /// Estimates latency up to the end of each response body; see
    /// [`Latency::new`] for the settings.
    #[must_use]
    pub const fn new(default_rtt: Duration, decay: Duration) -> Self {
        Self::with_completion(default_rtt, decay, CompleteOnBodyEnd)
    }
}

impl Default for LatencyLayer {
    fn default() -> Self {
        Self::new(DEFAULT_RTT, DEFAULT_DECAY)
    }
}

impl<C> LatencyLayer<C> {
    /// Like [`LatencyLayer::new`], with round trips ending when `completion`
    /// lets go of their handles.
    #[must_use]
    pub const fn with_completion(default_rtt: Duration, decay: Duration, completion: C) -> Self {
        Self {
            default_rtt,
            decay,
            completion,
        }
    }

    /// The round-trip time assumed before the first sample.
    pub const fn default_rtt(&self) -> Duration {
        self.default_rtt
    }

    /// The time constant of the estimate's decay.
    pub const fn decay(&self) -> Duration {
        self.decay
    }
}

impl<S, C: Clone> Layer<S> for LatencyLayer<C> {
    type Service = Latency<S, C>;

    fn layer(&self, inner: S) -> Latency<S, C> {
        Latency::with_completion(inner, self.default_rtt, self.decay, self.completion.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::{Endpoint, Weighted};

    #[tokio::test(start_paused = true)]
    async fn layers_wrap_and_keep_the_weight() {
        let counted = InFlightLayer::new().layer(Weighted::new((), 4));
        assert_eq!((counted.weight(), counted.in_flight()), (4, 0));

        let layer = LatencyLayer::default();
        assert_eq!(
            (layer.default_rtt(), layer.decay()),
            (DEFAULT_RTT, DEFAULT_DECAY)
        );
        let timed = layer.layer(Weighted::new((), 2));
        assert_eq!(timed.weight(), 2);
        assert_eq!(timed.rtt_estimate(), DEFAULT_RTT);
    }

    #[test]
    fn each_layered_service_gets_its_own_count() {
        let layer: InFlightLayer = InFlightLayer::default();
        let a = layer.layer(());
        let b = layer.layer(());
        assert!(!a.counter().same_as(&b.counter()));
    }
}
