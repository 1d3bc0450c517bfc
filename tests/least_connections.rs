//! Least connections over real HTTP backends, with requests counted in
//! flight until their response bodies end.

mod support;

use std::time::Duration;

use http_body_util::BodyExt;
use tower::{Service, ServiceExt};
use tower_lb::discover::{self, StaticList};
use tower_lb::load::{CompleteOnResponse, InFlightDiscover};
use tower_lb::pick::{LeastConnections, RoundRobin};
use tower_lb::Balance;

use support::*;

/// Concurrent callers in the slow-endpoint test, and requests each.
const CALLERS: usize = 32;
const EACH: usize = 25;

/// How long the slow backend takes over `/work`; the others answer at once.
const SLOW: Duration = Duration::from_millis(50);

const IDS: [&str; 3] = ["fast1", "fast2", "slow"];

/// Three backends serving `/work`: "fast1" and "fast2" at once, "slow"
/// after [`SLOW`].
async fn one_slow_of_three() -> Vec<Backend> {
    let mut servers = Vec::new();
    for id in IDS {
        let delay = if id == "slow" { SLOW } else { Duration::ZERO };
        servers.push(Backend::builder(id).delay(delay).start().await);
    }
    servers
}

fn share(total: &std::collections::BTreeMap<String, usize>, id: &str) -> f64 {
    let all: usize = total.values().sum();
    total.get(id).copied().unwrap_or(0) as f64 / all as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_endpoint_gets_a_small_share_of_32_callers() {
    let servers = one_slow_of_three().await;
    let (endpoints, discover) = discover::channel();
    for (key, server) in IDS.into_iter().zip(&servers) {
        endpoints.insert(key, server.endpoint()).unwrap();
    }
    let balance = Balance::new(
        InFlightDiscover::new(discover),
        LeastConnections::with_seed(11),
    );
    within("discovery", balance.wait_for(|keys| keys.len() == 3)).await;

    let callers = (0..CALLERS)
        .map(|_| spawn_fetch_tally(balance.clone(), EACH, |_| get("/work")))
        .collect();
    let least = merge_tallies(callers).await;
    assert_eq!(least.values().sum::<usize>(), CALLERS * EACH);
    // Requests pile up on the slow endpoint, so it stops being the least
    // loaded: it keeps about a third of the callers waiting and serves a
    // small share, while the fast two serve everything else.
    assert!(share(&least, "slow") < 0.15, "least connections: {least:?}");
    assert!(share(&least, "fast1") > 0.3 && share(&least, "fast2") > 0.3);
    assert_eq!(in_flight(&balance).values().sum::<usize>(), 0);

    // Round robin on the same backends, for contrast: a third each, slow or
    // not.
    let list = StaticList::new(
        IDS.into_iter()
            .zip(&servers)
            .map(|(key, server)| (key, server.endpoint())),
    );
    let round_robin = Balance::new(list, RoundRobin::new());
    within("discovery", round_robin.wait_for(|keys| keys.len() == 3)).await;
    let callers = (0..CALLERS)
        .map(|_| spawn_tally(round_robin.clone(), EACH, |_| get("/work")))
        .collect();
    let even = merge_tallies(callers).await;
    let third = CALLERS * EACH / 3;
    assert!(
        even.values().all(|&n| n == third || n == third + 1),
        "round robin: {even:?}"
    );
    assert!(share(&even, "slow") > 0.33);
}

#[tokio::test]
async fn a_streaming_response_counts_until_its_body_ends() {
    let servers = backends(&["a", "b", "c"]).await;
    let server = |id: &str| servers.iter().find(|s| s.id() == id).unwrap();
    let (endpoints, discover) = discover::channel();
    for (key, server) in ["a", "b", "c"].into_iter().zip(&servers) {
        endpoints.insert(key, server.endpoint()).unwrap();
    }
    let mut balance = Balance::new(
        InFlightDiscover::new(discover),
        LeastConnections::with_seed(5),
    );
    within("discovery", balance.wait_for(|keys| keys.len() == 3)).await;

    // A stream of two frames, none let through yet: the headers arrive,
    // the body stays open.
    let response = within(
        "stream headers",
        balance.ready().await.unwrap().call(get("/stream/2")),
    )
    .await
    .unwrap();
    let busy = response.headers()[BACKEND_HEADER]
        .to_str()
        .unwrap()
        .to_owned();
    let busy = ["a", "b", "c"].into_iter().find(|&k| k == busy).unwrap();
    assert!(response.body().is_tracking());
    let expected = |n| {
        ["a", "b", "c"]
            .into_iter()
            .map(|k| (k, if k == busy { n } else { 0 }))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    assert_eq!(in_flight(&balance), expected(1));

    // While it streams, the others are less loaded: nothing else goes there.
    let before = server(busy).requests();
    for _ in 0..30 {
        let (_, body) = within("request", fetch(&mut balance, get("/")))
            .await
            .unwrap();
        assert_ne!(body, busy);
    }
    assert_eq!(server(busy).requests(), before);

    // One frame read, one to come: still in flight.
    let mut body = response.into_body();
    server(busy).frames().release(1);
    let frame = within("frame 0", body.frame()).await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), format!("{busy}:0\n"));
    assert!(body.is_tracking());
    assert_eq!(in_flight(&balance), expected(1));

    // The last frame and the end of the body end the request.
    server(busy).frames().release(1);
    let rest = within("rest", body.collect()).await.unwrap().to_bytes();
    assert_eq!(rest, format!("{busy}:1\n"));
    assert_eq!(in_flight(&balance), expected(0));

    // All idle again: ties are broken at random, and the endpoint that
    // streamed takes its turn.
    let answers = within(
        "after the stream",
        spawn_fetch_tally(balance.clone(), 60, |_| get("/")),
    )
    .await
    .unwrap();
    assert!(answers.get(busy).copied().unwrap_or(0) >= 5, "{answers:?}");

    // A body dropped unread ends its request too.
    let response = within(
        "second stream",
        balance.ready().await.unwrap().call(get("/stream/5")),
    )
    .await
    .unwrap();
    let dropped = response.headers()[BACKEND_HEADER]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(in_flight(&balance).values().sum::<usize>(), 1);
    drop(response);
    assert_eq!(in_flight(&balance).values().sum::<usize>(), 0);
    let answers = within(
        "after the drop",
        spawn_fetch_tally(balance.clone(), 60, |_| get("/")),
    )
    .await
    .unwrap();
    assert!(
        answers.get(&dropped).copied().unwrap_or(0) >= 5,
        "{answers:?}"
    );
    let started: u64 = counters(&balance).values().map(|c| c.requests()).sum();
    assert_eq!(started, 2 + 30 + 60 + 60);
}

#[tokio::test]
async fn four_in_flight_at_weight_four_rank_like_one_at_weight_one() {
    let servers = backends(&["heavy", "light"]).await;
    let (endpoints, discover) = discover::channel();
    endpoints
        .insert_weighted("heavy", servers[0].endpoint(), 4)
        .unwrap();
    endpoints.insert("light", servers[1].endpoint()).unwrap();
    let mut balance = Balance::new(
        InFlightDiscover::new(discover),
        LeastConnections::with_seed(3),
    );
    within("discovery", balance.wait_for(|keys| keys.len() == 2)).await;

    // Five requests held open: whichever way the first tie goes, the picks
    // keep in flight ÷ weight level and end at 4 on heavy, 1 on light.
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(start(&mut balance, get("/slow")).await);
    }
    let loads = in_flight(&balance);
    assert_eq!((loads["heavy"], loads["light"]), (4, 1));
    within("held on heavy", servers[0].wait_held(4)).await;
    within("held on light", servers[1].wait_held(1)).await;

    // 4 ÷ 4 = 1 ÷ 1: a tie, so both take quick requests.
    let answers = within(
        "at a tie",
        spawn_fetch_tally(balance.clone(), 40, |_| get("/")),
    )
    .await
    .unwrap();
    assert!(
        answers.get("heavy").copied().unwrap_or(0) >= 5
            && answers.get("light").copied().unwrap_or(0) >= 5,
        "{answers:?}"
    );

    // One more held request breaks the tie; the other endpoint then takes
    // every quick request.
    held.push(start(&mut balance, get("/slow")).await);
    let loads = in_flight(&balance);
    let other = match (loads["heavy"], loads["light"]) {
        (5, 1) => "light",
        (4, 2) => "heavy",
        unexpected => panic!("the sixth request went nowhere: {unexpected:?}"),
    };
    let answers = within(
        "after the tie",
        spawn_fetch_tally(balance.clone(), 20, |_| get("/")),
    )
    .await
    .unwrap();
    assert_eq!(answers, counts(&[(other, 20)]));

    for server in &servers {
        server.slow().open();
    }
    for request in held {
        let (status, _) = within("held request", request).await.unwrap().unwrap();
        assert_eq!(status, 200);
    }
    assert_eq!(in_flight(&balance), [("heavy", 0), ("light", 0)].into());
}

#[tokio::test]
async fn complete_on_response_stops_counting_at_the_headers() {
    let servers = backends(&["a", "b"]).await;
    let insert_both = |endpoints: &discover::EndpointSender<&'static str, Endpoint>| {
        endpoints.insert("a", servers[0].endpoint()).unwrap();
        endpoints.insert("b", servers[1].endpoint()).unwrap();
    };

    // Counted until the body ends (the default).
    let (endpoints, discover) = discover::channel();
    insert_both(&endpoints);
    let mut to_body_end = Balance::new(
        InFlightDiscover::new(discover),
        LeastConnections::with_seed(9),
    );
    // Counted until the headers arrive.
    let (endpoints, discover) = discover::channel();
    insert_both(&endpoints);
    let mut to_headers = Balance::new(
        InFlightDiscover::with_completion(discover, CompleteOnResponse::default()),
        LeastConnections::with_seed(9),
    );
    within("discovery", to_body_end.wait_for(|keys| keys.len() == 2)).await;
    within("discovery", to_headers.wait_for(|keys| keys.len() == 2)).await;

    let streamed = within(
        "stream",
        to_body_end.ready().await.unwrap().call(get("/stream/1")),
    )
    .await
    .unwrap();
    let undercounted = within(
        "stream",
        to_headers.ready().await.unwrap().call(get("/stream/1")),
    )
    .await
    .unwrap();
    assert_eq!(in_flight(&to_body_end).values().sum::<usize>(), 1);
    assert_eq!(
        in_flight(&to_headers).values().sum::<usize>(),
        0,
        "the body is still open, but the request no longer counts"
    );

    // So with headers as the end, the streaming endpoint looks idle and
    // keeps getting requests; with the body's end it gets none.
    let streaming = undercounted.headers()[BACKEND_HEADER]
        .to_str()
        .unwrap()
        .to_owned();
    let answers = within(
        "while streaming",
        spawn_tally(to_headers.clone(), 40, |_| get("/")),
    )
    .await
    .unwrap();
    assert!(
        answers.get(&streaming).copied().unwrap_or(0) >= 5,
        "{answers:?}"
    );
    let busy = streamed.headers()[BACKEND_HEADER]
        .to_str()
        .unwrap()
        .to_owned();
    let answers = within(
        "while streaming",
        spawn_fetch_tally(to_body_end.clone(), 40, |_| get("/")),
    )
    .await
    .unwrap();
    assert_eq!(answers.get(&busy), None, "{answers:?}");

    for server in &servers {
        server.frames().open();
    }
    let body = within("body", read_body(streamed)).await.unwrap();
    assert_eq!(body, format!("{busy}:0\n"));
    let body = within("body", body_string(undercounted)).await.unwrap();
    assert_eq!(body, format!("{streaming}:0\n"));
    assert_eq!(in_flight(&to_body_end).values().sum::<usize>(), 0);
}
