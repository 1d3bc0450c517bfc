//! `DnsDiscover` against a real DNS server on 127.0.0.1: an in-process
//! authoritative server whose zone the tests edit between resolutions.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hickory_server::net::runtime::{Time, TokioRuntimeProvider};
use hickory_server::proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType, RrKey};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
use hickory_server::Server;
use tower::discover::Change;
use tower_lb::discover::{DnsDiscover, OnEmpty, Weight};
use tower_lb::pick::RoundRobin;
use tower_lb::Balance;

/// The zones served: the server adds the addresses of SRV targets in the
/// first to its answers; those in the second must be looked up.
const ZONES: [&str; 2] = ["lb.test.", "other.test."];

/// A query the server received.
#[derive(Clone, Debug)]
struct Seen {
    at: Instant,
    name: String,
    kind: RecordType,
}

/// Answers from the catalog, records each query, and stops answering (so
/// that clients time out) the names that end with `down`, when set (`""`
/// for every name).
struct Recorder {
    catalog: Catalog,
    seen: Arc<Mutex<Vec<Seen>>>,
    down: Down,
}

type Down = Arc<Mutex<Option<&'static str>>>;

#[async_trait::async_trait]
impl RequestHandler for Recorder {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        let mut unanswered = false;
        if let Ok(info) = request.request_info() {
            let name = info.query.name().to_string();
            unanswered = self
                .down
                .lock()
                .unwrap()
                .is_some_and(|suffix| name.ends_with(suffix));
            self.seen.lock().unwrap().push(Seen {
                at: Instant::now(),
                name,
                kind: info.query.query_type(),
            });
        }
        if unanswered {
            return std::future::pending().await;
        }
        self.catalog
            .handle_request::<R, T>(request, response_handle)
            .await
    }
}

/// The test's DNS server: the [`ZONES`], on a UDP port of 127.0.0.1.
struct TestDns {
    addr: SocketAddr,
    zones: Vec<(Name, Arc<InMemoryZoneHandler>)>,
    seen: Arc<Mutex<Vec<Seen>>>,
    down: Down,
    _server: Server<Recorder>,
}

fn name(text: &str) -> Name {
    Name::from_utf8(text).unwrap()
}

impl TestDns {
    async fn start() -> Self {
        let mut catalog = Catalog::new();
        let mut zones = Vec::new();
        for origin in ZONES.map(name) {
            let mut zone: InMemoryZoneHandler<TokioRuntimeProvider> =
                InMemoryZoneHandler::empty(origin.clone(), ZoneType::Primary, AxfrPolicy::Deny);
            let ns = name("ns").append_domain(&origin).unwrap();
            let admin = name("admin").append_domain(&origin).unwrap();
            let soa = SOA::new(ns, admin, 1, 60, 60, 60, 0);
            assert!(zone.upsert_mut(Record::from_rdata(origin.clone(), 0, RData::SOA(soa)), 1));
            let zone = Arc::new(zone);
            catalog.upsert(
                LowerName::new(&origin),
                vec![Arc::clone(&zone) as Arc<dyn ZoneHandler>],
            );
            zones.push((origin, zone));
        }
        let seen = Arc::default();
        let down = Down::default();
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let mut server = Server::new(Recorder {
            catalog,
            seen: Arc::clone(&seen),
            down: Arc::clone(&down),
        });
        server.register_socket(socket);
        Self {
            addr,
            zones,
            seen,
            down,
            _server: server,
        }
    }

    /// Replaces the records of one name and type.
    async fn set(&self, owner: &str, ttl: u32, data: impl IntoIterator<Item = RData>) {
        let owner = name(owner);
        let data: Vec<RData> = data.into_iter().collect();
        let kind = data.first().map_or(RecordType::A, RData::record_type);
        self.clear(&owner, kind).await;
        for rdata in data {
            let record = Record::from_rdata(owner.clone(), ttl, rdata);
            assert!(self.zone(&owner).upsert(record, 1).await);
        }
    }

    fn zone(&self, owner: &Name) -> &InMemoryZoneHandler {
        let (_, zone) = self
            .zones
            .iter()
            .find(|(origin, _)| origin.zone_of(owner))
            .expect("a name in a served zone");
        zone
    }

    async fn clear(&self, owner: &Name, kind: RecordType) {
        self.zone(owner)
            .records_mut()
            .await
            .remove(&RrKey::new(LowerName::new(owner), kind));
    }

    /// When each query for `owner` and `kind` arrived.
    fn queries(&self, owner: &str, kind: RecordType) -> Vec<Instant> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|seen| seen.kind == kind && seen.name.eq_ignore_ascii_case(owner))
            .map(|seen| seen.at)
            .collect()
    }

    /// Waits until the server has received `n` queries for `owner`/`kind`.
    async fn wait_queries(&self, owner: &str, kind: RecordType, n: usize) -> Vec<Instant> {
        bounded("queries", async {
            loop {
                let queries = self.queries(owner, kind);
                if queries.len() >= n {
                    return queries;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
    }
}

fn a(ip: [u8; 4]) -> RData {
    RData::A(A::from(std::net::Ipv4Addr::from(ip)))
}

fn srv(priority: u16, weight: u16, port: u16, target: &str) -> RData {
    RData::SRV(SRV::new(priority, weight, port, name(target)))
}

fn sa(ip: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

/// Bounds a wait that should end quickly, so a bug fails the test instead of
/// hanging it.
async fn bounded<F: std::future::Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Endpoints that answer their address; counts how often each is made.
type Made = Arc<Mutex<HashMap<SocketAddr, usize>>>;

#[derive(Clone, Debug)]
struct Answer(SocketAddr);

impl tower::Service<()> for Answer {
    type Response = SocketAddr;
    type Error = Infallible;
    type Future = std::future::Ready<Result<SocketAddr, Infallible>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: ()) -> Self::Future {
        std::future::ready(Ok(self.0))
    }
}

fn counting(made: &Made) -> impl FnMut(SocketAddr) -> Answer + Send + 'static {
    let made = Arc::clone(made);
    move |addr| {
        *made.lock().unwrap().entry(addr).or_default() += 1;
        Answer(addr)
    }
}

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
    bounded("two", balance.wait_for(|keys| keys.len() == 2)).await;

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
    bounded(
        "the new addresses",
        balance.wait_for(|keys| keys.len() == 4 && keys.contains(&v6)),
    )
    .await;

    dns.set("api.lb.test.", 0, [a([127, 0, 0, 2]), a([127, 0, 0, 3])])
        .await;
    bounded(
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
    bounded("the first group", balance.wait_for(|keys| keys.len() == 2)).await;
    assert_eq!(
        sorted(balance.endpoints()),
        [(sa([127, 0, 0, 1], 9001), 5), (sa([127, 0, 0, 2], 9002), 1)],
        "priority 10 only; SRV weight 0 counts as 1; target `.` left out"
    );

    // The first group gone from DNS: the fallback group takes over.
    dns.set(service, 0, [srv(20, 10, 9003, "c.lb.test.")]).await;
    bounded(
        "the fallback",
        balance.wait_for(|keys| keys == [sa([127, 0, 0, 3], 9003)]),
    )
    .await;
    assert_eq!(balance.endpoints(), [(sa([127, 0, 0, 3], 9003), 10)]);

    // A new weight replaces the endpoint.
    dns.set(service, 0, [srv(20, 7, 9003, "c.lb.test.")]).await;
    bounded(
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
        match bounded("an insert", discover.next()).await {
            Some(Ok(Change::Insert(addr, _))) => inserted.push(addr),
            other => panic!("expected an insert, got {:?}", other.map(|c| c.map(|_| ()))),
        }
    }
    assert_eq!(
        sorted(inserted),
        [sa([127, 0, 0, 1], 80), sa([127, 0, 0, 2], 80)]
    );

    *dns.down.lock().unwrap() = Some("");
    let error = match bounded("the failure", discover.next()).await {
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
        match bounded("a change", discover.next()).await {
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
    bounded("one", balance.wait_for(|keys| keys.len() == 1)).await;

    dns.clear(&name(owner), RecordType::A).await;
    bounded("empty", balance.wait_for(|keys| keys.is_empty())).await;

    dns.set(owner, 0, [a([127, 0, 0, 9])]).await;
    bounded(
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
    bounded("two", balance.wait_for(|keys| keys.len() == 2)).await;

    dns.clear(&name(owner), RecordType::A).await;
    // A query from the second resolution after the edit means the first
    // one's answer has been applied and published.
    let before = dns.queries(owner, RecordType::A).len();
    dns.wait_queries(owner, RecordType::A, before + 2).await;
    assert_eq!(balance.len(), 2, "kept through the empty answers");

    dns.set(owner, 0, [a([127, 0, 0, 5])]).await;
    bounded(
        "the new set",
        balance.wait_for(|keys| keys == [sa([127, 0, 0, 5], 80)]),
    )
    .await;
}

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
    bounded("one", balance.wait_for(|keys| keys.len() == 1)).await;

    // Without the ceiling the next query would be an hour away.
    dns.set(owner, 3600, [a([127, 0, 0, 2])]).await;
    bounded(
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
        match bounded("an insert", discover.next()).await {
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
    match bounded("the failure", discover.next()).await {
        Some(Err(error)) => assert!(error.to_string().contains(service), "{error}"),
        other => panic!("expected an error, got {:?}", other.map(|c| c.map(|_| ()))),
    }

    *dns.down.lock().unwrap() = None;
    match bounded("the removal", discover.next()).await {
        Some(Ok(Change::Remove(addr))) => assert_eq!(addr, sa([127, 0, 0, 1], 7001)),
        other => panic!("expected a removal, got {:?}", other.map(|c| c.map(|_| ()))),
    }
}
