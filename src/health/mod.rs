//! Health checks: dead endpoints leave rotation and come back.
//!
//! [`HealthDiscover`] (or [`HealthLayer`] in a `ServiceBuilder`) wraps
//! every endpoint of a `Discover` in [`Healthy`]. A `Healthy` endpoint is
//! *gated*: the balancer asks it on every pick whether it may take a request
//! (one atomic load), so **every picker** skips an unhealthy endpoint without
//! a table rebuild. Two sources decide, and either can be used alone:
//!
//! * **Active checks** ([`ActiveChecks`]): a probe per endpoint on an
//!   interval, with a timeout and seeded jitter: `HttpProbe` (feature
//!   `http`: method, path, expected statuses), [`TcpProbe`] (connect), or your own closure
//!   ([`probe_fn`]). `fall` failures in a row take an endpoint out, `rise`
//!   successes bring it back, as in HAProxy. New endpoints start healthy.
//!   First probes are spread over the interval (the k-th endpoint at k·φ mod
//!   1 of it), so N endpoints are never probed in one burst.
//! * **Passive outlier detection** ([`OutlierDetection`]): each response is
//!   judged as it completes, by a [`Classify`](crate::classify::Classify)er
//!   ([`ServerErrors`](crate::classify::ServerErrors) by default; with the
//!   `http` feature any tower-http classifier, `GrpcErrorsAsFailures` for
//!   gRPC; an error from the endpoint always counts). After N failures in a row the
//!   endpoint is ejected for a time that grows with each ejection, while a
//!   cap on the share of ejected endpoints (50 % by default) keeps a bad day
//!   from emptying the set.
//!
//! **Which wins.** An endpoint is in rotation when neither source holds it
//! out, and each source ends only what it started:
//!
//! * Passing probes end a `fall` that probes caused, never an ejection. A
//!   server can answer its health path and fail every real request; only
//!   real requests can show that it stopped.
//! * The end of an ejection does not bring back an endpoint that active
//!   checks hold down.
//!
//! # Probation
//!
//! An endpoint whose ejection is over comes back **on probation**: it
//! admits one request at a time, then, after k successes, 2^k at once; four
//! successes end the probation (then [slow start](#slow-start), if set).
//! One failure on probation ejects it again at once, and for longer (the
//! ejection count has had no time to decay). So a server that fails every
//! request costs one request per ejection, and its ejections grow to
//! `max_ejection`. An endpoint that is the only healthy one admits every
//! request. [`HealthState::SlowStart`] reports an endpoint on probation.
//!
//! # Slow start
//!
//! With [`HealthConfig::slow_start`], a new or returning endpoint admits a
//! rising share of the picks that reach it: 10 % at first, then
//! `elapsed / window`, raised in 20 steps by its task, until the window ends.
//! It is done at admission, not by rewriting weights (picker tables are
//! built only when the set changes): whichever picker is in use, a share of
//! the picks that would have chosen it are refused and go to the next
//! candidate. While no endpoint is past its slow start (a set starting up),
//! ramping endpoints admit every pick.
//!
//! # When every endpoint is unhealthy
//!
//! [`AllUnhealthy::FailFast`] (the default) answers each request at once
//! with [`NoHealthyEndpoints`]; [`AllUnhealthy::Panic`] routes to every
//! endpoint as if all were healthy, as Envoy's panic mode does. Either way
//! the state is logged once, at warn level, when the last healthy endpoint
//! leaves.
//!
//! # Reading health
//!
//! [`HealthRegistry::snapshot`] (the registry of the [`HealthDiscover`])
//! and [`Healthy::health`] give each endpoint's [`EndpointHealth`]: its
//! [`HealthState`], consecutive failures, ejection count, probes run. Every
//! transition is a `tracing` event at info level naming the endpoint by its
//! key, as the balancer's and the retry layer's events do.
//!
//! # Tasks
//!
//! Each endpoint has one tokio task for its probes and timers (none when only
//! [`AllUnhealthy`] is set). It stops when the endpoint is removed, or when
//! the adapter is dropped (the balancer's worker ends with its last handle);
//! [`HealthRegistry::tasks`] counts the live ones. Outside a tokio runtime
//! no task runs: probes do not happen and ejections do not end (logged).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower::{service_fn, Service, ServiceExt};
//! use tower_lb::classify::ErrorsOnly;
//! use tower_lb::health::{probe_fn, ActiveChecks, HealthConfig, HealthDiscover, OutlierDetection};
//! use tower_lb::{discover, pick::RoundRobin, Balance};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_lb::BoxError> {
//! let backend = |name: &'static str| {
//!     service_fn(move |_: ()| async move { Ok::<_, std::convert::Infallible>(name) })
//! };
//! let (endpoints, discover) = discover::channel();
//! endpoints.insert("a", backend("a"))?;
//! endpoints.insert("b", backend("b"))?;
//!
//! let config = HealthConfig::new()
//!     .active(
//!         ActiveChecks::new(probe_fn(|_key: &&str| async { Ok::<_, std::io::Error>(()) }))
//!             .interval(Duration::from_secs(2))
//!             .timeout(Duration::from_millis(500))
//!             .rise(2)
//!             .fall(3),
//!     )
//!     .passive(OutlierDetection::new().consecutive_failures(5))
//!     .classify(ErrorsOnly);
//! let discover = HealthDiscover::new(discover, config)?;
//! let registry = discover.registry();
//! let mut balance = Balance::new(discover, RoundRobin::new());
//! balance.wait_for(|keys| keys.len() == 2).await;
//!
//! let answer = balance.ready().await?.call(()).await?;
//! assert!(answer == "a" || answer == "b");
//! assert_eq!(registry.healthy(), 2);
//! assert!(registry.snapshot().iter().all(|e| e.state().in_rotation()));
//! # Ok(())
//! # }
//! ```

mod checks;
mod config;
mod core;
mod discover;
mod error;
mod future;
#[cfg(feature = "http")]
mod http_probe;
mod probe;
mod registry;
mod report;
mod service;
mod state;
mod task;

pub use self::checks::{ActiveChecks, OutlierDetection};

pub use self::config::{AllUnhealthy, HealthConfig, DEFAULT_MAX_PUSHBACK};
pub use self::discover::{HealthDiscover, HealthLayer};
pub use self::error::{InvalidHealthConfig, NoHealthyEndpoints, UnexpectedStatus};
pub use self::future::ResponseFuture;
#[cfg(feature = "http")]
pub use self::http_probe::HttpProbe;
pub use self::probe::{probe_fn, Probe, ProbeFn, ProbeFuture, ProbeTarget, TcpProbe};
pub use self::registry::HealthRegistry;
pub use self::report::{EndpointHealth, HealthState};
pub use self::service::Healthy;

#[cfg(test)]
mod tests {
    //! The health state machine: thresholds, ejection growth and decay, the
    //! ejection cap, the all-unhealthy modes, slow start; and settings checks.

    use std::sync::Arc;
    use std::time::Duration;

    use super::checks::{ActiveChecks, OutlierDetection};
    use super::config::{AllUnhealthy, HealthConfig};
    use super::core::Core;
    use super::error::InvalidHealthConfig;
    use super::http_probe::HttpProbe;
    use super::probe::TcpProbe;
    use super::report::{EndpointHealth, HealthState};
    use super::state::EndpointState;

    fn core(
        passive: Option<OutlierDetection>,
        slow_start: Option<Duration>,
        mode: AllUnhealthy,
    ) -> Arc<Core> {
        Arc::new(Core::new(passive, slow_start, mode, (2, 3), Some(1)))
    }

    fn endpoints(core: &Arc<Core>, n: usize) -> Vec<EndpointState> {
        (0..n)
            .map(|i| EndpointState::register(Arc::clone(core), format!("e{i}").into()))
            .collect()
    }

    fn state(endpoint: &EndpointState) -> HealthState {
        EndpointHealth::read((), endpoint).state()
    }

    fn passive(failures: u32) -> OutlierDetection {
        OutlierDetection::new()
            .consecutive_failures(failures)
            .base_ejection(Duration::from_secs(10))
            .max_ejection(Duration::from_secs(25))
    }

    #[test]
    fn fall_then_rise_thresholds() {
        let core = core(None, None, AllUnhealthy::FailFast);
        let set = endpoints(&core, 2);
        let e = &set[0];
        e.record_probe(false);
        e.record_probe(false);
        assert_eq!(
            state(e),
            HealthState::Healthy,
            "two failures are below fall"
        );
        e.record_probe(true);
        e.record_probe(false);
        e.record_probe(false);
        assert_eq!(
            state(e),
            HealthState::Healthy,
            "a success resets the failures"
        );
        e.record_probe(false);
        assert_eq!(state(e), HealthState::Unhealthy);
        assert!(!e.admits(), "out of rotation while another is healthy");
        assert_eq!(core.counts(), (2, 1));

        e.record_probe(true);
        assert_eq!(
            state(e),
            HealthState::Unhealthy,
            "one success is below rise"
        );
        e.record_probe(false);
        e.record_probe(true);
        assert_eq!(
            state(e),
            HealthState::Unhealthy,
            "a failure resets the successes"
        );
        e.record_probe(true);
        assert_eq!(state(e), HealthState::Healthy);
        assert!(e.admits());
        assert_eq!(core.counts(), (2, 2));
        assert_eq!(EndpointHealth::read((), e).probes(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn ejections_grow_then_decay() {
        let core = core(Some(passive(3)), None, AllUnhealthy::FailFast);
        let set = endpoints(&core, 3);
        let e = &set[0];
        let ejection = |e: &EndpointState| {
            let health = EndpointHealth::read((), e);
            health
                .ejected_until()
                .map(|until| until - tokio::time::Instant::now())
        };

        e.record_failure();
        e.record_failure();
        e.record_success();
        e.record_failure();
        e.record_failure();
        assert_eq!(state(e), HealthState::Healthy, "a success resets the count");
        assert_eq!(EndpointHealth::read((), e).consecutive_failures(), 2);
        e.record_failure();
        assert_eq!(state(e), HealthState::Ejected);
        assert!(!e.admits());
        assert_eq!(ejection(e), Some(Duration::from_secs(10)));
        assert_eq!(EndpointHealth::read((), e).consecutive_failures(), 0);

        // Stragglers still in flight do not eject it twice.
        for _ in 0..5 {
            e.record_failure();
        }
        assert_eq!(EndpointHealth::read((), e).ejections(), 1);

        e.end_ejection();
        assert_eq!(state(e), HealthState::SlowStart, "on probation");
        (0..3).for_each(|_| e.record_failure());
        assert_eq!(
            ejection(e),
            Some(Duration::from_secs(20)),
            "second: twice the base"
        );
        e.end_ejection();
        (0..3).for_each(|_| e.record_failure());
        assert_eq!(ejection(e), Some(Duration::from_secs(25)), "third: capped");
        e.end_ejection();

        // Twenty healthy seconds take two steps off the multiplier (3 → 1).
        tokio::time::advance(Duration::from_secs(20)).await;
        (0..3).for_each(|_| e.record_failure());
        assert_eq!(ejection(e), Some(Duration::from_secs(20)));
        assert_eq!(EndpointHealth::read((), e).ejections(), 4);
    }

    #[test]
    fn the_cap_limits_ejections() {
        let core = core(Some(passive(1)), None, AllUnhealthy::FailFast);
        let set = endpoints(&core, 4);
        for e in &set {
            e.record_failure();
        }
        let ejected: Vec<_> = set
            .iter()
            .filter(|e| state(e) == HealthState::Ejected)
            .collect();
        assert_eq!(ejected.len(), 2, "50 % of 4");
        assert_eq!(core.ejected(), 2);
        assert_eq!(core.counts(), (4, 2));

        // A slot frees when one returns; the next failure of a held-back
        // endpoint takes it.
        set[0].end_ejection();
        assert_eq!(core.ejected(), 1);
        set[2].record_failure();
        assert_eq!(state(&set[2]), HealthState::Ejected);
        assert_eq!(core.ejected(), 2);
        set[3].record_failure();
        assert_eq!(state(&set[3]), HealthState::Healthy);

        // One endpoint of one: 50 % rounds down to none.
        let single = self::core(Some(passive(1)), None, AllUnhealthy::FailFast);
        let only = endpoints(&single, 1);
        only[0].record_failure();
        assert_eq!(state(&only[0]), HealthState::Healthy);
    }

    #[test]
    fn all_unhealthy_modes() {
        for mode in [AllUnhealthy::FailFast, AllUnhealthy::Panic] {
            let core = core(None, None, mode);
            let set = endpoints(&core, 2);
            (0..3).for_each(|_| set[0].record_probe(false));
            assert!(!set[0].admits() && !set[0].fails_fast());
            (0..3).for_each(|_| set[1].record_probe(false));
            assert!(core.all_down());
            for e in &set {
                assert!(
                    e.admits(),
                    "{mode:?}: picks go through when none is healthy"
                );
                assert_eq!(e.fails_fast(), mode == AllUnhealthy::FailFast);
            }
            (0..2).for_each(|_| set[1].record_probe(true));
            assert!(
                !set[0].admits(),
                "{mode:?}: back to normal once one recovers"
            );
            assert!(set[1].admits() && !set[1].fails_fast());
        }
    }

    #[test]
    fn active_checks_do_not_end_an_ejection() {
        let core = core(Some(passive(1)), None, AllUnhealthy::FailFast);
        let set = endpoints(&core, 2);
        set[0].record_failure();
        assert_eq!(state(&set[0]), HealthState::Ejected);
        (0..10).for_each(|_| set[0].record_probe(true));
        assert_eq!(
            state(&set[0]),
            HealthState::Ejected,
            "passing probes do not undo what real requests showed"
        );
        assert_eq!(core.ejected(), 1);

        // The end of an ejection does not bring back an endpoint held down.
        (0..3).for_each(|_| set[0].record_probe(false));
        set[0].end_ejection();
        assert_eq!(state(&set[0]), HealthState::Unhealthy);
        assert_eq!(core.ejected(), 0);
        // Probes bring it back from what probes started, on probation.
        (0..2).for_each(|_| set[0].record_probe(true));
        assert_eq!(state(&set[0]), HealthState::SlowStart);
    }

    #[test]
    fn probation_after_an_ejection() {
        let core = core(Some(passive(5)), None, AllUnhealthy::FailFast);
        let set: Vec<Arc<EndpointState>> = endpoints(&core, 3).into_iter().map(Arc::new).collect();
        (0..5).for_each(|_| set[0].record_failure());
        assert_eq!(state(&set[0]), HealthState::Ejected);
        let first = set[0].report().ejected_until.unwrap() - core.now();
        set[0].end_ejection();
        assert_eq!(state(&set[0]), HealthState::SlowStart, "back on probation");

        // One request at a time at first.
        assert!(set[0].admits());
        let slot = set[0].start_request();
        assert!(slot.is_some());
        assert!(!set[0].admits(), "a second waits for the first's outcome");
        set[0].record_success();
        drop(slot);
        // Then two, four, eight; then the probation is over.
        let slots: Vec<_> = (0..2).map(|_| set[0].start_request()).collect();
        assert!(!set[0].admits());
        drop(slots);
        for _ in 0..3 {
            set[0].record_success();
        }
        assert_eq!(state(&set[0]), HealthState::Healthy);
        assert!(set[0].start_request().is_none(), "nothing held once passed");

        // One failure on probation ejects it again at once, for longer.
        (0..5).for_each(|_| set[1].record_failure());
        set[1].end_ejection();
        set[1].record_failure();
        assert_eq!(state(&set[1]), HealthState::Ejected);
        let second = set[1].report().ejected_until.unwrap() - core.now();
        assert!(second > first, "{second} after {first}");
    }

    #[test]
    fn slow_start_admits_a_rising_share() {
        let window = Duration::from_secs(10);
        let core = core(None, Some(window), AllUnhealthy::FailFast);
        let set = endpoints(&core, 2);
        let admitted = |e: &EndpointState| (0..1000).filter(|_| e.admits()).count();
        assert_eq!(state(&set[1]), HealthState::SlowStart);
        assert_eq!(admitted(&set[1]), 1000, "nobody steady yet: all admitted");

        let start = core.now();
        let second = Duration::from_secs(1).as_nanos() as u64;
        assert_eq!(set[0].ramp_tick(start + 11 * second), None);
        assert_eq!(state(&set[0]), HealthState::Healthy);
        assert_eq!(core.steady(), 1);

        let mut shares = Vec::new();
        for at in [0, 2, 5, 8] {
            assert!(set[1].ramp_tick(start + at * second).is_some());
            shares.push(admitted(&set[1]));
        }
        assert!(shares[0] >= 99 && shares[0] <= 110, "{shares:?}");
        assert!(
            shares.windows(2).all(|pair| pair[0] < pair[1]),
            "{shares:?}"
        );
        assert!((780..=820).contains(&shares[3]), "{shares:?}");
    }

    #[test]
    fn removed_endpoints_leave_the_counts() {
        let core = core(Some(passive(1)), None, AllUnhealthy::FailFast);
        let set = endpoints(&core, 3);
        set[0].record_failure();
        assert_eq!((core.counts(), core.ejected()), ((3, 2), 1));
        set[0].deregister();
        set[0].deregister();
        assert_eq!((core.counts(), core.ejected()), ((2, 2), 0));
        set[1].deregister();
        set[1].record_failure();
        (0..3).for_each(|_| set[1].record_probe(false));
        assert_eq!((core.counts(), core.ejected()), ((1, 1), 0));
    }

    #[test]
    fn invalid_settings_are_refused() {
        let check = |config: HealthConfig<String>, expected: InvalidHealthConfig| {
            assert_eq!(config.validate(), Err(expected));
        };
        let tcp = || ActiveChecks::new(TcpProbe);
        check(
            HealthConfig::new().active(tcp().interval(Duration::ZERO)),
            InvalidHealthConfig::ZeroInterval,
        );
        check(
            HealthConfig::new().active(tcp().timeout(Duration::ZERO)),
            InvalidHealthConfig::ZeroTimeout,
        );
        check(
            HealthConfig::new().active(
                tcp()
                    .interval(Duration::from_secs(2))
                    .jitter(Duration::from_millis(1001)),
            ),
            InvalidHealthConfig::JitterTooLarge {
                jitter: Duration::from_millis(1001),
                interval: Duration::from_secs(2),
            },
        );
        check(
            HealthConfig::new().active(tcp().rise(0)),
            InvalidHealthConfig::ZeroThreshold,
        );
        check(
            HealthConfig::new().active(tcp().fall(0)),
            InvalidHealthConfig::ZeroThreshold,
        );
        check(
            HealthConfig::new().passive(OutlierDetection::new().consecutive_failures(0)),
            InvalidHealthConfig::ZeroConsecutiveFailures,
        );
        check(
            HealthConfig::new().passive(OutlierDetection::new().base_ejection(Duration::ZERO)),
            InvalidHealthConfig::ZeroEjectionTime,
        );
        check(
            HealthConfig::new().passive(
                OutlierDetection::new()
                    .base_ejection(Duration::from_secs(60))
                    .max_ejection(Duration::from_secs(59)),
            ),
            InvalidHealthConfig::MaxEjectionBelowBase,
        );
        check(
            HealthConfig::new().passive(OutlierDetection::new().max_ejected_percent(101)),
            InvalidHealthConfig::EjectedPercentOver100(101),
        );
        check(
            HealthConfig::new().slow_start(Duration::ZERO),
            InvalidHealthConfig::ZeroSlowStart,
        );
        #[allow(clippy::reversed_empty_ranges)]
        let empty = 300..=200;
        for probe in [
            HttpProbe::get("health"),
            HttpProbe::get("/a b"),
            HttpProbe::get("/").expect_status(empty),
            HttpProbe::get("/").expect_status(0..=99),
        ] {
            let config = HealthConfig::<String>::new().active(ActiveChecks::new(probe));
            assert!(
                matches!(config.validate(), Err(InvalidHealthConfig::Probe(_))),
                "{config:?}"
            );
        }
        let fine = HealthConfig::<String>::new()
            .active(
                ActiveChecks::new(HttpProbe::get("/healthz?full=1"))
                    .rise(1)
                    .fall(1),
            )
            .passive(OutlierDetection::new().max_ejected_percent(100))
            .slow_start(Duration::from_secs(1));
        assert_eq!(fine.validate(), Ok(()));
        assert!(!InvalidHealthConfig::ZeroInterval.to_string().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn pauses_keep_an_endpoint_out_until_they_end() {
        let core = Arc::new(
            Core::new(None, None, AllUnhealthy::FailFast, (2, 3), Some(1))
                .with_max_pushback(Duration::from_secs(10)),
        );
        let set = endpoints(&core, 2);
        let paused_for = |e: &EndpointState| {
            EndpointHealth::read((), e)
                .paused_until()
                .map(|until| until - tokio::time::Instant::now())
        };
        set[0].pause_for(Duration::from_secs(3));
        assert!(!set[0].admits(), "paused at its own request");
        assert!(set[1].admits());
        assert_eq!(
            state(&set[0]),
            HealthState::Healthy,
            "a pause is not a failure"
        );
        assert_eq!(paused_for(&set[0]), Some(Duration::from_secs(3)));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(set[0].admits(), "the pause is over");
        assert_eq!(paused_for(&set[0]), None);

        // Capped by the set's maximum; zero asks for nothing.
        set[0].pause_for(Duration::from_secs(3600));
        assert_eq!(paused_for(&set[0]), Some(Duration::from_secs(10)));
        set[1].pause_for(Duration::ZERO);
        assert!(set[1].admits());

        // Every healthy endpoint paused: the pauses are ignored.
        set[1].pause_for(Duration::from_secs(5));
        assert!(set[0].admits() && set[1].admits());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(set[1].admits(), "its pause is over");
        assert!(!set[0].admits(), "the other is still paused, and alone");
    }

    /// Health-checked services over `inner`, as the balancer gets them, and
    /// the adapter that keeps their health states registered.
    async fn healthy<S: Clone, C: Clone>(
        inner: Vec<S>,
        config: HealthConfig<usize, C>,
    ) -> (
        impl Sized,
        Vec<super::Healthy<crate::endpoint::Weighted<S>, C>>,
    ) {
        use std::future::poll_fn;
        use tower::discover::{Change, Discover};
        let list = crate::discover::StaticList::new(inner.into_iter().enumerate());
        let mut discover = Box::pin(super::HealthDiscover::new(list, config).unwrap());
        let mut services = Vec::new();
        while let Some(Ok(Change::Insert(_, service))) =
            poll_fn(|cx| discover.as_mut().poll_discover(cx)).await
        {
            services.push(service);
        }
        (discover, services)
    }

    #[tokio::test(start_paused = true)]
    async fn request_faults_and_busy_endpoints_do_not_count_and_timeouts_do() {
        use tower::{service_fn, BoxError, Service, ServiceExt};

        use crate::classify::RequestFault;

        type Call = tower::util::BoxCloneSyncService<(), (), BoxError>;
        // 0: fails by the request's fault; 1: never answers, under a timeout.
        let faulty: Call = tower::util::BoxCloneSyncService::new(service_fn(|()| async {
            Err::<(), BoxError>(RequestFault::new("the body stream ended early").into())
        }));
        let busy: Call = tower::util::BoxCloneSyncService::new(service_fn(|()| async {
            Err::<(), BoxError>(crate::classify::Busy::new("answered others meanwhile").into())
        }));
        let hanging: Call = tower::util::BoxCloneSyncService::new(tower::timeout::Timeout::new(
            service_fn(|()| std::future::pending::<Result<(), BoxError>>()),
            Duration::from_millis(100),
        ));
        let config = HealthConfig::new()
            .passive(passive(2))
            .classify(crate::classify::ErrorsOnly);
        let (_set, mut services) = healthy(vec![faulty, hanging, busy], config).await;
        async fn fail(service: &mut (impl Service<(), Error = BoxError> + Send)) -> BoxError {
            service
                .ready()
                .await
                .unwrap()
                .call(())
                .await
                .err()
                .expect("an error")
        }
        for _ in 0..5 {
            let error = fail(&mut services[0]).await;
            assert!(crate::classify::is_request_fault(&*error));
        }
        assert!(
            services[0].is_healthy(),
            "five request faults eject nothing"
        );
        assert_eq!(services[0].health(0).consecutive_failures(), 0);

        for _ in 0..5 {
            let error = fail(&mut services[2]).await;
            assert!(crate::classify::is_busy(&*error));
        }
        assert!(services[2].is_healthy(), "a busy endpoint is not ejected");

        for _ in 0..2 {
            let error = fail(&mut services[1]).await;
            assert!(error.is::<tower::timeout::error::Elapsed>(), "{error}");
        }
        assert_eq!(
            services[1].health(1).state(),
            HealthState::Ejected,
            "two timed-out attempts in a row eject it"
        );
    }
}
