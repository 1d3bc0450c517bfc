//! A fleet simulator: which picker gives this traffic the lowest tail
//! latency?
//!
//! ```sh
//! cargo run --release --example simulate -- [--requests N] [--seed S] [--out DIR]
//! ```
//!
//! Simulated endpoints serve Poisson traffic in virtual time, four scenarios
//! over: (a) a homogeneous fleet; (b) one endpoint 10× slower; (c) inference
//! traffic, with heavy-tailed (lognormal) request costs and streamed
//! answers; (d) one endpoint that becomes 5× slower halfway through. The
//! crate's real pickers choose every endpoint through `Prepare` and `Pick`,
//! reading load from `tower::load::Load` services whose in-flight counts
//! the simulation keeps, as the balancer would. Each is measured against an
//! ideal reference that knows every request's exact cost (see `pickers.rs`).
//!
//! The tables go to stdout and, as Markdown, to `DIR/simulate.md`; the chart
//! of p99 ÷ ideal p99 to `DIR/simulate.svg` (`DIR` is `docs` by default).
//!
//! A run is deterministic: time is integer nanoseconds in a single-threaded
//! event loop, every random draw comes from a generator seeded from
//! `--seed`, the pickers are built with seeds, and nothing depends on
//! wall-clock time or on hash-map order. The same seed gives the same tables
//! and chart, byte for byte, with the same build.

mod chart;
mod fleet;
mod pickers;
mod report;
mod rng;
mod scenario;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;

use tower_lb::pick::{hash_value, Meta};

use crate::fleet::Fleet;
use crate::pickers::{Entry, Weights, IDEAL, LC, LC_WEIGHTED, P2C, P2C_WEIGHTED, RR};
use crate::report::{p99_ratio, ratio, Summary};
use crate::rng::mix;
use crate::scenario::{Job, Scenario, SLOTS};

const USAGE: &str = "usage: simulate [--requests N] [--seed S] [--out DIR]";

/// Enough requests for a p99.9 of a thousand samples, in a few seconds.
const DEFAULT_REQUESTS: usize = 1_000_000;
/// Fewer and the p99.9 rests on a handful of requests.
const MIN_REQUESTS: usize = 1_000;
/// More needs more memory than a laptop should spend on this.
const MAX_REQUESTS: usize = 20_000_000;

/// The promise under test: the best in-flight picker's p99 within this
/// factor of the ideal's in scenarios (b) and (c).
const TARGET: f64 = 1.5;

#[derive(Debug)]
struct Args {
    requests: usize,
    seed: u64,
    out: PathBuf,
}

/// The arguments, or `None` when help was asked for.
fn parse(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut parsed = Args {
        requests: DEFAULT_REQUESTS,
        seed: 1,
        out: PathBuf::from("docs"),
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
    let entries = pickers::entries();
    let mut markdown = intro(args);
    let mut groups = Vec::new();
    for scenario in scenario::scenarios() {
        let rows = compare(&scenario, &entries, args);
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
fn compare(scenario: &Scenario, entries: &[Entry], args: &Args) -> Vec<Summary> {
    let jobs: Rc<[Job]> = scenario::workload(scenario, args.requests, args.seed).into();
    let fleet = Fleet {
        speeds: scenario.speeds.to_vec(),
        slots: SLOTS,
        slowdown: scenario.slowdown.map(|(endpoint, factor)| {
            let halfway = jobs[jobs.len() / 2].arrival;
            (endpoint, halfway, scenario.speeds[endpoint] / factor)
        }),
    };
    entries
        .iter()
        .enumerate()
        .filter(|(_, entry)| (entry.applies)(scenario))
        .map(|(k, entry)| {
            let metas = metas(&scenario.speeds, entry.weights);
            let seed = mix(args.seed ^ mix((u64::from(scenario.id) << 16) | k as u64));
            let policy = entry.build(seed, &metas);
            let outcome = fleet::run(&fleet, &jobs, policy.as_ref(), &metas, entry.counting);
            Summary::new(entry.name, outcome)
        })
        .collect()
}

/// Endpoint metadata as discovery would give it: a key hash from an address
/// and a weight.
fn metas(speeds: &[f64], weights: Weights) -> Vec<Meta> {
    speeds
        .iter()
        .enumerate()
        .map(|(i, &speed)| {
            let weight = match weights {
                Weights::Equal => 1,
                Weights::BySpeed => ((speed * 10.0).round() as u32).max(1),
            };
            Meta::new(hash_value(&format!("10.0.0.{}:8080", i + 1)), weight)
        })
        .collect()
}

/// For (b) and (c): whether least connections or p2c, knowing nothing of
/// the endpoints, comes within the target of the ideal, next to round robin
/// and to the same pickers given weights or judged at the first byte.
fn verdict(scenario: &Scenario, rows: &[Summary]) -> String {
    if !matches!(scenario.id, 'b' | 'c') {
        return String::new();
    }
    let ideal = &rows[0];
    let find = |name: &str| rows.iter().find(|row| row.picker == name);
    let p99 = |name: &str| find(name).map_or(f64::NAN, |row| p99_ratio(row, ideal));
    let (lc, p2c, rr) = (p99(LC), p99(P2C), p99(RR));
    let met = lc.min(p2c) <= TARGET;
    let mut text = format!(
        "Target (p99 of least connections or p2c within {TARGET}× of ideal's): {}: \
         least connections {}, p2c {}; round robin {}.",
        if met { "met" } else { "missed" },
        ratio(lc),
        ratio(p2c),
        ratio(rr),
    );
    if scenario.speeds_differ() {
        let _ = write!(
            text,
            " With weights in proportion to speed: least connections {}, p2c {}.",
            ratio(p99(LC_WEIGHTED)),
            ratio(p99(P2C_WEIGHTED)),
        );
    }
    if scenario.streams() {
        let first = |name: &str| {
            find(name).map_or(f64::NAN, |row| {
                row.first_byte_p99 as f64 / ideal.first_byte_p99.max(1) as f64
            })
        };
        let _ = write!(
            text,
            " At the first byte (p99 ÷ ideal's): least connections {}, p2c {}, round robin {}.",
            ratio(first(LC)),
            ratio(first(P2C)),
            ratio(first(RR)),
        );
    }
    text.push('\n');
    text
}

/// The head of the Markdown report.
fn intro(args: &Args) -> String {
    format!(
        "# Picker simulation\n\n\
         Generated by `cargo run --release --example simulate -- --requests {} --seed {}`; \
         the same seed gives the same numbers.\n\n\
         ![p99 ÷ ideal p99 per picker and scenario](simulate.svg)\n\n\
         Each endpoint serves up to {SLOTS} requests at once at its own speed and queues the \
         rest in arrival order, so a request sent to a busy endpoint waits. Latency runs from \
         arrival to the last byte of the answer (the last token when it streams). Every \
         picker gets the same requests at the same times.\n\n\
         * *Ideal* sends each request where it would finish first, knowing every request's \
         exact cost and every endpoint's current speed: join-the-shortest-queue by remaining \
         work, which no real picker can match.\n\
         * Least connections and p2c read requests in flight, counted until the last byte, \
         and know nothing else. *To 1st byte* counts only until the first byte, as a counter \
         that stops at the response headers would. *Speed weights* give the endpoints \
         weights in proportion to their speeds, as does weighted round robin: knowledge an \
         operator must configure, and which does not follow a slowdown.\n\
         * Ip hash keys on the client, one of 1000.\n\n\
         Throughput is completed requests per second of virtual time until the last one \
         finishes. A picker that sends an endpoint more than it can serve builds a queue that \
         grows all run long: its throughput falls and its p99 grows with `--requests`.\n",
        args.requests, args.seed,
    )
}
