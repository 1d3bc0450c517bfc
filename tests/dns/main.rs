//! `DnsDiscover` against a real DNS server on 127.0.0.1 (see `server.rs`).

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use hickory_server::proto::rr::rdata::AAAA;
use hickory_server::proto::rr::{RData, RecordType};
use tower::discover::Change;
use tower_lb::discover::{DnsDiscover, OnEmpty};
use tower_lb::endpoint::Endpoint;
use tower_lb::pick::RoundRobin;
use tower_lb::Balance;

mod server;
#[path = "../support/mod.rs"]
mod support;
mod ttl;

use self::server::{a, name, sa, srv, TestDns};
pub(crate) use self::support::answer::{counting, Made};
use self::support::within;

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

#[tokio::test]
async fn a_and_aaaa_records_come_and_go() {
    let dns = TestDns::start().await;
    dns.set("api.lb.test.", 0, [a([127, 0, 0, 1]), a([127, 0, 0, 2])])
        .await;
    let made = Made::default();
    let discover = DnsDiscover::a_aaaa("api.lb.test.", 8080, counting(&made))
        .name_servers([dns.addr])
        .min_ttl(Duration::from_millis(20));
    let balance = Balance::new(discover, RoundRobin::new());
    within("two", balance.wait_for(|keys| keys.len() == 2)).await;

    dns.set(
        "api.lb.test.",
        0,
        [a([127, 0, 0, 1]), a([127, 0, 0, 2]), a([127, 0, 0, 3])],
    )
    .await;
    dns.set(
        "api.lb.test.",
        0,
        [RData::AAAA(AAAA::from(std::net::Ipv6Addr::LOCALHOST))],
    )
    .await;
    let v6: SocketAddr = "[::1]:8080".parse().unwrap();
    within(
        "the new addresses",
        balance.wait_for(|keys| keys.len() == 4 && keys.contains(&v6)),
    )
    .await;

    dns.set("api.lb.test.", 0, [a([127, 0, 0, 2]), a([127, 0, 0, 3])])
        .await;
    within(
        "the removal",
        balance.wait_for(|keys| !keys.contains(&sa([127, 0, 0, 1], 8080))),
    )
    .await;
    assert_eq!(
        sorted(balance.endpoints()),
        [
            (sa([127, 0, 0, 2], 8080), 1),
            (sa([127, 0, 0, 3], 8080), 1),
            (v6, 1)
        ]
    );
    let made = made.lock().unwrap();
    assert!(made.values().all(|&n| n == 1), "nothing rebuilt: {made:?}");
}

#[tokio::test]
async fn srv_weights_and_lowest_priority_group() {
    let dns = TestDns::start().await;
    for (host, ip) in [("a", 1), ("b", 2), ("c", 3)] {
        dns.set(&format!("{host}.lb.test."), 0, [a([127, 0, 0, ip])])
            .await;
    }
    let service = "_http._tcp.api.lb.test.";
    dns.set(
        service,
        0,
        [
            srv(10, 5, 9001, "a.lb.test."),
            srv(10, 0, 9002, "b.lb.test."),
            srv(20, 10, 9003, "c.lb.test."),
            srv(10, 3, 9009, "."),
        ],
    )
    .await;
    let made = Made::default();
    let discover = DnsDiscover::srv(service, counting(&made))
        .name_servers([dns.addr])
        .min_ttl(Duration::from_millis(20));
    let balance = Balance::new(discover, RoundRobin::new());
    within("the first group", balance.wait_for(|keys| keys.len() == 2)).await;
    assert_eq!(
        sorted(balance.endpoints()),
        [(sa([127, 0, 0, 1], 9001), 5), (sa([127, 0, 0, 2], 9002), 1)],
        "priority 10 only; SRV weight 0 counts as 1; target `.` left out"
    );

    // The first group gone from DNS: the fallback group takes over.
    dns.set(service, 0, [srv(20, 10, 9003, "c.lb.test.")]).await;
    within(
        "the fallback",
        balance.wait_for(|keys| keys == [sa([127, 0, 0, 3], 9003)]),
    )
    .await;
    assert_eq!(balance.endpoints(), [(sa([127, 0, 0, 3], 9003), 10)]);

    // A new weight replaces the endpoint.
    dns.set(service, 0, [srv(20, 7, 9003, "c.lb.test.")]).await;
    within(
        "the new weight",
        balance.wait_for(|_| balance.endpoints() == [(sa([127, 0, 0, 3], 9003), 7)]),
    )
    .await;
    assert_eq!(made.lock().unwrap()[&sa([127, 0, 0, 3], 9003)], 2);
}

#[tokio::test]
async fn server_down_keeps_the_last_set() {
    let dns = TestDns::start().await;
    let owner = "api.lb.test.";
    dns.set(owner, 0, [a([127, 0, 0, 1]), a([127, 0, 0, 2])])
        .await;
    let made = Made::default();
    let mut discover = DnsDiscover::a_aaaa(owner, 80, counting(&made))
        .name_servers([dns.addr])
        .min_ttl(Duration::from_millis(20))
        .timeout(Duration::from_millis(50));
    let mut inserted = Vec::new();
    for _ in 0..2 {
        match within("an insert", discover.next()).await {
            Some(Ok(Change::Insert(addr, _))) => inserted.push(addr),
            other => panic!("expected an insert, got {:?}", other.map(|c| c.map(|_| ()))),
        }
    }
    assert_eq!(
        sorted(inserted),
        [sa([127, 0, 0, 1], 80), sa([127, 0, 0, 2], 80)]
    );

    *dns.down.lock().unwrap() = Some("");
    let error = match within("the failure", discover.next()).await {
        Some(Err(error)) => error,
        other => panic!("expected an error, got {:?}", other.map(|c| c.map(|_| ()))),
    };
    assert!(!error.is_permanent());
    assert!(error.to_string().contains("api.lb.test."), "{error}");

    // More failed resolutions yield nothing: the same error is not repeated
    // and no endpoint is removed.
    let before = dns.queries(owner, RecordType::A).len();
    tokio::select! {
        item = discover.next() => panic!("nothing expected, got {:?}", item.map(|c| c.map(|_| ()))),
        _ = dns.wait_queries(owner, RecordType::A, before + 6) => {}
    }

    // Back, with one address changed: only the difference from the kept set.
    dns.set(owner, 0, [a([127, 0, 0, 2]), a([127, 0, 0, 3])])
        .await;
    *dns.down.lock().unwrap() = None;
    let mut changes = Vec::new();
    for _ in 0..2 {
        match within("a change", discover.next()).await {
            Some(Ok(Change::Insert(addr, svc))) => {
                changes.push(format!("+{addr}@{}", svc.weight()))
            }
            Some(Ok(Change::Remove(addr))) => changes.push(format!("-{addr}")),
            other => panic!("expected a change, got {:?}", other.map(|c| c.map(|_| ()))),
        }
    }
    assert_eq!(changes, ["-127.0.0.1:80", "+127.0.0.3:80@1"]);
    assert_eq!(made.lock().unwrap()[&sa([127, 0, 0, 2], 80)], 1);
}

#[tokio::test]
async fn nxdomain_clears_the_set_by_default() {
    let dns = TestDns::start().await;
    let owner = "gone.lb.test.";
    dns.set(owner, 0, [a([127, 0, 0, 1])]).await;
    let discover = DnsDiscover::a_aaaa(owner, 80, counting(&Made::default()))
        .name_servers([dns.addr])
        .min_ttl(Duration::from_millis(20));
    let balance = Balance::new(discover, RoundRobin::new());
    within("one", balance.wait_for(|keys| keys.len() == 1)).await;

    dns.clear(&name(owner), RecordType::A).await;
    within("empty", balance.wait_for(|keys| keys.is_empty())).await;

    dns.set(owner, 0, [a([127, 0, 0, 9])]).await;
    within(
        "back",
        balance.wait_for(|keys| keys == [sa([127, 0, 0, 9], 80)]),
    )
    .await;
}

#[tokio::test]
async fn keep_last_holds_the_set_through_empty_answers() {
    let dns = TestDns::start().await;
    let owner = "flaky.lb.test.";
    dns.set(owner, 0, [a([127, 0, 0, 1]), a([127, 0, 0, 2])])
        .await;
    let discover = DnsDiscover::a_aaaa(owner, 80, counting(&Made::default()))
        .name_servers([dns.addr])
        .min_ttl(Duration::from_millis(20))
        .on_empty(OnEmpty::KeepLast);
    let balance = Balance::new(discover, RoundRobin::new());
    within("two", balance.wait_for(|keys| keys.len() == 2)).await;

    dns.clear(&name(owner), RecordType::A).await;
    // A query from the second resolution after the edit means the first
    // one's answer has been applied and published.
    let before = dns.queries(owner, RecordType::A).len();
    dns.wait_queries(owner, RecordType::A, before + 2).await;
    assert_eq!(balance.len(), 2, "kept through the empty answers");

    dns.set(owner, 0, [a([127, 0, 0, 5])]).await;
    within(
        "the new set",
        balance.wait_for(|keys| keys == [sa([127, 0, 0, 5], 80)]),
    )
    .await;
}

#[tokio::test]
async fn a_setup_that_cannot_work_ends_the_stream() {
    let long_label = format!("{}.lb.test.", "x".repeat(64));
    let mut bad_name = DnsDiscover::a_aaaa(long_label, 80, counting(&Made::default()))
        .name_servers(["127.0.0.1:9".parse().unwrap()]);
    let error = bad_name.next().await.unwrap().expect_err("an error");
    assert!(error.is_permanent(), "{error}");
    assert!(bad_name.next().await.is_none());

    let mut empty = DnsDiscover::a_aaaa("", 80, counting(&Made::default()))
        .name_servers(["127.0.0.1:9".parse().unwrap()]);
    assert!(empty
        .next()
        .await
        .unwrap()
        .expect_err("an error")
        .is_permanent());
    assert!(empty.next().await.is_none());

    let mut no_servers = DnsDiscover::srv("_x._tcp.lb.test.", counting(&Made::default()))
        .name_servers(Vec::<SocketAddr>::new());
    let error = no_servers.next().await.unwrap().expect_err("an error");
    assert!(error.is_permanent());
    assert!(error.to_string().contains("no name servers"), "{error}");
    assert!(no_servers.next().await.is_none());
}

#[tokio::test]
async fn srv_targets_are_looked_up_and_their_failure_keeps_the_set() {
    let dns = TestDns::start().await;
    dns.set("d.other.test.", 0, [a([127, 0, 0, 4])]).await;
    dns.set("a.lb.test.", 0, [a([127, 0, 0, 1])]).await;
    let service = "_grpc._tcp.api.lb.test.";
    dns.set(
        service,
        0,
        [
            srv(0, 2, 7000, "d.other.test."),
            srv(0, 1, 7001, "a.lb.test."),
        ],
    )
    .await;
    let mut discover = DnsDiscover::srv(service, counting(&Made::default()))
        .name_servers([dns.addr])
        .min_ttl(Duration::from_millis(20))
        .timeout(Duration::from_millis(50));
    let mut found = Vec::new();
    for _ in 0..2 {
        match within("an insert", discover.next()).await {
            Some(Ok(Change::Insert(addr, svc))) => found.push((addr, svc.weight())),
            other => panic!("expected an insert, got {:?}", other.map(|c| c.map(|_| ()))),
        }
    }
    assert_eq!(
        sorted(found),
        [(sa([127, 0, 0, 1], 7001), 1), (sa([127, 0, 0, 4], 7000), 2)]
    );
    assert!(
        !dns.queries("d.other.test.", RecordType::A).is_empty(),
        "the target outside the zone was looked up"
    );

    // The SRV answer arrives, one target's lookup times out: a failure, not
    // a smaller set.
    *dns.down.lock().unwrap() = Some("other.test.");
    dns.set(service, 0, [srv(0, 2, 7000, "d.other.test.")])
        .await;
    match within("the failure", discover.next()).await {
        Some(Err(error)) => assert!(error.to_string().contains(service), "{error}"),
        other => panic!("expected an error, got {:?}", other.map(|c| c.map(|_| ()))),
    }

    *dns.down.lock().unwrap() = None;
    match within("the removal", discover.next()).await {
        Some(Ok(Change::Remove(addr))) => assert_eq!(addr, sa([127, 0, 0, 1], 7001)),
        other => panic!("expected a removal, got {:?}", other.map(|c| c.map(|_| ()))),
    }
}
