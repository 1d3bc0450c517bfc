//! The endpoint layer that reads load reports from answers.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use base64::Engine;
use http::{HeaderMap, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::orca::{
    parse_binary, parse_header, BadReport, LOAD_METRICS_BIN_TRAILER, LOAD_METRICS_FORMAT_HEADER,
    LOAD_METRICS_HEADER,
};
use crate::endpoint::ReportCell;

/// Wraps one endpoint in [`Orca`], which records the load reports
/// of its answers into `metrics`.
#[derive(Clone, Debug)]
pub struct OrcaLayer {
    metrics: ReportCell,
    format: Option<HeaderValue>,
}

impl OrcaLayer {
    /// Records into `metrics`; asks for reports in `TEXT` form.
    pub fn new(metrics: ReportCell) -> Self {
        Self {
            metrics,
            format: Some(HeaderValue::from_static("TEXT")),
        }
    }

    /// Asks for reports in `format` (`TEXT`, `JSON`, `BIN`), or, with
    /// `None`, does not ask (servers that always report).
    #[must_use]
    pub fn format(mut self, format: Option<HeaderValue>) -> Self {
        self.format = format;
        self
    }
}

impl<S> Layer<S> for OrcaLayer {
    type Service = Orca<S>;

    fn layer(&self, inner: S) -> Orca<S> {
        Orca {
            inner,
            metrics: self.metrics.clone(),
            format: self.format.clone(),
        }
    }
}

/// An HTTP endpoint whose answers' load reports (the
/// `endpoint-load-metrics` header, the `endpoint-load-metrics-bin`
/// trailer) are recorded into an [`ReportCell`]; see the
/// [module docs](super).
///
/// A report that cannot be read keeps the last good values (and their
/// age); it is logged at `warn` once per burst. An answer without a report
/// changes nothing, so a server that stops reporting goes stale.
///
/// **Cost:** on the request, one header insert when a format is asked
/// for; on the answer, one header lookup, and parsing when present (about
/// 100 ns for a two-metric `TEXT` report, see `docs/benchmarks.md`); the
/// body is wrapped to look at trailers.
#[derive(Clone, Debug)]
pub struct Orca<S> {
    inner: S,
    metrics: ReportCell,
    format: Option<HeaderValue>,
}

impl<S> Orca<S> {
    /// The record this endpoint's reports go to.
    pub fn cell(&self) -> &ReportCell {
        &self.metrics
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, B, RB> Service<http::Request<B>> for Orca<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
{
    type Response = http::Response<OrcaBody<RB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if let Some(format) = &self.format {
            request
                .headers_mut()
                .insert(LOAD_METRICS_FORMAT_HEADER, format.clone());
        }
        ResponseFuture {
            inner: self.inner.call(request),
            metrics: Some(self.metrics.clone()),
        }
    }
}

pin_project! {
    /// The future of [`Orca`]: reads the report in the answer's
    /// headers.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        metrics: Option<ReportCell>,
    }
}

impl<F: fmt::Debug> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<F, RB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<RB>, E>>,
{
    type Output = Result<http::Response<OrcaBody<RB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let metrics = this.metrics.take();
        let metrics = match metrics {
            Some(metrics) => {
                if let Some(value) = response.headers().get(LOAD_METRICS_HEADER) {
                    record(&metrics, parse_header(value.as_bytes()));
                }
                Some(metrics)
            }
            None => None,
        };
        Poll::Ready(Ok(response.map(|inner| OrcaBody { inner, metrics })))
    }
}

/// Records a parsed report, or logs a bad one once per burst.
fn record(metrics: &ReportCell, parsed: Result<crate::endpoint::Report, BadReport>) {
    match parsed {
        Ok(report) => metrics.record(&report),
        Err(error) => {
            if metrics.should_log_garbage() {
                tracing::warn!(%error, "ignoring an endpoint's load report; keeping the last values");
            }
        }
    }
}

/// Reads a gRPC `-bin` trailer: base64 with or without padding.
fn read_trailers(metrics: &ReportCell, trailers: &HeaderMap) {
    let Some(value) = trailers.get(LOAD_METRICS_BIN_TRAILER) else {
        return;
    };
    let text = value.as_bytes();
    let decoded = base64::engine::general_purpose::STANDARD_NO_PAD.decode(
        text.strip_suffix(b"==")
            .or(text.strip_suffix(b"="))
            .unwrap_or(text),
    );
    let parsed = match decoded {
        Ok(bytes) => parse_binary(&bytes),
        Err(_) => Err(super::orca::bad_report("`-bin` trailer is not base64")),
    };
    record(metrics, parsed);
}

pin_project! {
    /// An answer body that records the load report of its trailers
    /// (`endpoint-load-metrics-bin`), if any.
    pub struct OrcaBody<B> {
        #[pin]
        inner: B,
        metrics: Option<ReportCell>,
    }
}

impl<B> OrcaBody<B> {
    /// The wrapped body.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B: fmt::Debug> fmt::Debug for OrcaBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrcaBody")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<B: Body> Body for OrcaBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(Ok(frame)) = &frame {
            if let (Some(trailers), Some(metrics)) = (frame.trailers_ref(), this.metrics.as_ref()) {
                read_trailers(metrics, trailers);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
