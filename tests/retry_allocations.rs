//! What the retry layer costs the first attempt, in heap allocations: a
//! counting allocator around one request through `Balance` alone and through
//! `Retry` + `Balance`.

mod support;

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_lb::pick::RoundRobin;
use tower_lb::retry::{ReplayBody, RetryLayer, RetryPolicy};
use tower_lb::{discover, Balance};

use support::alloc::{allocations, Counting};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

async fn allocations_of<S, R>(svc: &S, make: impl Fn() -> R) -> usize
where
    S: Service<R> + Clone,
    S::Error: std::fmt::Debug,
{
    // Warm up: lazily built runtime and tracing state are not the request's.
    for _ in 0..3 {
        svc.clone().oneshot(make()).await.unwrap();
    }
    let mut fewest = usize::MAX;
    for _ in 0..5 {
        let req = make();
        let svc = svc.clone();
        let before = allocations();
        svc.oneshot(req).await.unwrap();
        fewest = fewest.min(allocations() - before);
    }
    fewest
}

#[tokio::test(flavor = "current_thread")]
async fn the_first_attempt_stays_allocation_light() {
    let endpoint =
        |_: Request<ReplayBody<Full<Bytes>>>| async { Ok::<_, Infallible>(Response::new(())) };
    let (endpoints, discover) = discover::channel();
    endpoints.insert("a", service_fn(endpoint)).unwrap();
    endpoints.insert("b", service_fn(endpoint)).unwrap();
    let balance = Balance::new(discover, RoundRobin::new());
    balance.wait_for(|keys| keys.len() == 2).await;

    let plain = || {
        let body = tower_lb::retry::ReplayBody::<Full<Bytes>>::default();
        Request::get("http://api/users")
            .header("accept", "*/*")
            .body(body)
            .unwrap()
    };
    let bare = allocations_of(&balance, plain).await;

    let retry = RetryLayer::new(RetryPolicy::new()).layer(balance.clone());
    let empty = || {
        Request::get("http://api/users")
            .header("accept", "*/*")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let small = || {
        Request::put("http://api/users")
            .header("accept", "*/*")
            .body(Full::new(Bytes::from_static(b"{\"name\":\"ada\"}")))
            .unwrap()
    };
    let streamed = || {
        let chunks = futures_util::stream::iter([Ok::<_, Infallible>(http_body::Frame::data(
            Bytes::from_static(b"chunk"),
        ))]);
        Request::post("http://api/upload")
            .body(http_body_util::StreamBody::new(chunks))
            .unwrap()
    };
    let stream_endpoint =
        |_: Request<ReplayBody<_>>| async { Ok::<_, Infallible>(Response::new(())) };
    let (endpoints, discover) = discover::channel();
    endpoints.insert("a", service_fn(stream_endpoint)).unwrap();
    let stream_balance = Balance::new(discover, RoundRobin::new());
    stream_balance.wait_for(|keys| keys.len() == 1).await;
    let stream_retry = RetryLayer::new(RetryPolicy::new()).layer(stream_balance);

    let classified =
        RetryPolicy::new().classify(tower_http::classify::ServerErrorsAsFailures::new());
    let classified = RetryLayer::new(classified).layer(balance.clone());
    let grpc = RetryLayer::new(RetryPolicy::grpc()).layer(balance.clone());

    let with_empty = allocations_of(&retry, empty).await;
    // Judging a response by a classifier lends it the head: no allocation.
    assert_eq!(allocations_of(&classified, empty).await, with_empty);
    assert_eq!(allocations_of(&grpc, empty).await, with_empty);
    let with_small = allocations_of(&retry, small).await;
    let with_stream = allocations_of(&stream_retry, streamed).await;
    eprintln!(
        "allocations per request: balance {bare}; retry + balance: empty body {with_empty}, \
         small body {with_small}, streamed body {with_stream}"
    );
    assert_eq!(bare, 0, "the balancer's hot path allocates");
    // Measured at 10: the tried set (its Arc, its slot in a new extension
    // map), and the copy tower's retry keeps of the request for a second
    // attempt (header map, extension map, a shared header value). A small
    // body adds the box it is buffered through; a request that cannot be
    // retried costs nothing.
    assert!(with_empty <= 12, "{with_empty}");
    assert!(with_small <= with_empty + 2, "{with_small}");
    assert_eq!(with_stream, 0);
}
