//! Smooth weighted round robin over real HTTP backends.

mod support;

use tower_lb::discover::{self, StaticList};
use tower_lb::pick::WeightedRoundRobin;
use tower_lb::Balance;

use support::*;

#[tokio::test]
async fn weights_5_1_1_interleave_as_nginx_does() {
    let servers = backends(&["a", "b", "c"]).await;
    let list = StaticList::weighted([
        ("a", servers[0].endpoint(), 5),
        ("b", servers[1].endpoint(), 1),
        ("c", servers[2].endpoint(), 1),
    ]);
    let mut balance = Balance::new(list, WeightedRoundRobin::new());
    within("discovery", balance.wait_for(|keys| keys.len() == 3)).await;
    assert_eq!(balance.endpoints(), [("a", 5), ("b", 1), ("c", 1)]);

    let mut cycle = Vec::new();
    for _ in 0..7 {
        cycle.push(within("request", get_ok(&mut balance, "/")).await);
    }
    assert_eq!(cycle, ["a", "a", "b", "a", "c", "a", "a"]);

    let answers = within("693 requests", tally(&mut balance, 693, |_| get("/"))).await;
    assert_eq!(answers, counts(&[("a", 495), ("b", 99), ("c", 99)]));
    assert_eq!(served(&servers), [500, 100, 100]);
}

#[tokio::test]
async fn reinserting_with_a_new_weight_changes_the_shares() {
    let servers = backends(&["a", "b"]).await;
    let (endpoints, discover) = discover::channel();
    endpoints.insert("a", servers[0].endpoint()).unwrap();
    endpoints.insert("b", servers[1].endpoint()).unwrap();
    let mut balance = Balance::new(discover, WeightedRoundRobin::new());
    within("discovery", balance.wait_for(|keys| keys.len() == 2)).await;

    let answers = within("even", tally(&mut balance, 100, |_| get("/"))).await;
    assert_eq!(answers, counts(&[("a", 50), ("b", 50)]));

    endpoints
        .insert_weighted("a", servers[0].endpoint(), 3)
        .unwrap();
    let view = balance.clone();
    within(
        "reweight",
        balance.wait_for(|_| view.endpoints().contains(&("a", 3))),
    )
    .await;

    // Whole cycles of a 3:1 schedule, from wherever the cursor stands.
    let answers = within("skewed", tally(&mut balance, 400, |_| get("/"))).await;
    assert_eq!(answers, counts(&[("a", 300), ("b", 100)]));
    assert_eq!(served(&servers), [350, 150]);
}

#[tokio::test]
async fn no_endpoint_runs_far_ahead_of_its_share() {
    // Weights 3, 2, 1 over 6-request windows: each window has exactly the
    // weights' counts, which bursts (a a a b b c) would also satisfy, so
    // check smoothness on every prefix: never more than one request off.
    let servers = backends(&["a", "b", "c"]).await;
    let list = StaticList::weighted([
        ("a", servers[0].endpoint(), 3),
        ("b", servers[1].endpoint(), 2),
        ("c", servers[2].endpoint(), 1),
    ]);
    let mut balance = Balance::new(list, WeightedRoundRobin::new());
    within("discovery", balance.wait_for(|keys| keys.len() == 3)).await;

    let weights = [("a", 3.0), ("b", 2.0), ("c", 1.0)];
    let mut seen = std::collections::BTreeMap::<String, f64>::new();
    for t in 1..=60 {
        let body = within("request", get_ok(&mut balance, "/")).await;
        *seen.entry(body).or_default() += 1.0;
        for (id, w) in weights {
            let fair = f64::from(t) * w / 6.0;
            let got = seen.get(id).copied().unwrap_or(0.0);
            assert!((got - fair).abs() < 1.0, "after {t}: {seen:?}");
        }
    }
    assert_eq!(served(&servers), [30, 20, 10]);
}
