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

mod admin;
mod cli;
mod connect;
mod forward;
mod server;

use std::io::Write;
use std::process::ExitCode;

use tokio::net::TcpListener;
use tower_lb::pick::{
    ClientIp, ConsistentHash, Header, IpHash, LeastConnections, P2c, Pick, RoundRobin,
    WeightedRoundRobin,
};
use tower_lb::BoxError;

use crate::cli::{Algorithm, Args, Command};
use crate::forward::UpstreamBody;
use crate::server::Endpoint;

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
    // One worker: a current-thread runtime, which skips the work-stealing
    // scheduler's cross-thread bookkeeping on every wake-up.
    let runtime = if args.workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.workers)
            .enable_all()
            .build()
    };
    let result = match runtime {
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

async fn run_with<P>(args: Args, picker: P, client_ip: Option<ClientIp>) -> Result<(), BoxError>
where
    P: Pick<http::Request<UpstreamBody>, Endpoint>,
{
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let admin = match args.admin {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr} (--admin): {e}"))?,
        ),
        None => None,
    };
    let lb = server::balance(&args, picker)?;
    server::wait_for_backends(&args, &lb).await;

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
            if let Err(error) = admin::serve(admin, lb).await {
                tracing::error!(%error, "admin listener failed");
            }
        });
    }
    tokio::select! {
        result = server::serve(listener, lb, args.retries, client_ip) => result,
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("interrupted; stopping");
            Ok(())
        }
    }
}
