//! Pick cost of every picker for 16, 256 and 4096 endpoints: no I/O, one
//! thread, the table already built, all in one criterion group (`pick`) so
//! that the pickers are compared within one run.
//!
//! * Endpoints are [`InFlight`] wrappers, as a balancer over
//!   `InFlightDiscover` holds them: reading a load follows a pointer to the
//!   endpoint's own counter, a separate allocation, as in production. Each
//!   endpoint holds 0 to 6 requests in flight.
//! * Weights are 1 to 5 (round robin, weighted round robin, least
//!   connections, p2c, IP hash, Maglev), so the weighted paths run (the
//!   smooth schedule, the p2c alias table). The consistent-hash rings use
//!   weight 1 so that each endpoint has exactly 160 virtual nodes: 655 360
//!   points (10 MiB) at 4096 endpoints.
//! * The request is a `u64` hash key that changes on every pick, so the
//!   hashing pickers pay for their lookup (and its cache misses in a large
//!   table) but not for reading HTTP headers.
//!
//! Time is the benchmark thread's CPU time, not wall time, so that a
//! pick measured while other processes hold the core is not charged for
//! their turn.
//!
//! ```sh
//! cargo bench --bench pick
//! ```

#[path = "support/cpu_time.rs"]
mod cpu_time;

use std::hint::black_box;
use std::time::Duration;

use cpu_time::thread_cpu_time;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion};
use tower_lb::load::{Handle, InFlight};
use tower_lb::pick::{
    key::hash_value, Candidates, ConsistentHash, EndpointInfo, IpHash, LeastConnections, Maglev,
    P2c, Pick, RoundRobin, WeightedRoundRobin,
};

const SIZES: [usize; 3] = [16, 256, 4096];

/// An endpoint as the pickers see it behind `InFlightDiscover`, minus the
/// service inside (which no picker touches).
type Endpoint = InFlight<()>;

/// `n` endpoints with keys like socket addresses, their loads set by handles
/// that the caller keeps alive.
fn fleet(n: usize, weighted: bool) -> (Vec<EndpointInfo>, Vec<Endpoint>, Vec<Handle>) {
    let metas = (0..n)
        .map(|i| {
            let weight = if weighted { 1 + (i % 5) as u32 } else { 1 };
            EndpointInfo::new(
                hash_value(&format!("10.0.{}.{}:80", i / 256, i % 256)),
                weight,
            )
        })
        .collect();
    let endpoints: Vec<Endpoint> = (0..n).map(|_| InFlight::new(())).collect();
    let handles = endpoints
        .iter()
        .enumerate()
        .flat_map(|(i, e)| (0..i % 7).map(move |_| e.counter().start()))
        .collect();
    (metas, endpoints, handles)
}

fn bench_picker<P>(group: &mut BenchmarkGroup<'_, WallTime>, name: &str, picker: P, weighted: bool)
where
    P: Pick<u64, Endpoint>,
{
    for n in SIZES {
        let (metas, services, _handles) = fleet(n, weighted);
        let table = picker.prepare(&metas);
        let endpoints = Candidates::new(&metas, &services);
        let mut key = 0x9e37_79b9_7f4a_7c15_u64;
        group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
            b.iter_custom(|iters| {
                let start = thread_cpu_time();
                for _ in 0..iters {
                    key = key.wrapping_add(0x2545_f491_4f6c_dd1d);
                    black_box(picker.pick(&table, &endpoints, black_box(&key)));
                }
                thread_cpu_time() - start
            })
        });
    }
}

fn key(req: &u64) -> Option<u64> {
    Some(*req)
}

fn picks(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    // Picks take nanoseconds: a short run gives tight intervals, and the
    // whole bench (24 cases) stays under two minutes.
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(50);
    bench_picker(&mut group, "round_robin", RoundRobin::new(), true);
    bench_picker(
        &mut group,
        "weighted_round_robin",
        WeightedRoundRobin::new(),
        true,
    );
    bench_picker(
        &mut group,
        "least_connections",
        LeastConnections::with_seed(1),
        true,
    );
    bench_picker(&mut group, "p2c", P2c::with_seed(1), true);
    bench_picker(&mut group, "ip_hash", IpHash::with_key(key), true);
    bench_picker(
        &mut group,
        "consistent_hash_160",
        ConsistentHash::new(key),
        false,
    );
    bench_picker(
        &mut group,
        "bounded_consistent_hash_160",
        ConsistentHash::new(key)
            .bounded_load(1.25)
            .expect("valid bound"),
        false,
    );
    bench_picker(&mut group, "maglev", Maglev::new(key), true);
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    picks(&mut c);
    c.final_summary();
}
