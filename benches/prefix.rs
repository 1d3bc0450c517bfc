//! The prefix-affinity path: one pick of the scoring picker with the prefix
//! scorer (weights prefix 3, queue 2, KV cache 2) for a prompt of about
//! 4,000 tokens (16,000 bytes: 250 blocks of 64 bytes) at 8 and 64
//! endpoints, and hashing that prompt into blocks.
//!
//! * Endpoints are `Weighted<InFlight<()>>` with a fresh load report each,
//!   as in `benches/scored.rs`.
//! * Every endpoint's index holds the system prompt (the first 2,000
//!   bytes); one holds the whole prompt. A pick scores every endpoint
//!   (bisection in its index) and then runs the hook: it inserts the
//!   prompt's 250 blocks in the picked endpoint's index. `score only` is
//!   the same picker without the hook, so the index does not change.
//!
//! Time is the benchmark thread's CPU time.
//!
//! ```sh
//! cargo bench --features llm --bench prefix
//! ```

#[path = "support/cpu_time.rs"]
mod cpu_time;

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use cpu_time::thread_cpu_time;
use criterion::{BenchmarkId, Criterion};
use tower_lb::endpoint::{Report, ReportCell, Weighted};
use tower_lb::load::InFlight;
use tower_lb::pick::{
    key::hash_value,
    llm::{BlockConfig, PrefixAffinity, PromptBlocks, ScoreHook, Scored, Scorer},
    Candidates, EndpointInfo, Pick, Prepare,
};

type Endpoint = Weighted<InFlight<()>>;
type Req = http::Request<()>;

fn fleet(n: usize) -> (Vec<EndpointInfo>, Vec<Endpoint>) {
    let metas = (0..n)
        .map(|i| EndpointInfo::new(hash_value(&format!("10.0.0.{i}:8000")), 1))
        .collect();
    let endpoints = (0..n)
        .map(|i| {
            let metrics = ReportCell::with_staleness(Duration::from_secs(3600));
            metrics.record(&Report {
                queue: Some((i % 4) as u32),
                kv_cache_use: Some((i % 10) as f32 / 20.0),
                ..Report::default()
            });
            Weighted::new(InFlight::new(()), 1).with_report(metrics)
        })
        .collect();
    (metas, endpoints)
}

fn prompt() -> (String, String) {
    let system: String = (0..2_000)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let rest: String = (0..14_000)
        .map(|i| (b'a' + (i * 7 % 26) as u8) as char)
        .collect();
    (system, rest)
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let config = BlockConfig::default();
    let (system, rest) = prompt();
    let blocks = PromptBlocks::hash(config, "llama", [&system, &rest]);
    let system_blocks = PromptBlocks::hash(config, "llama", [&system]);
    let mut request = http::Request::new(());
    request.extensions_mut().insert(blocks.clone());

    let mut group = c.benchmark_group("prefix");
    group.bench_function("hash 16,000-byte prompt", |b| {
        b.iter_custom(|iters| {
            let start = thread_cpu_time();
            for _ in 0..iters {
                black_box(PromptBlocks::hash(
                    config,
                    "llama",
                    [black_box(&system), &rest],
                ));
            }
            thread_cpu_time() - start
        })
    });
    for n in [8, 64] {
        let (metas, services) = fleet(n);
        for with_hook in [true, false] {
            let prefix = Arc::new(PrefixAffinity::new());
            let picker: Scored<Req, Endpoint> = if with_hook {
                prefix.install(Scored::with_seed(1), 3.0)
            } else {
                Scored::with_seed(1)
                    .shared_scorer(3.0, Arc::clone(&prefix) as Arc<dyn Scorer<Req, Endpoint>>)
            };
            picker.prepare(&metas);
            <PrefixAffinity as ScoreHook<Req>>::endpoints_changed(&prefix, &metas);
            for (i, meta) in metas.iter().enumerate() {
                let mut warm = http::Request::new(());
                let held = if i == n / 2 {
                    blocks.clone()
                } else {
                    system_blocks.clone()
                };
                warm.extensions_mut().insert(held);
                <PrefixAffinity as ScoreHook<Req>>::before_send(&prefix, &warm, *meta);
            }
            let endpoints = Candidates::new(&metas, &services);
            let name = if with_hook {
                "pick (score + hook)"
            } else {
                "score only"
            };
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter_custom(|iters| {
                    let start = thread_cpu_time();
                    for _ in 0..iters {
                        // Nothing is sent, so no count rises and the gate
                        // stays shut.
                        let picked = picker.pick(&(), &endpoints, black_box(&request));
                        black_box(picked);
                    }
                    thread_cpu_time() - start
                })
            });
        }
    }
    group.finish();
    println!(
        "prefix index: {} bytes per indexed block; {} bytes per endpoint at the default 31,250 blocks",
        PrefixAffinity::bytes_per_block(),
        PrefixAffinity::bytes_per_block() * 31_252,
    );
    c.final_summary();
}
