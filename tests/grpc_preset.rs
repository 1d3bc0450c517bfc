//! The gRPC preset over real tonic servers on 127.0.0.1: one named type a
//! tonic client takes, calls spread over the servers, and a server that
//! answers `UNAVAILABLE` costs no call.

mod support;

use std::collections::BTreeMap;

use tower_lb::grpc::{Balancer, Builder};
use tower_lb::pick::RoundRobin;
use tower_lb::BoxError;

use support::grpc::WhoClient;
use support::Backend;
use tonic::Code;

#[tokio::test]
async fn the_grpc_preset_spreads_calls_and_retries_unavailable() -> Result<(), BoxError> {
    let a = Backend::builder("a").grpc(Code::Ok).start().await;
    let b = Backend::builder("b").grpc(Code::Ok).start().await;
    let c = Backend::builder("c").grpc(Code::Unavailable).start().await;
    let channel: Balancer = Builder::new()
        .backends([a.addr(), b.addr(), c.addr()])
        .picker(RoundRobin::new())
        .retry(
            tower_lb::retry::RetryPolicy::grpc()
                .budget_ratio(1.0)
                .backoff(std::time::Duration::ZERO, std::time::Duration::ZERO),
        )
        .build()?;
    channel.get_ref().wait_for(|keys| keys.len() == 3).await;
    let mut client = WhoClient::new(channel);
    let mut seen = BTreeMap::<String, usize>::new();
    for _ in 0..90 {
        *seen.entry(client.ask(None).await?).or_default() += 1;
    }
    assert!(!seen.contains_key("c"), "{seen:?}");
    assert_eq!(seen.values().sum::<usize>(), 90);
    assert!(seen["a"] > 0 && seen["b"] > 0, "{seen:?}");
    assert!(c.requests() > 0, "the failing server was tried");
    Ok(())
}
