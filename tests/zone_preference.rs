//! Zone preference end to end: zones from a discovery source reach the
//! picker through the balancer, and requests stay in the local zone until
//! it has no endpoint left.

mod support;

use std::convert::Infallible;

use futures_util::stream;
use tower::discover::Change;
use tower::{service_fn, Service, ServiceExt};
use tower_lb::endpoint::Weighted;
use tower_lb::pick::{RoundRobin, ZonePreference};
use tower_lb::Balance;

#[tokio::test]
async fn requests_stay_in_the_local_zone_then_spill() {
    let svc = |name: &'static str| {
        Weighted::new(
            service_fn(move |_: ()| async move { Ok::<_, Infallible>(name) }),
            1,
        )
    };
    let changes = vec![
        Ok::<_, Infallible>(Change::Insert("a1", svc("a1").with_zone("zone-a"))),
        Ok(Change::Insert("b1", svc("b1").with_zone("zone-b"))),
        Ok(Change::Insert("b2", svc("b2").with_zone("zone-b"))),
        Ok(Change::Insert("n1", svc("n1"))),
    ];
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let discover = stream::select(stream::iter(changes), tokio_stream(rx));
    let balance = Balance::new(
        discover,
        ZonePreference::new(RoundRobin::new(), "zone-a").with_seed(1),
    );
    support::within("four endpoints", balance.wait_for(|keys| keys.len() == 4)).await;
    let mut handle = balance.clone();
    for _ in 0..20 {
        assert_eq!(handle.ready().await.unwrap().call(()).await.unwrap(), "a1");
    }
    // The local zone's endpoint goes: everything spills to the others.
    tx.send(Ok(Change::Remove("a1"))).unwrap();
    support::within("a1 gone", balance.wait_for(|keys| keys.len() == 3)).await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..30 {
        seen.insert(handle.ready().await.unwrap().call(()).await.unwrap());
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["b1", "b2", "n1"]);
}

/// A receiver as a stream.
fn tokio_stream<T>(
    rx: tokio::sync::mpsc::UnboundedReceiver<T>,
) -> impl futures_util::Stream<Item = T> {
    stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}
