//! The crate's headline example (README and crate docs): power of two
//! choices over endpoints counted in flight, fed by a runtime channel,
//! here against real HTTP backends.

mod support;

use tower::{Service, ServiceExt};
use tower_lb::endpoint::Weighted;
use tower_lb::load::{InFlight, InFlightDiscover};
use tower_lb::pick::P2c;
use tower_lb::{discover, Balance, BoxError};

use support::*;

/// The README's `client_for`: an HTTP client for one address (always a
/// loopback backend here).
fn client_for(addr: &str) -> Endpoint {
    Endpoint::new(addr.parse().expect("a socket address"))
}

#[tokio::test]
async fn the_readme_example_against_real_backends() -> Result<(), BoxError> {
    let servers = backends(&["one", "two"]).await;
    let one = servers[0].addr().to_string();
    let two = servers[1].addr().to_string();

    // As in the README, keyed by address, the second endpoint of weight 2.
    let (endpoints, discover) = discover::channel();
    endpoints.insert(one.clone(), client_for(&one))?;
    endpoints.insert_weighted(two.clone(), client_for(&two), 2)?;
    let balance = Balance::new(InFlightDiscover::new(discover), P2c::new());
    within("discovery", balance.wait_for(|keys| keys.len() == 2)).await;
    let mut listed = balance.endpoints();
    listed.sort();
    let mut expected = vec![(one.clone(), 1), (two.clone(), 2)];
    expected.sort();
    assert_eq!(listed, expected);

    let response = within("request", balance.clone().ready().await?.call(get("/"))).await?;
    assert_eq!(response.status(), 200);
    let named = response.headers()[BACKEND_HEADER].to_str()?.to_owned();
    assert!(named == "one" || named == "two", "{named}");
    // The body is still unread: the request counts until it is.
    let busy = |balance: &Balance<String, Weighted<InFlight<Endpoint>>, P2c>| {
        balance.read_endpoints(|_, services| {
            services
                .iter()
                .map(|s| s.get_ref().in_flight())
                .sum::<usize>()
        })
    };
    assert_eq!(busy(&balance), 1);
    assert_eq!(within("body", read_body(response)).await?, named);
    assert_eq!(busy(&balance), 0);

    // Clones share the set: one to every task.
    let tasks = (0..8)
        .map(|_| spawn_fetch_tally(balance.clone(), 30, |_| get("/")))
        .collect();
    let answers = merge_tallies(tasks).await;
    assert_eq!(answers.values().sum::<usize>(), 240);
    assert!(answers.len() == 2, "both endpoints answer: {answers:?}");
    assert_eq!(servers[0].requests() + servers[1].requests(), 241);
    assert_eq!(busy(&balance), 0);
    Ok(())
}

#[tokio::test]
async fn with_equal_loads_its_weights_set_the_shares() {
    let servers = backends(&["one", "two"]).await;
    let (endpoints, discover) = discover::channel();
    endpoints.insert("one", servers[0].endpoint()).unwrap();
    endpoints
        .insert_weighted("two", servers[1].endpoint(), 2)
        .unwrap();
    let balance = Balance::new(InFlightDiscover::new(discover), P2c::with_seed(2));
    within("discovery", balance.wait_for(|keys| keys.len() == 2)).await;

    // One request at a time, so both endpoints are idle at every pick and
    // the first sample, drawn by weight, wins.
    let answers = within(
        "sequential requests",
        spawn_fetch_tally(balance.clone(), 300, |_| get("/")),
    )
    .await
    .unwrap();
    let two = answers.get("two").copied().unwrap_or(0);
    assert!((170..=230).contains(&two), "{answers:?}");
    assert_eq!(served(&servers), [300 - two, two]);
}
