//! The AI routing paths: the scoring picker's pick at 16 and 256 endpoints
//! (beside least connections, which reads every endpoint once), parsing one
//! ORCA header report, and reading one vLLM Prometheus page.
//!
//! * Endpoints are `Weighted<InFlight<()>>` with an `ReportCell`
//!   record each, as a balancer holds them; every record holds a fresh
//!   report (queue 0–9, KV use 0–0.9) and every endpoint 0–6 requests in
//!   flight. The picker runs three scorers (queue, KV use, in flight); the
//!   request names no model and no adapter.
//! * The header is vLLM's two-metric `TEXT` report; the page is a vLLM
//!   0.8-style page of 140 lines (gauges, counters, histograms).
//!
//! Time is the benchmark thread's CPU time.
//!
//! ```sh
//! cargo bench --features reports --bench scored
//! ```

#[path = "support/cpu_time.rs"]
mod cpu_time;

use std::fmt::Write;
use std::hint::black_box;
use std::time::Duration;

use cpu_time::thread_cpu_time;
use criterion::{BenchmarkId, Criterion};
use tower_lb::endpoint::{Report, ReportCell, Weighted};
use tower_lb::load::{Handle, InFlight};
use tower_lb::pick::{
    key::hash_value,
    llm::{Scored, Weights},
    Candidates, EndpointInfo, LeastConnections, Pick,
};
use tower_lb::report::{parse_header, Mapping};

type Endpoint = Weighted<InFlight<()>>;

fn fleet(n: usize) -> (Vec<EndpointInfo>, Vec<Endpoint>, Vec<Handle>) {
    let metas = (0..n)
        .map(|i| EndpointInfo::new(hash_value(&format!("10.0.{}.{}:80", i / 256, i % 256)), 1))
        .collect();
    let endpoints: Vec<Endpoint> = (0..n)
        .map(|i| {
            let metrics = ReportCell::with_staleness(Duration::from_secs(3600));
            metrics.record(&Report {
                queue: Some((i % 10) as u32),
                kv_cache_use: Some((i % 10) as f32 / 10.0),
                ..Report::default()
            });
            Weighted::new(InFlight::new(()), 1).with_report(metrics)
        })
        .collect();
    let handles = endpoints
        .iter()
        .enumerate()
        .flat_map(|(i, e)| (0..i % 7).map(move |_| e.get_ref().counter().start()))
        .collect();
    (metas, endpoints, handles)
}

fn bench_pick<P: Pick<(), Endpoint>>(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    picker: &P,
) {
    for n in [16, 256] {
        let (metas, services, _handles) = fleet(n);
        let table = picker.prepare(&metas);
        let endpoints = Candidates::new(&metas, &services);
        c.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
            b.iter_custom(|iters| {
                let start = thread_cpu_time();
                for _ in 0..iters {
                    black_box(picker.pick(&table, &endpoints, black_box(&())));
                }
                thread_cpu_time() - start
            })
        });
    }
}

fn vllm_page() -> String {
    let mut page = String::new();
    let model = "meta-llama/Llama-3.1-8B-Instruct";
    for (name, value) in [
        ("vllm:num_requests_running", "7.0"),
        ("vllm:num_requests_waiting", "3.0"),
        ("vllm:kv_cache_usage_perc", "0.42"),
        ("vllm:prefix_cache_queries_total", "123456.0"),
        ("vllm:prefix_cache_hits_total", "65432.0"),
        ("vllm:num_preemptions_total", "0.0"),
        ("vllm:prompt_tokens_total", "9876543.0"),
        ("vllm:generation_tokens_total", "1234567.0"),
    ] {
        let _ = writeln!(
            page,
            "# HELP {name} A gauge or counter.\n# TYPE {name} gauge"
        );
        let _ = writeln!(
            page,
            "{name}{{engine=\"0\",model_name=\"{model}\"}} {value}"
        );
    }
    let _ = writeln!(page, "vllm:lora_requests_info{{max_lora=\"4\",running_lora_adapters=\"sql,chat\",waiting_lora_adapters=\"\"}} 1.7e9");
    for hist in [
        "vllm:time_to_first_token_seconds",
        "vllm:e2e_request_latency_seconds",
        "vllm:request_prompt_tokens",
        "vllm:request_generation_tokens",
        "vllm:time_per_output_token_seconds",
    ] {
        let _ = writeln!(page, "# HELP {hist} A histogram.\n# TYPE {hist} histogram");
        for le in [
            "0.001", "0.005", "0.01", "0.02", "0.04", "0.06", "0.08", "0.1", "0.25", "0.5", "0.75",
            "1.0", "2.5", "5.0", "7.5", "10.0", "20.0", "+Inf",
        ] {
            let _ = writeln!(
                page,
                "{hist}_bucket{{engine=\"0\",le=\"{le}\",model_name=\"{model}\"}} 42.0"
            );
        }
        let _ = writeln!(
            page,
            "{hist}_count{{engine=\"0\",model_name=\"{model}\"}} 42.0"
        );
        let _ = writeln!(
            page,
            "{hist}_sum{{engine=\"0\",model_name=\"{model}\"}} 12.5"
        );
    }
    page
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    {
        let mut group = c.benchmark_group("scored");
        group
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_millis(1500))
            .sample_size(50);
        let three = Scored::with_seed(1).weights(Weights {
            queue: 2.0,
            kv_cache: 2.0,
            in_flight: 1.0,
            latency: 0.0,
            adapter: 0.0,
        });
        bench_pick(&mut group, "scored_three_scorers", &three);
        bench_pick(
            &mut group,
            "least_connections",
            &LeastConnections::with_seed(1),
        );
        group.finish();
    }
    {
        let mut group = c.benchmark_group("metrics_parse");
        group
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_millis(1500))
            .sample_size(50);
        let header =
            b"TEXT named_metrics.kv_cache_usage_perc=0.42, named_metrics.num_requests_waiting=3";
        group.bench_function("orca_text_header", |b| {
            b.iter_custom(|iters| {
                let start = thread_cpu_time();
                for _ in 0..iters {
                    black_box(parse_header(black_box(header)).ok());
                }
                thread_cpu_time() - start
            })
        });
        let page = vllm_page();
        let mapping = Mapping::default();
        eprintln!(
            "vLLM page: {} lines, {} bytes",
            page.lines().count(),
            page.len()
        );
        group.bench_function("vllm_page", |b| {
            b.iter_custom(|iters| {
                let start = thread_cpu_time();
                for _ in 0..iters {
                    black_box(mapping.read(black_box(page.as_bytes())).ok());
                }
                thread_cpu_time() - start
            })
        });
        group.finish();
    }
    c.final_summary();
}
