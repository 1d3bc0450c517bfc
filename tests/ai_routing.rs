//! Routing on what model servers report: real axum "model servers" on
//! 127.0.0.1 whose queue, KV-cache use and adapters the tests set, read
//! through the Prometheus poller and ORCA load reports.
#![cfg(feature = "reports")]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use http::{Request, StatusCode};
use tower::{Layer, Service, ServiceExt};
use tower_lb::discover::{self, EndpointSender};
use tower_lb::endpoint::{ReportCell, Weighted};
use tower_lb::error::Saturated;
use tower_lb::load::InFlight;
use tower_lb::pick::{llm::Scored, Pick, ReportWeighted, ReportWeights};
use tower_lb::report::{Orca, OrcaLayer, PollerHandle, PrometheusPoller};
use tower_lb::{Balance, BoxError};

use support::model_server::{Load, ModelServer, Names};
use support::ReqBody;

type Ep = InFlight<Orca<support::Endpoint>>;

/// A balancer over `servers`, each endpoint reading ORCA reports from its
/// answers into a metrics record with `staleness`; the records come back
/// in order.
async fn fleet<P>(
    servers: &[ModelServer],
    picker: P,
    staleness: Duration,
) -> (
    Balance<String, Weighted<Ep>, P>,
    Vec<ReportCell>,
    EndpointSender<String, Ep>,
)
where
    P: Pick<Request<ReqBody>, Weighted<Ep>>,
{
    let (sender, discover) = discover::channel();
    let mut records = Vec::new();
    for server in servers {
        let metrics = ReportCell::with_staleness(staleness);
        let client = OrcaLayer::new(metrics.clone()).layer(support::Endpoint::new(server.addr()));
        let endpoint = Weighted::new(InFlight::new(client), 1).with_report(metrics.clone());
        sender
            .insert_endpoint(server.addr().to_string(), endpoint)
            .unwrap();
        records.push(metrics);
    }
    let balance = Balance::new(discover, picker);
    let n = servers.len();
    balance.wait_for(|keys| keys.len() == n).await;
    (balance, records, sender)
}

fn request(priority: i32) -> Request<ReqBody> {
    Request::post("/v1/completions")
        .header("x-model", "llama")
        .header("x-priority", priority.to_string())
        .body(ReqBody::default())
        .unwrap()
}

/// Sends one request of `priority` (bounded by `within`) and reads the
/// answer: the name of the server that answered.
async fn send<S>(balance: &mut S, priority: i32) -> Result<String, BoxError>
where
    S: Service<Request<ReqBody>, Error = BoxError>,
    S::Response: Into<Answer>,
{
    support::within("a request", async {
        let answer = balance.ready().await?.call(request(priority)).await?.into();
        let status = answer.status();
        let body = http_body_util::BodyExt::collect(answer.into_body())
            .await?
            .to_bytes();
        assert_eq!(status, StatusCode::OK);
        Ok(String::from_utf8(body.to_vec())?)
    })
    .await
}

/// The answer of an endpoint in these tests.
type Answer = http::Response<
    tower_lb::load::TrackedBody<
        tower_lb::report::OrcaBody<hyper::body::Incoming>,
        tower_lb::load::Handle,
    >,
>;

async fn tally<S>(balance: &mut S, n: usize) -> BTreeMap<String, usize>
where
    S: Service<Request<ReqBody>, Error = BoxError>,
    S::Response: Into<Answer>,
{
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        *seen.entry(send(balance, 0).await.unwrap()).or_insert(0) += 1;
    }
    seen
}

fn idle() -> Load {
    Load {
        max_adapters: 4,
        ..Load::default()
    }
}

#[tokio::test]
async fn a_full_kv_cache_is_avoided_from_the_first_poll_that_shows_it() {
    let servers = [
        ModelServer::start("a", "llama", Names::Vllm).await,
        ModelServer::start("b", "llama", Names::Sglang).await,
        ModelServer::start("c", "llama", Names::Vllm).await,
    ];
    for server in &servers {
        server.set(idle());
    }
    let (mut balance, records, _sender) =
        fleet(&servers, Scored::with_seed(1), Duration::from_secs(60)).await;
    // Reports come from the pollers only here.
    let poll = PrometheusPoller::new().interval(Duration::from_millis(20));
    let _pollers: Vec<PollerHandle> = servers
        .iter()
        .zip(&records)
        .map(|(server, metrics)| poll.spawn(server.base(), metrics.clone()))
        .collect();
    for server in &servers {
        server.wait_scrapes(2).await;
    }
    let before = tally(&mut balance, 30).await;
    assert_eq!(before.len(), 3, "idle servers share the load: {before:?}");

    // b (SGLang names) fills its KV cache. The page served after the change
    // is recorded before the next one is asked for.
    servers[1].update(|load| load.kv = 0.97);
    let seen = servers[1].scrapes();
    servers[1].wait_scrapes(seen + 2).await;
    assert_eq!(records[1].current().unwrap().kv_cache_use, 0.97);
    let served_b = servers[1].served();
    let after = tally(&mut balance, 60).await;
    assert_eq!(servers[1].served(), served_b, "b got requests: {after:?}");
    assert_eq!(after.values().sum::<usize>(), 60);
}

#[tokio::test]
async fn a_saturated_fleet_sheds_low_priority_and_serves_the_rest() {
    let servers = [
        ModelServer::start("a", "llama", Names::Vllm).await,
        ModelServer::start("b", "llama", Names::Vllm).await,
    ];
    // Busy servers: a queue forms behind running requests (a queue with
    // nothing running would not be believed).
    servers[0].set(Load {
        queue: 9,
        running: 8,
        kv: 0.5,
        ..idle()
    });
    servers[1].set(Load {
        queue: 1,
        running: 8,
        kv: 0.95,
        ..idle()
    });
    let (mut balance, records, _sender) =
        fleet(&servers, Scored::with_seed(2), Duration::from_secs(60)).await;
    // Every answer carries a report; two answers and both are known.
    while records.iter().any(|r| r.current().is_none()) {
        send(&mut balance, 5).await.unwrap();
    }
    let error = send(&mut balance, -1).await.unwrap_err();
    let shed = error.downcast_ref::<Saturated>().expect("Saturated");
    assert_eq!((shed.eligible(), shed.priority()), (2, -1));
    let answer: http::Response<String> = tower_lb::http::saturated_response(&error).unwrap();
    assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.headers()["retry-after"], "1");
    // Priority 0 and above still go through.
    for _ in 0..10 {
        send(&mut balance, 0).await.unwrap();
    }
    // One server with room admits everyone again. (Reports come with
    // answers, so the server that gets the traffic, b, is the one whose
    // change is seen.)
    servers[1].update(|load| load.kv = 0.5);
    while records[1].current().unwrap().kv_cache_use != 0.5 {
        send(&mut balance, 0).await.unwrap();
    }
    assert_eq!(send(&mut balance, -1).await.unwrap(), "b");
}

#[tokio::test(flavor = "current_thread")]
async fn report_weights_reach_three_to_one_after_the_blackout() {
    let servers = [
        ModelServer::start("big", "llama", Names::Vllm).await,
        ModelServer::start("small", "llama", Names::Vllm).await,
    ];
    // Same utilisation at three times the queries: three times the capacity.
    servers[0].set(Load {
        qps: 300.0,
        utilization: 0.5,
        ..idle()
    });
    servers[1].set(Load {
        qps: 100.0,
        utilization: 0.5,
        ..idle()
    });
    let picker = ReportWeighted::with_seed(ReportWeights::default(), 7);
    let (mut balance, _records, _sender) = fleet(&servers, picker, Duration::from_secs(60)).await;
    // No timer is pending from here on, so the paused clock moves only
    // when the test moves it.
    tokio::time::pause();
    let blackout = tally(&mut balance, 100).await;
    assert_eq!(
        blackout.values().copied().collect::<Vec<_>>(),
        [50, 50],
        "round robin in the blackout"
    );
    tokio::time::advance(Duration::from_secs(11)).await;
    let weighted = tally(&mut balance, 400).await;
    let big = weighted["big"] as f64 / 400.0;
    assert!((big - 0.75).abs() <= 0.05, "{weighted:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_stale_source_falls_back_to_requests_in_flight() {
    let servers = [
        ModelServer::start("a", "llama", Names::Vllm).await,
        ModelServer::start("b", "llama", Names::Vllm).await,
    ];
    servers[0].set(idle());
    servers[1].set(Load {
        queue: 4,
        kv: 0.7,
        ..idle()
    });
    let (mut balance, records, _sender) =
        fleet(&servers, Scored::with_seed(3), Duration::from_millis(200)).await;
    tokio::time::pause();
    while records.iter().any(|r| r.current().is_none()) {
        send(&mut balance, 0).await.unwrap();
    }
    // b reports a queue: everything goes to a.
    let fresh = tally(&mut balance, 20).await;
    assert_eq!(fresh.get("b"), None, "{fresh:?}");
    // b stops reporting; once its last report is stale it is scored on
    // this client's requests in flight (none), like a.
    servers[1].update(|load| load.silent = true);
    tokio::time::advance(Duration::from_millis(201)).await;
    assert!(records[1].current().is_none());
    let stale = tally(&mut balance, 40).await;
    assert!(stale.get("b").copied().unwrap_or(0) >= 5, "{stale:?}");
}

#[tokio::test]
async fn garbage_reports_and_pages_keep_the_last_values() {
    let servers = [ModelServer::start("a", "llama", Names::Vllm).await];
    servers[0].set(Load {
        queue: 3,
        kv: 0.25,
        ..idle()
    });
    let (mut balance, records, _sender) =
        fleet(&servers, Scored::with_seed(4), Duration::from_secs(60)).await;
    send(&mut balance, 0).await.unwrap();
    assert_eq!(records[0].current().unwrap().queue, 3);

    for garbage in [
        "TEXT named_metrics.num_requests_waiting=",
        "JSON {\"named_metrics\": [1, 2]",
        "BIN ???",
        "TEXT kv_cache=0.5=1, ,",
    ] {
        servers[0].update(|load| {
            load.raw_report = Some(garbage.to_owned());
            load.queue = 50;
        });
        assert_eq!(send(&mut balance, 0).await.unwrap(), "a");
        let facts = records[0].current().unwrap();
        assert_eq!((facts.queue, facts.kv_cache_use), (3, 0.25), "{garbage}");
    }

    // The poller: a good page, then garbage pages.
    servers[0].update(|load| {
        load.raw_report = None;
        load.silent = true;
        load.queue = 7;
    });
    let poller = PrometheusPoller::new()
        .interval(Duration::from_millis(10))
        .spawn(servers[0].base(), records[0].clone());
    servers[0].wait_scrapes(2).await;
    assert_eq!(records[0].current().unwrap().queue, 7);
    for page in [
        "vllm:num_requests_waiting{model_name=\"llama\" 1\n",
        "vllm:num_requests_waiting one\n",
        "\u{0}\u{1}garbage",
    ] {
        servers[0].update(|load| load.raw_page = Some(page.to_owned()));
        let seen = servers[0].scrapes();
        servers[0].wait_scrapes(seen + 2).await;
        assert_eq!(records[0].current().unwrap().queue, 7, "{page:?}");
    }
    drop(poller);
    assert_eq!(send(&mut balance, 0).await.unwrap(), "a", "still serving");
}

#[tokio::test]
async fn requests_reach_only_servers_of_their_model_and_adapter() {
    let servers = [
        ModelServer::start("llama-sql", "llama", Names::Vllm).await,
        ModelServer::start("llama-full", "llama", Names::Vllm).await,
        ModelServer::start("mistral", "mistral", Names::Vllm).await,
    ];
    servers[0].set(Load {
        adapters: vec!["sql".into()],
        max_adapters: 1,
        ..idle()
    });
    servers[1].set(Load {
        adapters: vec!["chat".into()],
        max_adapters: 1,
        ..idle()
    });
    servers[2].set(idle());
    let (mut balance, records, _sender) =
        fleet(&servers, Scored::with_seed(5), Duration::from_secs(60)).await;
    let poll = PrometheusPoller::new().interval(Duration::from_millis(20));
    let _pollers: Vec<PollerHandle> = servers
        .iter()
        .zip(&records)
        .map(|(server, metrics)| poll.spawn(server.base(), metrics.clone()))
        .collect();
    for server in &servers {
        server.wait_scrapes(2).await;
    }
    let mut seen = BTreeMap::new();
    for (model, adapter) in [("llama", "sql"), ("mistral", ""), ("llama", "chat")] {
        for _ in 0..5 {
            let mut request = Request::post("/v1/completions").header("x-model", model);
            if !adapter.is_empty() {
                request = request.header("x-adapter", adapter);
            }
            let answer = support::within("a request", async {
                let request = request.body(ReqBody::default()).unwrap();
                balance.ready().await.unwrap().call(request).await.unwrap()
            })
            .await;
            let body = body_string_tracked(answer).await;
            *seen.entry((model, adapter, body)).or_insert(0) += 1;
        }
    }
    let expected: BTreeMap<_, _> = [
        (("llama", "sql", "llama-sql".to_owned()), 5),
        (("mistral", "", "mistral".to_owned()), 5),
        (("llama", "chat", "llama-full".to_owned()), 5),
    ]
    .into();
    assert_eq!(seen, expected);
}

async fn body_string_tracked<B>(answer: http::Response<B>) -> String
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let bytes = http_body_util::BodyExt::collect(answer.into_body())
        .await
        .unwrap()
        .to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}
