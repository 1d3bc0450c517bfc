//! Three local backends behind one balancer with health checks: one is
//! killed, leaves rotation, is restarted on the same port and rejoins.
//!
//! Run with `cargo run --example failover`; it finishes by itself in about
//! eight seconds. Everything listens on 127.0.0.1.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tower::{Service, ServiceExt};
use tower_lb::health::{ActiveChecks, HealthConfig, HealthDiscover, HttpProbe, OutlierDetection};
use tower_lb::{discover, pick::RoundRobin, Balance, BoxError};

/// Serves `/` and `/health` until aborted; aborting closes every connection.
fn serve(listener: TcpListener) -> JoinHandle<()> {
    let app = Router::new()
        .route("/", get(|| async { "hello" }))
        .route("/health", get(|| async { "ok" }));
    tokio::spawn(async move {
        let mut connections = JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            while connections.try_join_next().is_some() {}
            let service = TowerToHyperService::new(app.clone());
            connections.spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut servers = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..3 {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        addrs.push(listener.local_addr()?);
        servers.push(serve(listener));
    }

    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http::<Empty<Bytes>>();
    let (endpoints, discover) = discover::channel();
    for &addr in &addrs {
        let client = client.clone();
        endpoints.insert(
            addr,
            tower::service_fn(move |_: ()| {
                let request = http::Request::get(format!("http://{addr}/"))
                    .body(Empty::new())
                    .expect("a valid request");
                client.request(request)
            }),
        )?;
    }
    let config = HealthConfig::new()
        .active(
            ActiveChecks::new(HttpProbe::get("/health"))
                .interval(Duration::from_millis(250))
                .timeout(Duration::from_millis(100))
                .rise(2)
                .fall(2),
        )
        .passive(
            OutlierDetection::new()
                .consecutive_failures(3)
                .base_ejection(Duration::from_secs(1)),
        );
    let discover = HealthDiscover::new(discover, config)?;
    let registry = discover.registry();
    let mut balance = Balance::new(discover, RoundRobin::new());
    balance.wait_for(|keys| keys.len() == 3).await;

    let victim = addrs[1];
    println!("backends: {addrs:?}; {victim} will be killed at 2 s and restarted at 5 s");
    let start = Instant::now();
    let mut last: HashMap<SocketAddr, String> = HashMap::new();
    let (mut ok, mut failed) = (0u32, 0u32);
    let mut killed = false;
    let mut restarted = false;
    while start.elapsed() < Duration::from_secs(8) {
        let at = start.elapsed();
        if !killed && at >= Duration::from_secs(2) {
            servers[1].abort();
            let _ = (&mut servers[1]).await;
            killed = true;
            println!("{:>5.2}s  killed {victim}", at.as_secs_f64());
        }
        if !restarted && at >= Duration::from_secs(5) {
            servers[1] = serve(TcpListener::bind(victim).await?);
            restarted = true;
            println!("{:>5.2}s  restarted {victim}", at.as_secs_f64());
        }
        match balance.ready().await?.call(()).await {
            Ok(response) => {
                response.into_body().collect().await?;
                ok += 1;
            }
            Err(_) => failed += 1,
        }
        for health in registry.snapshot() {
            let state = format!("{:?}", health.state());
            if last.get(health.key()) != Some(&state) {
                if last.contains_key(health.key()) {
                    println!(
                        "{:>5.2}s  {} is now {state} (ejections {}, probes {})",
                        start.elapsed().as_secs_f64(),
                        health.key(),
                        health.ejections(),
                        health.probes()
                    );
                }
                last.insert(*health.key(), state);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("done: {ok} requests answered, {failed} failed (all while {victim} was leaving)");
    Ok(())
}
