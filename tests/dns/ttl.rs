//! Re-resolution follows the TTL within the configured bounds.

use std::time::{Duration, Instant};

use hickory_server::proto::rr::RecordType;
use tower_lb::discover::DnsDiscover;
use tower_lb::pick::RoundRobin;
use tower_lb::Balance;

use super::server::{a, sa, TestDns};
use super::support::within;
use super::{counting, Made};

/// Gaps between consecutive instants.
fn gaps(times: &[Instant]) -> Vec<Duration> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

#[tokio::test]
async fn ttl_zero_is_raised_to_the_floor() {
    let dns = TestDns::start().await;
    let owner = "zero.lb.test.";
    dns.set(owner, 0, [a([127, 0, 0, 1])]).await;
    let floor = Duration::from_millis(150);
    let discover = DnsDiscover::a_aaaa(owner, 80, counting(&Made::default()))
        .name_servers([dns.addr])
        .min_ttl(floor);
    let _balance = Balance::new(discover, RoundRobin::new());
    let queries = dns.wait_queries(owner, RecordType::A, 4).await;
    for gap in gaps(&queries) {
        assert!(gap >= floor, "re-resolved after {gap:?}, floor {floor:?}");
    }
}

#[tokio::test]
async fn the_ceiling_re_resolves_long_ttls() {
    let dns = TestDns::start().await;
    let owner = "long.lb.test.";
    dns.set(owner, 3600, [a([127, 0, 0, 1])]).await;
    let ceiling = Duration::from_millis(100);
    let discover = DnsDiscover::a_aaaa(owner, 80, counting(&Made::default()))
        .name_servers([dns.addr])
        .min_ttl(Duration::from_millis(10))
        .max_ttl(ceiling);
    let balance = Balance::new(discover, RoundRobin::new());
    within("one", balance.wait_for(|keys| keys.len() == 1)).await;

    // Without the ceiling the next query would be an hour away.
    dns.set(owner, 3600, [a([127, 0, 0, 2])]).await;
    within(
        "the change",
        balance.wait_for(|keys| keys == [sa([127, 0, 0, 2], 80)]),
    )
    .await;
    let queries = dns.wait_queries(owner, RecordType::A, 3).await;
    for gap in gaps(&queries) {
        assert!(
            gap >= ceiling,
            "re-resolved after {gap:?}, ceiling {ceiling:?}"
        );
    }
}

#[tokio::test]
async fn the_ttl_sets_the_pace_between_the_bounds() {
    let dns = TestDns::start().await;
    let owner = "one.lb.test.";
    dns.set(owner, 1, [a([127, 0, 0, 1])]).await;
    let discover = DnsDiscover::a_aaaa(owner, 80, counting(&Made::default()))
        .name_servers([dns.addr])
        .min_ttl(Duration::from_millis(10))
        .max_ttl(Duration::from_secs(3600));
    let _balance = Balance::new(discover, RoundRobin::new());
    let queries = dns.wait_queries(owner, RecordType::A, 2).await;
    assert!(
        gaps(&queries)[0] >= Duration::from_secs(1),
        "{:?}",
        gaps(&queries)
    );
}
