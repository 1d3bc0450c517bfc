//! `discover::etcd` against a real etcd on 127.0.0.1 (Debian's
//! `etcd-server`): values as addresses and JSON, draining, bad values,
//! resume after etcd restarts, the last set kept while it is down, server
//! registration under a lease, and churn under load. The tests set and
//! read keys through etcd's HTTP/JSON gateway (`server::Kv`), not through
//! the client under test.

#[path = "../churn_support/mod.rs"]
mod churn_support;
mod server;
#[path = "../support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tower::discover::Change;
use tower_lb::discover::etcd::{endpoint_value, EtcdDiscover, EtcdError, Registration};
use tower_lb::endpoint::{Endpoint, Weighted};
use tower_lb::pick::RoundRobin;
use tower_lb::Balance;

use churn_support::{Harness, Op};
use server::Etcd;

type Source = EtcdDiscover<SocketAddr, fn(SocketAddr) -> SocketAddr>;

fn source(etcd: &Etcd, prefix: &str) -> Source {
    EtcdDiscover::new(&[etcd.url()], prefix, (|addr| addr) as fn(_) -> _)
        .connect_timeout(Duration::from_millis(500))
        .max_backoff(Duration::from_millis(100))
}

fn show(change: Change<SocketAddr, Weighted<SocketAddr>>) -> String {
    match change {
        Change::Insert(addr, svc) => {
            format!("+{addr}@{} {}", svc.weight(), svc.zone().unwrap_or("-"))
        }
        Change::Remove(addr) => format!("-{addr}"),
    }
}

/// A source polled on its own task, its items forwarded.
struct Feed(mpsc::UnboundedReceiver<Result<String, EtcdError>>);

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

    /// The next `n` changes, with the errors met on the way.
    async fn changes(&mut self, n: usize) -> (Vec<String>, Vec<EtcdError>) {
        let mut changes = Vec::new();
        let mut errors = Vec::new();
        while changes.len() < n {
            match support::within("a change", self.0.recv()).await {
                Some(Ok(change)) => changes.push(change),
                Some(Err(error)) => errors.push(error),
                None => panic!("the stream ended"),
            }
        }
        (changes, errors)
    }

    /// The next `n` changes; errors fail the test.
    async fn clean(&mut self, n: usize) -> Vec<String> {
        let (changes, errors) = self.changes(n).await;
        assert!(errors.is_empty(), "{errors:?}");
        changes
    }
}

#[tokio::test]
async fn follows_a_prefix_with_weights_zones_and_bad_values() {
    let etcd = Etcd::start().await;
    let mut kv = etcd.client().await;
    kv.put("/svc/web/a", "10.0.0.1:80", None).await.unwrap();
    kv.put(
        "/svc/web/b",
        r#"{"addr":"10.0.0.2:80","weight":3,"zone":"z1"}"#,
        None,
    )
    .await
    .unwrap();
    kv.put("/svc/web/bad", "not an address", None)
        .await
        .unwrap();
    kv.put("/svc/other/x", "10.0.9.9:80", None).await.unwrap();
    let mut feed = Feed::new(source(&etcd, "/svc/web/"));
    assert_eq!(
        feed.clean(2).await,
        ["+10.0.0.1:80@1 -", "+10.0.0.2:80@3 z1"]
    );

    // A new key, a weight change, a drain, a delete.
    kv.put("/svc/web/c", "10.0.0.3:80 zone=z2", None)
        .await
        .unwrap();
    assert_eq!(feed.clean(1).await, ["+10.0.0.3:80@1 z2"]);
    kv.put(
        "/svc/web/b",
        r#"{"addr":"10.0.0.2:80","weight":0,"zone":"z1"}"#,
        None,
    )
    .await
    .unwrap();
    assert_eq!(feed.clean(1).await, ["+10.0.0.2:80@0 z1"]);
    kv.delete("/svc/web/b", None).await.unwrap();
    assert_eq!(feed.clean(1).await, ["-10.0.0.2:80"]);
    // A bad value for a known key keeps its last good value; the next good
    // one applies.
    kv.put("/svc/web/a", "{garbage", None).await.unwrap();
    kv.put("/svc/web/a", "10.0.0.1:80@5", None).await.unwrap();
    assert_eq!(feed.clean(1).await, ["+10.0.0.1:80@5 -"]);
    kv.delete_prefix("/svc/").await.unwrap();
    let mut gone = feed.clean(2).await;
    gone.sort();
    assert_eq!(gone, ["-10.0.0.1:80", "-10.0.0.3:80"]);
}

#[tokio::test]
async fn keeps_the_set_while_etcd_is_down() {
    let mut etcd = Etcd::start().await;
    let mut kv = etcd.client().await;
    kv.put("/svc/web/a", "10.0.0.1:80", None).await.unwrap();
    kv.put("/svc/web/b", "10.0.0.2:80", None).await.unwrap();
    let mut feed = Feed::new(source(&etcd, "/svc/web/"));
    assert_eq!(feed.clean(2).await.len(), 2);

    // etcd goes away: the source reports failure after failure and yields
    // no change, so the balancer keeps its set.
    etcd.kill();
    for _ in 0..3 {
        match support::within("an error", feed.0.recv()).await {
            Some(Err(error)) => println!("while down: {error}"),
            other => panic!(
                "expected an error, got {:?}",
                other.map(|r| r.map_err(|e| e.to_string()))
            ),
        }
    }

    etcd.restart().await;
    let mut kv = etcd.client().await;
    kv.put("/svc/web/c", "10.0.0.3:80", None).await.unwrap();
    kv.delete("/svc/web/a", None).await.unwrap();
    let (changes, _) = feed.changes(2).await;
    assert_eq!(changes, ["+10.0.0.3:80@1 -", "-10.0.0.1:80"]);
}

#[tokio::test]
async fn resumes_without_listing_again() {
    let mut etcd = Etcd::start().await;
    let mut kv = etcd.client().await;
    kv.put("/svc/web/a", "10.0.0.1:80", None).await.unwrap();
    let source = source(&etcd, "/svc/web/");
    let (tx, rx) = mpsc::unbounded_channel();
    let mut feed = Feed(rx);
    let counts = std::sync::Arc::new(std::sync::Mutex::new((0, 0)));
    let seen = std::sync::Arc::clone(&counts);
    tokio::spawn(async move {
        let mut source = source;
        while let Some(item) = source.next().await {
            *seen.lock().unwrap() = (source.lists(), source.watches());
            if tx.send(item.map(show)).is_err() {
                break;
            }
        }
    });
    assert_eq!(feed.clean(1).await, ["+10.0.0.1:80@1 -"]);
    // A change through the watch: the watch is up.
    kv.put("/svc/web/a", "10.0.0.1:80@2", None).await.unwrap();
    assert_eq!(feed.clean(1).await, ["+10.0.0.1:80@2 -"]);
    assert_eq!(*counts.lock().unwrap(), (1, 1));

    etcd.kill();
    etcd.restart().await;
    // Changes made after the restart arrive through a watch resumed from
    // the last revision: the prefix is listed once in all.
    let mut kv = etcd.client().await;
    kv.put("/svc/web/b", "10.0.0.2:80", None).await.unwrap();
    let (changes, errors) = feed.changes(1).await;
    assert_eq!(changes, ["+10.0.0.2:80@1 -"]);
    assert!(!errors.is_empty(), "the disconnect was seen");
    let (lists, watches) = *counts.lock().unwrap();
    assert_eq!(lists, 1, "no second list");
    assert!(watches >= 2, "a second watch: {watches}");
}

#[tokio::test]
async fn registrations_live_with_their_server() {
    let etcd = Etcd::start().await;
    let mut feed = Feed::new(source(&etcd, "/svc/api/"));
    let one: SocketAddr = "127.0.0.1:7001".parse().unwrap();
    let two: SocketAddr = "127.0.0.1:7002".parse().unwrap();
    let ttl = Duration::from_secs(1);
    let first = Registration::register(
        &[etcd.url()],
        format!("/svc/api/{one}"),
        endpoint_value(one, 2, Some("z1")),
        ttl,
    )
    .await
    .unwrap();
    assert_eq!(feed.clean(1).await, ["+127.0.0.1:7001@2 z1"]);
    let second = Registration::register(
        &[etcd.url()],
        format!("/svc/api/{two}"),
        two.to_string(),
        ttl,
    )
    .await
    .unwrap();
    assert_eq!(feed.clean(1).await, ["+127.0.0.1:7002@1 -"]);

    // The lease outlives its time to live while it is renewed.
    support::within("renewals beyond the ttl", async {
        while first.renewals() < 4 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let mut kv = etcd.client().await;
    let listed = kv.list_prefix("/svc/api/").await.unwrap();
    assert_eq!(listed.len(), 2, "both keys live on");

    // Stopping deletes the key at once; dropping does too.
    first.stop().await.unwrap();
    assert_eq!(feed.clean(1).await, ["-127.0.0.1:7001"]);
    drop(second);
    assert_eq!(feed.clean(1).await, ["-127.0.0.1:7002"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_under_load() {
    let harness = Harness::start(8).await;
    let etcd = Etcd::start().await;
    let kv = etcd.client().await;
    let discover = EtcdDiscover::new(&[etcd.url()], "/svc/churn/", harness.make())
        .max_backoff(Duration::from_millis(100));
    let balance = Balance::new(discover, RoundRobin::new());
    let addrs: Vec<SocketAddr> = (0..8).map(|i| harness.addr(i)).collect();
    let report = harness
        .churn(&balance, 1000, 13, |op| {
            let mut kv = kv.clone();
            let addrs = addrs.clone();
            async move {
                match op {
                    Op::Add(i) => kv
                        .put(
                            format!("/svc/churn/{i}"),
                            endpoint_value(addrs[i], 1, None),
                            None,
                        )
                        .await
                        .map(drop),
                    Op::Drain(i) => kv
                        .put(
                            format!("/svc/churn/{i}"),
                            endpoint_value(addrs[i], 0, None),
                            None,
                        )
                        .await
                        .map(drop),
                    Op::Remove(i) => kv.delete(format!("/svc/churn/{i}"), None).await.map(drop),
                }
                .unwrap();
            }
        })
        .await;
    churn_support::check("etcd", &report);
}
