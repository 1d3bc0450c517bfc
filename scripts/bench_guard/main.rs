//! The bench guard's harness: dispatch cost of the last release ("base")
//! and of the working tree ("head"), measured side by side in one process,
//! with tower's `Buffer` + `p2c` as the anchor.
//!
//! This file is not part of the crate's build: `scripts/bench-guard`
//! copies it into a throwaway cargo project that depends on both versions of
//! the crate (`tower_lb_base`, `tower_lb_head`) and runs it. It therefore uses
//! only API names both versions have.
//!
//! Workload: in-process endpoints that answer at once, 16 and 256 of them,
//! 1 and 8 tasks on a 2-worker runtime, each task on its own clone of the
//! balancer. Every round runs every arm once for about the same time (the
//! arms take turns, starting with a different one each round), and the time
//! is the process's CPU time per request, so a machine whose load changes
//! during the run moves every arm alike. Each arm's overhead is its time
//! minus the direct call's in the same round; the ratios against tower are
//! ratios of median overheads, as in `benches/dispatch.rs`.

mod cpu_time;

use std::convert::Infallible;
use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use tower::{service_fn, Service, ServiceExt};

use cpu_time::process_cpu_time;

const ENDPOINTS: [usize; 2] = [16, 256];
const TASKS: [usize; 2] = [1, 8];

/// The targets: overhead of head's arm ÷ overhead of tower's.
const P2C_VS_TOWER: f64 = 0.10;
const RR_VS_TOWER: f64 = 0.08;
/// Overhead of head's P2c over Latency ÷ head's P2c over in-flight counts.
const LATENCY_VS_IN_FLIGHT: f64 = 1.5;
/// Head's time per request ÷ base's, same arm, same round.
const HEAD_VS_BASE: f64 = 1.10;

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

/// Runs `iters` requests over `tasks` tasks, each on its own clone of
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

type Runner<'a> = Box<dyn FnMut(u64) -> Duration + 'a>;

/// The three balancers of one version of the crate over `n` endpoints:
/// P2c over in-flight counts, P2c over Peak-EWMA, round robin.
macro_rules! balancers {
    ($lb:ident, $rt:expr, $n:expr) => {{
        use $lb::discover::StaticList;
        use $lb::load::{CompleteOnResponse, InFlightDiscover, LatencyDiscover};
        use $lb::load::{DEFAULT_DECAY, DEFAULT_RTT};
        use $lb::pick::{P2c, RoundRobin};
        use $lb::Balance;
        let n = $n;
        let list = || StaticList::new((0..n).map(|i| (i, endpoint(i))));
        $rt.block_on(async {
            let p2c = Balance::new(
                InFlightDiscover::with_completion(list(), CompleteOnResponse::default()),
                P2c::with_seed(7),
            );
            p2c.wait_for(|keys| keys.len() == n).await;
            let latency = Balance::new(
                LatencyDiscover::with_completion(
                    list(),
                    DEFAULT_RTT,
                    DEFAULT_DECAY,
                    CompleteOnResponse::default(),
                ),
                P2c::with_seed(7),
            );
            latency.wait_for(|keys| keys.len() == n).await;
            let rr = Balance::new(list(), RoundRobin::new());
            rr.wait_for(|keys| keys.len() == n).await;
            (p2c, latency, rr)
        })
    }};
}

/// Arms of one configuration, in this order.
const ARMS: [&str; 8] = [
    "direct",
    "tower Buffer+p2c",
    "base P2c+InFlight",
    "head P2c+InFlight",
    "base P2c+Latency",
    "head P2c+Latency",
    "base RoundRobin",
    "head RoundRobin",
];

struct Config {
    rounds: usize,
    round_time: Duration,
}

/// Per arm, per round: nanoseconds per request.
fn measure(
    rt: &tokio::runtime::Runtime,
    endpoints: usize,
    tasks: usize,
    config: &Config,
) -> Vec<Vec<f64>> {
    let direct = endpoint(0);
    let tower_p2c = {
        let _guard = rt.enter();
        let discover = tower::load::PendingRequestsDiscover::new(
            tower::discover::ServiceList::new((0..endpoints).map(endpoint).collect::<Vec<_>>()),
            tower::load::CompleteOnResponse::default(),
        );
        tower::buffer::Buffer::new(tower::balance::p2c::Balance::new(discover), 1024)
    };
    let (base_p2c, base_latency, base_rr) = balancers!(tower_lb_base, rt, endpoints);
    let (head_p2c, head_latency, head_rr) = balancers!(tower_lb_head, rt, endpoints);

    let mut arms: Vec<Runner<'_>> = vec![
        Box::new(|n| run(rt, &direct, tasks, n)),
        Box::new(|n| run(rt, &tower_p2c, tasks, n)),
        Box::new(|n| run(rt, &base_p2c, tasks, n)),
        Box::new(|n| run(rt, &head_p2c, tasks, n)),
        Box::new(|n| run(rt, &base_latency, tasks, n)),
        Box::new(|n| run(rt, &head_latency, tasks, n)),
        Box::new(|n| run(rt, &base_rr, tasks, n)),
        Box::new(|n| run(rt, &head_rr, tasks, n)),
    ];
    let iters: Vec<u64> = arms
        .iter_mut()
        .map(|arm| calibrate(arm, config.round_time))
        .collect();
    let mut times = vec![Vec::with_capacity(config.rounds); arms.len()];
    for round in 0..config.rounds {
        for k in 0..arms.len() {
            let a = (round + k) % arms.len();
            let elapsed = (arms[a])(iters[a]);
            times[a].push(elapsed.as_secs_f64() * 1e9 / iters[a] as f64);
        }
    }
    times
}

/// Iterations for one arm to take about `round_time`.
fn calibrate(run: &mut Runner<'_>, round_time: Duration) -> u64 {
    let mut n = 64;
    loop {
        let elapsed = run(n);
        if elapsed >= round_time / 4 || n >= 1 << 40 {
            let per_iter = elapsed.as_secs_f64() / n as f64;
            return ((round_time.as_secs_f64() / per_iter.max(1e-12)) as u64).max(64);
        }
        n *= 2;
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

struct Check {
    what: String,
    value: f64,
    limit: f64,
}

fn main() -> ExitCode {
    let quick = std::env::args().any(|a| a == "--quick");
    let config = if quick {
        Config {
            rounds: 9,
            round_time: Duration::from_millis(10),
        }
    } else {
        Config {
            rounds: 31,
            round_time: Duration::from_millis(20),
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    println!(
        "{} rounds of {} ms per arm; ns of process CPU time per request (medians); \
         overhead = arm − direct, same round",
        config.rounds,
        config.round_time.as_millis()
    );
    let mut checks = Vec::new();
    for endpoints in ENDPOINTS {
        for tasks in TASKS {
            let times = measure(&rt, endpoints, tasks, &config);
            let per_request: Vec<f64> = times.iter().map(|t| median(t.clone())).collect();
            let overhead: Vec<f64> = times
                .iter()
                .map(|t| median(t.iter().zip(&times[0]).map(|(x, d)| x - d).collect()))
                .collect();
            // Paired per round: head's time ÷ base's.
            let head_vs_base = |base: usize| {
                median(
                    times[base + 1]
                        .iter()
                        .zip(&times[base])
                        .map(|(h, b)| h / b)
                        .collect(),
                )
            };
            let tower = overhead[1];
            println!("\n{endpoints} endpoints, {tasks} task(s)");
            println!("| arm | per request | overhead | overhead ÷ tower's | head ÷ base |");
            println!("|---|---:|---:|---:|---:|");
            for (a, name) in ARMS.iter().enumerate() {
                let vs_base = if a >= 3 && a % 2 == 1 {
                    format!("{:.2}", head_vs_base(a - 1))
                } else {
                    String::new()
                };
                println!(
                    "| {name} | {:.0} ns | {:.0} ns | {:.3} | {vs_base} |",
                    per_request[a],
                    overhead[a],
                    overhead[a] / tower
                );
            }
            let at = format!("{endpoints} endpoints, {tasks} task(s)");
            checks.push(Check {
                what: format!("head P2c+InFlight ÷ tower, {at}"),
                value: overhead[3] / tower,
                limit: P2C_VS_TOWER,
            });
            checks.push(Check {
                what: format!("head P2c+Latency ÷ head P2c+InFlight, {at}"),
                value: overhead[5] / overhead[3],
                limit: LATENCY_VS_IN_FLIGHT,
            });
            checks.push(Check {
                what: format!("head RoundRobin ÷ tower, {at}"),
                value: overhead[7] / tower,
                limit: RR_VS_TOWER,
            });
            for (base, name) in [(2, "P2c+InFlight"), (4, "P2c+Latency"), (6, "RoundRobin")] {
                checks.push(Check {
                    what: format!("head ÷ base, {name}, {at}"),
                    value: head_vs_base(base),
                    limit: HEAD_VS_BASE,
                });
            }
        }
    }

    println!("\n| check | value | target | |");
    println!("|---|---:|---:|---|");
    let mut missed = 0;
    for check in &checks {
        let ok = check.value <= check.limit;
        missed += usize::from(!ok);
        println!(
            "| {} | {:.3} | ≤ {:.2} | {} |",
            check.what,
            check.value,
            check.limit,
            if ok { "ok" } else { "MISSED" }
        );
    }
    if missed == 0 {
        println!("\nAll {} checks met.", checks.len());
        ExitCode::SUCCESS
    } else {
        println!("\n{missed} of {} checks missed.", checks.len());
        ExitCode::FAILURE
    }
}
