//! Health checks against real axum servers on 127.0.0.1, under tokio's
//! paused clock: time moves only when a test advances it, so probe and
//! ejection timings are exact while real requests and probes run.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use tokio::time::{advance, Instant};
use tower::ServiceBuilder;
use tower_lb::discover::{self, EndpointSender};
use tower_lb::endpoint::Weighted;
use tower_lb::health::{
    ActiveChecks, AllUnhealthy, HealthConfig, HealthDiscover, HealthLayer, HealthRegistry,
    HealthState, Healthy, HttpProbe, NoHealthyEndpoints, OutlierDetection, TcpProbe,
};
use tower_lb::pick::RoundRobin;
use tower_lb::{Balance, BalanceLayer};

use support::health::{freeze_clock, send, Endpoint};
use support::{within, Backend};

type Lb = Balance<SocketAddr, Healthy<Weighted<Endpoint>>, RoundRobin>;

struct Fleet {
    backends: Vec<Backend>,
    endpoints: Vec<Endpoint>,
    sender: EndpointSender<SocketAddr, Endpoint>,
    balance: Lb,
    registry: HealthRegistry<SocketAddr>,
}

impl Fleet {
    async fn start(n: usize, config: HealthConfig<SocketAddr>) -> Self {
        let mut backends = Vec::new();
        for _ in 0..n {
            backends.push(Backend::start("backend").await);
        }
        let endpoints: Vec<Endpoint> = backends.iter().map(|b| Endpoint::new(b.addr())).collect();
        let (sender, discover) = discover::channel();
        for (backend, endpoint) in backends.iter().zip(&endpoints) {
            sender.insert(backend.addr(), endpoint.clone()).unwrap();
        }
        let discover = HealthDiscover::new(discover, config).expect("valid settings");
        let registry = discover.registry();
        let balance = Balance::new(discover, RoundRobin::new());
        within("discovery", balance.wait_for(|keys| keys.len() == n)).await;
        Self {
            backends,
            endpoints,
            sender,
            balance,
            registry,
        }
    }

    fn state(&self, i: usize) -> HealthState {
        self.registry
            .get(&self.backends[i].addr())
            .expect("known endpoint")
            .state()
    }

    fn calls(&self) -> Vec<usize> {
        self.endpoints.iter().map(Endpoint::calls).collect()
    }

    /// Advances the clock by `step`, then sends one request; `true` if it
    /// succeeded (any status).
    async fn tick(&mut self, step: Duration) -> bool {
        advance(step).await;
        within("a request", send(&mut self.balance)).await.is_ok()
    }

    /// Ticks until `done` holds, at most `limit` times; returns the ticks
    /// taken and how many requests failed.
    async fn tick_until(
        &mut self,
        step: Duration,
        limit: usize,
        what: &str,
        mut done: impl FnMut(&Self) -> bool,
    ) -> (usize, usize) {
        let (mut ticks, mut failed) = (0, 0);
        while !done(self) {
            assert!(
                ticks < limit,
                "{what}: not within {limit} ticks of {step:?}"
            );
            if !self.tick(step).await {
                failed += 1;
            }
            ticks += 1;
        }
        (ticks, failed)
    }
}

fn probes(rise: u32, fall: u32) -> ActiveChecks<SocketAddr> {
    ActiveChecks::new(HttpProbe::get("/health"))
        .interval(Duration::from_secs(1))
        .timeout(Duration::from_millis(200))
        .jitter(Duration::from_millis(100))
        .rise(rise)
        .fall(fall)
        .seed(7)
}

const STEP: Duration = Duration::from_millis(50);

#[tokio::test(start_paused = true)]
async fn active_checks_take_a_killed_endpoint_out_and_bring_it_back() {
    let _clock = freeze_clock();
    let mut fleet = Fleet::start(3, HealthConfig::new().active(probes(2, 3))).await;
    for _ in 0..40 {
        assert!(fleet.tick(STEP).await);
    }
    assert!(fleet.calls().iter().all(|&calls| calls >= 13));

    fleet.backends[1].stop().await;
    let before = fleet.calls()[1];
    let (ticks, failed) = fleet
        .tick_until(STEP, 200, "leave rotation", |f| {
            f.state(1) == HealthState::Unhealthy
        })
        .await;
    let after_death = fleet.calls()[1] - before;
    // Three failed probes take at least two gaps of 0.9 s and at most three
    // of 1.1 s; a third of the requests went to it meanwhile.
    assert!(
        ticks >= 36,
        "left after {ticks} ticks: before the fall threshold"
    );
    assert!(ticks <= 68, "left after {ticks} ticks");
    assert!(
        (1..=24).contains(&after_death),
        "{after_death} requests after death"
    );
    assert_eq!(failed, after_death, "every request routed to it failed");

    let out = fleet.calls()[1];
    for _ in 0..40 {
        assert!(fleet.tick(STEP).await, "the others take every request");
    }
    assert_eq!(fleet.calls()[1], out, "no request while out of rotation");

    fleet.backends[1].restart().await;
    let restarted = Instant::now();
    fleet
        .tick_until(STEP, 100, "come back", |f| {
            f.state(1) == HealthState::Healthy
        })
        .await;
    let back_after = restarted.elapsed();
    assert!(
        back_after >= Duration::from_millis(900) && back_after <= Duration::from_millis(2300),
        "two successful probes took {back_after:?}"
    );
    for _ in 0..30 {
        assert!(fleet.tick(STEP).await);
    }
    assert!(fleet.calls()[1] >= out + 9, "it takes traffic again");
}

#[tokio::test(start_paused = true)]
async fn passive_detection_ejects_a_killed_endpoint_after_n_failures() {
    let _clock = freeze_clock();
    let detection = OutlierDetection::new()
        .consecutive_failures(3)
        .base_ejection(Duration::from_secs(30));
    let mut fleet = Fleet::start(3, HealthConfig::new().passive(detection)).await;
    for _ in 0..12 {
        assert!(fleet.tick(STEP).await);
    }

    fleet.backends[2].stop().await;
    let before = fleet.calls()[2];
    let (_, failed) = fleet
        .tick_until(STEP, 100, "ejection", |f| {
            f.state(2) == HealthState::Ejected
        })
        .await;
    let ejected_at = Instant::now();
    assert_eq!(
        fleet.calls()[2] - before,
        3,
        "exactly N requests reached it"
    );
    assert_eq!(failed, 3);
    let health = fleet.registry.get(&fleet.backends[2].addr()).unwrap();
    assert_eq!(health.ejections(), 1);
    assert_eq!(
        health.ejected_until(),
        Some(ejected_at + Duration::from_secs(30))
    );

    for _ in 0..40 {
        assert!(fleet.tick(STEP).await);
    }
    assert_eq!(fleet.calls()[2] - before, 3, "nothing while ejected");

    // Back up; it returns when its ejection time is over, not before, on
    // probation (reported as slow start) until its first successes.
    fleet.backends[2].restart().await;
    advance(Duration::from_secs(27)).await;
    fleet
        .tick_until(STEP, 100, "return", |f| f.state(2).in_rotation())
        .await;
    assert!(ejected_at.elapsed() >= Duration::from_secs(30));
    assert!(ejected_at.elapsed() <= Duration::from_secs(30) + STEP * 2);
    let back = fleet.calls()[2];
    for _ in 0..30 {
        assert!(fleet.tick(STEP).await);
    }
    assert!(fleet.calls()[2] >= back + 9);
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_answering_503_is_ejected_for_longer_each_time() {
    let _clock = freeze_clock();
    let backends = [
        Backend::start("backend").await,
        Backend::start("backend").await,
        Backend::start("backend").await,
    ];
    backends[0].set_status(StatusCode::SERVICE_UNAVAILABLE);
    let endpoints: Vec<Endpoint> = backends.iter().map(|b| Endpoint::new(b.addr())).collect();
    let (sender, discover) = discover::channel();
    for (backend, endpoint) in backends.iter().zip(&endpoints) {
        sender.insert(backend.addr(), endpoint.clone()).unwrap();
    }
    // Built as layers, and read back through the balancer.
    let config = HealthConfig::new().passive(
        OutlierDetection::new()
            .consecutive_failures(3)
            .base_ejection(Duration::from_secs(5))
            .max_ejection(Duration::from_secs(60)),
    );
    let mut balance = ServiceBuilder::new()
        .layer(BalanceLayer::new(RoundRobin::new()))
        .layer(HealthLayer::new(config).unwrap())
        .service(discover);
    within("discovery", balance.wait_for(|keys| keys.len() == 3)).await;
    let bad = |balance: &Lb| {
        balance.read_endpoints(|keys, services| {
            let i = keys
                .iter()
                .position(|key| *key == backends[0].addr())
                .unwrap();
            services[i].health(keys[i])
        })
    };

    let step = Duration::from_millis(100);
    for round in 1..=3u32 {
        let before = endpoints[0].calls();
        let mut ticks = 0;
        while bad(&balance).ejections() < round {
            assert!(ticks < 30, "round {round}: not ejected");
            advance(step).await;
            within("a request", send(&mut balance)).await.unwrap();
            ticks += 1;
        }
        let ejected_at = Instant::now();
        let health = bad(&balance);
        assert_eq!(health.state(), HealthState::Ejected);
        // Then back on probation, where one 503 sends it out again.
        let expected = if round == 1 { 3 } else { 1 };
        assert_eq!(endpoints[0].calls() - before, expected, "round {round}");
        let length = health.ejected_until().unwrap() - ejected_at;
        assert_eq!(length, Duration::from_secs(5) * round, "round {round}");

        let during = endpoints[0].calls();
        while bad(&balance).state() == HealthState::Ejected {
            assert!(
                ejected_at.elapsed() <= length + step * 2,
                "round {round}: stuck"
            );
            advance(step).await;
            within("a request", send(&mut balance)).await.unwrap();
        }
        let out_for = ejected_at.elapsed();
        assert!(
            out_for >= length && out_for <= length + step * 2,
            "{out_for:?}"
        );
        assert_eq!(endpoints[0].calls(), during, "no request while ejected");
    }
}

#[tokio::test(start_paused = true)]
async fn at_most_the_cap_is_ejected_and_all_unhealthy_fails_fast() {
    let _clock = freeze_clock();
    // Rise 3: passing probes would otherwise end the ejections early.
    let config = HealthConfig::new()
        .active(probes(3, 1))
        .passive(
            OutlierDetection::new()
                .consecutive_failures(2)
                .base_ejection(Duration::from_secs(60)),
        )
        .all_unhealthy(AllUnhealthy::FailFast);
    let mut fleet = Fleet::start(4, config).await;
    for backend in &fleet.backends {
        backend.set_status(StatusCode::SERVICE_UNAVAILABLE);
    }
    for _ in 0..20 {
        assert!(fleet.tick(STEP).await, "503 is an answer, not an error");
    }
    let ejected: Vec<usize> = (0..4)
        .filter(|&i| fleet.state(i) == HealthState::Ejected)
        .collect();
    assert_eq!(ejected.len(), 2, "50 % of 4");
    assert_eq!(fleet.registry.ejected(), 2);
    let before = fleet.calls();
    for _ in 0..20 {
        assert!(fleet.tick(STEP).await);
    }
    let after = fleet.calls();
    let mut served = 0;
    for i in 0..4 {
        let got = after[i] - before[i];
        if ejected.contains(&i) {
            assert_eq!(got, 0, "endpoint {i} is ejected");
        } else {
            // Round robin steps past an ejected endpoint to the next one, so
            // the shares of the other two need not be even.
            assert!(got >= 5, "endpoint {i} still serves: {got}");
            served += got;
        }
    }
    assert_eq!(served, 20);

    // Active checks now fail everywhere: nobody is healthy.
    for backend in &fleet.backends {
        backend.set_health(StatusCode::SERVICE_UNAVAILABLE);
    }
    fleet
        .tick_until(STEP, 60, "all unhealthy", |f| f.registry.healthy() == 0)
        .await;
    let before = fleet.calls();
    let started = Instant::now();
    let error = within("a request", send(&mut fleet.balance))
        .await
        .expect_err("fail fast");
    let error = error
        .downcast_ref::<NoHealthyEndpoints>()
        .unwrap_or_else(|| panic!("typed error, got {error}"));
    assert_eq!(error.known(), 4);
    assert_eq!(started.elapsed(), Duration::ZERO, "at once");
    assert_eq!(fleet.calls(), before, "no endpoint was called");

    // One passes its probes again and takes every request.
    fleet.backends[3].set_health(StatusCode::OK);
    fleet
        .tick_until(STEP, 100, "one back", |f| f.registry.healthy() == 1)
        .await;
    let before = fleet.calls()[3];
    for _ in 0..8 {
        assert!(fleet.tick(STEP).await);
    }
    assert_eq!(fleet.calls()[3], before + 8);
}

#[tokio::test(start_paused = true)]
async fn panic_mode_routes_to_every_endpoint_when_none_is_healthy() {
    let _clock = freeze_clock();
    let config = HealthConfig::new()
        .active(probes(1, 1))
        .all_unhealthy(AllUnhealthy::Panic);
    let mut fleet = Fleet::start(4, config).await;
    for backend in &fleet.backends {
        backend.set_health(StatusCode::SERVICE_UNAVAILABLE);
    }
    fleet
        .tick_until(STEP, 60, "all unhealthy", |f| f.registry.healthy() == 0)
        .await;
    assert!((0..4).all(|i| fleet.state(i) == HealthState::Unhealthy));
    let before = fleet.calls();
    for _ in 0..40 {
        assert!(fleet.tick(STEP).await, "panic mode still answers");
    }
    let after = fleet.calls();
    for i in 0..4 {
        assert_eq!(after[i] - before[i], 10, "endpoint {i}: an even share");
    }
}

#[tokio::test(start_paused = true)]
async fn slow_start_ramps_a_returning_endpoint_up() {
    let _clock = freeze_clock();
    let window = Duration::from_secs(10);
    let config = HealthConfig::new()
        .active(probes(1, 1).jitter(Duration::ZERO))
        .slow_start(window);
    let mut fleet = Fleet::start(3, config).await;
    // Past everyone's own slow start. Ticks stay short of the probe
    // timeout, so no probe in flight is overtaken by the clock.
    for _ in 0..220 {
        fleet.tick(STEP).await;
    }
    assert!((0..3).all(|i| fleet.state(i) == HealthState::Healthy));

    fleet.backends[0].set_health(StatusCode::SERVICE_UNAVAILABLE);
    fleet
        .tick_until(STEP, 60, "out", |f| f.state(0) == HealthState::Unhealthy)
        .await;
    fleet.backends[0].set_health(StatusCode::OK);
    fleet
        .tick_until(STEP, 60, "back", |f| f.state(0) == HealthState::SlowStart)
        .await;

    // Ten one-second buckets of fifty requests each.
    let step = Duration::from_millis(20);
    let mut buckets = Vec::new();
    for _ in 0..10 {
        let before = fleet.calls()[0];
        for _ in 0..50 {
            assert!(fleet.tick(step).await);
        }
        buckets.push(fleet.calls()[0] - before);
    }
    // A full share would be about 17 of 50.
    assert!(buckets[0] <= 5, "starts low: {buckets:?}");
    assert!(buckets[9] >= 12, "ends near full: {buckets:?}");
    let first: usize = buckets[..5].iter().sum();
    let second: usize = buckets[5..].iter().sum();
    assert!(first * 2 < second, "rises: {buckets:?}");
    assert!(
        buckets.windows(3).all(|w| w[0] <= w[2] + 2),
        "no drop along the way: {buckets:?}"
    );
    fleet
        .tick_until(STEP, 40, "slow start over", |f| {
            f.state(0) == HealthState::Healthy
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn removing_an_endpoint_stops_its_probes() {
    let _clock = freeze_clock();
    let mut fleet = Fleet::start(3, HealthConfig::new().active(probes(2, 3))).await;
    assert_eq!(fleet.registry.tasks(), 3);
    for _ in 0..60 {
        fleet.tick(STEP).await;
    }
    assert!(fleet.registry.snapshot().iter().all(|e| e.probes() >= 2));

    let gone = fleet.backends[2].addr();
    fleet.sender.remove(gone).unwrap();
    within("remove", fleet.balance.wait_for(|keys| keys.len() == 2)).await;
    within("task stops", fleet.registry.wait_for(|r| r.tasks() == 2)).await;
    assert!(fleet.registry.get(&gone).is_none());

    let probed = fleet
        .backends
        .iter()
        .map(Backend::health_checks)
        .collect::<Vec<_>>();
    for _ in 0..100 {
        fleet.tick(STEP).await;
    }
    assert_eq!(
        fleet.backends[2].health_checks(),
        probed[2],
        "no probe after removal"
    );
    assert!(fleet.backends[0].health_checks() >= probed[0] + 3);
    assert!(fleet.backends[1].health_checks() >= probed[1] + 3);

    // Dropping the balancer ends its worker, the adapter and every task.
    let Fleet {
        balance, registry, ..
    } = fleet;
    drop(balance);
    within("all tasks stop", registry.wait_for(|r| r.tasks() == 0)).await;
    assert!(registry.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_tcp_probe_follows_the_listener() {
    let _clock = freeze_clock();
    let checks = ActiveChecks::new(TcpProbe)
        .interval(Duration::from_secs(1))
        .timeout(Duration::from_millis(200))
        .rise(1)
        .fall(1)
        .seed(3);
    let mut fleet = Fleet::start(2, HealthConfig::new().active(checks)).await;
    fleet.backends[0].stop().await;
    fleet
        .tick_until(STEP, 60, "down", |f| f.state(0) == HealthState::Unhealthy)
        .await;
    fleet.backends[0].restart().await;
    fleet
        .tick_until(STEP, 60, "up", |f| f.state(0) == HealthState::Healthy)
        .await;
}
