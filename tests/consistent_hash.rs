//! Consistent hashing over ten real HTTP backends: which keys move when the
//! set changes, keys from a header or the path, and the load bound.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use http::{HeaderName, Request};
use http_body_util::Full;
use tower_lb::discover::{self, EndpointSender};
use tower_lb::load::InFlightDiscover;
use tower_lb::pick::{
    key::{Header, Path},
    ConsistentHash,
};
use tower_lb::Balance;

use support::*;

const IDS: [&str; 10] = ["b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7", "b8", "b9"];

/// Distinct keys mapped in the key-movement test.
const KEYS: usize = 10_000;

/// How many of them also go through the balancer to real backends, in each
/// state of the set (the rest would only repeat the check at about 250 µs a
/// request).
const SAMPLE: usize = 2_000;

fn x_user() -> Header {
    Header::new(HeaderName::from_static("x-user"))
}

/// `GET path` carrying `x-user: key`.
fn keyed(path: &str, key: &str) -> Request<ReqBody> {
    Request::get(path)
        .header("x-user", key)
        .body(Full::new(Bytes::new()))
        .expect("a valid request")
}

fn user(i: usize) -> String {
    format!("user-{i}")
}

/// Ten backends that also answer `/items/{key}`.
async fn ten() -> Vec<Backend> {
    let mut servers = Vec::new();
    for id in IDS {
        servers.push(Backend::start(id).await);
    }
    servers
}

/// A channel holding every server, and its discovery half.
fn channel_of(
    servers: &[Backend],
) -> (
    EndpointSender<&'static str, Endpoint>,
    discover::ChannelDiscover<&'static str, Endpoint>,
) {
    let (endpoints, discover) = discover::channel();
    for (key, server) in IDS.into_iter().zip(servers) {
        endpoints.insert(key, server.endpoint()).unwrap();
    }
    (endpoints, discover)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_one_of_ten_moves_only_its_keys_and_adding_it_back_restores_them() {
    let servers = ten().await;
    let (endpoints, discover) = channel_of(&servers);
    let balance = Balance::new(discover, ConsistentHash::new(x_user()));
    within("discovery", balance.wait_for(|keys| keys.len() == 10)).await;
    let request = |i| keyed("/", &user(i));
    // All 10 000 keys through the picker, over the balancer's current set;
    // the first SAMPLE of them through the balancer and real backends too,
    // which must agree key for key.
    let mapping = || {
        picked(
            &ConsistentHash::new(x_user()),
            &balance.endpoints(),
            KEYS,
            request,
        )
    };

    let before = mapping();
    let over_http = answers(&balance, SAMPLE, request).await;
    assert_eq!(over_http, before[..SAMPLE]);
    assert_eq!(served(&servers).iter().sum::<usize>(), SAMPLE);
    for id in IDS {
        let owned = before.iter().filter(|owner| *owner == id).count();
        assert!(owned > KEYS / 20, "{id} owns {owned} keys");
    }

    endpoints.remove("b3").unwrap();
    within("b3 removed", balance.wait_for(|keys| !keys.contains(&"b3"))).await;
    let during = mapping();
    let on_b3 = servers[3].requests();
    let over_http = answers(&balance, SAMPLE, request).await;
    assert_eq!(over_http, during[..SAMPLE]);
    assert_eq!(
        servers[3].requests(),
        on_b3,
        "a removed endpoint gets nothing"
    );
    let mut moved = 0;
    for (i, (old, new)) in before.iter().zip(&during).enumerate() {
        if old == "b3" {
            assert_ne!(new, "b3");
            moved += 1;
        } else {
            assert_eq!(old, new, "key {i} moved though its endpoint stayed");
        }
    }
    assert!(moved > 0 && moved <= KEYS * 12 / 100, "{moved} keys moved");

    endpoints.insert("b3", servers[3].endpoint()).unwrap();
    within("b3 back", balance.wait_for(|keys| keys.len() == 10)).await;
    let after = mapping();
    assert_eq!(after, before, "every key is back where it was");
    let over_http = answers(&balance, SAMPLE, request).await;
    assert_eq!(over_http, before[..SAMPLE]);
    let sampled_on_b3 = before[..SAMPLE]
        .iter()
        .filter(|owner| *owner == "b3")
        .count();
    assert_eq!(servers[3].requests(), on_b3 + sampled_on_b3);
}

#[tokio::test]
async fn one_key_one_backend_and_no_key_round_robin() {
    let servers = ten().await;
    let (_endpoints, discover) = channel_of(&servers);
    let mut balance = Balance::new(discover, ConsistentHash::new(x_user()));
    within("discovery", balance.wait_for(|keys| keys.len() == 10)).await;

    let answers = within("alice", tally(&mut balance, 50, |_| keyed("/", "alice"))).await;
    assert_eq!(answers.len(), 1, "{answers:?}");
    let (owner, _) = answers.first_key_value().unwrap();
    let counts = served(&servers);
    for (id, n) in IDS.iter().zip(&counts) {
        assert_eq!(*n, if id == owner { 50 } else { 0 }, "{counts:?}");
    }

    // Without the header there is no key: plain round robin.
    let before = served(&servers);
    let answers = within("keyless", tally(&mut balance, 100, |_| get("/"))).await;
    assert_eq!(answers.len(), 10);
    assert!(answers.values().all(|&n| n == 10), "{answers:?}");
    let after = served(&servers);
    assert!(after.iter().zip(&before).all(|(a, b)| a - b == 10));
}

#[tokio::test]
async fn the_path_is_a_key_too() {
    let servers = ten().await;
    let (_endpoints, discover) = channel_of(&servers);
    let balance = Balance::new(discover, ConsistentHash::new(Path));
    within("discovery", balance.wait_for(|keys| keys.len() == 10)).await;

    let item = |i| get(&format!("/items/{i}"));
    let first = answers(&balance, 1000, item).await;
    let expected = picked(&ConsistentHash::new(Path), &balance.endpoints(), 1000, item);
    assert_eq!(first, expected);
    assert_eq!(first.iter().collect::<BTreeSet<_>>().len(), 10);
    // The query is not part of the key.
    let again = answers(&balance, 1000, |i| get(&format!("/items/{i}?fresh=1"))).await;
    assert_eq!(again, first);
}

/// Requests placed in the bounded-load test.
const PLACED: usize = 300;

#[tokio::test]
async fn bounded_load_keeps_every_endpoint_within_c_times_the_mean() {
    const C: f64 = 1.25;
    let servers = ten().await;
    let (_endpoints, discover) = channel_of(&servers);
    let picker = ConsistentHash::new(x_user()).bounded_load(C).unwrap();
    assert_eq!(picker.factor(), C);
    let mut balance = Balance::new(InFlightDiscover::new(discover), picker);
    within("discovery", balance.wait_for(|keys| keys.len() == 10)).await;
    let index = |key: &str| IDS.iter().position(|&id| id == key).unwrap();

    // 80 % of requests for one hot key, the rest spread over 1000 users;
    // every request is held at the backend until the test lets it go, so
    // loads only build up, except when the busiest backend is drained.
    let mut rng = Seeded::new(2017);
    let mut held: Vec<Vec<_>> = (0..IDS.len()).map(|_| Vec::new()).collect();
    let mut hot_on = BTreeMap::new();
    let mut drained = 0;
    for step in 0..PLACED {
        let hot = rng.next_u64() % 10 < 8;
        let key = if hot {
            "hot".to_owned()
        } else {
            user((rng.next_u64() % 1000) as usize)
        };
        let before = in_flight(&balance);
        let request = start(&mut balance, keyed("/slow", &key)).await;
        let after = in_flight(&balance);
        let total: usize = after.values().sum();
        assert_eq!(total, before.values().sum::<usize>() + 1);
        let (&went, _) = after
            .iter()
            .find(|&(k, n)| *n == before[k] + 1)
            .expect("the request counts on one endpoint");
        held[index(went)].push(request);
        if hot {
            *hot_on.entry(went).or_insert(0) += 1;
        }

        // ⌈c × mean⌉ with this request placed: the endpoint that took it
        // is within it, and while loads only grow, so is every endpoint.
        // (Draining one endpoint lowers the mean under the others; they
        // then take nothing until the mean has caught up.)
        let cap = (C * total as f64 / IDS.len() as f64).ceil() as usize;
        assert!(
            after[went] <= cap,
            "step {step}: {went} took it at {after:?}, over {cap}"
        );
        if drained == 0 {
            let busiest = after.values().max().copied().unwrap();
            assert!(busiest <= cap, "step {step}: {after:?} over {cap}");
        }

        if step % 60 == 59 {
            let (&key, _) = after.iter().max_by_key(|&(_, n)| *n).unwrap();
            let i = index(key);
            servers[i].slow().release(held[i].len());
            for request in held[i].drain(..) {
                within("drained request", request).await.unwrap().unwrap();
            }
            assert_eq!(in_flight(&balance)[key], 0);
            drained += 1;
        }
    }
    assert_eq!(drained, PLACED / 60);
    // Unbounded, the hot key would sit on one endpoint; bounded, it spills
    // over to the next ones along the ring.
    assert!(hot_on.len() >= 3, "hot key went to {hot_on:?}");

    for server in &servers {
        server.slow().open();
    }
    for request in held.into_iter().flatten() {
        within("held request", request).await.unwrap().unwrap();
    }
    assert_eq!(in_flight(&balance).values().sum::<usize>(), 0);
}

#[test]
fn invalid_bounds_are_typed_errors() {
    for factor in [
        1.0,
        0.5,
        0.0,
        -1.25,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
    ] {
        let error = ConsistentHash::new(x_user())
            .bounded_load(factor)
            .expect_err("not a finite factor above 1");
        assert!(
            error.factor() == factor || (factor.is_nan() && error.factor().is_nan()),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(message.contains("above 1"), "{message}");
        let _: &dyn std::error::Error = &error;
    }
    assert!(ConsistentHash::new(x_user()).bounded_load(1.0001).is_ok());
}
