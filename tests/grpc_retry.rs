//! gRPC retries through the balancer, over real tonic servers on 127.0.0.1:
//! a server that answers `UNAVAILABLE` costs a call one attempt, never two,
//! and the call's body is replayed whole on another server.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use tonic::Code;
use tower::{Layer, ServiceBuilder};
use tower_lb::balance::TriedEndpoints;
use tower_lb::pick::{key::hash_value, RoundRobin};
use tower_lb::retry::{RetryLayer, RetryPolicy};
use tower_lb::BoxError;

use support::grpc::{replay_channel, request, Call, Fleet, WhoClient};

const MODES: [(&str, Code); 3] = [("a", Code::Ok), ("b", Code::Ok), ("c", Code::Unavailable)];

#[tokio::test]
async fn unavailable_calls_are_retried_on_another_server() -> Result<(), BoxError> {
    let (fleet, balance) = Fleet::start_with(&MODES, RoundRobin::new(), replay_channel).await;
    // Round robin sends every other first attempt to the failing server
    // (a retry takes the turn after it): the budget is raised to cover half
    // the calls, and backoff is off to keep the test short.
    let policy = RetryPolicy::grpc()
        .budget_ratio(1.0)
        .backoff(Duration::ZERO, Duration::ZERO);
    let retrying = ServiceBuilder::new()
        .layer(RetryLayer::new(policy))
        .service(balance);
    let mut client = WhoClient::new(retrying);

    let failing = hash_value(&fleet.backend("c").addr());
    let mut retried = 0;
    for i in 0..300 {
        let user = format!("call-{i}");
        let mut call = request(Some(&user), false)?;
        let tried = TriedEndpoints::new();
        call.extensions_mut().insert(tried.clone());

        let server = client.ask_with(call).await?;
        assert_ne!(server, "c", "{user}");
        let mut slots = [0; TriedEndpoints::CAPACITY];
        let n = tried.fill(&mut slots);
        let hashes = &slots[..n];
        match hashes {
            [only] => assert_ne!(*only, failing, "{user} succeeded on the failing server"),
            [first, second] => {
                assert_eq!(*first, failing, "{user} retried after a success");
                assert_ne!(*second, failing, "{user} retried onto the failing server");
                retried += 1;
            }
            more => panic!("{user} took {} attempts", more.len()),
        }
        assert_eq!(tried.picks() as usize, hashes.len());
    }

    let c = fleet.backend("c").asks();
    assert_eq!(
        retried,
        c.len(),
        "one retry per call the failing server saw"
    );
    assert!((100..=200).contains(&retried), "{retried} calls retried");
    let at_c: HashSet<_> = c.iter().map(|(user, _)| user.clone()).collect();
    assert_eq!(
        at_c.len(),
        c.len(),
        "a call reached the failing server twice"
    );

    // Every call was answered once by a healthy server, with the body that
    // was sent: a retried call's body was replayed, byte for byte.
    let mut answered: Vec<(Option<String>, Call)> = fleet.backend("a").asks();
    answered.extend(fleet.backend("b").asks());
    assert_eq!(answered.len(), 300);
    for (user, call) in answered.iter().chain(&c) {
        assert_eq!(
            user.as_deref(),
            Some(call.user.as_str()),
            "body and metadata differ"
        );
        assert!(!call.hold);
    }
    let users: HashSet<_> = answered.iter().map(|(user, _)| user.clone()).collect();
    assert_eq!(users.len(), 300);
    assert!(at_c.is_subset(&users));
    assert_eq!(fleet.in_flight(), [0, 0, 0]);
    Ok(())
}

#[tokio::test]
async fn without_the_grpc_policy_an_unavailable_call_fails() -> Result<(), BoxError> {
    let (fleet, balance) = Fleet::start_with(&MODES, RoundRobin::new(), replay_channel).await;
    // The default policy judges by HTTP status, and a gRPC call is a POST.
    let retrying = ServiceBuilder::new()
        .layer(RetryLayer::new(RetryPolicy::new()))
        .service(balance);
    let mut client = WhoClient::new(retrying);
    let unavailable = client.ask_counting_unavailable(30, "c").await;
    assert_eq!(unavailable, 10);
    assert_eq!(fleet.backend("c").requests(), 10);
    Ok(())
}

#[tokio::test]
async fn when_every_server_is_unavailable_the_status_comes_back() -> Result<(), BoxError> {
    let modes = [("x", Code::Unavailable), ("y", Code::Unavailable)];
    let (fleet, balance) = Fleet::start_with(&modes, RoundRobin::new(), replay_channel).await;
    let policy = RetryPolicy::grpc().backoff(Duration::ZERO, Duration::ZERO);
    let mut client = WhoClient::new(RetryLayer::new(policy).layer(balance));
    let status = client
        .ask(Some("u"))
        .await
        .expect_err("no server can answer");
    assert_eq!(status.code(), Code::Unavailable);
    // Three attempts (the default), both servers tried before one again.
    let calls = [fleet.backend("x").requests(), fleet.backend("y").requests()];
    assert_eq!(calls.iter().sum::<usize>(), 3);
    assert!(calls.contains(&1) && calls.contains(&2), "{calls:?}");
    Ok(())
}
