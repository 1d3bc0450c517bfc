//! Many tasks sharing clones of one balancer, on a multi-threaded runtime.

mod support;

use std::collections::BTreeMap;

use tower_lb::discover::{self, StaticList};
use tower_lb::pick::{RoundRobin, WeightedRoundRobin};
use tower_lb::Balance;

use support::*;

const TASKS: usize = 64;
const EACH: usize = 50;

async fn merge(
    tasks: Vec<tokio::task::JoinHandle<BTreeMap<String, usize>>>,
) -> BTreeMap<String, usize> {
    let mut total = BTreeMap::new();
    for task in tasks {
        let counts = within("task", task).await.expect("the task did not panic");
        for (id, n) in counts {
            *total.entry(id).or_insert(0) += n;
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_on_64_tasks_split_round_robin_exactly() {
    let servers = backends(&["a", "b", "c", "d"]).await;
    let list = StaticList::new(
        ["a", "b", "c", "d"]
            .into_iter()
            .zip(&servers)
            .map(|(key, server)| (key, server.endpoint())),
    );
    let balance = Balance::new(list, RoundRobin::new());
    within("discovery", balance.wait_for(|keys| keys.len() == 4)).await;

    let tasks = (0..TASKS)
        .map(|_| spawn_tally(balance.clone(), EACH, |_| get("/")))
        .collect();
    let total = merge(tasks).await;

    // One cursor for all clones: 3200 turns, a quarter each, however the
    // tasks interleave.
    assert_eq!(
        total,
        counts(&[("a", 800), ("b", 800), ("c", 800), ("d", 800)])
    );
    assert_eq!(served(&servers), [800, 800, 800, 800]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_shares_hold_under_concurrency() {
    let servers = backends(&["a", "b", "c"]).await;
    let list = StaticList::weighted([
        ("a", servers[0].endpoint(), 5),
        ("b", servers[1].endpoint(), 1),
        ("c", servers[2].endpoint(), 1),
    ]);
    let balance = Balance::new(list, WeightedRoundRobin::new());
    within("discovery", balance.wait_for(|keys| keys.len() == 3)).await;

    // 32 × 70 = 2240 picks = 320 whole cycles of 7.
    let tasks = (0..32)
        .map(|_| spawn_tally(balance.clone(), 70, |_| get("/")))
        .collect();
    let total = merge(tasks).await;
    assert_eq!(total, counts(&[("a", 1600), ("b", 320), ("c", 320)]));
    assert_eq!(served(&servers), [1600, 320, 320]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_churning_under_load_lose_no_request() {
    let servers = backends(&["a", "b", "c", "d", "e"]).await;
    let (endpoints, discover) = discover::channel();
    for (key, server) in ["a", "b", "c", "d"].into_iter().zip(&servers) {
        endpoints.insert(key, server.endpoint()).unwrap();
    }
    let balance = Balance::new(discover, RoundRobin::new());
    within("discovery", balance.wait_for(|keys| keys.len() == 4)).await;

    let tasks: Vec<_> = (0..16)
        .map(|_| spawn_tally(balance.clone(), EACH, |_| get("/")))
        .collect();
    // Meanwhile "e" comes and goes, and "a" is replaced by a fresh client
    // for the same backend, each step published while requests flow.
    for round in 0..20 {
        endpoints.insert("e", servers[4].endpoint()).unwrap();
        within("e in", balance.wait_for(|keys| keys.contains(&"e"))).await;
        endpoints.remove("e").unwrap();
        within("e out", balance.wait_for(|keys| !keys.contains(&"e"))).await;
        if round % 5 == 0 {
            endpoints.insert("a", servers[0].endpoint()).unwrap();
        }
    }
    let total = merge(tasks).await;

    assert_eq!(total.values().sum::<usize>(), 16 * EACH);
    assert_eq!(served(&servers).iter().sum::<usize>(), 16 * EACH);
    for (id, server) in ["a", "b", "c", "d", "e"].iter().zip(&servers) {
        assert_eq!(
            total.get(*id).copied().unwrap_or(0),
            server.requests(),
            "{id}"
        );
    }
    let mut keys: Vec<_> = balance.endpoints().into_iter().map(|(k, _)| k).collect();
    keys.sort();
    assert_eq!(keys, ["a", "b", "c", "d"]);
}
