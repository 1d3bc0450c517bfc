//! Bad input never panics or hangs: zero and huge weights, backends that
//! are gone. (Bad discovery input: `bad_discovery.rs`.)

mod support;

use std::net::IpAddr;
use std::time::Duration;

use tower_lb::discover::StaticList;
use tower_lb::pick::{key::ClientAddr, IpHash, Pick, RoundRobin, WeightedRoundRobin};
use tower_lb::{Balance, BalanceLayer};

use support::*;

fn from(ip: IpAddr) -> http::Request<ReqBody> {
    let mut req = get("/");
    req.extensions_mut()
        .insert(ClientAddr(std::net::SocketAddr::new(ip, 1)));
    req
}

async fn weighted<P>(servers: &[Backend], weights: &[u32], picker: P) -> HttpBalance<P>
where
    P: Pick<http::Request<ReqBody>, Ep>,
{
    const KEYS: [&str; 4] = ["a", "b", "c", "d"];
    let list = StaticList::weighted(
        servers
            .iter()
            .zip(weights)
            .zip(KEYS)
            .map(|((server, &w), key)| (key, server.endpoint(), w)),
    );
    let balance = Balance::new(list, picker);
    let n = weights.len();
    within("discovery", balance.wait_for(|keys| keys.len() == n)).await;
    balance
}

#[tokio::test]
async fn weight_zero_gets_no_traffic() {
    let servers = backends(&["a", "b", "c"]).await;

    let mut rr = weighted(&servers, &[1, 0, 1], RoundRobin::new()).await;
    let answers = within("rr", tally(&mut rr, 300, |_| get("/"))).await;
    assert_eq!(answers, counts(&[("a", 150), ("c", 150)]));

    let mut wrr = weighted(&servers, &[1, 0, 1], WeightedRoundRobin::new()).await;
    let answers = within("wrr", tally(&mut wrr, 300, |_| get("/"))).await;
    assert_eq!(answers, counts(&[("a", 150), ("c", 150)]));

    let mut ip_hash = weighted(&servers, &[1, 0, 1], IpHash::new()).await;
    let mut rng = Seeded::new(3);
    let answers = within(
        "ip hash",
        tally(&mut ip_hash, 300, |_| from(IpAddr::V4(rng.ipv4()))),
    )
    .await;
    assert!(!answers.contains_key("b"), "{answers:?}");
    assert_eq!(answers.values().sum::<usize>(), 300);

    assert_eq!(served(&servers)[1], 0);
}

#[tokio::test(start_paused = true)]
async fn all_weights_zero_is_no_endpoints() {
    let servers = backends(&["a", "b", "c"]).await;
    let wait = Duration::from_millis(100);
    let zeros = || {
        StaticList::weighted(
            servers
                .iter()
                .zip(["a", "b", "c"])
                .map(|(server, key)| (key, server.endpoint(), 0)),
        )
    };

    let mut rr = BalanceLayer::new(RoundRobin::new())
        .wait(wait)
        .spawn(zeros());
    within("discovery", rr.wait_for(|keys| keys.len() == 3)).await;
    let error = within("request", send(&mut rr, get("/")))
        .await
        .unwrap_err();
    assert_eq!(
        (no_endpoints(&error).known(), no_endpoints(&error).waited()),
        (3, wait)
    );
    assert!(error.to_string().contains("among 3 known"), "{error}");

    let mut wrr = BalanceLayer::new(WeightedRoundRobin::new())
        .wait(wait)
        .spawn(zeros());
    within("discovery", wrr.wait_for(|keys| keys.len() == 3)).await;
    let error = within("request", send(&mut wrr, get("/")))
        .await
        .unwrap_err();
    assert_eq!(no_endpoints(&error).known(), 3);

    let mut ip_hash = BalanceLayer::new(IpHash::new()).wait(wait).spawn(zeros());
    within("discovery", ip_hash.wait_for(|keys| keys.len() == 3)).await;
    let error = within(
        "request",
        send(&mut ip_hash, from("192.0.2.1".parse().unwrap())),
    )
    .await
    .unwrap_err();
    assert_eq!(no_endpoints(&error).known(), 3);

    assert_eq!(served(&servers), [0, 0, 0]);
}

#[tokio::test]
async fn huge_weights_split_as_documented() {
    let servers = backends(&["a", "b", "c"]).await;

    // Equal weights reduce to 1:1, whatever their size.
    let mut wrr = weighted(
        &servers[..2],
        &[u32::MAX, u32::MAX],
        WeightedRoundRobin::new(),
    )
    .await;
    let answers = within("equal", tally(&mut wrr, 200, |_| get("/"))).await;
    assert_eq!(answers, counts(&[("a", 100), ("b", 100)]));

    // Scaled down to the schedule cap, proportions kept, and no endpoint
    // ever a whole request away from its share: 2:1, and weight 1 beside
    // u32::MAX gets at most one request in a few hundred.
    let weights = [u32::MAX, u32::MAX / 2, 1];
    let mut wrr = weighted(&servers, &weights, WeightedRoundRobin::new()).await;
    let answers = within("skewed", tally(&mut wrr, 300, |_| get("/"))).await;
    let got = |id: &str| answers.get(id).copied().unwrap_or(0);
    assert!(got("a").abs_diff(200) <= 1, "{answers:?}");
    assert!(got("b").abs_diff(100) <= 1, "{answers:?}");
    assert!(got("c") <= 1, "{answers:?}");

    // Round robin ignores weights, however large.
    let mut rr = weighted(&servers[..2], &[u32::MAX, 1], RoundRobin::new()).await;
    let answers = within("rr", tally(&mut rr, 100, |_| get("/"))).await;
    assert_eq!(answers, counts(&[("a", 50), ("b", 50)]));

    // IP hash over huge weights: every client is served.
    let mut ip_hash = weighted(&servers, &[u32::MAX, u32::MAX, u32::MAX], IpHash::new()).await;
    let mut rng = Seeded::new(5);
    let answers = within(
        "ip hash",
        tally(&mut ip_hash, 300, |_| from(IpAddr::V4(rng.ipv4()))),
    )
    .await;
    assert_eq!(answers.len(), 3, "{answers:?}");
}

#[tokio::test]
async fn a_stopped_backend_is_an_error_not_a_hang() {
    let servers = backends(&["up", "down"]).await;
    servers[1].stop().await;
    let list = StaticList::new([
        ("up", servers[0].endpoint()),
        ("down", servers[1].endpoint()),
    ]);
    let mut balance = Balance::new(list, RoundRobin::new());
    within("discovery", balance.wait_for(|keys| keys.len() == 2)).await;

    let (mut ok, mut refused) = (0, 0);
    for _ in 0..20 {
        match within("request", send(&mut balance, get("/"))).await {
            Ok((status, body)) => {
                assert_eq!((status.as_u16(), body.as_str()), (200, "up"));
                ok += 1;
            }
            Err(error) => {
                // The endpoint's own error, unchanged inside the box.
                let error = error
                    .downcast_ref::<hyper_util::client::legacy::Error>()
                    .unwrap_or_else(|| panic!("not the client's error: {}", chain(&*error)));
                assert!(error.is_connect(), "{}", chain(error));
                refused += 1;
            }
        }
    }
    assert_eq!((ok, refused), (10, 10));
    assert_eq!(served(&servers), [10, 0]);
}

#[tokio::test]
async fn a_backend_stopped_mid_use_fails_its_requests_and_can_come_back() {
    let server = Backend::start("a").await;
    let addr = server.addr();
    let list = StaticList::new([("a", server.endpoint())]);
    let mut balance = Balance::new(list, RoundRobin::new());
    within("discovery", balance.wait_for(|keys| keys.len() == 1)).await;
    // A pooled keep-alive connection now exists.
    assert_eq!(within("request", get_ok(&mut balance, "/")).await, "a");

    // Stopped with a request held open on it: that one fails too.
    let held = spawn_send(balance.clone(), get("/slow"));
    within("held", server.wait_held(1)).await;
    server.stop().await;
    let error = within("held request", held).await.unwrap().unwrap_err();
    assert!(
        error
            .downcast_ref::<hyper_util::client::legacy::Error>()
            .is_some(),
        "{}",
        chain(&*error)
    );
    for _ in 0..5 {
        let result = within("request to a stopped backend", send(&mut balance, get("/"))).await;
        assert!(result.is_err(), "{result:?}");
    }
    drop(server);

    // The endpoint stays in the set; once its backend is back, it answers.
    let again = Backend::builder("a-again").at(addr).start().await;
    assert_eq!(
        within("request", get_ok(&mut balance, "/")).await,
        "a-again"
    );
    assert_eq!(again.requests(), 1);
}
