//! `discover::kube` against a Kubernetes API server on 127.0.0.1 that
//! speaks the EndpointSlice list and watch protocol, driven by the real
//! kube client: slices merged by name, readiness, draining, zones, resume
//! after a watch ends, relist on 410 Gone, the last set kept while the
//! server is down, and churn under load.

mod api;
#[path = "../churn_support/mod.rs"]
mod churn_support;
#[path = "../support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tower::discover::Change;
use tower_lb::discover::kube::{KubeDiscover, KubeError};
use tower_lb::endpoint::{Endpoint, Weighted};
use tower_lb::pick::RoundRobin;
use tower_lb::Balance;

use api::{slice, Ep, FakeApi};
use churn_support::{Harness, Op};

type Source = KubeDiscover<SocketAddr, fn(SocketAddr) -> SocketAddr>;

fn source(api: &FakeApi) -> Source {
    KubeDiscover::new(
        api.client(),
        "default",
        "web",
        "http",
        (|addr| addr) as fn(_) -> _,
    )
    .max_backoff(Duration::from_millis(50))
}

/// One change as text: `+10.0.0.1:80@1 zone/node#service` or `-10.0.0.1:80`.
fn show(change: Change<SocketAddr, Weighted<SocketAddr>>) -> String {
    match change {
        Change::Insert(addr, svc) => format!(
            "+{addr}@{} {}/{}#{}",
            svc.weight(),
            svc.zone().unwrap_or("-"),
            svc.node().unwrap_or("-"),
            svc.get_ref()
        ),
        Change::Remove(addr) => format!("-{addr}"),
    }
}

/// A source polled on a task of its own (so that its watch runs while the
/// test does other things), its items forwarded.
struct Feed(mpsc::UnboundedReceiver<Result<String, KubeError>>);

impl Feed {
    fn new(mut source: Source) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(item) = source.next().await {
                if tx.send(item.map(show)).is_err() {
                    break;
                }
            }
        });
        Self(rx)
    }

    async fn next(&mut self) -> Option<Result<String, KubeError>> {
        self.0.recv().await
    }
}

/// The next `n` changes; errors fail the test.
async fn changes(source: &mut Feed, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < n {
        match support::within("a change", source.next()).await {
            Some(Ok(change)) => out.push(change),
            Some(Err(error)) => panic!("unexpected error: {error}"),
            None => panic!("the stream ended"),
        }
    }
    out
}

/// The next change, skipping errors, which are returned beside it.
async fn change_after_errors(source: &mut Feed) -> (String, Vec<KubeError>) {
    let mut errors = Vec::new();
    loop {
        match support::within("a change", source.next()).await {
            Some(Ok(change)) => return (change, errors),
            Some(Err(error)) => errors.push(error),
            None => panic!("the stream ended"),
        }
    }
}

#[tokio::test]
async fn follows_slices_readiness_draining_and_zones() {
    let api = FakeApi::start().await;
    api.apply(slice(
        "web-a",
        "web",
        8080,
        &[
            Ep::ready("10.0.0.1").zone("zone-a", "node-1"),
            Ep::not_ready("10.0.0.2"),
        ],
    ));
    api.apply(slice(
        "web-b",
        "web",
        8080,
        &[Ep::ready("10.0.0.3").zone("zone-b", "node-2")],
    ));
    // Another Service's slice is not ours.
    api.apply(slice("api-a", "api", 8080, &[Ep::ready("10.0.9.9")]));
    let mut source = Feed::new(source(&api));

    assert_eq!(
        changes(&mut source, 2).await,
        [
            "+10.0.0.1:8080@1 zone-a/node-1#10.0.0.1:8080",
            "+10.0.0.3:8080@1 zone-b/node-2#10.0.0.3:8080",
        ]
    );
    // 10.0.0.2 becomes ready.
    api.apply(slice(
        "web-a",
        "web",
        8080,
        &[
            Ep::ready("10.0.0.1").zone("zone-a", "node-1"),
            Ep::ready("10.0.0.2"),
        ],
    ));
    assert_eq!(
        changes(&mut source, 1).await,
        ["+10.0.0.2:8080@1 -/-#10.0.0.2:8080"]
    );
    api.bookmark();
    // 10.0.0.1 terminates while still serving: it drains (weight 0).
    api.apply(slice(
        "web-a",
        "web",
        8080,
        &[
            Ep::draining("10.0.0.1").zone("zone-a", "node-1"),
            Ep::ready("10.0.0.2"),
        ],
    ));
    assert_eq!(
        changes(&mut source, 1).await,
        ["+10.0.0.1:8080@0 zone-a/node-1#10.0.0.1:8080"]
    );
    // Then it is gone from the slice; and slice web-b is deleted.
    api.apply(slice("web-a", "web", 8080, &[Ep::ready("10.0.0.2")]));
    assert_eq!(changes(&mut source, 1).await, ["-10.0.0.1:8080"]);
    api.delete("web-b");
    assert_eq!(changes(&mut source, 1).await, ["-10.0.0.3:8080"]);
    // An address moving between slices (listed by both for a while) is
    // one endpoint: no change while both list it, none when one stops.
    api.apply(slice(
        "web-c",
        "web",
        8080,
        &[Ep::ready("10.0.0.2"), Ep::ready("10.0.0.4")],
    ));
    assert_eq!(
        changes(&mut source, 1).await,
        ["+10.0.0.4:8080@1 -/-#10.0.0.4:8080"]
    );
    api.apply(slice("web-a", "web", 8080, &[]));
    // A slice with garbage addresses and an unknown port lists what it can.
    api.apply(slice(
        "web-d",
        "web",
        8080,
        &[Ep::ready("not-an-ip"), Ep::ready("10.0.0.5")],
    ));
    assert_eq!(
        changes(&mut source, 1).await,
        ["+10.0.0.5:8080@1 -/-#10.0.0.5:8080"]
    );
    assert_eq!(api.lists(), 1, "one list, then one watch");
}

#[tokio::test]
async fn resumes_a_watch_that_ends_and_relists_on_gone() {
    let api = FakeApi::start().await;
    api.apply(slice("web-a", "web", 80, &[Ep::ready("10.0.0.1")]));
    api.apply(slice("web-b", "web", 80, &[Ep::ready("10.0.0.2")]));
    let mut source = Feed::new(source(&api));
    assert_eq!(changes(&mut source, 2).await.len(), 2);
    support::within("the first watch", api.wait_watches(1)).await;

    // A watch that ends is resumed from the last version: no list.
    api.end_watches();
    api.apply(slice("web-c", "web", 80, &[Ep::ready("10.0.0.3")]));
    let (change, _) = change_after_errors(&mut source).await;
    assert_eq!(change, "+10.0.0.3:80@1 -/-#10.0.0.3:80");
    assert_eq!(api.lists(), 1);
    let watches = api.watches();
    assert!(
        watches.len() >= 2 && watches[1] == watches[0],
        "resumed from the same version: {watches:?}"
    );

    // While partitioned, web-a goes, web-c changes and web-d comes; the
    // history is compacted, so the watcher's version is gone: 410, a new
    // list, and only the differences come out.
    support::within("the resumed watch", api.wait_watches(2)).await;
    api.partition();
    api.delete("web-a");
    api.apply(slice("web-c", "web", 80, &[Ep::draining("10.0.0.3")]));
    api.apply(slice("web-d", "web", 80, &[Ep::ready("10.0.0.4")]));
    api.heal_with_compaction();
    let (first, errors) = change_after_errors(&mut source).await;
    assert!(
        errors.iter().any(KubeError::is_gone),
        "the watcher saw 410 Gone: {errors:?}"
    );
    let mut after = vec![first];
    after.extend(changes(&mut source, 2).await);
    assert_eq!(
        after,
        [
            "+10.0.0.3:80@0 -/-#10.0.0.3:80",
            "+10.0.0.4:80@1 -/-#10.0.0.4:80",
            "-10.0.0.1:80"
        ]
    );
    assert_eq!(api.lists(), 2, "one relist after 410");
    assert_eq!(api.gone(), 1);
}

#[tokio::test]
async fn keeps_the_last_set_while_the_server_is_down() {
    let api = FakeApi::start().await;
    api.apply(slice(
        "web-a",
        "web",
        80,
        &[Ep::ready("10.0.0.1"), Ep::ready("10.0.0.2")],
    ));
    let balance = Balance::new(source(&api), RoundRobin::new());
    support::within("two endpoints", balance.wait_for(|keys| keys.len() == 2)).await;

    api.set_down(true);
    // The watcher fails again and again (503); wait for several failed
    // watches, then check the set.
    support::within("retries against a down server", api.wait_refused(4)).await;
    assert_eq!(balance.len(), 2, "the last good set stays");

    api.set_down(false);
    api.apply(slice(
        "web-a",
        "web",
        80,
        &[Ep::ready("10.0.0.2"), Ep::ready("10.0.0.3")],
    ));
    support::within(
        "the change after the outage",
        balance.wait_for(|keys| {
            let mut keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
            keys.sort();
            keys == ["10.0.0.2:80", "10.0.0.3:80"]
        }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_under_load() {
    let harness = Harness::start(8).await;
    let api = FakeApi::start().await;
    // One slice a backend: they all listen on 127.0.0.1, each on its port.
    let discover = KubeDiscover::new(api.client(), "default", "web", "http", harness.make())
        .max_backoff(Duration::from_millis(50));
    let balance = Balance::new(discover, RoundRobin::new());
    let ports: Vec<u16> = (0..8).map(|i| harness.addr(i).port()).collect();
    let report = harness
        .churn(&balance, 1000, 11, |op| {
            let (i, ep) = match op {
                Op::Add(i) => (i, Some(Ep::ready("127.0.0.1"))),
                Op::Drain(i) => (i, Some(Ep::draining("127.0.0.1"))),
                Op::Remove(i) => (i, None),
            };
            match ep {
                Some(ep) => api.apply(slice(&format!("web-{i}"), "web", ports[i], &[ep])),
                None => api.delete(&format!("web-{i}")),
            }
            std::future::ready(())
        })
        .await;
    churn_support::check("kube", &report);
}
