//! An OpenAI-compatible LLM router: the command line of `tower_lb::llm::Router`.
//!
//! ```sh
//! cargo run --release --features llm --example llm_router -- \
//!   --listen 127.0.0.1:8080 \
//!   --backend http://127.0.0.1:8001#llama --backend http://127.0.0.1:8002#llama \
//!   --admin 127.0.0.1:8081
//! ```
//!
//! Each request goes to the server with the least predicted time to first
//! token (`Scored::ttft`); `--scorer prefix=3,queue=2,kv=2` chooses by
//! weighted scorers instead. When every server is busy, requests wait in
//! the router's queue (`x-priority` bands, `x-tenant` turns,
//! `x-deadline-ms` or `--deadline`), up to `--max-waiting`. `--admin ADDR`
//! serves `GET /status`: each server's reported load and its age, what the
//! router knows of its prefill (expected and measured prefix reuse), and
//! the queue's bands.
//!
//! A streamed answer whose server dies mid-stream is continued on another
//! server and spliced into the client's stream (`--failovers N` times a
//! request, 1 by default; `x-failover: off` on a request turns it off);
//! `/metrics` counts it in `llm_router_failovers_total`.
//!
//! Disaggregated serving: `--prefill URL[#BOOTSTRAP_PORT]` (repeatable),
//! `--decode URL` (repeatable) and `--pd-protocol sglang|vllm`; each
//! request then goes to a prefill server (least predicted time to first
//! token) and a decode server (least decode load), and
//! `--pd-direct-below TOKENS` sends prompts that are mostly cached on a
//! decode server straight to it. `/status` shows the pairs chosen.
//!
//! The listener (connection cap, header and idle timeouts) and the admin
//! listener come from `examples/gateway` (the `tower-lb-gateway` library of
//! the workspace), shared with `examples/proxy`.
//! SIGTERM or SIGINT drains: no new connections, answers in flight finish
//! (up to `--drain-timeout`).

mod cli;
mod limits;
mod metrics;
mod pd;
mod status;

use tower_lb_gateway as gateway;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tower_lb::health::OutlierDetection;
use tower_lb::llm::{Builder, Disaggregation, FlowControl};
use tower_lb::pick::llm::{PrefixAffinity, PrefixConfig, Scored, SessionAffinity, SessionKey};
use tower_lb::BoxError;

use crate::cli::Cli;
use crate::gateway::drain::{self, StopSignals};
use crate::gateway::forward;
use crate::gateway::guard::Timeouts;
use crate::gateway::listener::{self, Connections, Limits};
use crate::metrics::{Front, Metrics};

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

async fn run(cli: Cli) -> Result<(), BoxError> {
    let mut signals = StopSignals::new()?;
    let prefix = Arc::new(PrefixAffinity::with_config(PrefixConfig {
        balance_abs: cli.balance_abs,
        balance_rel: cli.balance_rel,
        ..PrefixConfig::default()
    }));
    let mut builder = Builder::new()
        .health_path(cli.health_path.clone())
        .retries(cli.retries)
        .failovers(cli.failovers)
        .max_body(cli.max_body)
        .metrics_interval(cli.metrics_interval)
        .attempt_timeout(cli.attempt_timeout)
        .time_per_token(Some(cli.time_per_token))
        .stream_idle_timeout(Some(cli.stream_idle_timeout))
        .outlier_detection(
            OutlierDetection::new()
                .base_ejection(cli.ejection)
                .max_ejection(cli.ejection.max(Duration::from_secs(300))),
        )
        .flow_control(if cli.max_waiting == 0 {
            FlowControl::disabled()
        } else {
            FlowControl::new()
                .max_waiting(cli.max_waiting)
                .deadline(cli.deadline)
                .server_limit(cli.server_limit)
        });
    for backend in &cli.backends {
        let url = format!("http://{}", backend.addr);
        builder = match &backend.model {
            Some(model) => builder.server_for_model(&url, model),
            None => builder.server(&url),
        };
    }
    if let Some(path) = &cli.metrics_path {
        builder = builder.metrics_path(path.clone());
    }
    builder = pd::configure(
        builder,
        &cli.prefill,
        &cli.decode,
        Disaggregation::new(cli.pd_protocol)
            .direct_below(cli.pd_direct_below)
            .attempts(cli.retries.saturating_add(1)),
    );
    if let Some(scorer) = cli.scorer {
        let mut picker = Scored::new().weights(scorer.weights);
        if scorer.prefix > 0.0 {
            picker = prefix.install(picker, scorer.prefix);
        }
        if scorer.session > 0.0 {
            let key = SessionKey::Header(cli.session_header.parse()?);
            picker = Arc::new(SessionAffinity::new(key, 1 << 16)).install(picker, scorer.session);
        }
        builder = builder.picker(picker);
    }
    let router = builder.build()?;
    let expected = cli.backends.len() + cli.decode.len();
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        router.balance().wait_for(|keys| keys.len() >= expected),
    )
    .await;

    let metrics = Metrics::new(router.clone());
    let (drain_signal, drain) = drain::channel();
    let limits = Limits {
        timeouts: Timeouts {
            header: HEADER_TIMEOUT,
            idle: IDLE_TIMEOUT,
            body: Some(cli.body_timeout),
        },
        max_connections: MAX_CONNECTIONS,
        max_header_bytes: Some(cli.max_header_bytes),
        evict_idle: false,
    };
    if let Some(addr) = cli.admin {
        let admin = gateway::server::bind(addr, Some("--admin")).await?;
        let (router, prefix) = (router.clone(), Arc::clone(&prefix));
        let status = move || status::json(&router, &prefix);
        let metrics = metrics.clone();
        let page = axum::routing::get(move || async move { metrics.render() });
        let extra = axum::Router::new().route("/metrics", page);
        let settings = gateway::admin::Admin {
            token: admin_token(cli.admin_token_file.as_deref())?,
            max_connections: cli.admin_max_connections,
            idle: cli.admin_idle_timeout,
        };
        tokio::spawn(gateway::admin::serve(
            admin,
            limits,
            settings,
            drain.clone(),
            status,
            extra,
        ));
    }
    let listener = gateway::server::bind(cli.listen, None).await?;
    println!("llm_router listening on http://{}", listener.local_addr()?);
    let connections = Connections::new(MAX_CONNECTIONS);
    tokio::spawn(gateway::memory::give_back_after_bursts(connections.clone()));
    let front = limits::FrontLimits {
        routes: limits::Routes::new(&cli.allow_routes),
        trusted: limits::Trusted::new(cli.trusted_sources.clone()),
        max_header_bytes: cli.max_header_bytes,
    };
    let accepting = tokio::spawn(listener::serve(
        listener,
        limits,
        connections.clone(),
        drain,
        move |peer| Front {
            router: router.clone(),
            metrics: metrics.clone(),
            forwarded_for: forward::forwarded_for(peer),
            peer,
            limits: front.clone(),
        },
    ));
    drain::on_signal(
        &mut signals,
        drain_signal,
        accepting,
        &connections,
        cli.drain_timeout,
    )
    .await;
    Ok(())
}

/// The admin token from `--admin-token-file`, trimmed; an empty file is
/// refused (it would let every request through).
fn admin_token(path: Option<&std::path::Path>) -> Result<Option<Arc<str>>, BoxError> {
    let Some(path) = path else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if text.trim().is_empty() {
        return Err(format!("{} holds no token", path.display()).into());
    }
    Ok(Some(text.trim().into()))
}
