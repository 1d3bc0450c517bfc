//! The tests' DNS server: an in-process authoritative server on a UDP port
//! of 127.0.0.1, whose zones the tests edit between resolutions.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

use hickory_server::net::runtime::{Time, TokioRuntimeProvider};
use hickory_server::proto::rr::rdata::{A, SOA, SRV};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType, RrKey};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
use hickory_server::Server;

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
    /// Woken after each query is recorded.
    arrived: Arc<Notify>,
    down: Down,
}

pub type Down = Arc<Mutex<Option<&'static str>>>;

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
            self.arrived.notify_waiters();
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
pub struct TestDns {
    pub addr: SocketAddr,
    zones: Vec<(Name, Arc<InMemoryZoneHandler>)>,
    seen: Arc<Mutex<Vec<Seen>>>,
    arrived: Arc<Notify>,
    pub down: Down,
    _server: Server<Recorder>,
}

pub fn name(text: &str) -> Name {
    Name::from_utf8(text).unwrap()
}

impl TestDns {
    pub async fn start() -> Self {
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
        let arrived = Arc::new(Notify::new());
        let down = Down::default();
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let mut server = Server::new(Recorder {
            catalog,
            seen: Arc::clone(&seen),
            arrived: Arc::clone(&arrived),
            down: Arc::clone(&down),
        });
        server.register_socket(socket);
        Self {
            addr,
            zones,
            seen,
            arrived,
            down,
            _server: server,
        }
    }

    /// Replaces the records of one name and type.
    pub async fn set(&self, owner: &str, ttl: u32, data: impl IntoIterator<Item = RData>) {
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

    pub async fn clear(&self, owner: &Name, kind: RecordType) {
        self.zone(owner)
            .records_mut()
            .await
            .remove(&RrKey::new(LowerName::new(owner), kind));
    }

    /// When each query for `owner` and `kind` arrived.
    pub fn queries(&self, owner: &str, kind: RecordType) -> Vec<Instant> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|seen| seen.kind == kind && seen.name.eq_ignore_ascii_case(owner))
            .map(|seen| seen.at)
            .collect()
    }

    /// Waits until the server has received `n` queries for `owner`/`kind`.
    pub async fn wait_queries(&self, owner: &str, kind: RecordType, n: usize) -> Vec<Instant> {
        crate::support::within("queries", async {
            loop {
                let arrived = self.arrived.notified();
                let mut arrived = std::pin::pin!(arrived);
                // Registered before the check, so a query in between is not missed.
                arrived.as_mut().enable();
                let queries = self.queries(owner, kind);
                if queries.len() >= n {
                    return queries;
                }
                arrived.await;
            }
        })
        .await
    }
}

pub fn a(ip: [u8; 4]) -> RData {
    RData::A(A::from(std::net::Ipv4Addr::from(ip)))
}

pub fn srv(priority: u16, weight: u16, port: u16, target: &str) -> RData {
    RData::SRV(SRV::new(priority, weight, port, name(target)))
}

pub fn sa(ip: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}
