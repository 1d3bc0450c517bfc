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
