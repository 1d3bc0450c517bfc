//! The Prometheus poller: one task per endpoint.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::prometheus::Mapping;
use crate::endpoint::ReportCell;

/// The largest metrics page read: 4 MiB.
const MAX_PAGE: usize = 4 << 20;

/// Polls an endpoint's Prometheus page and records what it says into its
/// [`ReportCell`].
///
/// Settings: the page's path (`/metrics`), the interval (100 ms), the
/// timeout of one poll (the interval), the [`Mapping`] of names (vLLM,
/// SGLang and TGI built in). Pair it with a record whose staleness bound
/// is about two intervals (the default 200 ms fits the default interval):
/// when polls fail, the record goes stale and pickers fall back to the
/// client's requests in flight.
///
/// A failed poll (no connection, a timeout, a status other than 200, a page
/// that does not parse) keeps the last values and is logged at `warn` once
/// per burst. The task runs on the current tokio runtime until the
/// [`PollerHandle`] is dropped.
///
/// ```no_run
/// use tower_lb::endpoint::{ReportCell, Weighted};
/// use tower_lb::report::PrometheusPoller;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let metrics = ReportCell::new();
/// let poller = PrometheusPoller::new().spawn("http://10.0.0.1:8000".parse().unwrap(), metrics.clone());
/// let endpoint = Weighted::new((), 1).with_report(metrics);
/// // Keep `poller` as long as the endpoint is in the set.
/// # drop((poller, endpoint));
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct PrometheusPoller {
    path: String,
    interval: Duration,
    timeout: Option<Duration>,
    mapping: Mapping,
}

impl Default for PrometheusPoller {
    fn default() -> Self {
        Self::new()
    }
}

impl PrometheusPoller {
    /// `/metrics` every 100 ms, the built-in mapping.
    #[must_use]
    pub fn new() -> Self {
        Self {
            path: "/metrics".to_owned(),
            interval: Duration::from_millis(100),
            timeout: None,
            mapping: Mapping::default(),
        }
    }

    /// The page's path (and query), `/metrics` by default.
    #[must_use]
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// How often to poll (at least a millisecond); 100 ms by default.
    #[must_use]
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(1));
        self
    }

    /// How long one poll may take; the interval by default.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Which names fill which facts.
    #[must_use]
    pub fn mapping(mut self, mapping: Mapping) -> Self {
        self.mapping = mapping;
        self
    }

    /// Starts polling `base` (scheme and authority, as
    /// `http://10.0.0.1:8000`) plus the path, recording into `metrics`.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as `tokio::spawn` does.
    pub fn spawn(&self, base: Uri, metrics: ReportCell) -> PollerHandle {
        let uri = page_uri(&base, &self.path);
        let task = tokio::spawn(poll(self.clone(), uri, metrics));
        PollerHandle { task }
    }
}

fn page_uri(base: &Uri, path: &str) -> Option<Uri> {
    let mut parts = base.clone().into_parts();
    if parts.scheme.is_none() {
        parts.scheme = Some(http::uri::Scheme::HTTP);
    }
    parts.path_and_query = Some(path.parse().ok()?);
    Uri::from_parts(parts).ok()
}

async fn poll(settings: PrometheusPoller, uri: Option<Uri>, metrics: ReportCell) {
    let Some(uri) = uri else {
        tracing::warn!(path = %settings.path, "metrics poller: not a valid page address; not polling");
        return;
    };
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut ticks = tokio::time::interval(settings.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let timeout = settings.timeout.unwrap_or(settings.interval);
    loop {
        ticks.tick().await;
        let result = tokio::time::timeout(timeout, fetch(&client, &uri)).await;
        let page = match result {
            Ok(Ok(page)) => page,
            Ok(Err(reason)) => {
                log_failure(&metrics, &uri, &reason);
                continue;
            }
            Err(_) => {
                log_failure(&metrics, &uri, "timed out");
                continue;
            }
        };
        match settings.mapping.read(&page) {
            Ok(report) => metrics.record(&report),
            Err(error) => log_failure(&metrics, &uri, &error.to_string()),
        }
    }
}

async fn fetch(client: &Client<HttpConnector, Empty<Bytes>>, uri: &Uri) -> Result<Bytes, String> {
    let response = client
        .get(uri.clone())
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    if response.status() != http::StatusCode::OK {
        return Err(format!("status {}", response.status()));
    }
    let body = Limited::new(response.into_body(), MAX_PAGE)
        .collect()
        .await
        .map_err(|e| format!("reading the page failed: {e}"))?;
    Ok(body.to_bytes())
}

fn log_failure(metrics: &ReportCell, uri: &Uri, reason: &str) {
    if metrics.should_log_garbage() {
        tracing::warn!(%uri, reason, "metrics poll failed; keeping the last values");
    }
}

/// Keeps a [`PrometheusPoller`]'s task running; dropping it stops the task.
pub struct PollerHandle {
    task: JoinHandle<()>,
}

impl fmt::Debug for PollerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PollerHandle")
            .field("finished", &self.task.is_finished())
            .finish()
    }
}

impl Drop for PollerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}
