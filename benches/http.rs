//! HTTP on loopback: a hyper-util legacy client sending straight to one
//! axum backend, against the same client behind `Balance` over 2 and 4
//! backends, at 1 and 8 concurrent tasks, in one criterion group (`http`):
//!
//! * `direct`: `Client::request` with the backend's full URI;
//! * `round_robin_N`, `p2c_N`: `Balance` with round robin or power of two
//!   choices over `InFlightDiscover` (requests counted until the response
//!   body ends), over N backends. Each endpoint is the same client pinned to
//!   one backend: it fills in the scheme and authority of a request that
//!   carries only a path.
//!
//! Four more arms split that overhead, all without a balancer:
//! `direct_spread_N` (the client sending to N backends in turn, so the cost
//! of spreading requests at all), `pinned` (the pinned client alone, so its
//! URI rewrite) and `pinned_in_flight` (that, wrapped in `InFlight`:
//! counting the request until its body ends), both to one backend. A last
//! one, `round_robin_2_shared`, is `round_robin_2` with each endpoint behind
//! an `Arc`: the balancer clones the picked endpoint for every request, and
//! a hyper-util `Client` is several reference counts to clone.
//!
//! Every request is a `GET /` answered with a 2-byte body, read to its end.
//! Both sides set `TCP_NODELAY`. After criterion's report the bench runs
//! the same cases again, interleaved round by round (see
//! `support/paired.rs`), and prints each configuration's time per request
//! and its overhead over `direct` in the same rounds: on loopback the
//! overhead is a few percent at most, less than the drift of a shared
//! machine between two criterion cases.
//!
//! Backends and client share one current-thread runtime, driven by the
//! benchmark thread. A request's round trip then never wakes another
//! thread, and what is measured is that thread's CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`): client, server and loopback system calls
//! together, without the time the thread sat waiting for a core while other
//! processes ran. On one core, requests per second is its inverse, so the
//! ratio of two arms' CPU times is the ratio of their throughputs. With
//! the client and the backends on separate runtimes (or on a multi-thread
//! runtime), each request crosses threads twice, and wall time then counts
//! the wake-ups: on the shared 2-core virtual machine of
//! `docs/benchmarks.md` the time per request flipped between about 10 and
//! 20 µs from one round to the next, dozens of times the difference being
//! measured. One thread also makes the comparison conservative: the
//! balancer's cost is a larger share of a request than when client and
//! server work run in parallel.
//!
//! ```sh
//! cargo bench --bench http
//! ```

#[path = "support/cpu_time.rs"]
mod cpu_time;
#[path = "support/paired.rs"]
mod paired;

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::TokioExecutor;
use tokio::runtime::Runtime;
use tower::{Service, ServiceExt};
use tower_lb::discover::StaticList;
use tower_lb::endpoint::Weighted;
use tower_lb::load::{InFlight, InFlightDiscover};
use tower_lb::pick::{P2c, Pick, RoundRobin};
use tower_lb::Balance;

use cpu_time::thread_cpu_time;
use paired::{compare, format_ns, Arm};

const BACKENDS: [usize; 2] = [2, 4];
const TASKS: [usize; 2] = [1, 8];

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// The same client pinned to one backend: it fills in the scheme and
/// authority, so the balancer's requests carry only a path. Its future is
/// the client's own; it allocates nothing of its own per request.
#[derive(Clone, Debug)]
struct Endpoint {
    client: HttpClient,
    authority: Authority,
}

impl Endpoint {
    fn new(client: &HttpClient, addr: SocketAddr) -> Self {
        Self {
            client: client.clone(),
            authority: Authority::try_from(addr.to_string()).expect("authority"),
        }
    }

    fn send(&self, mut request: Request<Empty<Bytes>>) -> ResponseFuture {
        let mut parts = std::mem::take(request.uri_mut()).into_parts();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(self.authority.clone());
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(PathAndQuery::from_static("/"));
        }
        *request.uri_mut() = Uri::from_parts(parts).expect("scheme, authority and path are set");
        self.client.request(request)
    }
}

impl Service<Request<Empty<Bytes>>> for Endpoint {
    type Response = Response<Incoming>;
    type Error = hyper_util::client::legacy::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Empty<Bytes>>) -> ResponseFuture {
        self.send(request)
    }
}

/// An [`Endpoint`] behind an `Arc`: cloning it is one reference-count
/// increment, where cloning a hyper-util `Client` takes several. The
/// balancer clones the picked endpoint for every request.
#[derive(Clone, Debug)]
struct SharedEndpoint(Arc<Endpoint>);

impl Service<Request<Empty<Bytes>>> for SharedEndpoint {
    type Response = Response<Incoming>;
    type Error = hyper_util::client::legacy::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Empty<Bytes>>) -> ResponseFuture {
        self.0.send(request)
    }
}

/// Starts `count` backends on ephemeral loopback ports, served by `rt`.
fn backends(rt: &Runtime, count: usize) -> Vec<SocketAddr> {
    rt.block_on(async {
        let mut addrs = Vec::new();
        for _ in 0..count {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind a loopback port");
            addrs.push(listener.local_addr().expect("local address"));
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let app = Router::new().route("/", get(|| async { "ok" }));
            tokio::spawn(async move { axum::serve(listener, app).await });
        }
        addrs
    })
}

fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

/// Runs `iters` requests spread over `tasks` tasks, each on its own
/// clone of `svc`, reading every body to its end; returns the CPU time the
/// runtime's one thread spent on them.
///
/// Each task sends its requests to the URIs of `uris` in turn.
fn run<S, B>(rt: &Runtime, svc: &S, uris: &[Uri], tasks: usize, iters: u64) -> Duration
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug,
    B: http_body::Body + Send,
    B::Data: Send,
    B::Error: std::fmt::Debug,
{
    let start = thread_cpu_time();
    rt.block_on(async {
        let handles: Vec<_> = (0..tasks as u64)
            .map(|t| {
                let mut svc = svc.clone();
                let uris = uris.to_vec();
                let share = iters / tasks as u64 + u64::from(t < iters % tasks as u64);
                tokio::spawn(async move {
                    for i in 0..share {
                        let uri = &uris[(i + t) as usize % uris.len()];
                        let request = Request::get(uri.clone())
                            .body(Empty::new())
                            .expect("request");
                        let response = svc
                            .ready()
                            .await
                            .expect("ready")
                            .call(request)
                            .await
                            .expect("response");
                        let body = response.into_body().collect().await.expect("body");
                        assert_eq!(body.to_bytes().len(), 2);
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.await.expect("task");
        }
    });
    thread_cpu_time() - start
}

/// Benchmarks `svc` as `name` with `tasks` concurrent tasks.
fn case<S, B>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &Runtime,
    name: &str,
    tasks: usize,
    svc: &S,
    uris: &[Uri],
) where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug,
    B: http_body::Body + Send,
    B::Data: Send,
    B::Error: std::fmt::Debug,
{
    group.bench_with_input(BenchmarkId::new(name, tasks), &tasks, |b, &tasks| {
        b.iter_custom(|iters| run(rt, svc, uris, tasks, iters))
    });
}

/// A balancer with `picker` over `endpoints`, each counted in flight until
/// its response body ends.
fn balanced<E, P>(
    rt: &Runtime,
    endpoints: Vec<(SocketAddr, E)>,
    picker: P,
) -> Balance<SocketAddr, Weighted<InFlight<E>>, P>
where
    E: Service<Request<Empty<Bytes>>> + Clone + Send + Sync + 'static,
    P: Pick<Request<Empty<Bytes>>, Weighted<InFlight<E>>>,
{
    let count = endpoints.len();
    rt.block_on(async {
        let balance = Balance::new(InFlightDiscover::new(StaticList::new(endpoints)), picker);
        balance.wait_for(|keys| keys.len() == count).await;
        balance
    })
}

fn http(c: &mut Criterion) {
    let max = *BACKENDS.iter().max().expect("backend counts");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let addrs = backends(&rt, max);
    let client = client();
    let uris: Vec<Uri> = addrs
        .iter()
        .map(|addr| format!("http://{addr}/").parse().expect("uri"))
        .collect();
    let direct = &uris[..1];
    let path = &[Uri::from_static("/")][..];
    let pinned = Endpoint::new(&client, addrs[0]);
    let pinned_in_flight = InFlight::new(pinned.clone());
    let endpoints = |count: usize| -> Vec<(SocketAddr, Endpoint)> {
        addrs[..count]
            .iter()
            .map(|&addr| (addr, Endpoint::new(&client, addr)))
            .collect()
    };
    let rr2 = balanced(&rt, endpoints(2), RoundRobin::new());
    let rr4 = balanced(&rt, endpoints(4), RoundRobin::new());
    let p2c2 = balanced(&rt, endpoints(2), P2c::with_seed(7));
    let p2c4 = balanced(&rt, endpoints(4), P2c::with_seed(7));
    let shared = endpoints(2)
        .into_iter()
        .map(|(addr, endpoint)| (addr, SharedEndpoint(Arc::new(endpoint))))
        .collect();
    let rr2_shared = balanced(&rt, shared, RoundRobin::new());

    let mut group = c.benchmark_group("http");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    for tasks in TASKS {
        case(&mut group, &rt, "direct", tasks, &client, direct);
        case(
            &mut group,
            &rt,
            "direct_spread_2",
            tasks,
            &client,
            &uris[..2],
        );
        case(
            &mut group,
            &rt,
            "direct_spread_4",
            tasks,
            &client,
            &uris[..4],
        );
        case(&mut group, &rt, "pinned", tasks, &pinned, path);
        case(
            &mut group,
            &rt,
            "pinned_in_flight",
            tasks,
            &pinned_in_flight,
            path,
        );
        case(&mut group, &rt, "round_robin_2", tasks, &rr2, path);
        case(&mut group, &rt, "p2c_2", tasks, &p2c2, path);
        case(&mut group, &rt, "round_robin_4", tasks, &rr4, path);
        case(&mut group, &rt, "p2c_4", tasks, &p2c4, path);
        case(
            &mut group,
            &rt,
            "round_robin_2_shared",
            tasks,
            &rr2_shared,
            path,
        );
    }
    group.finish();

    if !paired::benchmarking() {
        return;
    }
    println!(
        "\nPaired comparison, {ROUNDS} interleaved rounds (medians; IQR of the paired overhead):\n"
    );
    println!(
        "| tasks | client | per request | overhead over direct | IQR | requests/s vs direct |"
    );
    println!("|---:|---|---:|---:|---:|---:|");
    for tasks in TASKS {
        let mut arms = [
            Arm::new("direct", |n| run(&rt, &client, direct, tasks, n)),
            Arm::new("direct_spread_2", |n| {
                run(&rt, &client, &uris[..2], tasks, n)
            }),
            Arm::new("direct_spread_4", |n| {
                run(&rt, &client, &uris[..4], tasks, n)
            }),
            Arm::new("pinned", |n| run(&rt, &pinned, path, tasks, n)),
            Arm::new("pinned_in_flight", |n| {
                run(&rt, &pinned_in_flight, path, tasks, n)
            }),
            Arm::new("round_robin_2", |n| run(&rt, &rr2, path, tasks, n)),
            Arm::new("p2c_2", |n| run(&rt, &p2c2, path, tasks, n)),
            Arm::new("round_robin_4", |n| run(&rt, &rr4, path, tasks, n)),
            Arm::new("p2c_4", |n| run(&rt, &p2c4, path, tasks, n)),
            Arm::new("round_robin_2_shared", |n| {
                run(&rt, &rr2_shared, path, tasks, n)
            }),
        ];
        for o in compare(&mut arms, ROUNDS, Duration::from_millis(20)) {
            println!(
                "| {tasks} | {} | {} | {} | {} – {} | {:+.1} % |",
                o.name,
                format_ns(o.median),
                format_ns(o.overhead),
                format_ns(o.overhead_iqr.0),
                format_ns(o.overhead_iqr.1),
                100.0 * (1.0 / o.ratio - 1.0)
            );
        }
    }
}

/// Rounds of the paired comparison, per task count.
const ROUNDS: usize = 50;

fn main() {
    let mut c = Criterion::default().configure_from_args();
    http(&mut c);
    c.final_summary();
}
