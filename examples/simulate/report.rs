//! Summaries of a run and the tables they are printed in.

use std::fmt::Write as _;

use crate::fleet::Outcome;

/// What the tables show of one picker's run.
#[derive(Clone, Debug)]
pub(crate) struct Summary {
    pub(crate) picker: &'static str,
    /// Completed requests per second of virtual time.
    pub(crate) throughput: f64,
    pub(crate) p50: u64,
    pub(crate) p95: u64,
    pub(crate) p99: u64,
    pub(crate) p999: u64,
    /// 99th percentile of the time to the first byte.
    pub(crate) first_byte_p99: u64,
    /// Each endpoint's share of the requests, in percent.
    pub(crate) shares: Vec<f64>,
    /// Copies sent by hedging, per request.
    pub(crate) hedged: f64,
}

impl Summary {
    pub(crate) fn new(picker: &'static str, outcome: Outcome) -> Self {
        let Outcome {
            mut latency,
            mut first_byte,
            sent,
            span,
            hedges,
        } = outcome;
        latency.sort_unstable();
        first_byte.sort_unstable();
        let total: u64 = sent.iter().sum();
        Self {
            picker,
            throughput: latency.len() as f64 / (span.max(1) as f64 / 1e9),
            p50: percentile(&latency, 0.50),
            p95: percentile(&latency, 0.95),
            hedged: hedges as f64 / latency.len().max(1) as f64,
            p99: percentile(&latency, 0.99),
            p999: percentile(&latency, 0.999),
            first_byte_p99: percentile(&first_byte, 0.99),
            shares: sent
                .iter()
                .map(|&n| 100.0 * n as f64 / total.max(1) as f64)
                .collect(),
        }
    }
}

/// Nearest-rank percentile of sorted values.
pub(crate) fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A duration in ns, to three significant figures.
pub(crate) fn duration(ns: u64) -> String {
    let ms = ns as f64 / 1e6;
    match ms {
        ms if ms < 10.0 => format!("{ms:.2} ms"),
        ms if ms < 100.0 => format!("{ms:.1} ms"),
        ms if ms < 1000.0 => format!("{ms:.0} ms"),
        ms if ms < 10_000.0 => format!("{:.2} s", ms / 1e3),
        ms if ms < 100_000.0 => format!("{:.1} s", ms / 1e3),
        ms => format!("{:.0} s", ms / 1e3),
    }
}

/// Requests per second, to about three significant figures.
fn throughput(per_second: f64) -> String {
    match per_second {
        r if r < 10.0 => format!("{r:.2}"),
        r if r < 100.0 => format!("{r:.1}"),
        r => format!("{r:.0}"),
    }
}

/// A ratio to the ideal, to three significant figures.
pub(crate) fn ratio(r: f64) -> String {
    match r {
        r if r < 10.0 => format!("{r:.2}×"),
        r if r < 100.0 => format!("{r:.1}×"),
        r => format!("{r:.0}×"),
    }
}

/// Shares as whole percents, with one decimal below 10 so that a starved
/// endpoint still shows.
fn shares(shares: &[f64]) -> String {
    let cells: Vec<String> = shares
        .iter()
        .map(|&s| {
            if s < 10.0 {
                format!("{s:.1}")
            } else {
                format!("{s:.0}")
            }
        })
        .collect();
    cells.join(" ")
}

/// p99 of `row` over p99 of the ideal reference.
pub(crate) fn p99_ratio(row: &Summary, ideal: &Summary) -> f64 {
    row.p99 as f64 / ideal.p99.max(1) as f64
}

/// A Markdown table of one scenario's rows, padded to line up in a
/// terminal too. The first row is the ideal reference.
pub(crate) fn table(rows: &[Summary], streams: bool) -> String {
    let Some(ideal) = rows.first() else {
        return String::new();
    };
    let mut header = vec!["picker", "req/s", "p50", "p99", "p99.9"];
    if streams {
        header.push("1st byte p99");
    }
    header.extend(["p99 ÷ ideal", "share % per endpoint (0…7)"]);
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let mut cells = vec![
                row.picker.to_string(),
                throughput(row.throughput),
                duration(row.p50),
                duration(row.p99),
                duration(row.p999),
            ];
            if streams {
                cells.push(duration(row.first_byte_p99));
            }
            cells.extend([ratio(p99_ratio(row, ideal)), shares(&row.shares)]);
            cells
        })
        .collect();
    let width = |c: usize| {
        body.iter()
            .map(|cells| cells[c].chars().count())
            .chain([header[c].chars().count()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..header.len()).map(width).collect();
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String]| {
        out.push('|');
        for (c, cell) in cells.iter().enumerate() {
            let pad = widths[c] - cell.chars().count();
            // Text left, numbers right, as a reader scans them.
            if c == 0 || c + 1 == cells.len() {
                let _ = write!(out, " {cell}{} |", " ".repeat(pad));
            } else {
                let _ = write!(out, " {}{cell} |", " ".repeat(pad));
            }
        }
        out.push('\n');
    };
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    line(&mut out, &header);
    let rule: Vec<String> = widths
        .iter()
        .enumerate()
        .map(|(c, &w)| {
            let dashes = "-".repeat(w.max(3) - 1);
            if c == 0 || c + 1 == widths.len() {
                format!("{dashes}-")
            } else {
                format!("{dashes}:")
            }
        })
        .collect();
    line(&mut out, &rule);
    for cells in &body {
        line(&mut out, cells);
    }
    out
}
