//! The words around the tables: the report's introduction, and the verdict
//! on the targets in scenarios (b), (c) and (e).

use std::fmt::Write as _;

use crate::pickers::{
    LC, LC_EWMA, LC_WEIGHTED, P2C, P2C_EWMA, P2C_EWMA_HEDGED, P2C_HEDGED, P2C_WEIGHTED, RR, SCORED,
};
use crate::report::{p99_ratio, ratio, Summary};
use crate::scenario::{Scenario, PEAK_EWMA_DECAY, SLOTS};

/// The promise under test: the best in-flight picker's p99 within this
/// factor of the ideal's in scenarios (b) and (c).
const TARGET: f64 = 1.5;

/// For (b) and (c): whether least connections or p2c, knowing nothing of
/// the endpoints, comes within the target of the ideal, next to round robin
/// and to the same pickers given weights, reading Peak-EWMA or judged at the
/// first byte.
pub(crate) fn verdict(scenario: &Scenario, rows: &[Summary]) -> String {
    if scenario.reports_load() {
        return scored_verdict(rows);
    }
    if scenario.id == 'f' {
        return spread_verdict(rows);
    }
    if scenario.id == 'd' {
        return hedge_verdict(rows);
    }
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
    let (lc_ewma, p2c_ewma) = (p99(LC_EWMA), p99(P2C_EWMA));
    let _ = write!(
        text,
        " With Peak-EWMA: {}: least connections {}, p2c {}.",
        if lc_ewma.min(p2c_ewma) <= TARGET {
            "met"
        } else {
            "missed"
        },
        ratio(lc_ewma),
        ratio(p2c_ewma),
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
            " At the first byte (p99 ÷ ideal's): least connections {}, p2c {}, \
             with Peak-EWMA {} and {}; round robin {}.",
            ratio(first(LC)),
            ratio(first(P2C)),
            ratio(first(LC_EWMA)),
            ratio(first(P2C_EWMA)),
            ratio(first(RR)),
        );
    }
    text.push('\n');
    text
}

/// The promise of the scoring picker in (e): its p99 within this factor of
/// the ideal's, and no worse than least connections'.
const SCORED_TARGET: f64 = 1.2;

/// For (e): the scoring picker against the ideal and least connections.
fn scored_verdict(rows: &[Summary]) -> String {
    let ideal = &rows[0];
    let p99 = |name: &str| {
        rows.iter()
            .find(|row| row.picker == name)
            .map_or(f64::NAN, |row| p99_ratio(row, ideal))
    };
    let (scored, lc) = (p99(SCORED), p99(LC));
    format!(
        "Target (scoring picker's p99 within {SCORED_TARGET}× of ideal's): {}: scored {}; \
         no worse than least connections ({}): {}.\n",
        if scored <= SCORED_TARGET {
            "met"
        } else {
            "missed"
        },
        ratio(scored),
        ratio(lc),
        if scored <= lc { "met" } else { "missed" },
    )
}

/// For (f): whether p2c, the default picker, comes within the target of
/// least connections over the same load.
fn spread_verdict(rows: &[Summary]) -> String {
    let find = |name: &str| rows.iter().find(|row| row.picker == name);
    let p99 = |name: &str| find(name).map_or(f64::NAN, |row| row.p99 as f64);
    let in_flight = p99(P2C) / p99(LC);
    let ewma = p99(P2C_EWMA) / p99(LC_EWMA);
    let met = |r: f64| if r <= TARGET { "met" } else { "missed" };
    format!(
        "Target (p2c's p99 within {TARGET}× of least connections' over the same load): \
         in flight {}: {}; Peak-EWMA {}: {}.\n",
        met(in_flight),
        ratio(in_flight),
        met(ewma),
        ratio(ewma),
    )
}

/// For (d): whether hedging at p95 cuts the p99 of the same picker.
fn hedge_verdict(rows: &[Summary]) -> String {
    let find = |name: &str| rows.iter().find(|row| row.picker == name);
    let mut text =
        String::from("Hedging at p95 (one copy to another endpoint, the loser cancelled):");
    for (base, hedged) in [(P2C, P2C_HEDGED), (P2C_EWMA, P2C_EWMA_HEDGED)] {
        if let (Some(b), Some(h)) = (find(base), find(hedged)) {
            let _ = write!(
                text,
                " {base}: p99 {} → {} ({}), {:.1} % of requests copied;",
                crate::report::duration(b.p99),
                crate::report::duration(h.p99),
                ratio(h.p99 as f64 / b.p99.max(1) as f64),
                100.0 * h.hedged,
            );
        }
    }
    text.pop();
    text.push_str(".\n");
    text
}

/// The head of the Markdown report.
pub(crate) fn intro(requests: usize, seed: u64) -> String {
    format!(
        "# Picker simulation\n\n\
         Generated by `cargo run --release --example simulate -- --requests {requests} --seed {seed}`; \
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
         * *Peak-EWMA* rows run the same pickers over the crate's own `Latency` load \
         (recent round-trip time, peak-sensitive, times requests in flight plus one), each \
         endpoint a `Latency` on tokio's paused clock, moved to each event's virtual time. \
         Its default RTT is the scenario's mean request time at speed 1, what an operator \
         would expect (it matters only until the first answers come back); its decay is the \
         crate's default, {decay} s, the setting users run with: a thousand mean requests \
         in (a), (b) and (d), about four in (c). A round trip ends at the last byte.\n\
         * Ip hash keys on the client, one of 1000; consistent hash (a ring of 160 virtual \
         nodes an endpoint) and Maglev (a table of 65 537 slots) key on it too. *Bounded \
         hash* is consistent hashing with bounded loads: a client's endpoint takes the \
         request only while its requests in flight stay within 1.25× the fleet's mean, else \
         the next one along the ring does.\n\n\
         * *Scored* is the crate's scoring picker (`pick::llm::Scored`, default weights: \
         queue 2, KV use 2, in flight 1) over servers that report their queue and KV use \
         (modelled as the share of busy slots) to a poller every 100 ms, the picker seeing \
         each poll's values one period later: scenario (e) only.\n\n\
         Throughput is completed requests per second of virtual time until the last one \
         finishes. A picker that sends an endpoint more than it can serve builds a queue that \
         grows all run long: its throughput falls and its p99 grows with `--requests`.\n",
        decay = PEAK_EWMA_DECAY.as_secs_f64(),
    )
}
