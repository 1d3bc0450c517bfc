//! Bad discovery input never panics or hangs: duplicate and unknown keys,
//! streams that fail, fail forever, or end.

mod support;

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use tower::discover::Change;
use tower_lb::discover::{self, StaticList};
use tower_lb::endpoint::Weighted;
use tower_lb::pick::RoundRobin;
use tower_lb::{Balance, BoxError};

use support::*;

#[tokio::test]
async fn a_key_listed_twice_keeps_the_second() {
    let servers = backends(&["first", "second"]).await;
    let list = StaticList::new([("k", servers[0].endpoint()), ("k", servers[1].endpoint())]);
    let mut balance = Balance::new(list, RoundRobin::new());
    within("discovery", balance.wait_for(|keys| keys == ["k"])).await;
    assert_eq!(balance.endpoints(), [("k", 1)]);
    let answers = within("requests", tally(&mut balance, 50, |_| get("/"))).await;
    assert_eq!(answers, counts(&[("second", 50)]));
    assert_eq!(served(&servers), [0, 50]);
}

#[tokio::test]
async fn removing_an_unknown_key_changes_nothing() {
    let servers = backends(&["a", "b", "m"]).await;
    let (endpoints, discover) = discover::channel();
    endpoints.insert("a", servers[0].endpoint()).unwrap();
    endpoints.insert("b", servers[1].endpoint()).unwrap();
    endpoints.insert("m", servers[2].endpoint()).unwrap();
    let mut balance = Balance::new(discover, RoundRobin::new());
    within("discovery", balance.wait_for(|keys| keys.len() == 3)).await;

    endpoints.remove("nobody").unwrap();
    endpoints.remove("nobody").unwrap();
    // Applied in order: once "m" is gone, the unknown removes were seen.
    endpoints.remove("m").unwrap();
    within("m removed", balance.wait_for(|keys| keys.len() == 2)).await;
    let mut keys: Vec<_> = balance.endpoints();
    keys.sort();
    assert_eq!(keys, [("a", 1), ("b", 1)]);

    let answers = within("requests", tally(&mut balance, 100, |_| get("/"))).await;
    assert_eq!(answers, counts(&[("a", 50), ("b", 50)]));

    // The worker is still there to take the next change.
    endpoints.insert("m", servers[2].endpoint()).unwrap();
    within("m back", balance.wait_for(|keys| keys.len() == 3)).await;
}

#[tokio::test]
async fn discovery_errors_and_end_keep_the_set() {
    let servers = backends(&["a", "b", "c"]).await;
    let (script, scripted, mut probe) = scripted();
    script.fail("not yet");
    script.insert("a", servers[0].endpoint(), 1);
    script.insert("b", servers[1].endpoint(), 1);
    let mut balance = Balance::new(scripted, RoundRobin::new());
    within("discovery", balance.wait_for(|keys| keys.len() == 2)).await;

    script.fail("registry unreachable");
    script.fail("still unreachable");
    script.insert("c", servers[2].endpoint(), 1);
    within("after errors", balance.wait_for(|keys| keys.len() == 3)).await;
    let answers = within("requests", tally(&mut balance, 300, |_| get("/"))).await;
    assert_eq!(answers, counts(&[("a", 100), ("b", 100), ("c", 100)]));

    drop(script);
    within("stream end", probe.ended()).await;
    assert!(!probe.seen().dropped, "the worker outlives its stream");
    assert_eq!(balance.len(), 3);
    let answers = within("after end", tally(&mut balance, 300, |_| get("/"))).await;
    assert_eq!(answers, counts(&[("a", 100), ("b", 100), ("c", 100)]));
    assert_eq!(served(&servers), [200, 200, 200]);
}

/// Yields its inserts, then an error on every poll, never pending.
struct FailsForever {
    inserts: VecDeque<(&'static str, Endpoint)>,
}

impl Stream for FailsForever {
    type Item = Result<Change<&'static str, Weighted<Endpoint>>, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(Some(match self.inserts.pop_front() {
            Some((key, ep)) => Ok(Change::Insert(key, Weighted::from(ep))),
            None => Err("down".into()),
        }))
    }
}

#[tokio::test]
async fn a_stream_failing_on_every_poll_does_not_starve_requests() {
    let servers = backends(&["a", "b"]).await;
    let stream = FailsForever {
        inserts: [("a", servers[0].endpoint()), ("b", servers[1].endpoint())].into(),
    };
    let (mut balance, worker) = Balance::pair(stream, RoundRobin::new());
    // On this test's single thread: the worker must yield for us to run.
    let worker = tokio::spawn(worker);
    within("discovery", balance.wait_for(|keys| keys.len() == 2)).await;
    // Few requests: each waits behind a full batch of errors (slow in a
    // debug build), and it is the progress that matters.
    let answers = within("requests", tally(&mut balance, 20, |_| get("/"))).await;
    assert_eq!(answers, counts(&[("a", 10), ("b", 10)]));
    drop(balance);
    within("worker stops", worker).await.unwrap();
}

/// Yields its inserts and ends; panics if polled after its end, as a
/// stream is allowed to.
struct EndsOnce {
    inserts: VecDeque<(&'static str, Endpoint)>,
    ended: bool,
}

impl Stream for EndsOnce {
    type Item = Result<Change<&'static str, Weighted<Endpoint>>, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        assert!(!self.ended, "polled after its end");
        let next = self.inserts.pop_front();
        self.ended = next.is_none();
        Poll::Ready(next.map(|(key, ep)| Ok(Change::Insert(key, Weighted::from(ep)))))
    }
}

#[tokio::test]
async fn an_ended_stream_is_not_polled_again() {
    let servers = backends(&["a", "b"]).await;
    let stream = EndsOnce {
        inserts: [("a", servers[0].endpoint()), ("b", servers[1].endpoint())].into(),
        ended: false,
    };
    let (mut balance, worker) = Balance::pair(stream, RoundRobin::new());
    let worker = tokio::spawn(worker);
    within("discovery", balance.wait_for(|keys| keys.len() == 2)).await;
    let answers = within("requests", tally(&mut balance, 100, |_| get("/"))).await;
    assert_eq!(answers, counts(&[("a", 50), ("b", 50)]));
    drop(balance);
    within("worker stops", worker)
        .await
        .expect("the worker did not panic");
}
