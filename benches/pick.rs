//! Pick cost of every picker for 16, 256 and 4096 endpoints: no I/O, one
//! thread, the table already built. The request is a `u64` hash key so the
//! hashing pickers pay for their lookup and not for reading HTTP headers.
//!
//! ```sh
//! cargo bench --bench pick
//! ```

use std::hint::black_box;
use std::sync::atomic::{AtomicU32, Ordering};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use tower_lb::pick::{
    ConsistentHash, Endpoints, IpHash, LeastConnections, Maglev, Meta, P2c, Pick, RoundRobin,
    WeightedRoundRobin,
};

const SIZES: [usize; 3] = [16, 256, 4096];

/// An endpoint whose load the benchmark sets: what `InFlight` reports,
/// without a service around it.
struct Loaded(AtomicU32);

impl tower::load::Load for Loaded {
    type Metric = u32;

    fn load(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }
}

fn fleet(n: usize, weighted: bool) -> (Vec<Meta>, Vec<Loaded>) {
    let metas = (0..n)
        .map(|i| {
            let weight = if weighted { 1 + (i % 5) as u32 } else { 1 };
            Meta::new(
                tower_lb::pick::hash_value(&format!("10.0.{}.{}:80", i / 256, i % 256)),
                weight,
            )
        })
        .collect();
    let loads = (0..n)
        .map(|i| Loaded(AtomicU32::new((i % 7) as u32)))
        .collect();
    (metas, loads)
}

fn bench_picker<P>(c: &mut Criterion, name: &str, picker: P, weighted: bool)
where
    P: Pick<u64, Loaded>,
{
    let mut group = c.benchmark_group(format!("pick/{name}"));
    for n in SIZES {
        let (metas, loads) = fleet(n, weighted);
        let table = picker.prepare(&metas);
        let endpoints = Endpoints::new(&metas, &loads);
        let mut key = 0x9e37_79b9_7f4a_7c15_u64;
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                key = key.wrapping_add(0x2545_f491_4f6c_dd1d);
                black_box(picker.pick(&table, &endpoints, black_box(&key)))
            })
        });
    }
    group.finish();
}

fn key(req: &u64) -> Option<u64> {
    Some(*req)
}

fn picks(c: &mut Criterion) {
    bench_picker(c, "round_robin", RoundRobin::new(), false);
    bench_picker(c, "weighted_round_robin", WeightedRoundRobin::new(), true);
    bench_picker(c, "least_connections", LeastConnections::with_seed(1), true);
    bench_picker(c, "p2c", P2c::with_seed(1), true);
    bench_picker(c, "ip_hash", IpHash::with_key(key), true);
    bench_picker(c, "consistent_hash_160", ConsistentHash::new(key), true);
    bench_picker(
        c,
        "bounded_consistent_hash_1.25",
        ConsistentHash::new(key)
            .bounded_load(1.25)
            .expect("valid bound"),
        true,
    );
    bench_picker(c, "maglev", Maglev::new(key), true);
}

criterion_group!(benches, picks);
criterion_main!(benches);
