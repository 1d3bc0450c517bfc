//! `GET /metrics` on the admin listener: Prometheus text through
//! prometheus-client. Requests, their time to first token and to their
//! end, and the queue's and the servers' figures read at each scrape.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body::{Body, Frame, SizeHint};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tower::ServiceExt;
use tower_lb::llm::{ResponseBody, Router, ServedBy};
use tower_lb::BoxError;

use crate::gateway::forward;
use crate::gateway::guard::ClientBody;
use crate::limits::FrontLimits;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub(crate) route: String,
    /// The server that answered; empty for the router's own answers.
    pub(crate) server: String,
    pub(crate) status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    pub(crate) route: String,
}

/// The metrics the request path records.
#[derive(Clone)]
pub(crate) struct Metrics {
    registry: Arc<Registry>,
    requests: Family<RequestLabels, Counter>,
    ttft: Family<RouteLabels, Histogram>,
    duration: Family<RouteLabels, Histogram>,
}

fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

impl Metrics {
    pub(crate) fn new(router: Router) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let ttft =
            Family::<RouteLabels, Histogram>::new_with_constructor(seconds as fn() -> Histogram);
        let duration =
            Family::<RouteLabels, Histogram>::new_with_constructor(seconds as fn() -> Histogram);
        registry.register(
            "llm_router_requests",
            "Requests answered, by route, server and status",
            requests.clone(),
        );
        registry.register(
            "llm_router_time_to_first_token_seconds",
            "From a request's arrival to its answer's first body frame",
            ttft.clone(),
        );
        registry.register(
            "llm_router_request_duration_seconds",
            "From a request's arrival to its answer's end",
            duration.clone(),
        );
        registry.register_collector(Box::new(Scrape(router)));
        Self {
            registry: Arc::new(registry),
            requests,
            ttft,
            duration,
        }
    }

    /// The text exposition.
    pub(crate) fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String");
        text
    }

    /// Counts the answer's status now and times its body.
    pub(crate) fn observe<B>(
        &self,
        route: &str,
        server: Option<ServedBy>,
        status: u16,
        arrived: Instant,
        body: B,
    ) -> Timed<B> {
        let server = server.map_or_else(String::new, |s| s.0.to_string());
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                server,
                status,
            })
            .inc();
        let labels = RouteLabels {
            route: route.to_owned(),
        };
        Timed {
            inner: body,
            arrived,
            ttft: Some(self.ttft.get_or_create(&labels).clone()),
            duration: Some(self.duration.get_or_create(&labels).clone()),
        }
    }
}

/// The route label: the OpenAI routes by name, everything else `other`.
pub(crate) fn route(path: &str) -> &'static str {
    match path {
        "/v1/chat/completions" => "chat",
        "/v1/completions" => "completions",
        "/v1/models" => "models",
        _ => "other",
    }
}

pin_project_lite::pin_project! {
    /// An answer's body that records its first frame and its end.
    pub(crate) struct Timed<B> {
        #[pin]
        inner: B,
        arrived: Instant,
        ttft: Option<Histogram>,
        duration: Option<Histogram>,
    }
}

impl<B> Body for Timed<B>
where
    B: Body<Data = Bytes, Error = BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        let elapsed = this.arrived.elapsed().as_secs_f64();
        if let Some(h) = this.ttft.take() {
            h.observe(elapsed);
        }
        if !matches!(frame, Some(Ok(_))) {
            if let Some(h) = this.duration.take() {
                h.observe(elapsed);
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

/// The queue's and the servers' figures, read at each scrape.
#[derive(Debug)]
struct Scrape(Router);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BandLabels {
    priority: i32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShedLabels {
    priority: i32,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabels {
    server: String,
}

fn gauges<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    values: &[(L, f64)],
) -> Result<(), std::fmt::Error> {
    let mut metric =
        encoder.encode_descriptor(name, help, None, ConstGauge::new(0.0).metric_type())?;
    for (labels, value) in values {
        ConstGauge::new(*value).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

pub(crate) fn counters<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    values: &[(L, u64)],
) -> Result<(), std::fmt::Error> {
    let mut metric =
        encoder.encode_descriptor(name, help, None, ConstCounter::new(0u64).metric_type())?;
    for (labels, value) in values {
        ConstCounter::new(*value).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        if let Some(queue) = self.0.queue_stats() {
            let band = |b: &tower_lb::llm::BandStats| BandLabels {
                priority: b.priority,
            };
            let waiting: Vec<_> = queue
                .bands
                .iter()
                .map(|b| (band(b), b.waiting as f64))
                .collect();
            gauges(
                &mut encoder,
                "llm_router_queue_waiting",
                "Requests waiting in the router's queue, by priority band",
                &waiting,
            )?;
            let admitted: Vec<_> = queue.bands.iter().map(|b| (band(b), b.admitted)).collect();
            counters(
                &mut encoder,
                "llm_router_queue_admitted",
                "Requests sent on by the queue, at once or after waiting",
                &admitted,
            )?;
            let queued: Vec<_> = queue.bands.iter().map(|b| (band(b), b.queued)).collect();
            counters(
                &mut encoder,
                "llm_router_queue_waited",
                "Admitted requests that waited",
                &queued,
            )?;
            let waited: Vec<_> = queue
                .bands
                .iter()
                .map(|b| (band(b), b.waited.as_secs_f64()))
                .collect();
            gauges(
                &mut encoder,
                "llm_router_queue_wait_seconds_sum",
                "Total time admitted requests waited",
                &waited,
            )?;
            let mut shed = Vec::new();
            for b in &queue.bands {
                shed.push((
                    ShedLabels {
                        priority: b.priority,
                        reason: "queue_full",
                    },
                    b.shed,
                ));
                shed.push((
                    ShedLabels {
                        priority: b.priority,
                        reason: "deadline",
                    },
                    b.expired,
                ));
                shed.push((
                    ShedLabels {
                        priority: b.priority,
                        reason: "client_left",
                    },
                    b.left,
                ));
            }
            counters(
                &mut encoder,
                "llm_router_queue_refused",
                "Requests that left the queue unserved, by band and reason",
                &shed,
            )?;
            let in_service = ConstGauge::new(queue.in_service as f64);
            in_service.encode(encoder.encode_descriptor(
                "llm_router_in_service",
                "Requests admitted and not yet finished",
                None,
                in_service.metric_type(),
            )?)?;
        }
        let failover = self.0.failover_stats();
        let outcomes = [
            ("continued", failover.continued),
            ("finished", failover.finished),
            ("retried_whole", failover.retried_whole),
            ("resent", failover.resent),
            ("not_continued", failover.not_continued),
            ("exhausted", failover.exhausted),
            ("failed", failover.failed),
        ];
        let outcomes: Vec<_> = outcomes
            .into_iter()
            .map(|(outcome, n)| (OutcomeLabels { outcome }, n))
            .collect();
        counters(
            &mut encoder,
            "llm_router_failovers",
            "Answers cut before their end, by what the router did: continued on another server, finished by the router (every token delivered), a whole answer asked again, resent (the server failed before the answer's head), not continued (off or not continuable), exhausted (no failover left), failed (the continuation could not start)",
            &outcomes,
        )?;
        let servers = self.0.servers();
        let label = |s: &tower_lb::llm::ServerStatus| ServerLabels {
            server: s.addr.to_string(),
        };
        let report =
            |f: &dyn Fn(&tower_lb::endpoint::ReportSnapshot) -> f64| -> Vec<(ServerLabels, f64)> {
                servers
                    .iter()
                    .filter_map(|s| Some((label(s), f(s.report.as_ref()?))))
                    .collect()
            };
        gauges(
            &mut encoder,
            "llm_router_server_queue",
            "Each server's reported waiting requests",
            &report(&|r| f64::from(r.queue)),
        )?;
        gauges(
            &mut encoder,
            "llm_router_server_running",
            "Each server's reported running requests",
            &report(&|r| f64::from(r.running)),
        )?;
        gauges(
            &mut encoder,
            "llm_router_server_kv_cache_use",
            "Each server's reported KV-cache use",
            &report(&|r| f64::from(r.kv_cache_use)),
        )?;
        gauges(
            &mut encoder,
            "llm_router_server_report_age_seconds",
            "Age of each server's last report",
            &report(&|r| r.age.as_secs_f64()),
        )?;
        let prefill = |f: &dyn Fn(&tower_lb::endpoint::PrefillStats) -> Option<f64>| -> Vec<(ServerLabels, f64)> {
            servers.iter().filter_map(|s| Some((label(s), f(s.prefill.as_ref()?)?))).collect()
        };
        gauges(
            &mut encoder,
            "llm_router_server_in_flight",
            "The router's requests in flight at each server",
            &prefill(&|p| Some(p.in_flight as f64)),
        )?;
        gauges(
            &mut encoder,
            "llm_router_server_expected_prefix_reuse",
            "Share of prompt tokens the router's index expected each server to hold",
            &prefill(&|p| Some(p.expected_reuse)),
        )?;
        gauges(&mut encoder, "llm_router_server_measured_prefix_reuse", "Share of prompt tokens each server said it reused (usage.prompt_tokens_details.cached_tokens)", &prefill(&|p| p.measured_reuse))?;
        let tokens =
            |f: &dyn Fn(&tower_lb::endpoint::PrefillStats) -> u64| -> Vec<(ServerLabels, u64)> {
                servers
                    .iter()
                    .filter_map(|s| Some((label(s), f(s.prefill.as_ref()?))))
                    .collect()
            };
        counters(
            &mut encoder,
            "llm_router_server_prompt_tokens",
            "Prompt tokens sent to each server (estimated from bytes)",
            &tokens(&|p| p.sent_tokens),
        )?;
        counters(
            &mut encoder,
            "llm_router_server_answered_prompt_tokens",
            "Prompt tokens each server's answers said they had (usage.prompt_tokens)",
            &tokens(&|p| p.measured_prompt_tokens),
        )?;
        counters(
            &mut encoder,
            "llm_router_server_completion_tokens",
            "Tokens each server's answers said they generated (usage.completion_tokens)",
            &tokens(&|p| p.completion_tokens),
        )?;
        crate::pd::encode(&self.0, &mut encoder)?;
        Ok(())
    }
}

/// What one client connection runs for each request.
pub(crate) struct Front {
    pub(crate) router: Router,
    pub(crate) metrics: Metrics,
    pub(crate) forwarded_for: HeaderValue,
    pub(crate) peer: SocketAddr,
    pub(crate) limits: FrontLimits,
}

type FrontFuture =
    Pin<Box<dyn Future<Output = Result<Response<Timed<ResponseBody>>, Infallible>> + Send>>;

impl hyper::service::Service<Request<ClientBody>> for Front {
    type Response = Response<Timed<ResponseBody>>;
    type Error = Infallible;
    type Future = FrontFuture;

    fn call(&self, mut request: Request<ClientBody>) -> FrontFuture {
        let arrived = Instant::now();
        let route = route(request.uri().path());
        let metrics = self.metrics.clone();
        if let Some(refusal) = self.limits.check(self.peer.ip(), &mut request) {
            let status = refusal.status().as_u16();
            let response = refusal.map(|body| metrics.observe(route, None, status, arrived, body));
            return Box::pin(async move { Ok(response) });
        }
        forward::append_forwarded_for(request.headers_mut(), &self.forwarded_for);
        let router = self.router.clone();
        Box::pin(async move {
            let response = router.oneshot(request).await?;
            let status = response.status().as_u16();
            let server = response.extensions().get::<ServedBy>().copied();
            Ok(response.map(|body| metrics.observe(route, server, status, arrived, body)))
        })
    }
}
