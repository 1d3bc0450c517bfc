//! Backoff and timeouts of the retry layer, on tokio's paused clock: the
//! delays asserted are virtual time, exact, not wall time. The endpoints are
//! in-process services, so nothing but the retry layer's timers moves the
//! clock.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_lb::balance::TriedEndpoints;
use tower_lb::discover;
use tower_lb::pick::RoundRobin;
use tower_lb::retry::{ReplayBody, RetryLayer, RetryPolicy};
use tower_lb::{BalanceLayer, BoxError, NoEndpoints};

type Req = Request<ReplayBody<Full<Bytes>>>;

#[derive(Clone, Copy)]
enum Behaviour {
    Answer(StatusCode),
    Refuse,
    Hang,
}

/// An endpoint that behaves one way and logs when each attempt reached it.
#[derive(Clone)]
struct Scripted {
    behaviour: Behaviour,
    log: Arc<Mutex<Vec<Instant>>>,
}

impl Service<Req> for Scripted {
    type Response = Response<String>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<String>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Req) -> Self::Future {
        self.log.lock().unwrap().push(Instant::now());
        let behaviour = self.behaviour;
        Box::pin(async move {
            match behaviour {
                Behaviour::Answer(status) => {
                    Ok(Response::builder().status(status).body(String::new())?)
                }
                Behaviour::Refuse => Err(io::Error::from(io::ErrorKind::ConnectionRefused).into()),
                Behaviour::Hang => std::future::pending().await,
            }
        })
    }
}

/// Endpoints behaving as `behaviours`, all logging to one log.
fn endpoints(
    behaviours: &[Behaviour],
) -> (
    discover::ChannelDiscover<usize, Scripted>,
    Arc<Mutex<Vec<Instant>>>,
) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let (sender, discover) = discover::channel();
    for (i, &behaviour) in behaviours.iter().enumerate() {
        let log = Arc::clone(&log);
        sender.insert(i, Scripted { behaviour, log }).unwrap();
    }
    (discover, log)
}

fn get() -> (Request<Full<Bytes>>, TriedEndpoints) {
    let tried = TriedEndpoints::new();
    let mut req = Request::get("http://service/")
        .body(Full::new(Bytes::new()))
        .unwrap();
    req.extensions_mut().insert(tried.clone());
    (req, tried)
}

fn gaps(log: &Mutex<Vec<Instant>>) -> Vec<Duration> {
    let log = log.lock().unwrap();
    log.windows(2).map(|w| w[1] - w[0]).collect()
}

/// The delays between the attempts of one request against three failing
/// endpoints, with `seed`.
async fn delays_with_seed(seed: u64) -> Vec<Duration> {
    let fail = Behaviour::Answer(StatusCode::SERVICE_UNAVAILABLE);
    let (discover, log) = endpoints(&[fail, fail, fail]);
    let policy = RetryPolicy::new()
        .max_attempts(5)
        .backoff(Duration::from_millis(100), Duration::from_millis(300))
        .seed(seed);
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(policy.clone()))
        .layer(BalanceLayer::new(RoundRobin::new()))
        .service(discover);
    let (req, tried) = get();
    let response = svc.oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(tried.picks(), 5);
    let gaps = gaps(&log);
    assert_eq!(gaps.len(), 4);
    for (n, gap) in (1..).zip(&gaps) {
        assert!(*gap <= policy.max_delay(n), "retry {n} waited {gap:?}");
    }
    gaps
}

#[tokio::test(start_paused = true)]
async fn backoff_is_jittered_under_an_exponential_cap() {
    let policy = RetryPolicy::new().backoff(Duration::from_millis(100), Duration::from_millis(300));
    let ceilings: Vec<_> = (1..=4).map(|n| policy.max_delay(n)).collect();
    let ms = Duration::from_millis;
    assert_eq!(ceilings, [ms(100), ms(200), ms(300), ms(300)]);

    let first = delays_with_seed(7).await;
    assert_eq!(delays_with_seed(7).await, first, "seeded jitter repeats");
    // Full jitter: the delays spread over their windows, not at their ends.
    let mut all = Vec::new();
    for seed in 0..20 {
        all.extend(delays_with_seed(seed).await);
    }
    assert!(all.iter().any(|d| *d < ms(50)), "{all:?}");
    assert!(all.iter().any(|d| *d > ms(150)), "{all:?}");
}

#[tokio::test(start_paused = true)]
async fn a_refused_connection_is_re_picked_at_once() {
    use Behaviour::*;
    let (discover, log) = endpoints(&[Refuse, Refuse, Answer(StatusCode::OK)]);
    let policy = RetryPolicy::new()
        .backoff(Duration::from_millis(100), Duration::from_secs(1))
        .seed(3);
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(policy))
        .layer(BalanceLayer::new(RoundRobin::new()))
        .service(discover);
    // Round robin starts at the first refusing endpoint.
    let (req, tried) = get();
    let response = svc.oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(tried.picks(), 3);
    let gaps = gaps(&log);
    assert_eq!(
        gaps[0],
        Duration::ZERO,
        "the first re-pick after a refusal waited"
    );
    assert!(gaps[1] <= Duration::from_millis(200));
}

#[tokio::test(start_paused = true)]
async fn per_attempt_timeouts_are_retried_inside_the_overall_one() {
    use Behaviour::*;
    let stack = |discover| {
        ServiceBuilder::new()
            .timeout(Duration::from_millis(2500))
            .layer(RetryLayer::new(RetryPolicy::new().max_attempts(5).seed(1)))
            .timeout(Duration::from_secs(1))
            .layer(BalanceLayer::new(RoundRobin::new()))
            .service(discover)
    };

    // One endpoint hangs: a GET that meets it times out once, then succeeds.
    let (discover, _) = endpoints(&[Hang, Answer(StatusCode::OK)]);
    let svc = stack(discover);
    let start = Instant::now();
    let (req, tried) = get();
    let response = svc.clone().oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(tried.picks(), 2);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(1) && waited <= Duration::from_millis(1025),
        "{waited:?}"
    );

    // A POST that meets it is not resent: the attempt's timeout comes back.
    let mut post = Request::post("http://service/")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let tried = TriedEndpoints::new();
    post.extensions_mut().insert(tried.clone());
    let error = svc.clone().oneshot(post).await.unwrap_err();
    assert!(error.is::<tower::timeout::error::Elapsed>(), "{error}");
    assert_eq!(tried.picks(), 1);

    // Every endpoint hangs: the overall timeout ends the call.
    let (discover, log) = endpoints(&[Hang, Hang]);
    let start = Instant::now();
    let error = stack(discover).oneshot(get().0).await.unwrap_err();
    assert!(error.is::<tower::timeout::error::Elapsed>(), "{error}");
    assert_eq!(start.elapsed(), Duration::from_millis(2500));
    assert!(
        log.lock().unwrap().len() >= 2,
        "retried before the overall timeout"
    );
}

#[tokio::test(start_paused = true)]
async fn no_endpoints_is_not_retried() {
    let (discover, _) = endpoints(&[]);
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(RetryPolicy::new()))
        .layer(BalanceLayer::new(RoundRobin::new()).wait(Duration::ZERO))
        .service(discover);
    let start = Instant::now();
    let (req, tried) = get();
    let error = svc.oneshot(req).await.unwrap_err();
    assert!(error.is::<NoEndpoints>(), "{error}");
    assert_eq!(tried.picks(), 0);
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "no backoff, no second wait"
    );
}
