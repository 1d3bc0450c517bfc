//! Round robin over real HTTP backends.

mod support;

use tower::{Layer, ServiceBuilder};
use tower_lb::discover::{self, StaticList};
use tower_lb::pick::RoundRobin;
use tower_lb::{Balance, BalanceLayer};

use support::*;

#[tokio::test]
async fn splits_3000_requests_exactly_evenly() {
    let servers = backends(&["a", "b", "c"]).await;
    let list = StaticList::new([
        ("a", servers[0].endpoint()),
        ("b", servers[1].endpoint()),
        ("c", servers[2].endpoint()),
    ]);
    let mut balance = Balance::new(list, RoundRobin::new());
    within("discovery", balance.wait_for(|keys| keys.len() == 3)).await;

    let answers = within("3000 requests", tally(&mut balance, 3000, |_| get("/"))).await;

    assert_eq!(answers, counts(&[("a", 1000), ("b", 1000), ("c", 1000)]));
    assert_eq!(served(&servers), [1000, 1000, 1000]);
}

#[tokio::test]
async fn takes_endpoints_in_turn() {
    let servers = backends(&["a", "b", "c"]).await;
    let (endpoints, discover) = discover::channel();
    for (key, server) in ["a", "b", "c"].into_iter().zip(&servers) {
        endpoints.insert(key, server.endpoint()).unwrap();
    }
    let mut balance = Balance::new(discover, RoundRobin::new());
    within("discovery", balance.wait_for(|keys| keys.len() == 3)).await;

    let mut order = Vec::new();
    for _ in 0..9 {
        order.push(within("request", get_ok(&mut balance, "/")).await);
    }
    assert_eq!(order, ["a", "b", "c", "a", "b", "c", "a", "b", "c"]);
}

#[tokio::test]
async fn every_route_passes_through() {
    let servers = backends(&["a", "b"]).await;
    let list = StaticList::new([("a", servers[0].endpoint()), ("b", servers[1].endpoint())]);
    let mut balance = Balance::new(list, RoundRobin::new());
    within("discovery", balance.wait_for(|keys| keys.len() == 2)).await;

    // Statuses other than 200 are the endpoint's answer, not an error.
    let (status, body) = within("status", send(&mut balance, get("/status/503")))
        .await
        .unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (503, "a"));

    // A request body reaches the backend intact.
    let echo = http::Request::post("/echo")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"hello",
        )))
        .unwrap();
    let (status, body) = within("echo", send(&mut balance, echo)).await.unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (200, "hello"));

    // A streamed answer arrives whole once its frames are let through.
    servers[0].frames().open();
    let (status, body) = within("stream", send(&mut balance, get("/stream/3")))
        .await
        .unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (200, "a:0\na:1\na:2\n"));
    assert_eq!(served(&servers), [2, 1]);
}

#[tokio::test]
async fn built_as_a_layer_over_discovery() {
    let servers = backends(&["a", "b"]).await;
    let list = StaticList::new([("a", servers[0].endpoint()), ("b", servers[1].endpoint())]);
    let layer = BalanceLayer::new(RoundRobin::new()).wait(std::time::Duration::from_secs(5));
    let mut balance = ServiceBuilder::new().layer(layer.clone()).service(list);
    assert_eq!(balance.wait(), std::time::Duration::from_secs(5));
    within("discovery", balance.wait_for(|keys| keys.len() == 2)).await;

    let answers = within("requests", tally(&mut balance, 100, |_| get("/"))).await;
    assert_eq!(answers, counts(&[("a", 50), ("b", 50)]));

    // A second balancer from the same layer has its own set but shares the
    // picker, so one cursor: taking turns, the first always lands on the
    // even positions ("a") and the second on the odd ones ("b").
    let other = StaticList::new([("a", servers[0].endpoint()), ("b", servers[1].endpoint())]);
    let mut second = layer.layer(other);
    within("discovery", second.wait_for(|keys| keys.len() == 2)).await;
    for _ in 0..50 {
        assert_eq!(within("first", get_ok(&mut balance, "/")).await, "a");
        assert_eq!(within("second", get_ok(&mut second, "/")).await, "b");
    }
    assert_eq!(served(&servers), [100, 100]);
}

#[tokio::test]
async fn delayed_answers_arrive() {
    let server = Backend::start("a").await;
    let list = StaticList::new([("a", server.endpoint())]);
    let mut balance = Balance::new(list, RoundRobin::new());
    within("discovery", balance.wait_for(|keys| keys.len() == 1)).await;
    let start = tokio::time::Instant::now();
    assert_eq!(
        within("delay", get_ok(&mut balance, "/delay/20")).await,
        "a"
    );
    assert!(start.elapsed() >= std::time::Duration::from_millis(20));
}
