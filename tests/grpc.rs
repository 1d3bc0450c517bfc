//! A tonic client whose transport is the balancer, over real tonic servers
//! on 127.0.0.1: round robin, consistent hashing on a metadata key, removal,
//! in-flight counting of streams, and gRPC failures classified by
//! tower-http's `GrpcErrorsAsFailures`.

mod support;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use http::HeaderName;
use tonic::transport::Channel;
use tonic::Code;
use tower::ServiceBuilder;
use tower_http::trace::TraceLayer;
use tower_lb::discover;
use tower_lb::load::{Counter, InFlight};
use tower_lb::pick::{key::Header, ConsistentHash, LeastConnections, RoundRobin};
use tower_lb::{Balance, BalanceLayer, BoxError, NoEndpoints};

use support::grpc::{Classified, Endpoint, Fleet, WhoClient, HEALTHY, USER};

fn by_user() -> ConsistentHash<Header> {
    ConsistentHash::new(Header::new(HeaderName::from_static(USER)))
}

#[tokio::test]
async fn round_robin_splits_calls_exactly() -> Result<(), BoxError> {
    let (fleet, balance) = Fleet::start(&HEALTHY, RoundRobin::new()).await;
    let mut client = WhoClient::new(balance);

    let mut answers: HashMap<String, usize> = HashMap::new();
    for _ in 0..300 {
        *answers.entry(client.ask(None).await?).or_default() += 1;
    }
    let expected: HashMap<String, usize> = ["a", "b", "c"]
        .into_iter()
        .map(|id| (id.to_owned(), 100))
        .collect();
    assert_eq!(answers, expected);
    for backend in &fleet.backends {
        assert_eq!(backend.requests(), 100, "server {}", backend.id());
    }
    // tonic reads each answer to its trailers, so no call stays counted.
    assert_eq!(fleet.in_flight(), [0, 0, 0]);
    let requests: Vec<u64> = fleet.counters.iter().map(Counter::requests).collect();
    assert_eq!(requests, [100, 100, 100]);
    Ok(())
}

#[tokio::test]
async fn consistent_hashing_on_a_metadata_key() -> Result<(), BoxError> {
    let (fleet, balance) = Fleet::start(&HEALTHY, by_user()).await;
    let addrs: Vec<_> = fleet.backends.iter().map(|b| b.addr()).collect();
    let mut client = WhoClient::new(balance.clone());

    let users: Vec<String> = (0..50).map(|i| format!("user-{i}")).collect();
    let mut owner: HashMap<&str, String> = HashMap::new();
    for round in 0..4 {
        for user in &users {
            let server = client.ask(Some(user)).await?;
            let first = owner.entry(user).or_insert_with(|| server.clone());
            assert_eq!(&server, first, "{user} moved in round {round}");
        }
    }
    let used: HashSet<&String> = owner.values().collect();
    assert!(used.len() >= 2, "50 keys all on {used:?}");
    for backend in &fleet.backends {
        let keys = owner.values().filter(|s| *s == backend.id()).count();
        assert_eq!(backend.requests(), 4 * keys, "server {}", backend.id());
    }

    // Another client process that knows the same endpoints builds the same
    // ring, so it sends every key to the same server.
    let (endpoints, discover) = discover::channel();
    let other = Balance::new(discover, by_user());
    for &addr in addrs.iter().rev() {
        endpoints.insert(addr, InFlight::new(channel_to(addr)))?;
    }
    other.wait_for(|keys| keys.len() == 3).await;
    let mut other = WhoClient::new(other);
    for user in &users {
        assert_eq!(other.ask(Some(user)).await?, owner[user.as_str()]);
    }

    // A call without the key is not refused: it goes round robin.
    let mut keyless = HashSet::new();
    for _ in 0..3 {
        keyless.insert(client.ask(None).await?);
    }
    assert_eq!(keyless.len(), 3);

    // Removing a server moves only its own keys.
    fleet.endpoints.remove(fleet.backend("b").addr())?;
    balance.wait_for(|keys| keys.len() == 2).await;
    let calls_to_b = fleet.backend("b").requests();
    for user in &users {
        let server = client.ask(Some(user)).await?;
        match owner[user.as_str()].as_str() {
            "b" => assert_ne!(server, "b", "{user} still on the removed server"),
            before => assert_eq!(server, before, "{user} moved"),
        }
    }
    assert_eq!(fleet.backend("b").requests(), calls_to_b);
    Ok(())
}

#[tokio::test]
async fn a_removed_server_gets_no_more_calls() -> Result<(), BoxError> {
    let (fleet, balance) = Fleet::start(&HEALTHY, RoundRobin::new()).await;
    let mut client = WhoClient::new(balance.clone());
    for _ in 0..30 {
        client.ask(None).await?;
    }
    assert_eq!(fleet.backend("b").requests(), 10);

    fleet.endpoints.remove(fleet.backend("b").addr())?;
    balance.wait_for(|keys| keys.len() == 2).await;
    let mut answers: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        *answers.entry(client.ask(None).await?).or_default() += 1;
    }
    assert_eq!(answers.get("b"), None);
    assert_eq!((answers["a"], answers["c"]), (15, 15));
    assert_eq!(
        fleet.backend("b").requests(),
        10,
        "the removed server was called"
    );

    // Inserting it again brings it back.
    let b = fleet.backend("b");
    fleet
        .endpoints
        .insert(b.addr(), InFlight::new(b.channel()))?;
    balance.wait_for(|keys| keys.len() == 3).await;
    for _ in 0..30 {
        client.ask(None).await?;
    }
    assert_eq!(fleet.backend("b").requests(), 20);
    Ok(())
}

#[tokio::test]
async fn an_open_server_stream_keeps_its_endpoint_busy() -> Result<(), BoxError> {
    let (fleet, balance) = Fleet::start(&HEALTHY, LeastConnections::with_seed(7)).await;
    let mut client = WhoClient::new(balance);

    let mut stream = client.watch(None, true).await?;
    let busy = stream.message().await?.expect("a first answer").server;
    let index = fleet.backends.iter().position(|b| b.id() == busy).unwrap();
    assert_eq!(fleet.counters[index].in_flight(), 1);

    // Least connections keeps away from the server that is streaming.
    for _ in 0..20 {
        assert_ne!(client.ask(None).await?, busy);
    }
    assert_eq!(fleet.backend(&busy).requests(), 1);

    // Dropping the stream ends the call, and with it the count.
    drop(stream);
    assert_eq!(fleet.in_flight(), [0, 0, 0]);

    // A stream that runs to its end releases its endpoint by itself.
    let mut stream = client.watch(None, false).await?;
    while stream.message().await?.is_some() {}
    assert_eq!(fleet.in_flight(), [0, 0, 0]);
    Ok(())
}

#[tokio::test]
async fn grpc_failures_are_classified_by_status_code() -> Result<(), BoxError> {
    let modes = [("a", Code::Ok), ("b", Code::Ok), ("c", Code::Unavailable)];
    let (fleet, balance) = Fleet::start(&modes, RoundRobin::new()).await;

    let seen = Classified::default();
    let traced = ServiceBuilder::new()
        .layer(
            TraceLayer::new_for_grpc()
                .on_failure(seen.on_failure())
                .on_eos(seen.on_eos()),
        )
        .service(balance);
    let mut client = WhoClient::new(traced);

    // Unary: the failing server answers HTTP 200 with `grpc-status: 14` in
    // its headers (a trailers-only response), classified at once.
    let unavailable = client.ask_counting_unavailable(30, "c").await;
    assert_eq!(unavailable, 10);
    assert_eq!(seen.failure_codes(), vec![Code::Unavailable as i32; 10]);
    // The 20 successes waited for their trailers to be classified.
    assert_eq!(seen.take_trailer_statuses(), vec![Some("0".to_owned()); 20]);
    // Failed calls release their in-flight count too.
    assert_eq!(fleet.in_flight(), [0, 0, 0]);

    // Server streaming: the failing server sends an answer first, so its
    // failure is only in the trailers, after the body.
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let mut stream = client.watch(None, false).await?;
        let first = stream.message().await?.expect("a first answer").server;
        let end = loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => break Code::Ok,
                Err(status) => break status.code(),
            }
        };
        statuses.push((first, end));
    }
    statuses.sort_by(|x, y| x.0.cmp(&y.0));
    let expected = [
        ("a".to_owned(), Code::Ok),
        ("b".to_owned(), Code::Ok),
        ("c".to_owned(), Code::Unavailable),
    ];
    assert_eq!(statuses, expected);
    assert_eq!(
        seen.take_trailer_statuses(),
        [
            Some("0".to_owned()),
            Some("0".to_owned()),
            Some("14".to_owned())
        ]
    );
    assert_eq!(seen.failure_codes(), vec![Code::Unavailable as i32; 11]);
    assert_eq!(fleet.in_flight(), [0, 0, 0]);
    Ok(())
}

#[tokio::test]
async fn no_endpoints_reaches_the_client_as_a_status() -> Result<(), BoxError> {
    let (_endpoints, discover) = discover::channel::<SocketAddr, Endpoint>();
    let balance = BalanceLayer::new(RoundRobin::new())
        .wait(Duration::ZERO)
        .spawn(discover);

    // As it is: tonic keeps the balancer's error as the status's source.
    let status = WhoClient::new(balance.clone())
        .ask(None)
        .await
        .expect_err("there is no server");
    assert_eq!(status.code(), Code::Unknown);
    let source = std::error::Error::source(&status).expect("the balancer's error");
    assert!(source.is::<NoEndpoints>(), "{source}");

    // Mapped to UNAVAILABLE, the status gRPC clients retry on.
    let mapped = ServiceBuilder::new()
        .map_err(|error: BoxError| -> BoxError {
            if error.is::<NoEndpoints>() {
                Box::new(tonic::Status::unavailable(error.to_string()))
            } else {
                error
            }
        })
        .service(balance);
    let status = WhoClient::new(mapped)
        .ask(None)
        .await
        .expect_err("there is no server");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().starts_with("no endpoints"), "{status:?}");
    Ok(())
}

fn channel_to(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("a valid URI")
        .connect_lazy()
}
