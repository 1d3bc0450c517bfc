//! A fleet simulator: which picker gives this traffic the lowest tail
//! latency?
//!
//! ```sh
//! cargo run --release --example simulate -- [--requests N] [--seed S] [--out DIR] [--only ID]
//! ```
//!
//! Simulated endpoints serve Poisson traffic in virtual time, seven scenarios
//! over: (a) a homogeneous fleet; (b) one endpoint 10× slower; (c) inference
//! traffic, with heavy-tailed (lognormal) request costs and streamed
//! answers; (d) one endpoint that becomes 5× slower halfway through; (e)
//! inference traffic on GPUs of different speeds whose servers report their
//! queue and KV use one poll period late, for the scoring picker; (f)
//! endpoints whose speeds span a thousandfold (1 ms … 1 s); (g) chats
//! sharing system prompts on endpoints with prefix caches (`prefixes.rs`,
//! its own model, at most 200,000 requests); (h) the same number of
//! servers colocated or split into prefill and decode pools with a KV
//! hand-over, with and without the decider (`disagg.rs`, its own model, at
//! most 20,000 requests). `--only ID` runs one scenario
//! (its tables alone then go to `DIR`). The
//! crate's real pickers choose every endpoint through `Prepare` and `Pick`,
//! reading load from `tower::load::Load` services: in-flight counts the
//! simulation keeps, as the balancer would (`probe.rs`), or the crate's own
//! `Latency` on virtual time (`ewma.rs`). Each is measured against an ideal
//! reference that knows every request's exact cost (see `pickers.rs`).
//!
//! The tables go to stdout and, as Markdown, to `DIR/simulate.md`; the chart
//! of p99 ÷ ideal p99 to `DIR/simulate.svg` (`DIR` is `docs` by default).
//!
//! A run is deterministic: time is integer nanoseconds in a single-threaded
//! event loop, every random draw comes from a generator seeded from
//! `--seed`, the pickers are built with seeds, and nothing depends on
//! wall-clock time or on hash-map order: `Latency` reads tokio's clock,
//! which stays paused and moves only to each event's virtual time. The same
//! seed gives the same tables and chart, byte for byte, with the same build.

mod chart;
mod disagg;
mod ewma;
mod fleet;
mod notes;
mod pickers;
mod prefixes;
mod probe;
mod report;
mod reports;
mod rng;
mod scenario;
mod station;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;

use tower_lb::pick::{key::hash_value, EndpointInfo};

use crate::fleet::Fleet;
use crate::notes::{intro, verdict};
use crate::pickers::{Entry, Weights, IDEAL};
use crate::report::{p99_ratio, Summary};
use crate::rng::mix;
use crate::scenario::{Job, Scenario, SLOTS};

const USAGE: &str = "usage: simulate [--requests N] [--seed S] [--out DIR] [--only ID]";

/// Enough requests for a p99.9 of a thousand samples, in well under a
/// minute.
const DEFAULT_REQUESTS: usize = 1_000_000;
/// Fewer and the p99.9 rests on a handful of requests.
const MIN_REQUESTS: usize = 1_000;
/// More needs more memory than a laptop should spend on this.
const MAX_REQUESTS: usize = 20_000_000;

#[derive(Debug)]
struct Args {
    requests: usize,
    seed: u64,
    out: PathBuf,
    /// Run only the scenario of this letter.
    only: Option<char>,
}

/// The arguments, or `None` when help was asked for.
fn parse(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut parsed = Args {
        requests: DEFAULT_REQUESTS,
        seed: 1,
        out: PathBuf::from("docs"),
        only: None,
    };
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--requests" => {
                let v = value()?;
                parsed.requests = v
                    .parse()
                    .ok()
                    .filter(|n| (MIN_REQUESTS..=MAX_REQUESTS).contains(n))
                    .ok_or(format!(
                        "--requests must be a whole number from {MIN_REQUESTS} to {MAX_REQUESTS}, not {v:?}"
                    ))?;
            }
            "--seed" => {
                let v = value()?;
                parsed.seed = v
                    .parse()
                    .map_err(|_| format!("--seed must be a whole number, not {v:?}"))?;
            }
            "--out" => parsed.out = PathBuf::from(value()?),
            "--only" => {
                let v = value()?;
                let mut letters = v.chars();
                parsed.only = match (letters.next(), letters.next()) {
                    (Some(id), None) => Some(id),
                    _ => return Err(format!("--only takes one scenario letter, not {v:?}")),
                };
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Some(parsed))
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("simulate: {message}; {USAGE}");
            return ExitCode::from(2);
        }
    };
    match simulate(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("simulate: {message}");
            ExitCode::FAILURE
        }
    }
}

fn simulate(args: &Args) -> Result<(), String> {
    // Before the run, so that a bad --out fails at once.
    let out = &args.out;
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    // Paused, tokio's clock moves only when the simulation moves it, so the
    // Peak-EWMA endpoints read virtual time and a run stays deterministic.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(|e| format!("cannot start a tokio runtime: {e}"))?;
    let entries = pickers::entries();
    let mut markdown = intro(args.requests, args.seed);
    let mut groups = Vec::new();
    for scenario in scenario::scenarios() {
        if args.only.is_some_and(|id| id != scenario.id) {
            continue;
        }
        let rows = runtime.block_on(compare(&scenario, &entries, args));
        let heading = format!("({}) {}", scenario.id, scenario.title);
        let table = report::table(&rows, scenario.streams());
        let verdict = verdict(&scenario, &rows);
        println!(
            "{heading}\n{}\n\n{table}{verdict}",
            scenario.describe(args.requests)
        );
        let _ = write!(
            markdown,
            "\n## {heading}\n\n{}.\n\n{table}{}",
            scenario.describe(args.requests),
            if verdict.is_empty() {
                String::new()
            } else {
                format!("\n{verdict}")
            },
        );
        groups.push(chart::Group {
            label: format!("({}) p99", scenario.id),
            bars: rows[1..]
                .iter()
                .map(|row| (row.picker, p99_ratio(row, &rows[0])))
                .collect(),
        });
        if scenario.streams() {
            // For a streamed answer the wait for its first token is what a
            // user notices, and it is where the picker matters.
            let ideal = rows[0].first_byte_p99.max(1) as f64;
            groups.push(chart::Group {
                label: format!("({}) 1st-byte p99", scenario.id),
                bars: rows[1..]
                    .iter()
                    .map(|row| (row.picker, row.first_byte_p99 as f64 / ideal))
                    .collect(),
            });
        }
    }

    if args.only.is_none_or(|id| id == prefixes::ID) {
        let metas = metas(&[1.0; prefixes::ENDPOINTS], Weights::Equal);
        let (describe, table) = prefixes::compare(args.requests, args.seed, &metas);
        let heading = format!("({}) shared prefixes", prefixes::ID);
        println!("{heading}\n{describe}\n\n{table}");
        let _ = write!(markdown, "\n## {heading}\n\n{describe}.\n\n{table}");
    }

    if args.only.is_none_or(|id| id == disagg::ID) {
        let (describe, table) = disagg::compare(args.requests, args.seed);
        let heading = format!("({}) disaggregated prefill and decode", disagg::ID);
        println!("{heading}\n{describe}\n\n{table}");
        let _ = write!(markdown, "\n## {heading}\n\n{describe}.\n\n{table}");
    }

    let md = out.join("simulate.md");
    std::fs::write(&md, markdown).map_err(|e| format!("cannot write {}: {e}", md.display()))?;
    let svg = out.join("simulate.svg");
    let names: Vec<&str> = entries
        .iter()
        .map(|e| e.name)
        .filter(|&n| n != IDEAL)
        .collect();
    chart::draw(&svg, &groups, &names)
        .map_err(|e| format!("cannot draw {}: {e}", svg.display()))?;
    println!("wrote {} and {}", md.display(), svg.display());
    Ok(())
}

/// Runs every picker that applies to `scenario` on the same requests; the
/// ideal reference comes first.
async fn compare(scenario: &Scenario, entries: &[Entry], args: &Args) -> Vec<Summary> {
    let jobs: Rc<[Job]> = scenario::workload(scenario, args.requests, args.seed).into();
    let fleet = Fleet {
        speeds: scenario.speeds.to_vec(),
        slots: SLOTS,
        slowdown: scenario.slowdown.map(|(endpoint, factor)| {
            let halfway = jobs[jobs.len() / 2].arrival;
            (endpoint, halfway, scenario.speeds[endpoint] / factor)
        }),
        hedge_after: None,
    };
    let mut rows: Vec<Summary> = Vec::new();
    for (k, entry) in entries.iter().enumerate() {
        if !(entry.applies)(scenario) {
            continue;
        }
        let metas = metas(&scenario.speeds, entry.weights);
        let seed = mix(args.seed ^ mix((u64::from(scenario.id) << 16) | k as u64));
        let mut fleet = fleet.clone();
        if let Some(base) = entry.hedge_at_p95_of {
            // The delay `HedgeDelay::percentile(95.0)` would learn: the p95
            // of the same picker's run without hedging.
            fleet.hedge_after = rows.iter().find(|r| r.picker == base).map(|r| r.p95);
        }
        let outcome = entry.run(seed, scenario, &fleet, &jobs, &metas).await;
        rows.push(Summary::new(entry.name, outcome));
    }
    rows
}

/// Endpoint metadata as discovery would give it: a key hash from an address
/// and a weight.
fn metas(speeds: &[f64], weights: Weights) -> Vec<EndpointInfo> {
    speeds
        .iter()
        .enumerate()
        .map(|(i, &speed)| {
            let weight = match weights {
                Weights::Equal => 1,
                Weights::BySpeed => ((speed * 10.0).round() as u32).max(1),
            };
            EndpointInfo::new(hash_value(&format!("10.0.0.{}:8080", i + 1)), weight)
        })
        .collect()
}
