//! What the churn and failure tests share: the full client stack (retry,
//! per-try timeout, balance over health over in-flight counting over a
//! channel), endpoints that log every attempt with the moment it was
//! picked, and a load of many tasks.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::watch;
use tower::util::BoxCloneService;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_lb::balance::TriedEndpoints;
use tower_lb::discover::{self, ChannelDiscover, EndpointSender};
use tower_lb::endpoint::Weighted;
use tower_lb::health::{HealthConfig, HealthDiscover, HealthRegistry, Healthy};
use tower_lb::http::SetAuthority;
use tower_lb::load::{Handle, InFlight, InFlightDiscover, TrackedBody};
use tower_lb::pick::Pick;
use tower_lb::retry::{ReplayBody, RetryLayer, RetryPolicy};
use tower_lb::{Balance, BalanceLayer, BoxError};

/// The body callers send.
pub type ReqBody = Full<Bytes>;
/// The body endpoints send, after the retry layer.
pub type Body = ReplayBody<ReqBody>;
/// What the balancer holds for each endpoint.
pub type Held = Healthy<Weighted<InFlight<Recorded>>>;
/// The balancer, keyed by the backend's address.
pub type Lb<P> = Balance<SocketAddr, Held, P>;
/// The whole client as callers see it.
pub type LbClient =
    BoxCloneService<Request<ReqBody>, Response<TrackedBody<Incoming, Handle>>, BoxError>;

/// The clock that orders picks and changes: every change the tests make
/// takes the next tick, and every attempt is stamped, right before it is
/// picked, with the tick it saw.
#[derive(Clone, Debug, Default)]
pub struct Clock(Arc<AtomicU64>);

impl Clock {
    /// The next tick, for a change that has just taken effect (or is about
    /// to be made).
    pub fn tick(&self) -> u64 {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }

    pub fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The tick an attempt saw when it was picked, as a request extension.
#[derive(Clone, Copy, Debug)]
pub struct Stamp(pub u64);

/// Stamps each attempt right before the balancer picks for it: the
/// balancer picks inside `call`, so the stamp is no older than the pick.
#[derive(Clone, Debug)]
pub struct Stamped<S> {
    inner: S,
    clock: Clock,
}

impl<S, B> Service<Request<B>> for Stamped<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> S::Future {
        req.extensions_mut().insert(Stamp(self.clock.now()));
        self.inner.call(req)
    }
}

/// One attempt an endpoint received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub key: SocketAddr,
    /// The tick its endpoint was inserted at: tells a replaced endpoint
    /// from its replacement.
    pub generation: u64,
    /// The tick it saw right before its pick.
    pub stamp: u64,
}

/// Every attempt the endpoints received, and when each endpoint left the
/// set (removed, or replaced by a new endpoint of the same key).
#[derive(Debug, Default)]
pub struct Log {
    attempts: Mutex<Vec<Attempt>>,
    /// (key, generation) → the tick taken once its leaving took effect.
    retired: Mutex<HashMap<(SocketAddr, u64), u64>>,
}

impl Log {
    pub fn attempts(&self) -> Vec<Attempt> {
        self.attempts.lock().unwrap().clone()
    }

    /// Attempts picked after their endpoint's removal or replacement had
    /// taken effect: there must be none.
    pub fn late(&self) -> Vec<Attempt> {
        let retired = self.retired.lock().unwrap();
        self.attempts()
            .into_iter()
            .filter(|a| {
                retired
                    .get(&(a.key, a.generation))
                    .is_some_and(|&t| t <= a.stamp)
            })
            .collect()
    }

    /// Attempts at `key` stamped in `from..until`.
    pub fn count(&self, key: SocketAddr, from: u64, until: u64) -> usize {
        self.attempts()
            .iter()
            .filter(|a| a.key == key && (from..until).contains(&a.stamp))
            .count()
    }
}

/// A hyper client bound to one backend (every request's URI is rewritten
/// to it) that logs each attempt it is given.
#[derive(Clone, Debug)]
pub struct Recorded {
    inner: SetAuthority<Client<HttpConnector, Body>>,
    key: SocketAddr,
    generation: u64,
    log: Arc<Log>,
}

impl Service<Request<Body>> for Recorded {
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = tower_lb::http::ResponseFuture<hyper_util::client::legacy::ResponseFuture>;

    /// The client queues internally: always ready.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let stamp = req.extensions().get::<Stamp>().map_or(u64::MAX, |s| s.0);
        self.log.attempts.lock().unwrap().push(Attempt {
            key: self.key,
            generation: self.generation,
            stamp,
        });
        self.inner.call(req)
    }
}

/// The client stack and the handles the tests drive and inspect it by.
pub struct Stack<P: tower_lb::pick::Prepare> {
    pub client: LbClient,
    pub balance: Lb<P>,
    pub registry: HealthRegistry<SocketAddr>,
    pub sender: EndpointSender<SocketAddr, Recorded>,
    pub clock: Clock,
    pub log: Arc<Log>,
    http: Client<HttpConnector, Body>,
    /// The generation of each endpoint in the set.
    current: Mutex<HashMap<SocketAddr, u64>>,
}

impl<P> Stack<P>
where
    P: Pick<Request<Body>, Held>,
{
    /// Retry → per-try timeout → stamp → balance → health → in flight →
    /// channel, with an empty set.
    pub fn new(
        picker: P,
        health: HealthConfig<SocketAddr>,
        policy: RetryPolicy,
        per_try: Duration,
    ) -> Self {
        let (sender, discover): (_, ChannelDiscover<SocketAddr, Recorded>) = discover::channel();
        let discover = HealthDiscover::new(InFlightDiscover::new(discover), health)
            .expect("valid health settings");
        let registry = discover.registry();
        let balance: Lb<P> = BalanceLayer::new(picker).spawn(discover);
        let clock = Clock::default();
        let stamped = Stamped {
            inner: balance.clone(),
            clock: clock.clone(),
        };
        let client = ServiceBuilder::new()
            .layer(RetryLayer::new(policy))
            .timeout(per_try)
            .service(stamped);
        Self {
            client: BoxCloneService::new(client),
            balance,
            registry,
            sender,
            clock,
            log: Arc::new(Log::default()),
            http: Client::builder(TokioExecutor::new()).build_http(),
            current: Mutex::new(HashMap::new()),
        }
    }

    /// Inserts `addr` (or replaces it) and waits until the balancer holds
    /// the new endpoint; returns its generation, the tick taken just
    /// before the insert was sent.
    pub async fn insert(&self, addr: SocketAddr, weight: u32) -> u64 {
        assert!(addr.ip().is_loopback(), "tests only talk to loopback");
        let generation = self.clock.tick();
        let endpoint = Recorded {
            inner: SetAuthority::from_addr(self.http.clone(), addr),
            key: addr,
            generation,
            log: Arc::clone(&self.log),
        };
        self.sender
            .insert_weighted(addr, endpoint, weight)
            .expect("the balancer runs");
        let published = |_: &[SocketAddr]| self.generation(addr) == Some(generation);
        super::within("insert", self.balance.wait_for(published)).await;
        let replaced = self.current.lock().unwrap().insert(addr, generation);
        if let Some(old) = replaced {
            self.retire(addr, old);
        }
        generation
    }

    /// Removes `addr` and waits until the removal has taken effect;
    /// returns the tick taken then.
    pub async fn remove(&self, addr: SocketAddr) -> u64 {
        self.sender.remove(addr).expect("the balancer runs");
        let gone = |keys: &[SocketAddr]| !keys.contains(&addr);
        super::within("remove", self.balance.wait_for(gone)).await;
        let old = self.current.lock().unwrap().remove(&addr);
        self.retire(addr, old.expect("a known endpoint"))
    }

    /// The generation of the endpoint the balancer holds for `addr`.
    fn generation(&self, addr: SocketAddr) -> Option<u64> {
        self.balance.read_endpoints(|keys, services| {
            let i = keys.iter().position(|&k| k == addr)?;
            Some(services[i].get_ref().get_ref().get_ref().generation)
        })
    }

    fn retire(&self, addr: SocketAddr, generation: u64) -> u64 {
        let tick = self.clock.tick();
        self.log
            .retired
            .lock()
            .unwrap()
            .insert((addr, generation), tick);
        tick
    }
}

/// What a load run saw: how many requests failed (with the first few
/// errors), and how many attempts they took in all.
#[derive(Debug, Default)]
pub struct Outcome {
    pub sent: usize,
    pub failed: usize,
    pub errors: Vec<String>,
    pub attempts: usize,
}

impl Outcome {
    /// Asserts that all `requests` were sent and every one was answered.
    #[track_caller]
    pub fn assert_all_answered(&self, requests: usize) {
        assert_eq!(self.sent, requests);
        assert_eq!(self.failed, 0, "failed requests: {:?}", self.errors);
    }
}

/// Sends `total` GETs of `/` from `tasks` tasks, as fast as they answer;
/// `done` counts the requests finished, for the tests' pacing. Each answer
/// must be a 200 with the body of a backend name.
pub async fn load(
    client: LbClient,
    total: usize,
    tasks: usize,
    done: watch::Sender<usize>,
) -> Outcome {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let (client, next, done) = (client.clone(), Arc::clone(&next), done.clone());
        set.spawn(async move {
            let mut outcome = Outcome::default();
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let tried = TriedEndpoints::new();
                let mut req = Request::get("/").body(Full::new(Bytes::new())).unwrap();
                req.extensions_mut().insert(tried.clone());
                let client = client.clone();
                let answer = async move {
                    let response = client.oneshot(req).await?;
                    let status = response.status();
                    let body = response.into_body().collect().await?.to_bytes();
                    Ok::<_, BoxError>((status, body))
                };
                outcome.sent += 1;
                let answer = answer.await;
                outcome.attempts += tried.picks().max(1) as usize;
                match answer {
                    Ok((StatusCode::OK, body)) if !body.is_empty() => {}
                    Ok((status, body)) => outcome.fail(format!("{status}: {body:?}")),
                    Err(error) => outcome.fail(super::chain(&*error)),
                }
                done.send_modify(|n| *n += 1);
            }
            outcome
        });
    }
    let mut all = Outcome::default();
    while let Some(outcome) = set.join_next().await {
        let outcome = outcome.expect("a load task panicked");
        all.sent += outcome.sent;
        all.failed += outcome.failed;
        all.attempts += outcome.attempts;
        all.errors
            .extend(outcome.errors.into_iter().take(5 - all.errors.len().min(5)));
    }
    all
}

impl Outcome {
    fn fail(&mut self, error: String) {
        self.failed += 1;
        if self.errors.len() < 5 {
            self.errors.push(error);
        }
    }
}
