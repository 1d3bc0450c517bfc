//! Power of two choices over real HTTP backends: by requests in flight,
//! and by Peak-EWMA latency.

mod support;

use std::time::Duration;

use tower_lb::discover;
use tower_lb::load::{InFlightDiscover, LatencyDiscover, DEFAULT_DECAY, DEFAULT_RTT};
use tower_lb::pick::P2c;
use tower_lb::Balance;

use support::*;

#[tokio::test]
async fn never_picks_the_busier_of_two() {
    let servers = backends(&["a", "b"]).await;
    let (endpoints, discover) = discover::channel();
    endpoints.insert("a", servers[0].endpoint()).unwrap();
    let mut balance = Balance::new(InFlightDiscover::new(discover), P2c::with_seed(21));
    within("discovery", balance.wait_for(|keys| keys == ["a"])).await;

    // Five requests held open on "a" while it is alone, then "b" joins.
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(start(&mut balance, get("/slow")).await);
    }
    within("held on a", servers[0].wait_held(5)).await;
    endpoints.insert("b", servers[1].endpoint()).unwrap();
    within("b joins", balance.wait_for(|keys| keys.len() == 2)).await;
    assert_eq!(in_flight(&balance), [("a", 5), ("b", 0)].into());

    // With two endpoints both are always the candidates. Four callers keep
    // at most four requests on "b", fewer than the five on "a", so "a" is
    // never the less loaded one.
    let callers = (0..4)
        .map(|_| spawn_fetch_tally(balance.clone(), 50, |_| get("/")))
        .collect();
    let answers = merge_tallies(callers).await;
    assert_eq!(answers, counts(&[("b", 200)]));
    assert_eq!(served(&servers), [5, 200]);

    // Once its requests finish, "a" is as good as "b" again.
    servers[0].slow().open();
    for request in held {
        let (status, body) = within("held request", request).await.unwrap().unwrap();
        assert_eq!((status.as_u16(), body.as_str()), (200, "a"));
    }
    assert_eq!(in_flight(&balance), [("a", 0), ("b", 0)].into());
    let answers = within(
        "after release",
        spawn_fetch_tally(balance.clone(), 100, |_| get("/")),
    )
    .await
    .unwrap();
    assert!(answers.get("a").copied().unwrap_or(0) >= 20, "{answers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heavily_loaded_endpoint_of_four_is_left_alone() {
    let servers = backends(&["a", "b", "c", "d"]).await;
    let (endpoints, discover) = discover::channel();
    endpoints.insert("a", servers[0].endpoint()).unwrap();
    let mut balance = Balance::new(InFlightDiscover::new(discover), P2c::with_seed(4));
    within("discovery", balance.wait_for(|keys| keys == ["a"])).await;

    const CALLERS: usize = 16;
    let mut held = Vec::new();
    for _ in 0..CALLERS {
        held.push(start(&mut balance, get("/slow")).await);
    }
    for (key, server) in ["b", "c", "d"].into_iter().zip(&servers[1..]) {
        endpoints.insert(key, server.endpoint()).unwrap();
    }
    within("all four", balance.wait_for(|keys| keys.len() == 4)).await;

    // "a" holds 16 requests. When one of the 16 callers picks, the other
    // endpoints hold at most the other 15 callers' requests between them,
    // so whichever of them is sampled beside "a" is less loaded: "a" gets
    // nothing, while p2c reads only two loads a pick.
    let callers = (0..CALLERS)
        .map(|_| spawn_fetch_tally(balance.clone(), 25, |_| get("/")))
        .collect();
    let answers = merge_tallies(callers).await;
    assert_eq!(answers.values().sum::<usize>(), CALLERS * 25);
    assert_eq!(answers.get("a"), None, "{answers:?}");
    for key in ["b", "c", "d"] {
        assert!(answers[key] > 80, "{answers:?}");
    }

    servers[0].slow().open();
    for request in held {
        within("held request", request).await.unwrap().unwrap();
    }
    assert_eq!(in_flight(&balance).values().sum::<usize>(), 0);
}

/// How long the slow backend takes over `/work`.
const SLOW: Duration = Duration::from_millis(100);

/// Sequential requests in the latency test.
const SEQUENTIAL: usize = 45;

#[tokio::test]
async fn peak_ewma_steers_away_from_a_slow_backend() {
    let mut servers = Vec::new();
    for id in ["fast1", "fast2", "slow"] {
        let delay = if id == "slow" { SLOW } else { Duration::ZERO };
        servers.push(Backend::builder(id).delay(delay).start().await);
    }
    let insert_all = |endpoints: &discover::EndpointSender<&'static str, Endpoint>| {
        for (key, server) in ["fast1", "fast2", "slow"].into_iter().zip(&servers) {
            endpoints.insert(key, server.endpoint()).unwrap();
        }
    };

    // One caller, one request at a time: every endpoint is idle whenever a
    // pick is made, so requests in flight cannot tell the endpoints apart
    // and p2c spreads over all three, slow or not.
    let (endpoints, discover) = discover::channel();
    insert_all(&endpoints);
    let by_count = Balance::new(InFlightDiscover::new(discover), P2c::with_seed(8));
    within("discovery", by_count.wait_for(|keys| keys.len() == 3)).await;
    let blind = within(
        "by requests in flight",
        spawn_fetch_tally(by_count.clone(), SEQUENTIAL, |_| get("/work")),
    )
    .await
    .unwrap();
    assert!(blind["slow"] >= SEQUENTIAL / 5, "{blind:?}");

    // Latency can: once "slow" has answered slowly its estimate jumps to
    // that peak, above the fast endpoints' (which only fall from the
    // default), and p2c stops choosing it.
    let (endpoints, discover) = discover::channel();
    insert_all(&endpoints);
    let by_latency = Balance::new(
        LatencyDiscover::new(discover, DEFAULT_RTT, DEFAULT_DECAY),
        P2c::with_seed(8),
    );
    within("discovery", by_latency.wait_for(|keys| keys.len() == 3)).await;
    let aware = within(
        "by latency",
        spawn_fetch_tally(by_latency.clone(), SEQUENTIAL, |_| get("/work")),
    )
    .await
    .unwrap();
    let slow = aware.get("slow").copied().unwrap_or(0);
    assert!(slow * 100 < SEQUENTIAL * 15, "{aware:?}");
    assert!(slow < blind["slow"], "{aware:?} against {blind:?}");
    assert_eq!(in_flight(&by_latency).values().sum::<usize>(), 0);
}
