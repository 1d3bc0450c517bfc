//! An OpenAI-compatible LLM router on tower-lb: prefix-cache affinity, load
//! from the model servers' own reports, saturation shedding.
//!
//! ```sh
//! cargo run --release --features llm,reports --example llm_router -- \
//!   --listen 127.0.0.1:8080 \
//!   --backend http://127.0.0.1:8001#llama --backend http://127.0.0.1:8002#llama \
//!   --admin 127.0.0.1:8081
//! ```
//!
//! Each request goes to the server with the least predicted time to first
//! token (`Scored::ttft`: its batch-slot wait, the prefill already queued
//! there and this prompt's tokens that its cache lacks, at that server's
//! learnt speed); `--scorer prefix=3,queue=2,kv=2` chooses by weighted
//! scorers instead.
//!
//! Behind each request:
//!
//! ```text
//! client ─► Front (CONNECT 405, one Host or 400, routes allowlisted or
//!                 404, x-priority and x-tenant from trusted sources only,
//!                 hop-by-hop headers, X-Forwarded-For; see `limits`)
//!        ─► AddRequestInfo (reads every JSON body: model, prompt blocks,
//!                           the attempt's own deadline; 400, 413, 415)
//!        ─► model check (404 for a model no backend serves)
//!        ─► Retry (--retries, budgeted)
//!        ─► Balance(Scored: model filter, saturation → 429,
//!                   least predicted time to first token)
//!        ─► Healthy (outlier detection, GET --health-path)
//!        ─► Weighted (the server's ReportCell and PrefillState)
//!        ─► InFlight ─► Prefill (queued prefill until the first token, the
//!                               cache index, what the server reused)
//!        ─► Orca (ORCA headers in, `endpoint-load-metrics-format: TEXT` out)
//!        ─► Forward (hyper-util client, keep-alive; --attempt-timeout for
//!                    the first byte, longer for long non-streamed answers)
//! ```
//!
//! A streamed answer silent for `--stream-idle-timeout` ends with an error
//! event and counts as its server's failure; an ejected server comes back
//! on probation.
//!
//! Answers stream through as they come, so server-sent events pass frame
//! by frame. With `--metrics-path /metrics` each server's Prometheus page
//! is polled too (`--metrics-interval`, 100 ms by default). `--admin ADDR`
//! serves `GET /status`: each server's reported load and its age, the
//! router's prefix index there (blocks, bytes, expected hit rate) and
//! requests in flight, and whether the imbalance gate is open.
//!
//! The listener (connection cap, header and idle timeouts), the forwarding
//! and the admin listener come from `examples/gateway`, shared with
//! `examples/proxy`; unlike the proxy, the router does not drain on
//! SIGTERM.

mod cli;
#[path = "../gateway/mod.rs"]
// The router uses forwarding, binding, health and the admin listener, not
// the proxy's server loop.
#[allow(dead_code)]
mod gateway;
mod limits;

use std::convert::Infallible;
use std::error::Error;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use serde_json::json;
use tower::filter::Filter;
use tower::timeout::error::Elapsed;
use tower::{Layer, ServiceExt};
use tower_lb::classify::{LateFailures, ServerErrors};
use tower_lb::discover::StaticList;
use tower_lb::endpoint::{PrefillState, Report, ReportCell, Weighted};
use tower_lb::error::Saturated;
use tower_lb::health::{
    HealthDiscover, HealthRegistry, Healthy, NoHealthyEndpoints, OutlierDetection,
};
use tower_lb::http::{AddRequestInfo, AddRequestInfoLayer, PromptBody, RequestInfoError};
use tower_lb::load::{InFlight, Prefill};
use tower_lb::pick::{
    key::hash_value,
    llm::{PrefixAffinity, PrefixConfig, Scored, ScoredRequest, SessionAffinity, SessionKey},
};
use tower_lb::report::{Orca, OrcaLayer, PollerHandle, PrometheusPoller};
use tower_lb::retry::{ReplayBody, Retry, RetryLayer, RetryPolicy};
use tower_lb::{Balance, BoxError, NoEndpoints};

use crate::cli::Cli;
use crate::gateway::forward::{self, Forward};
use crate::gateway::guard::{ClientBody, Timeouts};
use crate::gateway::listener::{self, Connections, Limits};

/// The request body after the prompt facts layer.
type Body = PromptBody<ClientBody>;
/// ... and after the retry layer.
type Upstream = ReplayBody<Body>;
/// One model server as the balancer holds it.
type Endpoint = Healthy<Weighted<InFlight<Prefill<Orca<Forward<Upstream>>>>>, LateFailures>;
type Picker = Scored<Request<Upstream>, Endpoint>;
type Lb = Balance<SocketAddr, Endpoint, Picker>;
type Stack = AddRequestInfo<Filter<Retry<Lb>, Models>>;
/// Every answer's body: the server's, streamed, or our own error.
type RouterBody = UnsyncBoxBody<Bytes, BoxError>;

/// Client connections held at once.
const MAX_CONNECTIONS: usize = 10_000;

/// A client's request head must arrive within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection without a byte either way (between requests) is closed
/// after this; a streamed answer keeps it busy.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let runtime = match gateway::runtime(cli.workers) {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("llm_router: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("llm_router: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The models a request may ask for: `None` when some backend serves any.
#[derive(Clone, Debug)]
struct Models(Option<Arc<[String]>>);

impl tower::filter::Predicate<Request<Body>> for Models {
    type Request = Request<Body>;

    fn check(&mut self, request: Request<Body>) -> Result<Request<Body>, BoxError> {
        if let (Some(models), Some(model)) = (&self.0, request.info().model) {
            if !models.iter().any(|m| m == model) {
                return Err(UnknownModel(model.to_owned()).into());
            }
        }
        Ok(request)
    }
}

/// A request for a model no backend serves.
#[derive(Debug)]
struct UnknownModel(String);

impl std::fmt::Display for UnknownModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no backend serves the model {:?}", self.0)
    }
}

impl Error for UnknownModel {}

async fn run(cli: Cli) -> Result<(), BoxError> {
    let prefix = Arc::new(PrefixAffinity::with_config(PrefixConfig {
        balance_abs: cli.balance_abs,
        balance_rel: cli.balance_rel,
        ..PrefixConfig::default()
    }));
    let client = forward::client::<Upstream>();
    let mut pollers: Vec<PollerHandle> = Vec::new();
    let mut records = Vec::new();
    let mut endpoints = Vec::new();
    for backend in &cli.backends {
        let metrics = ReportCell::new();
        if let Some(model) = &backend.model {
            metrics.record(&Report {
                models: Some(vec![model.as_str().into()]),
                ..Report::default()
            });
        }
        if let Some(path) = &cli.metrics_path {
            let base: http::Uri = format!("http://{}", backend.addr).parse()?;
            let poller = PrometheusPoller::new()
                .path(path.clone())
                .interval(cli.metrics_interval);
            pollers.push(poller.spawn(base, metrics.clone()));
        }
        let service = OrcaLayer::new(metrics.clone()).layer(Forward::new(
            client.clone(),
            backend.addr,
            cli.attempt_timeout,
        ));
        let prefill = PrefillState::default().with_report(metrics.clone());
        let service = InFlight::new(Prefill::new(service, prefill.clone()));
        records.push((backend.clone(), metrics.clone(), prefill.clone()));
        endpoints.push((
            backend.addr,
            Weighted::new(service, 1)
                .with_report(metrics)
                .with_prefill(prefill),
        ));
    }
    // Ejected servers come back on probation; a stalled stream is a
    // failure too (see `limits::idle_limited`).
    let health = gateway::server::health(Some(&cli.health_path), Duration::from_secs(1))
        .passive(
            OutlierDetection::new()
                .base_ejection(cli.ejection)
                .max_ejection(cli.ejection.max(Duration::from_secs(300))),
        )
        .classify(LateFailures(ServerErrors));
    let discover = HealthDiscover::new(StaticList::from_weighted(endpoints), health)?;
    let registry = discover.registry();

    let picker: Picker = match cli.scorer {
        None => Scored::ttft(),
        Some(scorer) => {
            let mut picker = Scored::new().weights(scorer.weights);
            if scorer.prefix > 0.0 {
                picker = prefix.install(picker, scorer.prefix);
            }
            if scorer.session > 0.0 {
                let key = SessionKey::Header(cli.session_header.parse()?);
                picker =
                    Arc::new(SessionAffinity::new(key, 1 << 16)).install(picker, scorer.session);
            }
            picker
        }
    };
    let lb: Lb = Balance::new(discover, picker);
    let expected = cli.backends.len();
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        lb.wait_for(|keys| keys.len() >= expected),
    )
    .await;

    let models = if cli.backends.iter().all(|b| b.model.is_some()) {
        Models(Some(
            cli.backends
                .iter()
                .filter_map(|b| b.model.clone())
                .collect(),
        ))
    } else {
        Models(None)
    };
    let stack: Stack = tower::ServiceBuilder::new()
        .layer(
            AddRequestInfoLayer::new()
                .max_body(cli.max_body)
                .require_json(true)
                .time_per_token(cli.time_per_token)
                .ask_for_usage(true),
        )
        .filter(models)
        .layer(RetryLayer::new(
            RetryPolicy::new().max_attempts(cli.retries.saturating_add(1)),
        ))
        .service(lb);

    let (_drain_signal, drain) = gateway::drain::channel();
    let limits = Limits {
        timeouts: Timeouts {
            header: HEADER_TIMEOUT,
            idle: IDLE_TIMEOUT,
            body: Some(cli.body_timeout),
        },
        max_connections: MAX_CONNECTIONS,
        max_header_bytes: Some(cli.max_header_bytes),
    };
    if let Some(addr) = cli.admin {
        let listener = gateway::server::bind(addr, Some("--admin")).await?;
        let prefix = Arc::clone(&prefix);
        let status = move || status(&records, &prefix, &registry);
        let token = match &cli.admin_token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                // An empty token would let every request through.
                if text.trim().is_empty() {
                    return Err(format!("{} holds no token", path.display()).into());
                }
                Some(text.trim().into())
            }
            None => None,
        };
        let admin = gateway::admin::Admin {
            token,
            max_connections: cli.admin_max_connections,
            idle: cli.admin_idle_timeout,
        };
        tokio::spawn(gateway::admin::serve(
            listener,
            limits,
            admin,
            drain.clone(),
            status,
        ));
    }
    let listener = gateway::server::bind(cli.listen, None).await?;
    println!("llm_router listening on http://{}", listener.local_addr()?);
    let connections = Connections::new(MAX_CONNECTIONS);
    tokio::spawn(gateway::memory::give_back_after_bursts(connections.clone()));
    let guard = FrontLimits {
        routes: limits::Routes::new(&cli.allow_routes),
        trusted: limits::Trusted::new(cli.trusted_sources.clone()),
        stream_idle: cli.stream_idle_timeout,
        max_header_bytes: cli.max_header_bytes,
    };
    listener::serve(listener, limits, connections, drain, move |peer| Front {
        stack: stack.clone(),
        forwarded_for: forward::forwarded_for(peer),
        peer,
        limits: guard.clone(),
    })
    .await;
    Ok(())
}

/// The `/status` document.
fn status(
    records: &[(cli::Backend, ReportCell, PrefillState)],
    prefix: &PrefixAffinity,
    registry: &HealthRegistry<SocketAddr>,
) -> String {
    let stats = prefix.stats();
    let health = registry.snapshot();
    let backends: Vec<_> = records
        .iter()
        .map(|(backend, metrics, prefill)| {
            let key = hash_value(&backend.addr);
            let affinity = stats.iter().find(|s| s.key_hash == key);
            let report = metrics.current();
            let known = prefill.stats();
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            let health = health.iter().find(|h| *h.key() == backend.addr);
            json!({
                "backend": format!("http://{}", backend.addr),
                "model": backend.model,
                "health": health.map(|h| format!("{:?}", h.state())),
                "consecutive_failures": health.map(|h| h.consecutive_failures()),
                "ejections": health.map(|h| h.ejections()),
                "queue": report.map(|f| f.queue),
                "kv_cache_use": report.map(|f| f.kv_cache_use),
                "report_age_ms": metrics.age().map(ms),
                "waiting_first_token": known.waiting,
                "in_flight": known.in_flight,
                "slots": known.slots,
                "mean_answer_ms": ms(known.mean_answer),
                "queued_prefill_tokens": known.queued_tokens,
                "prefix_index_blocks": known.indexed_blocks,
                "prefix_index_bytes": prefill.index_bytes(),
                "prompt_tokens_sent": known.sent_tokens,
                "expected_reuse": known.expected_reuse,
                "measured_reuse": known.measured_reuse,
                "expected_reuse_of_measured": known.expected_reuse_of_measured,
                "ttft_model_ms": {
                    "base": ms(known.model.base),
                    "per_uncached_token": ms(known.model.per_uncached_token),
                    "per_queued_token": ms(known.model.per_queued_token),
                    "slot_wait_factor": known.model.slot_wait,
                },
                "scorer_prefix_index_blocks": affinity.map(|s| s.indexed_blocks),
                "scorer_expected_reuse": affinity.map(|s| s.hit_rate),
            })
        })
        .collect();
    json!({
        "imbalance_gate_open": prefix.gate_tripped(),
        "backends": backends,
    })
    .to_string()
}

/// What one client connection runs for each request.
struct Front {
    stack: Stack,
    forwarded_for: HeaderValue,
    peer: SocketAddr,
    limits: FrontLimits,
}

/// What the front checks before routing, and the limit on answers.
#[derive(Clone, Debug)]
struct FrontLimits {
    routes: limits::Routes,
    trusted: limits::Trusted,
    stream_idle: Duration,
    max_header_bytes: usize,
}

type FrontFuture = Pin<Box<dyn Future<Output = Result<Response<RouterBody>, Infallible>> + Send>>;

impl hyper::service::Service<Request<ClientBody>> for Front {
    type Response = Response<RouterBody>;
    type Error = Infallible;
    // Boxed: one allocation a request, small beside an inference request.
    type Future = FrontFuture;

    fn call(&self, mut request: Request<ClientBody>) -> FrontFuture {
        let refusal = limits::refusal(&request, &self.limits.routes, self.limits.max_header_bytes);
        if let Some((status, message)) = refusal {
            let mut response = Response::new(());
            *response.status_mut() = status;
            if limits::closes(status) {
                response
                    .headers_mut()
                    .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            }
            let response = with_message(response, &message);
            return Box::pin(async move { Ok(response) });
        }
        self.limits.trusted.strip_unless_trusted(
            self.peer.ip(),
            request.headers_mut(),
            &limits::TRUSTED_HEADERS,
        );
        forward::strip_hop_by_hop(request.headers_mut(), false);
        forward::append_forwarded_for(request.headers_mut(), &self.forwarded_for);
        let stack = self.stack.clone();
        let idle = self.limits.stream_idle;
        Box::pin(async move {
            Ok(match stack.oneshot(request).await {
                Ok(response) => {
                    let (mut parts, body) = response.into_parts();
                    forward::strip_hop_by_hop(&mut parts.headers, false);
                    let response = limits::idle_limited(Response::from_parts(parts, body), idle);
                    response.map(limits::boxed)
                }
                Err(error) => error_response(&error),
            })
        })
    }
}

/// An OpenAI-style error answer for a failed request.
fn error_response(error: &BoxError) -> Response<RouterBody> {
    if let Some(answer) = tower_lb::http::saturated_response::<String>(error) {
        let (parts, _) = answer.into_parts();
        return with_message(
            Response::from_parts(parts, ()),
            "every server is saturated; retry later",
        );
    }
    let mut status = StatusCode::BAD_GATEWAY;
    let mut message = "no server could be reached".to_owned();
    let mut next: Option<&(dyn Error + 'static)> = Some(&**error);
    while let Some(e) = next {
        if let Some(e) = e.downcast_ref::<RequestInfoError>() {
            status = e.status();
            message = e.to_string();
            break;
        }
        if e.is::<UnknownModel>() {
            status = StatusCode::NOT_FOUND;
            message = e.to_string();
            break;
        }
        if e.is::<NoEndpoints>() || e.is::<NoHealthyEndpoints>() {
            status = StatusCode::SERVICE_UNAVAILABLE;
            message = "no server available".into();
            break;
        }
        if e.is::<Elapsed>() {
            status = StatusCode::GATEWAY_TIMEOUT;
            message = "the server did not answer in time".into();
            break;
        }
        if e.is::<Saturated>() {
            status = StatusCode::TOO_MANY_REQUESTS;
            break;
        }
        next = e.source();
    }
    if status.is_server_error() {
        tracing::warn!(%status, %error, "request failed");
    }
    let mut response = Response::new(());
    *response.status_mut() = status;
    with_message(response, &message)
}

fn with_message(response: Response<()>, message: &str) -> Response<RouterBody> {
    let body =
        json!({"error": {"message": message, "code": response.status().as_u16()}}).to_string();
    let (mut parts, ()) = response.into_parts();
    parts.headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(
        parts,
        Full::new(Bytes::from(body))
            .map_err(|e| match e {})
            .boxed_unsync(),
    )
}
