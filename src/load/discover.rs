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
mod tests {
    use std::convert::Infallible;
    use std::future::poll_fn;
    use std::pin::pin;

    use super::*;
    use crate::discover::{channel, StaticList};
    use crate::endpoint::Endpoint;
    use crate::load::{CompleteOnResponse, DEFAULT_DECAY, DEFAULT_RTT};

    #[tokio::test]
    async fn in_flight_wraps_inserts_and_passes_removes() {
        let (endpoints, discover) = channel::<&str, u32>();
        let mut stream = pin!(InFlightDiscover::new(discover));
        endpoints.insert_weighted("a", 1, 3).unwrap();
        endpoints.remove("a").unwrap();
        endpoints.remove("unknown").unwrap();
        drop(endpoints);

        let change = poll_fn(|cx| stream.as_mut().poll_next(cx)).await;
        let Some(Ok(Change::Insert("a", wrapped))) = change else {
            panic!(
                "expected an insert, got {:?}",
                change.map(|c| c.map(|_| ()))
            );
        };
        assert_eq!(wrapped.weight(), 3);
        assert_eq!(wrapped.get_ref().in_flight(), 0);
        assert_eq!(*wrapped.get_ref().get_ref(), 1);
        for key in ["a", "unknown"] {
            let change = poll_fn(|cx| stream.as_mut().poll_next(cx)).await;
            assert!(matches!(change, Some(Ok(Change::Remove(k))) if k == key));
        }
        assert!(poll_fn(|cx| stream.as_mut().poll_next(cx)).await.is_none());
    }

    #[tokio::test]
    async fn each_insert_gets_its_own_count() {
        let svc = || tower::service_fn(|()| async { Ok::<_, Infallible>(()) });
        let list = StaticList::new([("a", svc()), ("b", svc())]);
        let mut stream = pin!(InFlightDiscover::with_completion(
            list,
            CompleteOnResponse::default()
        ));
        let mut counters = Vec::new();
        while let Some(change) = poll_fn(|cx| stream.as_mut().poll_next(cx)).await {
            match change {
                Ok(Change::Insert(_, wrapped)) => counters.push(wrapped.get_ref().counter()),
                Ok(Change::Remove(_)) | Err(_) => panic!("a static list only inserts"),
            }
        }
        assert_eq!(counters.len(), 2);
        assert!(!counters[0].same_as(&counters[1]));
    }

    #[tokio::test]
    async fn a_balancer_sees_a_streaming_endpoint_as_busy() {
        use http_body_util::BodyExt;
        use tower::{Service, ServiceExt};

        use crate::load::test_body::{channel_body, ChannelBody};
        use crate::pick::LeastConnections;
        use crate::Balance;

        let endpoint = |name: &'static str| {
            tower::service_fn(move |body: ChannelBody| async move {
                let response = http::Response::builder()
                    .header("endpoint", name)
                    .body(body);
                Ok::<_, Infallible>(response.expect("a valid header"))
            })
        };
        let (endpoints, discover) = channel();
        endpoints.insert("a", endpoint("a")).unwrap();
        endpoints.insert("b", endpoint("b")).unwrap();
        let mut balance = Balance::new(
            InFlightDiscover::new(discover),
            LeastConnections::with_seed(3),
        );
        balance.wait_for(|keys| keys.len() == 2).await;
        let name = |response: &http::Response<_>| response.headers()["endpoint"].clone();

        let (first_tx, body) = channel_body();
        let first = balance.ready().await.unwrap().call(body).await.unwrap();
        let (_second_tx, body) = channel_body();
        let second = balance.ready().await.unwrap().call(body).await.unwrap();
        assert_ne!(
            name(&first),
            name(&second),
            "the streaming endpoint counts as busy"
        );

        // Once the first stream ends, its endpoint is the idle one.
        drop(first_tx);
        let first_name = name(&first);
        assert!(first.into_body().frame().await.is_none());
        let (_third_tx, body) = channel_body();
        let third = balance.ready().await.unwrap().call(body).await.unwrap();
        assert_eq!(name(&third), first_name);
    }

    #[tokio::test(start_paused = true)]
    async fn peak_ewma_wraps_inserts_and_passes_removes() {
        let (endpoints, discover) = channel::<&str, u32>();
        let mut stream = pin!(LatencyDiscover::new(discover, DEFAULT_RTT, DEFAULT_DECAY));
        endpoints.insert_weighted("a", 1, 2).unwrap();
        endpoints.remove("a").unwrap();

        let change = poll_fn(|cx| stream.as_mut().poll_next(cx)).await;
        let Some(Ok(Change::Insert("a", wrapped))) = change else {
            panic!("expected an insert");
        };
        assert_eq!(wrapped.weight(), 2);
        assert_eq!(wrapped.get_ref().rtt_estimate(), DEFAULT_RTT);
        let change = poll_fn(|cx| stream.as_mut().poll_next(cx)).await;
        assert!(matches!(change, Some(Ok(Change::Remove("a")))));
    }
}
