//! `Discover` adapters that wrap every endpoint in a load wrapper.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use pin_project_lite::pin_project;
use tower::discover::{Change, Discover};

use super::{CompleteOnBodyEnd, InFlight, Latency};
use crate::endpoint::Weighted;
use crate::util::poll_wrapped;

pin_project! {
    /// Wraps every service a `Discover` inserts in [`InFlight`], so the
    /// balancer can read each endpoint's requests in flight; removals pass
    /// through unchanged, and so do errors and the end of the stream.
    ///
    /// The weight stays outermost: a `Weighted<S>` becomes
    /// `Weighted<InFlight<S>>`, the same type as an `InFlight` service
    /// inserted by hand into a [`channel`](crate::discover::channel). The
    /// sources of this crate yield `Weighted` services; wrap any other
    /// `Discover` in [`DefaultWeight`](crate::discover::DefaultWeight) first.
    ///
    /// ```
    /// use tower_lb::{discover::StaticList, load::InFlightDiscover};
    ///
    /// let svc = tower::service_fn(|_: ()| async { Ok::<_, std::convert::Infallible>("hi") });
    /// let counted = InFlightDiscover::with_completion(
    ///     StaticList::new([("a", svc)]),
    ///     tower_lb::load::CompleteOnResponse::default(),
    /// );
    /// # let _ = counted;
    /// ```
    #[derive(Debug)]
    pub struct InFlightDiscover<D, C = CompleteOnBodyEnd> {
        #[pin]
        discover: D,
        completion: C,
    }
}

impl<D> InFlightDiscover<D> {
    /// Counts each endpoint's requests until their response bodies end.
    pub fn new(discover: D) -> Self {
        Self::with_completion(discover, CompleteOnBodyEnd)
    }
}

impl<D, C> InFlightDiscover<D, C> {
    /// Counts each endpoint's requests until `completion` lets go of them.
    pub fn with_completion(discover: D, completion: C) -> Self {
        Self {
            discover,
            completion,
        }
    }
}

impl<D, S, C> Stream for InFlightDiscover<D, C>
where
    D: Discover<Service = Weighted<S>>,
    C: Clone,
{
    type Item = Result<Change<D::Key, Weighted<InFlight<S, C>>>, D::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        let completion = this.completion;
        poll_wrapped(this.discover, cx, |service| {
            service.map(|inner| InFlight::with_completion(inner, completion.clone()))
        })
    }
}

pin_project! {
    /// Wraps every service a `Discover` inserts in [`Latency`], so the
    /// balancer can read each endpoint's latency cost; removals pass through
    /// unchanged, and so do errors and the end of the stream. As with
    /// [`InFlightDiscover`], the weight stays outermost:
    /// `Weighted<Latency<S>>`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_lb::{discover::StaticList, load::LatencyDiscover};
    ///
    /// let svc = tower::service_fn(|_: ()| async { Ok::<_, std::convert::Infallible>("hi") });
    /// let timed = LatencyDiscover::with_completion(
    ///     StaticList::new([("a", svc)]),
    ///     Duration::from_millis(30),
    ///     Duration::from_secs(10),
    ///     tower_lb::load::CompleteOnResponse::default(),
    /// );
    /// # let _ = timed;
    /// ```
    #[derive(Debug)]
    pub struct LatencyDiscover<D, C = CompleteOnBodyEnd> {
        #[pin]
        discover: D,
        default_rtt: Duration,
        decay: Duration,
        completion: C,
    }
}

impl<D> LatencyDiscover<D> {
    /// Estimates each endpoint's latency up to the end of its response
    /// bodies; see [`Latency::new`] for the settings.
    pub fn new(discover: D, default_rtt: Duration, decay: Duration) -> Self {
        Self::with_completion(discover, default_rtt, decay, CompleteOnBodyEnd)
    }
}

impl<D, C> LatencyDiscover<D, C> {
    /// Like [`LatencyDiscover::new`], with round trips ending when
    /// `completion` lets go of their handles.
    pub fn with_completion(
        discover: D,
        default_rtt: Duration,
        decay: Duration,
        completion: C,
    ) -> Self {
        Self {
            discover,
            default_rtt,
            decay,
            completion,
        }
    }
}

impl<D, S, C> Stream for LatencyDiscover<D, C>
where
    D: Discover<Service = Weighted<S>>,
    C: Clone,
{
    type Item = Result<Change<D::Key, Weighted<Latency<S, C>>>, D::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        let (default_rtt, decay, completion) = (*this.default_rtt, *this.decay, this.completion);
        poll_wrapped(this.discover, cx, |service| {
            service.map(|inner| {
                Latency::with_completion(inner, default_rtt, decay, completion.clone())
            })
        })
    }
}

#[cfg(test)]
mod tests;
