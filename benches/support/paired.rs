//! Paired, interleaved comparison: the ratios a bench exists for, measured
//! so that a machine whose load changes during the run moves every arm
//! alike.
//!
//! Criterion runs one case after another, so on a shared machine a case
//! measured during someone else's build looks slower than one measured a
//! minute later. Here the arms take turns instead: each round runs every
//! arm once (for about the given round time, starting with a different arm
//! each round), and each arm's overhead is taken against the baseline's
//! time in the same round. The table reports medians over the rounds and the
//! interquartile range of the overhead.

// Each bench uses the parts it needs.
#![allow(dead_code)]

use std::time::Duration;

/// Whether the bench runs as a benchmark (`cargo bench` passes `--bench`)
/// rather than as a test (`cargo test --benches` runs each case once, and
/// the paired rounds are skipped).
pub fn benchmarking() -> bool {
    std::env::args().any(|arg| arg == "--bench")
}

/// One thing to measure: `run(n)` performs `n` iterations and returns the
/// time they took.
pub struct Arm<'a> {
    pub name: String,
    pub run: Box<dyn FnMut(u64) -> Duration + 'a>,
}

impl<'a> Arm<'a> {
    pub fn new(name: impl Into<String>, run: impl FnMut(u64) -> Duration + 'a) -> Self {
        Self {
            name: name.into(),
            run: Box::new(run),
        }
    }
}

/// What [`compare`] found for one arm, in nanoseconds per iteration.
pub struct Outcome {
    pub name: String,
    pub median: f64,
    /// Median over rounds of (this arm − baseline) in the same round.
    pub overhead: f64,
    /// First and third quartile of that paired overhead.
    pub overhead_iqr: (f64, f64),
    /// Median over rounds of this arm's time ÷ the baseline's.
    pub ratio: f64,
}

/// Runs `rounds` rounds of every arm, each arm for about `round_time` a
/// round; the first arm is the baseline.
pub fn compare(arms: &mut [Arm<'_>], rounds: usize, round_time: Duration) -> Vec<Outcome> {
    let iters: Vec<u64> = arms
        .iter_mut()
        .map(|arm| calibrate(&mut arm.run, round_time))
        .collect();
    let mut times = vec![Vec::with_capacity(rounds); arms.len()];
    for round in 0..rounds {
        for k in 0..arms.len() {
            let a = (round + k) % arms.len();
            let elapsed = (arms[a].run)(iters[a]);
            times[a].push(elapsed.as_secs_f64() * 1e9 / iters[a] as f64);
        }
    }
    let base = times[0].clone();
    arms.iter()
        .zip(&times)
        .map(|(arm, t)| {
            let mut overheads: Vec<f64> = t.iter().zip(&base).map(|(x, b)| x - b).collect();
            let mut ratios: Vec<f64> = t.iter().zip(&base).map(|(x, b)| x / b).collect();
            let mut own = t.clone();
            Outcome {
                name: arm.name.clone(),
                median: quantile(&mut own, 0.5),
                overhead: quantile(&mut overheads, 0.5),
                overhead_iqr: (
                    quantile(&mut overheads, 0.25),
                    quantile(&mut overheads, 0.75),
                ),
                ratio: quantile(&mut ratios, 0.5),
            }
        })
        .collect()
}

/// Iterations for one arm to run about `round_time`.
fn calibrate(run: &mut dyn FnMut(u64) -> Duration, round_time: Duration) -> u64 {
    let mut n = 1;
    loop {
        let elapsed = run(n);
        if elapsed >= round_time / 4 || n >= 1 << 40 {
            let per_iter = elapsed.as_secs_f64() / n as f64;
            return ((round_time.as_secs_f64() / per_iter.max(1e-12)) as u64).max(1);
        }
        n *= 2;
    }
}

fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let pos = q * (values.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    values[lo] + (values[hi] - values[lo]) * (pos - lo as f64)
}

/// Formats nanoseconds for a table: `812 ns`, `41.3 µs`.
pub fn format_ns(ns: f64) -> String {
    if ns.abs() >= 10_000.0 {
        format!("{:.1} µs", ns / 1000.0)
    } else if ns.abs() >= 100.0 {
        format!("{ns:.0} ns")
    } else {
        format!("{ns:.1} ns")
    }
}
