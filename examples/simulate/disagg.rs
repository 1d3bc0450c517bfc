//! Scenario "disaggregated": the same number of servers, colocated (each
//! prefills and decodes) or split into a prefill pool and a decode pool
//! with a KV hand-over between them, with and without the decider that
//! keeps mostly-cached prompts on a decode server.
//!
//! The model, kept small on purpose (its own, like `prefixes.rs`):
//!
//! * **Requests** arrive as one Poisson stream. Half are first turns with
//!   a long uncached prompt (lognormal, median [`LONG_MEDIAN`] tokens), half
//!   later turns whose prompt is mostly cached (median [`SHORT_MEDIAN`]
//!   uncached tokens); the whole prompt is [`HISTORY`] times the uncached
//!   part for later turns. Answers are lognormal, median [`OUT_MEDIAN`]
//!   tokens.
//! * **A server** runs in steps of [`STEP_NS`]. It holds at most [`SLOTS`]
//!   requests; prefills wait in a FIFO queue and run one at a time, at
//!   [`PREFILL_NS`] a token, and a step spent prefilling is a step its
//!   running decodes stand still (no chunked prefill): that interference
//!   is what disaggregation removes. Otherwise every running request gets
//!   a token each [`DECODE_NS`].
//! * **Colocated**: a request goes to the server with the least prefill
//!   queued (ties: fewest running), is prefilled and decoded there.
//! * **Disaggregated**: a request goes to the prefill server with the least
//!   prefill queued; when its prefill ends, its whole prompt's KV takes
//!   [`HANDOVER_NS`] a token to reach the decode server with the fewest
//!   requests, whose first token follows one decode step later. With the
//!   decider, a request with fewer than [`DIRECT_BELOW`] uncached tokens
//!   goes straight to that decode server and is prefilled there.
//! * Time to first token counts from arrival; time per output token from
//!   the first token to the last.

use std::collections::VecDeque;
use std::fmt::Write as _;

use crate::report::{duration, percentile};
use crate::rng::Rng;

/// The scenario's letter.
pub(crate) const ID: char = 'h';

/// Servers in every fleet.
const SERVERS: usize = 8;
/// Requests a server holds at once (prefilling or decoding).
const SLOTS: usize = 32;
/// The simulation's step.
const STEP_NS: u64 = 1_000_000;
/// Prefill time per uncached token.
const PREFILL_NS: u64 = 60_000;
/// Time per output token of a running request.
const DECODE_NS: u64 = 25_000_000;
/// KV hand-over time per prompt token.
const HANDOVER_NS: u64 = 4_000;
/// Median uncached tokens of a first turn.
const LONG_MEDIAN: f64 = 2_000.0;
/// Median uncached tokens of a later turn.
const SHORT_MEDIAN: f64 = 60.0;
/// A later turn's whole prompt ÷ its uncached part.
const HISTORY: u64 = 20;
/// Median answer length in tokens.
const OUT_MEDIAN: f64 = 150.0;
/// The decider's threshold in uncached tokens.
const DIRECT_BELOW: u64 = 256;
/// Requests simulated at most (the model steps through time, so a run
/// costs its length, not its requests).
const MAX_REQUESTS: usize = 20_000;
/// Requests a second.
const RATE: f64 = 20.0;

/// One request of the workload.
#[derive(Clone, Copy, Debug)]
struct Request {
    arrival: u64,
    uncached: u64,
    prompt: u64,
    out: u64,
}

fn workload(requests: usize, seed: u64) -> Vec<Request> {
    let mut rng = Rng::stream(seed, u64::from(ID));
    let mut now = 0.0;
    (0..requests)
        .map(|_| {
            now += rng.exponential(1e9 / RATE);
            let later = rng.unit() < 0.5;
            let median = if later { SHORT_MEDIAN } else { LONG_MEDIAN };
            let uncached = (rng.lognormal(median, 0.8) as u64).clamp(1, 32_000);
            let prompt = if later { uncached * HISTORY } else { uncached };
            let out = (rng.lognormal(OUT_MEDIAN, 0.6) as u64).clamp(2, 2_000);
            Request {
                arrival: now as u64,
                uncached,
                prompt,
                out,
            }
        })
        .collect()
}

/// A fleet's shape.
#[derive(Clone, Copy, Debug)]
struct Shape {
    name: &'static str,
    prefill: usize,
    decider: bool,
}

const SHAPES: [Shape; 5] = [
    Shape {
        name: "colocated 8",
        prefill: 0,
        decider: false,
    },
    Shape {
        name: "4 prefill + 4 decode",
        prefill: 4,
        decider: false,
    },
    Shape {
        name: "4 prefill + 4 decode, decider",
        prefill: 4,
        decider: true,
    },
    Shape {
        name: "2 prefill + 6 decode",
        prefill: 2,
        decider: false,
    },
    Shape {
        name: "2 prefill + 6 decode, decider",
        prefill: 2,
        decider: true,
    },
];

/// A request on a server: prefill left, then tokens left.
#[derive(Clone, Copy, Debug)]
struct Job {
    id: usize,
    prefill_left: u64,
    /// Nanoseconds of decode progress towards the next token.
    progress: u64,
    tokens_left: u64,
}

#[derive(Debug, Default)]
struct Server {
    /// Waiting for and in prefill, in order.
    prefill: VecDeque<Job>,
    decoding: Vec<Job>,
    /// Prefilled elsewhere, arriving (at, job).
    incoming: Vec<(u64, Job)>,
    /// Whether this server hands its prefilled requests over.
    hands_over: bool,
}

impl Server {
    fn queued_prefill(&self) -> u64 {
        self.prefill.iter().map(|j| j.prefill_left).sum()
    }

    fn held(&self) -> usize {
        self.prefill.len() + self.decoding.len() + self.incoming.len()
    }
}

/// What happened to each request.
#[derive(Clone, Copy, Debug, Default)]
struct Times {
    first: Option<u64>,
    last: Option<u64>,
}

fn run(shape: Shape, requests: &[Request]) -> Vec<Times> {
    let mut servers: Vec<Server> = (0..SERVERS)
        .map(|i| Server {
            hands_over: i < shape.prefill,
            ..Server::default()
        })
        .collect();
    let decode_pool: Vec<usize> = (shape.prefill..SERVERS).collect();
    let prefill_pool: Vec<usize> = if shape.prefill == 0 {
        (0..SERVERS).collect()
    } else {
        (0..shape.prefill).collect()
    };
    let mut times = vec![Times::default(); requests.len()];
    let mut next = 0;
    let mut done = 0;
    let mut now = 0;
    let least_held = |servers: &[Server], pool: &[usize]| {
        *pool
            .iter()
            .min_by_key(|&&i| (servers[i].held(), i))
            .expect("a pool is never empty")
    };
    while done < requests.len() {
        now += STEP_NS;
        while next < requests.len() && requests[next].arrival <= now {
            let r = requests[next];
            let job = Job {
                id: next,
                prefill_left: r.uncached * PREFILL_NS,
                progress: 0,
                tokens_left: r.out,
            };
            let direct = shape.decider && r.uncached < DIRECT_BELOW;
            let to = if direct {
                least_held(&servers, &decode_pool)
            } else {
                *prefill_pool
                    .iter()
                    .min_by_key(|&&i| (servers[i].queued_prefill(), servers[i].held(), i))
                    .expect("a pool is never empty")
            };
            servers[to].prefill.push_back(job);
            next += 1;
        }
        let mut handed: Vec<(u64, Job)> = Vec::new();
        for server in &mut servers {
            if !server.incoming.is_empty() {
                let decoding = &mut server.decoding;
                server.incoming.retain(|&(at, job)| {
                    if at <= now {
                        decoding.push(job);
                    }
                    at > now
                });
            }
            let prefilling = server.decoding.len() < SLOTS && !server.prefill.is_empty();
            if prefilling {
                let job = server.prefill.front_mut().expect("not empty");
                job.prefill_left = job.prefill_left.saturating_sub(STEP_NS);
                if job.prefill_left == 0 {
                    let job = server.prefill.pop_front().expect("not empty");
                    if server.hands_over {
                        let r = requests[job.id];
                        handed.push((now + r.prompt * HANDOVER_NS, job));
                    } else {
                        times[job.id].first = Some(now);
                        let mut job = job;
                        job.tokens_left -= 1;
                        server.decoding.push(job);
                    }
                }
                // The step went to prefill: decodes stood still.
                continue;
            }
            server.decoding.retain_mut(|job| {
                job.progress += STEP_NS;
                if job.progress < DECODE_NS {
                    return true;
                }
                job.progress -= DECODE_NS;
                let t = &mut times[job.id];
                if t.first.is_none() {
                    t.first = Some(now);
                }
                job.tokens_left = job.tokens_left.saturating_sub(1);
                if job.tokens_left == 0 {
                    t.last = Some(now);
                    done += 1;
                    return false;
                }
                true
            });
        }
        for (at, job) in handed {
            let to = least_held(&servers, &decode_pool);
            servers[to].incoming.push((at, job));
        }
    }
    times
}

/// Runs every shape on one workload; the description and the Markdown
/// table.
pub(crate) fn compare(requests: usize, seed: u64) -> (String, String) {
    let requests = requests.min(MAX_REQUESTS);
    let workload = workload(requests, seed);
    let describe = format!(
        "{requests} requests at {RATE} a second on {SERVERS} servers of {SLOTS} slots; half \
         first turns (median {LONG_MEDIAN} uncached tokens), half later turns (median \
         {SHORT_MEDIAN} uncached of a prompt {HISTORY}× longer); answers of median \
         {OUT_MEDIAN} tokens; prefill {} µs a token, stalling the server's decodes; decode {} \
         a token; hand-over {} µs a prompt token; the decider keeps prompts under \
         {DIRECT_BELOW} uncached tokens on a decode server",
        PREFILL_NS / 1_000,
        duration(DECODE_NS),
        HANDOVER_NS / 1_000,
    );
    let mut table = String::from(
        "| fleet | TTFT p50 | TTFT p99 | time per token p50 | time per token p99 | \
         end-to-end p99 |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for shape in SHAPES {
        let times = run(shape, &workload);
        let mut ttft: Vec<u64> = Vec::new();
        let mut tpot: Vec<u64> = Vec::new();
        let mut total: Vec<u64> = Vec::new();
        for (r, t) in workload.iter().zip(&times) {
            let (Some(first), Some(last)) = (t.first, t.last) else {
                continue;
            };
            ttft.push(first - r.arrival);
            tpot.push((last - first) / (r.out - 1).max(1));
            total.push(last - r.arrival);
        }
        for v in [&mut ttft, &mut tpot, &mut total] {
            v.sort_unstable();
        }
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} | {} | {} |",
            shape.name,
            duration(percentile(&ttft, 0.50)),
            duration(percentile(&ttft, 0.99)),
            duration(percentile(&tpot, 0.50)),
            duration(percentile(&tpot, 0.99)),
            duration(percentile(&total, 0.99)),
        );
    }
    (describe, table)
}
