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
mod tests {
    use super::*;

    #[test]
    fn text_reports() {
        let report = parse_header(
        b"TEXT cpu_utilization=0.5, rps_fractional=10, eps=0.5, named_metrics.num_requests_running=2,named_metrics.foo=1.5, utilization.gpu=0.3",
    )
    .unwrap();
        assert_eq!(report.utilization, Some(0.5));
        assert_eq!(
            (report.qps, report.eps, report.running),
            (Some(10.0), Some(0.5), Some(2))
        );
        assert_eq!(report.named, Some(vec![("foo".into(), 1.5)]));
        // Without a prefix, and empty.
        assert_eq!(
            parse_header(b"named_metrics.num_requests_waiting=4")
                .unwrap()
                .queue,
            Some(4)
        );
        assert!(parse_header(b"TEXT ").unwrap().is_empty());
    }

    #[test]
    fn application_utilization_wins_over_cpu() {
        for text in [
            &b"TEXT application_utilization=0.7, cpu_utilization=0.2"[..],
            b"TEXT cpu_utilization=0.2, application_utilization=0.7",
        ] {
            assert_eq!(parse_header(text).unwrap().utilization, Some(0.7));
        }
        let cpu = parse_header(b"TEXT application_utilization=0, cpu_utilization=0.2").unwrap();
        assert_eq!(cpu.utilization, Some(0.2));
    }

    #[test]
    fn json_reports() {
        let report = parse_header(
        br#"JSON {"rps_fractional": 3, "named_metrics": {"kv_cache_usage_perc": 0.25, "num_requests_waiting": 1}}"#,
    )
    .unwrap();
        assert_eq!(
            (report.qps, report.kv_cache_use, report.queue),
            (Some(3.0), Some(0.25), Some(1))
        );
    }

    #[test]
    fn binary_reports() {
        let orca = OrcaLoadReport {
            cpu_utilization: 0.1,
            application_utilization: 0.4,
            rps_fractional: 100.0,
            eps: 2.0,
            named_metrics: [("num_requests_waiting".to_string(), 7.0)].into(),
            ..OrcaLoadReport::default()
        };
        let bytes = orca.encode_to_vec();
        let report = parse_binary(&bytes).unwrap();
        assert_eq!(
            (report.utilization, report.qps, report.eps),
            (Some(0.4), Some(100.0), Some(2.0))
        );
        assert_eq!(report.queue, Some(7));
        let header = format!(
            "BIN {}",
            base64::engine::general_purpose::STANDARD.encode(&bytes)
        );
        assert_eq!(parse_header(header.as_bytes()).unwrap(), report);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &b"TEXT kv"[..],
            b"TEXT =3",
            b"TEXT a=b",
            b"TEXT a=inf",
            b"TEXT a=NaN",
            b"JSON {",
            b"JSON [1]",
            b"JSON {\"eps\": \"x\"}",
            b"BIN !!!",
            b"BIN AAAA",
            b"\xff\xfe=1",
            b"TEXT named_metrics.\xff=1",
        ] {
            assert!(
                parse_header(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(parse_binary(&[0xff, 0xff, 0xff]).is_err());
        // Out-of-range counts saturate rather than wrap.
        let report = parse_header(
            b"TEXT named_metrics.num_requests_waiting=-3, named_metrics.num_requests_running=1e30",
        )
        .unwrap();
        assert_eq!((report.queue, report.running), (Some(0), Some(u32::MAX)));
    }
}
