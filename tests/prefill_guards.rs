//! What a request holds while it is sent (its count in flight, its queued
//! prefill) is given back on every path that ends it: an answer, a server
//! error, a refused connection, a cancelled call, a client that stops
//! reading, a balancer that fails fast, retries and hedges. Real servers on
//! 127.0.0.1; after each path every count is back to zero.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::retry::budget::TpsBudget;
use tower::{Layer, ServiceExt};
use tower_lb::discover::StaticList;
use tower_lb::endpoint::{ClientLoad as _, Endpoint as _, PrefillState, Weighted};
use tower_lb::health::{
    ActiveChecks, HealthConfig, HealthDiscover, HealthRegistry, Healthy, HttpProbe,
    NoHealthyEndpoints,
};
use tower_lb::hedge::{HedgeDelay, HedgeLayer, Idempotent};
use tower_lb::load::{InFlight, Prefill};
use tower_lb::pick::llm::{BlockConfig, PromptBlocks, Scored};
use tower_lb::retry::{RetryLayer, RetryPolicy};
use tower_lb::Balance;

use support::{within, Backend, STEP};
use tower_lb::http::SetAuthority;

type Client<B> =
    hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, B>;
type Ep<B> = Healthy<Weighted<InFlight<Prefill<SetAuthority<Client<B>>>>>>;
type Lb<B> = Balance<SocketAddr, Ep<B>, Scored<Request<B>, Ep<B>>>;

struct Fleet<B: 'static = Full<Bytes>> {
    backends: Vec<Backend>,
    states: Vec<PrefillState>,
    lb: Lb<B>,
    registry: HealthRegistry<SocketAddr>,
}

impl<B> Fleet<B>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<tower_lb::BoxError>,
{
    async fn start(n: usize, probes: bool) -> Self {
        let mut backends = Vec::new();
        for i in 0..n {
            backends.push(Backend::start(&format!("b{i}")).await);
        }
        let states: Vec<PrefillState> = (0..n).map(|_| PrefillState::default()).collect();
        let client: Client<B> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        let endpoints = backends.iter().zip(&states).map(|(b, state)| {
            let target = SetAuthority::from_addr(client.clone(), b.addr());
            let svc = InFlight::new(Prefill::new(target, state.clone()));
            (b.addr(), Weighted::new(svc, 1).with_prefill(state.clone()))
        });
        let mut config = HealthConfig::new();
        if probes {
            config = config.active(
                ActiveChecks::new(HttpProbe::get("/health"))
                    .interval(Duration::from_millis(20))
                    .rise(1)
                    .fall(1),
            );
        }
        let discover = HealthDiscover::new(StaticList::from_weighted(endpoints), config)
            .expect("valid settings");
        let registry = discover.registry();
        let lb = Balance::new(discover, Scored::ttft());
        within("the fleet joins", lb.wait_for(|keys| keys.len() == n)).await;
        Fleet {
            backends,
            states,
            lb,
            registry,
        }
    }

    /// Every count of every endpoint: prefill reserved, requests waiting
    /// for a first token, requests in flight.
    fn held(&self) -> Vec<(u64, usize, usize)> {
        let endpoints = self.lb.read_endpoints(|_, services| {
            services
                .iter()
                .map(|s| tower::load::Load::load(s).in_flight())
                .collect::<Vec<_>>()
        });
        self.states
            .iter()
            .zip(endpoints)
            .map(|(state, in_flight)| {
                let stats = state.stats();
                (stats.queued_tokens, stats.waiting, in_flight)
            })
            .collect()
    }

    async fn assert_released(&self, path: &str) {
        let fleet = self;
        within(path, async {
            loop {
                if fleet.held().iter().all(|&h| h == (0, 0, 0)) {
                    return;
                }
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
        assert!(
            self.held().iter().all(|&h| h == (0, 0, 0)),
            "{path}: {:?}",
            self.held()
        );
    }
}

fn request(k: usize) -> Request<Full<Bytes>> {
    let system = "You are a meticulous assistant. ".repeat(60);
    let blocks = PromptBlocks::hash(BlockConfig::default(), "m", [system, format!("q{k}")]);
    let mut request = Request::post("/v1/completions")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    request.extensions_mut().insert(blocks);
    request
}

#[tokio::test]
async fn answers_and_server_errors_give_everything_back() {
    let fleet = Fleet::start(3, false).await;
    for k in 0..30 {
        let response = fleet.lb.clone().oneshot(request(k)).await.unwrap();
        response.into_body().collect().await.unwrap();
    }
    fleet.assert_released("answers").await;
    for b in &fleet.backends {
        b.set_status(StatusCode::INTERNAL_SERVER_ERROR);
    }
    for k in 0..30 {
        let response = fleet.lb.clone().oneshot(request(k)).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        drop(response);
    }
    fleet.assert_released("server errors").await;
    // The index learnt the shared system prompt on the servers it went to.
    let sent: u64 = fleet.states.iter().map(|s| s.stats().sent_tokens).sum();
    assert!(sent > 0);
}

#[tokio::test]
async fn refused_connections_and_cancelled_calls_give_everything_back() {
    let fleet = Fleet::start(2, false).await;
    fleet.backends[0].stop().await;
    for k in 0..20 {
        let _ = fleet.lb.clone().oneshot(request(k)).await;
    }
    fleet.assert_released("refused connections").await;

    // The live server holds every answer until told: calls are dropped
    // while waiting for the head.
    fleet.backends[1].set_hang(true);
    for k in 0..20 {
        let mut call = Box::pin(fleet.lb.clone().oneshot(request(k)));
        let polled = tokio::time::timeout(Duration::from_millis(5), &mut call).await;
        assert!(polled.is_err() || polled.unwrap().is_err());
        drop(call);
    }
    fleet.assert_released("cancelled calls").await;
}

#[tokio::test]
async fn a_client_that_stops_reading_gives_everything_back() {
    let fleet = Fleet::start(2, false).await;
    for b in &fleet.backends {
        // Heads go out at once; every body frame waits for the gate.
        b.frames();
    }
    let mut bodies = Vec::new();
    for k in 0..10 {
        let response = fleet.lb.clone().oneshot(request(k)).await.unwrap();
        bodies.push(response.into_body());
    }
    assert!(fleet.held().iter().map(|h| h.2).sum::<usize>() > 0);
    drop(bodies);
    fleet.assert_released("bodies dropped unread").await;
}

#[tokio::test]
async fn failing_fast_reserves_nothing() {
    let fleet = Fleet::start(2, true).await;
    for b in &fleet.backends {
        b.set_health(StatusCode::SERVICE_UNAVAILABLE);
    }
    within(
        "every server down",
        fleet.registry.wait_for(|r| r.healthy() == 0),
    )
    .await;
    for k in 0..20 {
        let error = fleet.lb.clone().oneshot(request(k)).await.unwrap_err();
        assert!(
            error.is::<NoHealthyEndpoints>(),
            "{error}: a healthy-looking fleet"
        );
    }
    fleet.assert_released("fail fast").await;
    let sent: u64 = fleet.states.iter().map(|s| s.stats().sent_tokens).sum();
    assert_eq!(sent, 0, "nothing reached a server, nothing was recorded");
}

#[tokio::test]
async fn retries_give_everything_back() {
    let fleet = Fleet::<tower_lb::retry::ReplayBody<Full<Bytes>>>::start(3, false).await;
    fleet.backends[0].set_status(StatusCode::BAD_GATEWAY);
    let retry = RetryLayer::new(RetryPolicy::new().max_attempts(3)).layer(fleet.lb.clone());
    for k in 0..30 {
        let response = retry.clone().oneshot(request(k)).await.unwrap();
        response.into_body().collect().await.unwrap();
    }
    fleet.assert_released("retries").await;
}

#[tokio::test]
async fn hedges_give_everything_back() {
    let fleet = Fleet::start(3, false).await;
    fleet.backends[1].set_hang(true);
    let hedge = HedgeLayer::new(Idempotent::new().non_idempotent(true))
        .delay(HedgeDelay::Fixed(Duration::from_millis(5)))
        .budget(TpsBudget::new(Duration::from_secs(10), 100, 1.0))
        .layer(fleet.lb.clone());
    let mut answered = 0;
    for k in 0..20 {
        let answer = tokio::time::timeout(STEP, hedge.clone().oneshot(request(k))).await;
        if let Ok(Ok(response)) = answer {
            response.into_body().collect().await.unwrap();
            answered += 1;
        }
    }
    assert_eq!(answered, 20, "a hedge answered every request");
    fleet.assert_released("hedges").await;
    assert!(fleet
        .lb
        .read_endpoints(|_, services| services.iter().all(|s| s.weight() == 1)));
}
