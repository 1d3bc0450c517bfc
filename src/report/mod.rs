//! Sources of endpoint metrics (feature `metrics`): what model servers say
//! about their own load, written into each endpoint's
//! [`ReportCell`](crate::endpoint::ReportCell) record, which the
//! [`Scored`](crate::pick::llm::Scored) and
//! [`ReportWeighted`](crate::pick::ReportWeighted) pickers read.
//!
//! * **Load reports in answers (ORCA).** [`OrcaLayer`] wraps one
//!   endpoint: it asks for a report on every request
//!   (`endpoint-load-metrics-format: TEXT`, optional) and reads the answer's
//!   `endpoint-load-metrics` header (`TEXT`, `JSON` or `BIN` form, as vLLM
//!   and Envoy write them) and the gRPC trailer `endpoint-load-metrics-bin`
//!   (a serialized `xds.data.orca.v3.OrcaLoadReport`).
//! * **Scraping (Prometheus).** [`PrometheusPoller`] polls one endpoint's
//!   metrics page on a task of its own, with built-in mappings for vLLM,
//!   SGLang and TGI names ([`Mapping`]) and room for your own.
//!
//! Both keep the last good values when a report or page is garbage, log
//! that once per burst ([`ReportCell::should_log_garbage`]) and never
//! panic; `fuzz/fuzz_targets/orca_header.rs` and `prometheus_page.rs` hold
//! them to it. A record whose last report is older than its staleness bound
//! is ignored by the pickers, which then fall back to the client's own
//! count of requests in flight.
//!
//! [`ReportCell::should_log_garbage`]: crate::endpoint::ReportCell::should_log_garbage
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//!
//! use tower::{service_fn, Layer, Service, ServiceExt};
//! use tower_lb::endpoint::{Endpoint, ReportCell, Weighted};
//! use tower_lb::report::OrcaLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Infallible> {
//! let server = service_fn(|_: http::Request<()>| async {
//!     let answer = http::Response::builder()
//!         .header("endpoint-load-metrics", "TEXT named_metrics.num_requests_waiting=2")
//!         .body(String::new())
//!         .unwrap();
//!     Ok::<_, Infallible>(answer)
//! });
//! let metrics = ReportCell::new();
//! let mut endpoint =
//!     Weighted::new(OrcaLayer::new(metrics.clone()).layer(server), 1).with_report(metrics);
//! endpoint.ready().await?.call(http::Request::new(())).await?;
//! assert_eq!(endpoint.report().and_then(|m| m.current()).map(|f| f.queue), Some(2));
//! # Ok(())
//! # }
//! ```

mod layer;
mod orca;
mod poller;
mod prometheus;

pub use self::layer::{Orca, OrcaBody, OrcaLayer, ResponseFuture};
pub use self::orca::{
    parse_binary, parse_header, BadReport, OrcaLoadReport, KV_CACHE_METRIC,
    LOAD_METRICS_BIN_TRAILER, LOAD_METRICS_FORMAT_HEADER, LOAD_METRICS_HEADER, QUEUE_METRIC,
    RUNNING_METRIC,
};
pub use self::poller::{PollerHandle, PrometheusPoller};
pub use self::prometheus::{parse_page, BadPage, Mapping, Sample};
