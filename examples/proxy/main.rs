//! A small, real HTTP/1.1 reverse proxy on axum, hyper-util and tower-lb.
//!
//! ```sh
//! cargo run --release --example proxy -- \
//!   --listen 127.0.0.1:8080 \
//!   --backend 127.0.0.1:9001 --backend 127.0.0.1:9002@3 \
//!   --admin 127.0.0.1:8081
//! ```
//!
//! `--help` lists every option. What a few lines of Flask do naively, done
//! right: bodies stream both ways, `X-Forwarded-For` gets the client's
//! address, connections to backends are kept alive, and failures come back
//! as 502, 503 or 504. Behind each request:
//!
//! ```text
//! client ─► Front (hop-by-hop headers, X-Forwarded-For, client address)
//!        ─► Retry (budgeted, --retries) ─► 30 s per-attempt timeout
//!        ─► Balance (--algorithm) ─► Healthy (outlier detection, --health-path)
//!        ─► InFlight (counted to the end of the body) ─► Forward (hyper-util client)
//! ```
//!
//! The client side runs hyper's HTTP/1 server directly rather than an axum
//! `Router`: the proxy routes nothing, and a router would box both bodies of
//! every request. The admin listener (`--admin`, `GET /status`) is axum.
//!
//! The server, the admin listener and forwarding live in `examples/gateway`,
//! shared with other gateways on the crate; this file, `cli.rs` and
//! `status.rs` are the proxy's own: its command line, its choice of picker
//! and its `/status` document.

mod cli;
#[path = "../gateway/mod.rs"]
mod gateway;
mod status;

use std::io::Write;
use std::process::ExitCode;

use tower_lb::pick::{
    ClientIp, ConsistentHash, Header, IpHash, LeastConnections, P2c, Pick, RoundRobin,
    WeightedRoundRobin,
};
use tower_lb::BoxError;

use crate::cli::{Algorithm, Args, Command};
use crate::gateway::forward::UpstreamBody;
use crate::gateway::server::{self, Endpoint, Settings};

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
        Ok(runtime) => runtime.block_on(run(args)),
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
        Algorithm::RoundRobin => run_with(args, RoundRobin::new(), None).await,
        Algorithm::WeightedRoundRobin => run_with(args, WeightedRoundRobin::new(), None).await,
        Algorithm::LeastConnections => run_with(args, LeastConnections::new(), None).await,
        Algorithm::P2c => run_with(args, P2c::new(), None).await,
        Algorithm::IpHash => run_with(args, IpHash::new(), by_ip).await,
        Algorithm::ConsistentHash => match args.hash_header.clone() {
            Some(name) => run_with(args, ConsistentHash::new(Header::new(name)), None).await,
            None => run_with(args, ConsistentHash::new(ClientIp::new(0)), by_ip).await,
        },
    }
}

/// Binds the listeners, builds the balancer with `picker` over the
/// backends, announces the addresses on stdout and serves until Ctrl-C.
async fn run_with<P>(args: Args, picker: P, client_ip: Option<ClientIp>) -> Result<(), BoxError>
where
    P: Pick<http::Request<UpstreamBody>, Endpoint>,
{
    let listener = server::bind(args.listen, None).await?;
    let admin = match args.admin {
        Some(addr) => Some(server::bind(addr, Some("--admin")).await?),
        None => None,
    };
    let health = server::health(args.health_path.as_deref(), args.health_interval);
    let lb = server::balance(&args.backends, health, picker)?;
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

    if let Some(admin) = admin {
        let lb = lb.clone();
        tokio::spawn(async move {
            let status = move || status::status_json(&lb);
            if let Err(error) = gateway::admin::serve(admin, status).await {
                tracing::error!(%error, "admin listener failed");
            }
        });
    }
    let settings = Settings {
        retries: args.retries,
        attempt_timeout: server::DEFAULT_ATTEMPT_TIMEOUT,
        client_ip,
    };
    tokio::select! {
        result = server::serve(listener, lb, settings) => result,
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("interrupted; stopping");
            Ok(())
        }
    }
}
