//! Endpoints coming and going: draining, replacement, waiting on an empty
//! set, and the discovery worker's own life.

mod support;

use std::future::{poll_fn, Future};
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;
use tower::{Service, ServiceExt};
use tower_lb::discover::{self, StaticList};
use tower_lb::pick::RoundRobin;
use tower_lb::{Balance, BalanceLayer};

use support::*;

/// Polls `fut` once; true if it is still pending.
async fn still_pending<F: Future + Unpin>(fut: &mut F) -> bool {
    poll_fn(|cx| Poll::Ready(std::pin::Pin::new(&mut *fut).poll(cx).is_pending())).await
}

#[tokio::test]
async fn removal_drains_the_endpoint() {
    let servers = backends(&["x", "y", "z"]).await;
    let (endpoints, discover) = discover::channel();
    endpoints.insert("x", servers[0].endpoint()).unwrap();
    let mut balance = Balance::new(discover, RoundRobin::new());
    within("discovery", balance.wait_for(|keys| keys == ["x"])).await;

    // One request held open on x.
    let held = spawn_send(balance.clone(), get("/slow"));
    within("request held on x", servers[0].wait_held(1)).await;

    endpoints.insert("y", servers[1].endpoint()).unwrap();
    endpoints.insert("z", servers[2].endpoint()).unwrap();
    within("y and z", balance.wait_for(|keys| keys.len() == 3)).await;
    endpoints.remove("x").unwrap();
    within("x removed", balance.wait_for(|keys| !keys.contains(&"x"))).await;
    assert_eq!(balance.len(), 2);

    let answers = within("300 requests", tally(&mut balance, 300, |_| get("/"))).await;
    assert_eq!(answers, counts(&[("y", 150), ("z", 150)]));
    assert_eq!(served(&servers), [1, 150, 150]);
    assert_eq!(servers[0].held(), 1, "the held request is still open");
    assert!(!held.is_finished());

    servers[0].slow().release(1);
    let (status, body) = within("held request", held).await.unwrap().unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (200, "x"));
    assert_eq!(servers[0].requests(), 1);
}

#[tokio::test]
async fn reinserting_a_key_replaces_its_endpoint() {
    let servers = backends(&["old", "new", "marker"]).await;
    let (endpoints, discover) = discover::channel();
    endpoints.insert("k", servers[0].endpoint()).unwrap();
    let mut balance = Balance::new(discover, RoundRobin::new());
    within("discovery", balance.wait_for(|keys| keys == ["k"])).await;
    let answers = within("before", tally(&mut balance, 10, |_| get("/"))).await;
    assert_eq!(answers, counts(&[("old", 10)]));

    // A request still on the old endpoint when it is replaced.
    let held = spawn_send(balance.clone(), get("/slow"));
    within("request held on old", servers[0].wait_held(1)).await;

    endpoints.insert("k", servers[1].endpoint()).unwrap();
    // Changes apply in order, so once the marker is in, so is the new "k".
    endpoints.insert("marker", servers[2].endpoint()).unwrap();
    within(
        "replaced",
        balance.wait_for(|keys| keys.contains(&"marker")),
    )
    .await;
    endpoints.remove("marker").unwrap();
    within("marker gone", balance.wait_for(|keys| keys == ["k"])).await;
    assert_eq!(balance.endpoints(), [("k", 1)]);

    let answers = within("after", tally(&mut balance, 100, |_| get("/"))).await;
    assert_eq!(answers, counts(&[("new", 100)]));
    assert_eq!(served(&servers), [11, 100, 0]);

    servers[0].slow().release(1);
    let (status, body) = within("held request", held).await.unwrap().unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (200, "old"));
}

#[tokio::test(start_paused = true)]
async fn an_empty_set_fails_after_the_configured_wait() {
    let (_endpoints, discover) = discover::channel::<&'static str, Endpoint>();
    let wait = Duration::from_millis(750);
    let mut balance = BalanceLayer::new(RoundRobin::new())
        .wait(wait)
        .spawn(discover);

    let start = Instant::now();
    let error = within("request", send(&mut balance, get("/")))
        .await
        .unwrap_err();
    let elapsed = start.elapsed();
    let error = no_endpoints(&error);
    assert_eq!((error.waited(), error.known()), (wait, 0));
    // The paused clock jumps straight to the deadline (to the millisecond).
    assert!(
        elapsed >= wait && elapsed <= wait + Duration::from_millis(1),
        "{elapsed:?}"
    );

    // A zero wait fails without waiting at all.
    let (_endpoints, discover) = discover::channel::<&'static str, Endpoint>();
    let mut balance = BalanceLayer::new(RoundRobin::new())
        .wait(Duration::ZERO)
        .spawn(discover);
    let start = Instant::now();
    let error = within("request", send(&mut balance, get("/")))
        .await
        .unwrap_err();
    assert_eq!(no_endpoints(&error).waited(), Duration::ZERO);
    assert!(start.elapsed() <= Duration::from_millis(1));
}

#[tokio::test(start_paused = true)]
async fn the_default_wait_is_one_second() {
    let (_endpoints, discover) = discover::channel::<&'static str, Endpoint>();
    let mut balance = Balance::new(discover, RoundRobin::new());
    assert_eq!(balance.wait(), Duration::from_secs(1));
    let error = within("request", send(&mut balance, get("/")))
        .await
        .unwrap_err();
    assert_eq!(no_endpoints(&error).waited(), Duration::from_secs(1));
    assert!(error.to_string().contains("no endpoints"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn a_waiting_request_takes_an_endpoint_inserted_during_the_wait() {
    let server = Backend::start("late").await;
    let (endpoints, discover) = discover::channel();
    let wait = Duration::from_secs(10);
    let mut balance = BalanceLayer::new(RoundRobin::new())
        .wait(wait)
        .spawn(discover);

    let mut response = Box::pin(balance.ready().await.unwrap().call(get("/")));
    assert!(still_pending(&mut response).await);
    tokio::time::advance(wait / 2).await;
    assert!(still_pending(&mut response).await, "still within the wait");

    endpoints.insert("late", server.endpoint()).unwrap();
    // From here on the request talks to a socket: let time run for real.
    tokio::time::resume();
    let response = within("late request", response)
        .await
        .expect("the inserted endpoint answers");
    assert_eq!(response.status(), 200);
    assert_eq!(within("body", body_string(response)).await.unwrap(), "late");
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn removing_every_endpoint_then_adding_one_back() {
    let server = Backend::start("a").await;
    let (endpoints, discover) = discover::channel();
    endpoints.insert("a", server.endpoint()).unwrap();
    let wait = Duration::from_millis(20);
    let mut balance = BalanceLayer::new(RoundRobin::new())
        .wait(wait)
        .spawn(discover);
    within("discovery", balance.wait_for(|keys| keys.len() == 1)).await;
    assert_eq!(within("request", get_ok(&mut balance, "/")).await, "a");

    endpoints.remove("a").unwrap();
    within("removed", balance.wait_for(<[_]>::is_empty)).await;
    let error = within("empty", send(&mut balance, get("/")))
        .await
        .unwrap_err();
    assert_eq!(no_endpoints(&error).waited(), wait);
    assert_eq!(no_endpoints(&error).known(), 0);

    endpoints.insert("a", server.endpoint()).unwrap();
    within("back", balance.wait_for(|keys| keys.len() == 1)).await;
    assert_eq!(within("request", get_ok(&mut balance, "/")).await, "a");
    assert_eq!(server.requests(), 2);
}

#[tokio::test]
async fn the_worker_stops_with_the_last_handle() {
    let server = Backend::start("a").await;
    let (script, scripted, mut probe) = scripted();
    script.insert("a", server.endpoint(), 1);
    let balance = Balance::new(scripted, RoundRobin::new());
    within("discovery", balance.wait_for(|keys| keys.len() == 1)).await;

    // Clones used and dropped on other tasks keep nothing alive.
    let tasks: Vec<_> = (0..8)
        .map(|_| spawn_tally(balance.clone(), 2, |_| get("/")))
        .collect();
    for task in tasks {
        assert_eq!(within("clone", task).await.unwrap(), counts(&[("a", 2)]));
    }

    // A request in flight holds its endpoint, not the balancer: the
    // response future outlives the handle that made it.
    let mut handle = balance.clone();
    let response = handle.ready().await.unwrap().call(get("/slow"));
    drop(handle);
    let held = tokio::spawn(async move {
        let response = response.await?;
        Ok::<_, tower_lb::BoxError>((response.status(), body_string(response).await?))
    });
    within("held", server.wait_held(1)).await;
    assert_eq!(probe.seen(), Seen::default(), "alive while a handle is");
    assert!(!script.is_closed());

    drop(balance);
    within("worker stops", probe.dropped()).await;
    assert!(script.is_closed());
    assert!(
        !probe.seen().ended,
        "stopped by the handles, not by the stream"
    );

    server.slow().release(1);
    let (status, body) = within("held request", held).await.unwrap().unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (200, "a"));
}

#[tokio::test]
async fn the_channel_closes_when_the_balancer_is_gone() {
    let server = Backend::start("a").await;
    let (endpoints, discover) = discover::channel();
    endpoints.insert("a", server.endpoint()).unwrap();
    let (balance, worker) = Balance::pair(discover, RoundRobin::new());
    let worker = tokio::spawn(worker);
    within("discovery", balance.wait_for(|keys| keys.len() == 1)).await;
    assert!(endpoints.insert("b", server.endpoint()).is_ok());

    drop(balance);
    within("worker finishes", worker).await.unwrap();
    let closed: discover::Closed = endpoints.insert("c", server.endpoint()).unwrap_err();
    assert!(closed.to_string().contains("dropped"), "{closed}");
    assert!(endpoints.remove("a").is_err());
}

#[tokio::test]
async fn pair_runs_the_worker_where_the_caller_says() {
    let servers = backends(&["a", "b"]).await;
    let list = StaticList::new([("a", servers[0].endpoint()), ("b", servers[1].endpoint())]);
    let (mut balance, worker) = BalanceLayer::new(RoundRobin::new()).wait(STEP).pair(list);

    // Until the worker runs, the set is empty, and a request waits for it.
    tokio::task::yield_now().await;
    assert!(balance.is_empty());
    let mut early = Box::pin(balance.clone().oneshot(get("/")));
    assert!(still_pending(&mut early).await);

    let worker = tokio::spawn(worker);
    let response = within("early request", early).await.unwrap();
    assert_eq!(body_string(response).await.unwrap(), "a");
    within("discovery", balance.wait_for(|keys| keys.len() == 2)).await;

    let answers = within("requests", tally(&mut balance, 99, |_| get("/"))).await;
    assert_eq!(answers, counts(&[("a", 49), ("b", 50)]));
    assert_eq!(served(&servers), [50, 50]);

    drop(balance);
    within("worker finishes", worker).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_waiting_request_outlives_its_balancer_and_still_fails_in_time() {
    let (_script, scripted, mut probe) = scripted::<&'static str, Endpoint>();
    let wait = Duration::from_secs(5);
    let mut balance = BalanceLayer::new(RoundRobin::new())
        .wait(wait)
        .spawn(scripted);
    let response = balance.ready().await.unwrap().call(get("/"));
    drop(balance);
    within("worker stops", probe.dropped()).await;

    let start = Instant::now();
    let error = within("orphaned request", response).await.unwrap_err();
    assert_eq!(no_endpoints(&error).waited(), wait);
    assert!(start.elapsed() <= wait + Duration::from_millis(1));
}
