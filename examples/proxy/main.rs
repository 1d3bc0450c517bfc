//! A small, real HTTP/1.1 reverse proxy on axum, hyper-util and tower-lb.
//!
//! ```sh
//! cargo run --release --example proxy -- \
//!   --listen 127.0.0.1:8080 \
//!   --backend 127.0.0.1:9001 --backend 127.0.0.1:9002@3 \
//!   --admin 127.0.0.1:8081
//! ```
//!
//! Backends may also come from a registry: `--discovery
//! kube:NAMESPACE/SERVICE:PORT` (feature `kube`) or `--discovery
//! etcd:URL/PREFIX` (feature `etcd`), cut to a stable `--subset N`; `--zone
//! Z` keeps requests in zone Z while it has a backend.
//!
//! `--help` lists every option. What a few lines of Flask do naively, done
//! right: bodies stream both ways, `X-Forwarded-For` gets the client's
//! address, connections to backends are kept alive, and failures come back
//! as 502, 503 or 504. Behind each request:
//!
//! ```text
//! client ─► limits (--header-timeout, --idle-timeout, --max-connections,
//!            --max-header-bytes)
//!        ─► Front (CONNECT and Host checks, hop-by-hop headers,
//!                  X-Forwarded-For, client address, upgrades)
//!        ─► Retry (budgeted, --retries)
//!        ─► Balance (--algorithm) ─► Healthy (outlier detection, --health-path)
//!        ─► InFlight (counted to the end of the body)
//!        ─► Forward (--attempt-timeout from the end of the request body;
//!                    hyper-util client)
//! ```
//!
//! The attempt timeout sits under the health wrapper, so a backend that
//! accepts and never answers fails its attempts and is ejected. SIGTERM or
//! SIGINT drains: no new connections, requests in flight finish (up to
//! --drain-timeout), exit 0; a second signal exits at once.
//!
//! The client side runs hyper's HTTP/1 server directly rather than an axum
//! `Router`: the proxy routes nothing, and a router would box both bodies of
//! every request. The admin listener (`--admin`, `GET /status`) is axum.
//!
//! The server, the admin listener and forwarding live in `examples/gateway`
//! (the `tower-lb-gateway` library of the workspace),
//! shared with other gateways on the crate; this file, `cli.rs` and
//! `status.rs` are the proxy's own: its command line, its choice of picker
//! and its `/status` document.

mod cli;
mod metrics;
mod registry;
mod status;

use tower_lb_gateway as gateway;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use tower_lb::pick::{
    key::{ClientIp, Header},
    llm::Scored,
    ConsistentHash, IpHash, LeastConnections, P2c, Pick, RoundRobin, WeightedRoundRobin,
    ZonePreference,
};
use tower_lb::BoxError;

use crate::cli::{Algorithm, Args, Command};
use crate::gateway::drain::{self, StopSignals};
use crate::gateway::forward::UpstreamBody;
use crate::gateway::guard::Timeouts;
use crate::gateway::listener::{Connections, Limits};
use crate::gateway::server::{self, Endpoint, Settings};

/// How long the exit waits for tasks still running after the drain.
const EXIT_WAIT: Duration = Duration::from_millis(500);

fn main() -> ExitCode {
    let args = match cli::parse(std::env::args_os().skip(1)) {
        Ok(Command::Run(args)) => *args,
        Ok(Command::Help(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("proxy: {error}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match gateway::runtime(args.workers) {
        Ok(runtime) => {
            let result = runtime.block_on(run(args));
            // Whatever still runs (a tunnel, a read of the backends file)
            // must not hold the exit.
            runtime.shutdown_timeout(EXIT_WAIT);
            result
        }
        Err(error) => Err(error.into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("proxy: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Each picker is its own type: one monomorphised proxy per algorithm.
///
/// The pickers that hash the client's address read it from the `ClientAddr`
/// extension, which the front service fills in by the `--trusted-hops` rule
/// before it appends to `X-Forwarded-For`.
async fn run(args: Args) -> Result<(), BoxError> {
    let by_ip = Some(ClientIp::new(args.trusted_hops));
    match args.algorithm {
        Algorithm::RoundRobin => run_zoned(args, RoundRobin::new(), None).await,
        Algorithm::WeightedRoundRobin => run_zoned(args, WeightedRoundRobin::new(), None).await,
        Algorithm::LeastConnections => run_zoned(args, LeastConnections::new(), None).await,
        Algorithm::P2c => run_zoned(args, P2c::new(), None).await,
        Algorithm::Scored => {
            let picker = Scored::new().weights(args.scorer);
            run_zoned(args, picker, None).await
        }
        Algorithm::IpHash => run_zoned(args, IpHash::new(), by_ip).await,
        Algorithm::ConsistentHash => match args.hash_header.clone() {
            Some(name) => run_zoned(args, ConsistentHash::new(Header::new(name)), None).await,
            None => run_zoned(args, ConsistentHash::new(ClientIp::new(0)), by_ip).await,
        },
    }
}

/// With `--zone`, the picker keeps requests in that zone while it has a
/// backend that may take them ([`ZonePreference`]; every caller counts as in
/// the zone, so nothing spills while it has capacity).
async fn run_zoned<P>(args: Args, picker: P, client_ip: Option<ClientIp>) -> Result<(), BoxError>
where
    P: Pick<http::Request<UpstreamBody>, Endpoint>,
{
    match args.zone.clone() {
        Some(zone) => run_with(args, ZonePreference::new(picker, zone), client_ip).await,
        None => run_with(args, picker, client_ip).await,
    }
}

/// Binds the listeners, builds the balancer with `picker` over the
/// backends, announces the addresses on stdout and serves until SIGTERM or
/// SIGINT; then drains.
async fn run_with<P>(args: Args, picker: P, client_ip: Option<ClientIp>) -> Result<(), BoxError>
where
    P: Pick<http::Request<UpstreamBody>, Endpoint>,
{
    // From here on the signals drain instead of killing the process.
    let mut signals = StopSignals::new()?;
    let listener = server::bind(args.listen, None).await?;
    let admin = match args.admin {
        Some(addr) => Some(server::bind(addr, Some("--admin")).await?),
        None => None,
    };
    let health = server::health(args.health_path.as_deref(), args.health_interval);
    let lb = match &args.discovery {
        Some(discovery) => {
            registry::balance(discovery, args.subset, health, picker, args.attempt_timeout).await?
        }
        None => server::balance(
            &args.backends,
            health,
            picker,
            args.attempt_timeout,
            &args.reports,
        )?,
    };
    server::wait_for_backends(&args.backends, &lb).await;

    let listen = listener.local_addr()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {listen}")?;
    if let Some(admin) = &admin {
        writeln!(out, "admin on {}", admin.local_addr()?)?;
    }
    out.flush()?;
    drop(out);
    tracing::info!(
        %listen,
        algorithm = args.algorithm.name(),
        backends = lb.len(),
        workers = args.workers,
        "proxy started"
    );

    let (drain_signal, drain) = drain::channel();
    let limits = Limits {
        timeouts: Timeouts {
            header: args.header_timeout,
            idle: args.idle_timeout,
            body: None,
        },
        max_connections: args.max_connections,
        max_header_bytes: Some(args.max_header_bytes),
        evict_idle: false,
    };
    // Answers are counted and timed only for a /metrics page to show them.
    let traffic = admin.is_some().then(gateway::traffic::Traffic::new);
    if let Some(admin) = admin {
        let page = metrics::page(lb.clone(), traffic.clone());
        let extra = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let page = page.clone();
                async move { page() }
            }),
        );
        let lb = lb.clone();
        let status = move || status::status_json(&lb);
        let settings = gateway::admin::Admin {
            idle: args.idle_timeout,
            ..gateway::admin::Admin::default()
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
    let settings = Settings {
        retries: args.retries,
        client_ip,
        traffic,
        max_header_bytes: Some(args.max_header_bytes),
    };
    let connections = Connections::new(args.max_connections);
    tokio::spawn(gateway::memory::give_back_after_bursts(connections.clone()));
    let accepting = tokio::spawn(server::serve(
        listener,
        lb,
        settings,
        limits,
        connections.clone(),
        drain,
    ));

    drain::on_signal(
        &mut signals,
        drain_signal,
        accepting,
        &connections,
        args.drain_timeout,
    )
    .await;
    Ok(())
}
