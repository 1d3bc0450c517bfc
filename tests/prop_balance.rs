//! Property test of the balancer's discovery worker: after any sequence of
//! inserts (new keys, replacements, weight 0) and removes (known and
//! unknown keys) through `discover::channel()`, the published set is
//! exactly what a map of key to weight says, and requests go only to its
//! endpoints of weight above 0.

mod support;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::{ready, Ready};
use std::task::{Context, Poll};
use std::time::Duration;

use proptest::prelude::*;
use tower::{Service, ServiceExt};
use tower_lb::discover;
use tower_lb::endpoint::Weighted;
use tower_lb::pick::{LeastConnections, Pick, RoundRobin, WeightedRoundRobin};
use tower_lb::{Balance, BalanceLayer, BoxError, NoEndpoints};

use support::prop::*;

/// A key used to learn that the worker has applied everything before it.
const MARK: u8 = u8::MAX;

#[derive(Clone, Debug)]
enum Change {
    Insert(u8, u32),
    Remove(u8),
    /// Wait until the worker has applied everything so far, then compare.
    Check,
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        5 => (0..8u8, weight()).prop_map(|(k, w)| Change::Insert(k, w)),
        3 => (0..10u8).prop_map(Change::Remove),
        1 => Just(Change::Check),
    ]
}

/// An endpoint that answers its key and the weight it was inserted with,
/// so a replaced endpoint is told from the one it replaced. Its load is 0.
#[derive(Clone, Copy, Debug)]
struct Answer {
    key: u8,
    weight: u32,
}

impl Service<()> for Answer {
    type Response = (u8, u32);
    type Error = Infallible;
    type Future = Ready<Result<(u8, u32), Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (): ()) -> Self::Future {
        ready(Ok((self.key, self.weight)))
    }
}

impl tower::load::Load for Answer {
    type Metric = u32;

    fn load(&self) -> u32 {
        0
    }
}

type Lb<P> = Balance<u8, Weighted<Answer>, P>;

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn the_published_set_follows_the_changes(
        changes in prop::collection::vec(change(), 1..60),
        picker in 0..3usize,
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            match picker {
                0 => follow(changes, RoundRobin::new()).await,
                1 => follow(changes, WeightedRoundRobin::new()).await,
                _ => follow(changes, LeastConnections::with_seed(5)).await,
            }
        })?;
    }
}

async fn follow<P>(changes: Vec<Change>, picker: P) -> Result<(), TestCaseError>
where
    P: Pick<(), Weighted<Answer>>,
{
    let (sender, discover) = discover::channel();
    // No wait: a request that finds no endpoint fails at once.
    let balance: Lb<P> = BalanceLayer::new(picker)
        .wait(Duration::ZERO)
        .spawn(discover);
    let mut model: BTreeMap<u8, u32> = BTreeMap::new();
    for change in changes.into_iter().chain([Change::Check]) {
        match change {
            Change::Insert(key, weight) => {
                sender
                    .insert_weighted(key, Answer { key, weight }, weight)
                    .expect("the worker runs");
                model.insert(key, weight);
            }
            Change::Remove(key) => {
                sender.remove(key).expect("the worker runs");
                model.remove(&key);
            }
            Change::Check => check(&sender, &balance, &model).await?,
        }
    }
    Ok(())
}

/// Flushes the worker with a marker endpoint, then compares the set and
/// where requests go with the model.
async fn check<P: Pick<(), Weighted<Answer>>>(
    sender: &discover::EndpointSender<u8, Answer>,
    balance: &Lb<P>,
    model: &BTreeMap<u8, u32>,
) -> Result<(), TestCaseError> {
    // Changes are applied in order: once the marker is in, so is all
    // before it; once it is out again, the set is the model's.
    let mark = Answer {
        key: MARK,
        weight: 0,
    };
    sender
        .insert_weighted(MARK, mark, 0)
        .expect("the worker runs");
    balance.wait_for(|keys| keys.contains(&MARK)).await;
    sender.remove(MARK).expect("the worker runs");
    balance.wait_for(|keys| !keys.contains(&MARK)).await;

    let mut published = balance.endpoints();
    published.sort_unstable();
    let expected: Vec<(u8, u32)> = model.iter().map(|(&k, &w)| (k, w)).collect();
    prop_assert_eq!(&published, &expected);
    prop_assert_eq!(balance.len(), model.len());

    let takers = model.values().filter(|&&w| w > 0).count();
    for _ in 0..2 * takers.max(1) {
        let answer = balance.clone().oneshot(()).await;
        if takers == 0 {
            let error: BoxError = answer.expect_err("no endpoint takes requests");
            prop_assert!(error.downcast_ref::<NoEndpoints>().is_some(), "{}", error);
            continue;
        }
        let (key, weight) = answer.map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(weight > 0, "endpoint {} of weight 0 got a request", key);
        prop_assert_eq!(
            model.get(&key),
            Some(&weight),
            "a stale or unknown endpoint answered"
        );
    }
    Ok(())
}
