//! Dispatch overhead: a request through a balancer to in-process endpoints
//! that answer at once, at 1 and 8 concurrent tasks, side by side in one run:
//!
//! * `direct`: calling one endpoint, no balancer (the floor);
//! * `tower_lb_p2c`: this crate's `Balance` with power of two choices over
//!   requests in flight, one clone per task;
//! * `tower_lb_round_robin`: the same with round robin;
//! * `tower_p2c_buffer`: `tower::balance::p2c::Balance` over pending-request
//!   load behind `tower::buffer::Buffer`, which is what sharing tower's
//!   balancer between tasks takes.
//!
//! Each sample spawns the tasks, which share the iterations, and reports the
//! wall time per request.
//!
//! ```sh
//! cargo bench --bench dispatch
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use tower::{service_fn, Service, ServiceExt};
use tower_lb::discover::StaticList;
use tower_lb::load::{CompleteOnResponse, InFlightDiscover};
use tower_lb::pick::{P2c, RoundRobin};
use tower_lb::Balance;

const ENDPOINTS: usize = 8;
const TASKS: [usize; 2] = [1, 8];

fn endpoint(
    id: usize,
) -> impl Service<
    u64,
    Response = usize,
    Error = Infallible,
    Future = impl Future<Output = Result<usize, Infallible>> + Send,
> + Clone
       + Send
       + Sync
       + 'static {
    service_fn(move |_req: u64| async move { Ok::<_, Infallible>(id) })
}

/// Runs `iters` requests spread over `tasks` tasks, each on its own clone of
/// `svc`, and returns the elapsed wall time.
fn run<S>(rt: &tokio::runtime::Runtime, svc: &S, tasks: usize, iters: u64) -> Duration
where
    S: Service<u64> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug,
{
    rt.block_on(async {
        let start = Instant::now();
        let handles: Vec<_> = (0..tasks as u64)
            .map(|t| {
                let mut svc = svc.clone();
                let share = iters / tasks as u64 + u64::from(t < iters % tasks as u64);
                tokio::spawn(async move {
                    for i in 0..share {
                        svc.ready()
                            .await
                            .expect("ready")
                            .call(i)
                            .await
                            .expect("call");
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.await.expect("task");
        }
        start.elapsed()
    })
}

fn dispatch(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    let list = || StaticList::new((0..ENDPOINTS).map(|i| (i, endpoint(i))));
    let (p2c, rr, tower_p2c) = rt.block_on(async {
        let p2c = Balance::new(
            InFlightDiscover::with_completion(list(), CompleteOnResponse),
            P2c::with_seed(7),
        );
        p2c.wait_for(|keys| keys.len() == ENDPOINTS).await;
        let rr = Balance::new(list(), RoundRobin::new());
        rr.wait_for(|keys| keys.len() == ENDPOINTS).await;

        let services = (0..ENDPOINTS).map(endpoint).collect::<Vec<_>>();
        let discover = tower::load::PendingRequestsDiscover::new(
            tower::discover::ServiceList::new(services),
            tower::load::CompleteOnResponse::default(),
        );
        let tower_p2c =
            tower::buffer::Buffer::new(tower::balance::p2c::Balance::new(discover), 1024);
        (p2c, rr, tower_p2c)
    });
    let direct = endpoint(0);

    let mut group = c.benchmark_group("dispatch");
    group.measurement_time(Duration::from_secs(3));
    for tasks in TASKS {
        group.bench_with_input(BenchmarkId::new("direct", tasks), &tasks, |b, &tasks| {
            b.iter_custom(|iters| run(&rt, &direct, tasks, iters))
        });
        group.bench_with_input(
            BenchmarkId::new("tower_lb_p2c", tasks),
            &tasks,
            |b, &tasks| b.iter_custom(|iters| run(&rt, &p2c, tasks, iters)),
        );
        group.bench_with_input(
            BenchmarkId::new("tower_lb_round_robin", tasks),
            &tasks,
            |b, &tasks| b.iter_custom(|iters| run(&rt, &rr, tasks, iters)),
        );
        group.bench_with_input(
            BenchmarkId::new("tower_p2c_buffer", tasks),
            &tasks,
            |b, &tasks| b.iter_custom(|iters| run(&rt, &tower_p2c, tasks, iters)),
        );
    }
    group.finish();
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
