//! Dispatch overhead: a request through a balancer to in-process endpoints
//! that answer at once (`tower::service_fn`), at 1 and 8 concurrent tasks,
//! side by side in one criterion group (`dispatch`):
//!
//! * `direct`: calling one endpoint, no balancer (the floor);
//! * `direct_in_flight`: calling one endpoint wrapped in [`InFlight`], no
//!   balancer: the cost of counting requests in flight alone, which
//!   `tower_lb_p2c` pays too;
//! * `tower_lb_p2c`: this crate's `Balance` with power of two choices over
//!   requests in flight (`InFlightDiscover`), one clone per task;
//! * `tower_lb_p2c_latency`: the same over Peak-EWMA (`LatencyDiscover`),
//!   whose load reads must stay within 1.5× of in-flight counting's cost;
//! * `tower_lb_round_robin`: `Balance` with round robin, no load tracking;
//! * `tower_p2c_buffer`: `tower::balance::p2c::Balance` over pending-request
//!   load behind `tower::buffer::Buffer`, which is what sharing tower's
//!   balancer between tasks takes.
//!
//! Eight endpoints; a multi-thread runtime with 2 workers. Each sample
//! spawns the tasks, which share the sample's iterations, and reports the
//! process's CPU time per request (every thread: the workers, and
//! `Buffer`'s worker task wherever it runs): what a request costs the
//! machine, which on a shared machine moves far less between runs than wall
//! time. After criterion's report the bench runs the same cases again,
//! interleaved round by round (see `support/paired.rs`), and prints each
//! balancer's overhead over `direct` and its ratio to the overhead of
//! `tower_p2c_buffer`: the figures that hold on a busy machine.
//!
//! ```sh
//! cargo bench --bench dispatch
//! ```

#[path = "support/cpu_time.rs"]
mod cpu_time;
#[path = "support/paired.rs"]
mod paired;

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion};
use tower::{service_fn, Service, ServiceExt};
use tower_lb::discover::StaticList;
use tower_lb::load::{
    CompleteOnResponse, InFlight, InFlightDiscover, LatencyDiscover, DEFAULT_DECAY, DEFAULT_RTT,
};
use tower_lb::pick::{P2c, RoundRobin};
use tower_lb::Balance;

use cpu_time::process_cpu_time;
use paired::{compare, format_ns, Arm};

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
/// `svc`, and returns the CPU time the process spent on them.
fn run<S>(rt: &tokio::runtime::Runtime, svc: &S, tasks: usize, iters: u64) -> Duration
where
    S: Service<u64> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug,
{
    let start = process_cpu_time();
    rt.block_on(async {
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
    });
    process_cpu_time() - start
}

/// Benchmarks `svc` as `name` with `tasks` concurrent tasks.
fn case<S>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    tasks: usize,
    svc: &S,
) where
    S: Service<u64> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug,
{
    group.bench_with_input(BenchmarkId::new(name, tasks), &tasks, |b, &tasks| {
        b.iter_custom(|iters| run(rt, svc, tasks, iters))
    });
}

fn dispatch(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    let list = || StaticList::new((0..ENDPOINTS).map(|i| (i, endpoint(i))));
    let (p2c, p2c_latency, rr, tower_p2c) = rt.block_on(async {
        let p2c = Balance::new(
            InFlightDiscover::with_completion(list(), CompleteOnResponse::default()),
            P2c::with_seed(7),
        );
        p2c.wait_for(|keys| keys.len() == ENDPOINTS).await;
        let p2c_latency = Balance::new(
            LatencyDiscover::with_completion(
                list(),
                DEFAULT_RTT,
                DEFAULT_DECAY,
                CompleteOnResponse::default(),
            ),
            P2c::with_seed(7),
        );
        p2c_latency.wait_for(|keys| keys.len() == ENDPOINTS).await;
        let rr = Balance::new(list(), RoundRobin::new());
        rr.wait_for(|keys| keys.len() == ENDPOINTS).await;

        let services = (0..ENDPOINTS).map(endpoint).collect::<Vec<_>>();
        let discover = tower::load::PendingRequestsDiscover::new(
            tower::discover::ServiceList::new(services),
            tower::load::CompleteOnResponse::default(),
        );
        let tower_p2c =
            tower::buffer::Buffer::new(tower::balance::p2c::Balance::new(discover), 1024);
        (p2c, p2c_latency, rr, tower_p2c)
    });
    let direct = endpoint(0);
    let direct_in_flight = InFlight::with_completion(endpoint(0), CompleteOnResponse::default());

    let mut group = c.benchmark_group("dispatch");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    for tasks in TASKS {
        case(&mut group, &rt, "direct", tasks, &direct);
        case(
            &mut group,
            &rt,
            "direct_in_flight",
            tasks,
            &direct_in_flight,
        );
        case(&mut group, &rt, "tower_lb_p2c", tasks, &p2c);
        case(&mut group, &rt, "tower_lb_p2c_latency", tasks, &p2c_latency);
        case(&mut group, &rt, "tower_lb_round_robin", tasks, &rr);
        case(&mut group, &rt, "tower_p2c_buffer", tasks, &tower_p2c);
    }
    group.finish();

    if !paired::benchmarking() {
        return;
    }
    println!(
        "\nPaired comparison, {ROUNDS} interleaved rounds (medians; IQR of the paired overhead):\n"
    );
    println!("| tasks | arm | per request | overhead over direct | IQR | overhead ÷ Buffer + tower p2c's |");
    println!("|---:|---|---:|---:|---:|---:|");
    let mut latency_ratios = Vec::new();
    for tasks in TASKS {
        let mut arms = [
            Arm::new("direct", |n| run(&rt, &direct, tasks, n)),
            Arm::new("direct_in_flight", |n| {
                run(&rt, &direct_in_flight, tasks, n)
            }),
            Arm::new("tower_lb_p2c", |n| run(&rt, &p2c, tasks, n)),
            Arm::new("tower_lb_p2c_latency", |n| run(&rt, &p2c_latency, tasks, n)),
            Arm::new("tower_lb_round_robin", |n| run(&rt, &rr, tasks, n)),
            Arm::new("tower_p2c_buffer", |n| run(&rt, &tower_p2c, tasks, n)),
        ];
        let outcomes = compare(&mut arms, ROUNDS, Duration::from_millis(10));
        let buffer = outcomes.last().expect("arms").overhead;
        let overhead = |name: &str| {
            outcomes
                .iter()
                .find(|o| o.name == name)
                .map_or(f64::NAN, |o| o.overhead)
        };
        latency_ratios.push((
            tasks,
            overhead("tower_lb_p2c_latency") / overhead("tower_lb_p2c"),
        ));
        for o in &outcomes {
            println!(
                "| {tasks} | {} | {} | {} | {} – {} | {:.3} |",
                o.name,
                format_ns(o.median),
                format_ns(o.overhead),
                format_ns(o.overhead_iqr.0),
                format_ns(o.overhead_iqr.1),
                o.overhead / buffer
            );
        }
    }
    print_latency_ratios(&latency_ratios);
}

fn print_latency_ratios(ratios: &[(usize, f64)]) {
    println!("\n| tasks | p2c over Peak-EWMA ÷ p2c over in flight (overhead) |");
    println!("|---:|---:|");
    for (tasks, ratio) in ratios {
        println!("| {tasks} | {ratio:.2} |");
    }
}

/// Rounds of the paired comparison, per task count.
const ROUNDS: usize = 40;

fn main() {
    let mut c = Criterion::default().configure_from_args();
    dispatch(&mut c);
    c.final_summary();
}
