//! ORCA load reports: the `endpoint-load-metrics` header and the gRPC
//! trailer `endpoint-load-metrics-bin`, read into a [`Report`].

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use http::HeaderName;
use prost::Message;

use crate::endpoint::Report;

/// The response header of a load report in text form: `endpoint-load-metrics`.
pub const LOAD_METRICS_HEADER: HeaderName = HeaderName::from_static("endpoint-load-metrics");

/// The gRPC trailer of a binary load report: `endpoint-load-metrics-bin`.
pub const LOAD_METRICS_BIN_TRAILER: HeaderName =
    HeaderName::from_static("endpoint-load-metrics-bin");

/// The request header that asks for a report: `endpoint-load-metrics-format`.
pub const LOAD_METRICS_FORMAT_HEADER: HeaderName =
    HeaderName::from_static("endpoint-load-metrics-format");

/// The named metric read as the waiting queue: `num_requests_waiting`.
pub const QUEUE_METRIC: &str = "num_requests_waiting";
/// The named metric read as the running requests: `num_requests_running`.
pub const RUNNING_METRIC: &str = "num_requests_running";
/// The named metric read as the KV-cache use: `kv_cache_usage_perc`
/// (vLLM's name; a share in `[0, 1]` despite the suffix).
pub const KV_CACHE_METRIC: &str = "kv_cache_usage_perc";

/// A load report that could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadReport {
    reason: &'static str,
}

impl BadReport {
    const fn new(reason: &'static str) -> Self {
        Self { reason }
    }

    /// What was wrong with it.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for BadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad load report: {}", self.reason)
    }
}

impl std::error::Error for BadReport {}

pub(super) const fn bad_report(reason: &'static str) -> BadReport {
    BadReport::new(reason)
}

/// The fields of `xds.data.orca.v3.OrcaLoadReport` this crate reads,
/// decoded by prost.
#[derive(Clone, PartialEq, Message)]
pub struct OrcaLoadReport {
    /// Field 1.
    #[prost(double, tag = "1")]
    pub cpu_utilization: f64,
    /// Field 2.
    #[prost(double, tag = "2")]
    pub mem_utilization: f64,
    /// Field 6.
    #[prost(double, tag = "6")]
    pub rps_fractional: f64,
    /// Field 7.
    #[prost(double, tag = "7")]
    pub eps: f64,
    /// Field 8.
    #[prost(btree_map = "string, double", tag = "8")]
    pub named_metrics: BTreeMap<String, f64>,
    /// Field 9.
    #[prost(double, tag = "9")]
    pub application_utilization: f64,
}

/// Reads the value of an `endpoint-load-metrics` header: `TEXT k=v, …`,
/// `JSON {…}` or `BIN <base64 of OrcaLoadReport>`; a value without a prefix
/// is read as text.
///
/// The named metrics [`QUEUE_METRIC`], [`RUNNING_METRIC`] and
/// [`KV_CACHE_METRIC`] fill the report's queue, running requests and KV
/// use; other named metrics go to [`Report::named`] (left `None` when
/// there are none). Never panics; allocates only for other named metrics.
///
/// ```
/// use tower_lb::report::parse_header;
///
/// let report = parse_header(b"TEXT named_metrics.kv_cache_usage_perc=0.42, named_metrics.num_requests_waiting=3").unwrap();
/// assert_eq!((report.queue, report.kv_cache_use), (Some(3), Some(0.42)));
/// assert!(parse_header(b"TEXT kv=").is_err());
/// ```
pub fn parse_header(value: &[u8]) -> Result<Report, BadReport> {
    let value = trim(value);
    if value == b"TEXT" || value == b"JSON" || value == b"BIN" {
        return Ok(Report::default());
    }
    if let Some(rest) = value.strip_prefix(b"TEXT ") {
        parse_text(rest)
    } else if let Some(rest) = value.strip_prefix(b"JSON ") {
        parse_json(rest)
    } else if let Some(rest) = value.strip_prefix(b"BIN ") {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(trim(rest))
            .map_err(|_| BadReport::new("BIN report is not base64"))?;
        parse_binary(&bytes)
    } else {
        parse_text(value)
    }
}

/// Reads a serialized `OrcaLoadReport` (the gRPC trailer's value, once
/// base64-decoded by the transport).
pub fn parse_binary(bytes: &[u8]) -> Result<Report, BadReport> {
    let orca =
        OrcaLoadReport::decode(bytes).map_err(|_| BadReport::new("not an OrcaLoadReport"))?;
    let mut report = Report::default();
    set_standard(&mut report, "cpu_utilization", orca.cpu_utilization);
    set_standard(
        &mut report,
        "application_utilization",
        orca.application_utilization,
    );
    set_standard(&mut report, "rps_fractional", orca.rps_fractional);
    set_standard(&mut report, "eps", orca.eps);
    for (name, value) in &orca.named_metrics {
        set_named(&mut report, name, *value);
    }
    Ok(report)
}

fn parse_text(text: &[u8]) -> Result<Report, BadReport> {
    let mut report = Report::default();
    let text = trim(text);
    if text.is_empty() {
        return Ok(report);
    }
    for pair in text.split(|&b| b == b',') {
        let pair = trim(pair);
        let Some(eq) = pair.iter().position(|&b| b == b'=') else {
            return Err(BadReport::new("TEXT entry without `=`"));
        };
        let key = std::str::from_utf8(trim(&pair[..eq]))
            .map_err(|_| BadReport::new("TEXT key is not UTF-8"))?;
        let value = number(trim(&pair[eq + 1..]))?;
        if let Some(name) = key.strip_prefix("named_metrics.") {
            set_named(&mut report, name, value);
        } else if key.contains('.') {
            // `utilization.*` and `request_cost.*`: not read.
        } else if key.is_empty() {
            return Err(BadReport::new("TEXT entry without a key"));
        } else {
            set_standard(&mut report, key, value);
        }
    }
    Ok(report)
}

fn parse_json(json: &[u8]) -> Result<Report, BadReport> {
    let value: serde_json::Value =
        serde_json::from_slice(json).map_err(|_| BadReport::new("JSON report is not JSON"))?;
    let serde_json::Value::Object(fields) = value else {
        return Err(BadReport::new("JSON report is not an object"));
    };
    let mut report = Report::default();
    for (key, value) in &fields {
        match value {
            serde_json::Value::Number(n) => {
                let n = n
                    .as_f64()
                    .ok_or(BadReport::new("JSON number out of range"))?;
                set_standard(&mut report, key, n);
            }
            serde_json::Value::Object(map) if key == "named_metrics" => {
                for (name, value) in map {
                    let n = value
                        .as_f64()
                        .ok_or(BadReport::new("JSON named metric is not a number"))?;
                    set_named(&mut report, name, n);
                }
            }
            serde_json::Value::Object(_) => {}
            _ => return Err(BadReport::new("JSON field is not a number")),
        }
    }
    Ok(report)
}

fn set_standard(report: &mut Report, key: &str, value: f64) {
    let value = value as f32;
    match key {
        "application_utilization" if value > 0.0 => report.utilization = Some(value),
        // application_utilization, when above 0, wins whatever the order.
        "cpu_utilization" if report.utilization.is_none() => report.utilization = Some(value),
        "rps_fractional" => report.qps = Some(value),
        "eps" => report.eps = Some(value),
        _ => {}
    }
}

fn set_named(report: &mut Report, name: &str, value: f64) {
    match name {
        QUEUE_METRIC => report.queue = Some(count(value)),
        RUNNING_METRIC => report.running = Some(count(value)),
        KV_CACHE_METRIC => report.kv_cache_use = Some(value as f32),
        _ => report
            .named
            .get_or_insert_with(Vec::new)
            .push((name.into(), value)),
    }
}

/// A count from a float: negative and NaN are 0, huge saturates.
pub(crate) fn count(value: f64) -> u32 {
    if value.is_nan() || value <= 0.0 {
        0
    } else if value >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        value.round() as u32
    }
}

fn number(text: &[u8]) -> Result<f64, BadReport> {
    let text = std::str::from_utf8(text).map_err(|_| BadReport::new("value is not UTF-8"))?;
    let value: f64 = text
        .parse()
        .map_err(|_| BadReport::new("value is not a number"))?;
    if value.is_finite() {
        Ok(value)
    } else {
        Err(BadReport::new("value is not finite"))
    }
}

fn trim(mut bytes: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = bytes {
        if first.is_ascii_whitespace() {
            bytes = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = bytes {
        if last.is_ascii_whitespace() {
            bytes = rest;
        } else {
            break;
        }
    }
    bytes
}

#[cfg(test)]
mod tests;
