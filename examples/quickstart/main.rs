//! Every picker over three local backends, then the AI case: emulated
//! model servers behind round robin, least connections and the LLM default.
//!
//! ```sh
//! cargo run --example quickstart
//! ```
//!
//! First table: the backends run in this process on 127.0.0.1: `fast`
//! answers at once, `slow` takes 4 ms, `stream` sends its answer in five
//! frames a millisecond apart (as a model server streams tokens). Each
//! picker gets the same requests from 32 concurrent callers through one
//! shared `Balance` of hyper clients, counted in flight until the response
//! body ends.
//!
//! Second table (`llm.rs`): four emulated model servers
//! (`model_server.rs`: a prefix cache, a batch limit, prefill time per
//! uncached token, streamed tokens) get the same seeded prompts through
//! each picker; it prints the time to first token and the share of prompt
//! tokens the servers found in their caches.

mod llm;
mod model_server;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use bytes::Bytes;
use http::header::HeaderName;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tower::{Service, ServiceExt};
use tower_lb::discover::{self, EndpointSender};
use tower_lb::http::SetAuthority;
use tower_lb::load::{InFlight, InFlightDiscover};
use tower_lb::pick::{
    key::{ClientAddr, Header},
    ConsistentHash, IpHash, LeastConnections, Maglev, P2c, Pick, RoundRobin, WeightedRoundRobin,
};
use tower_lb::{Balance, BoxError};

const REQUESTS: usize = 3000;
const CALLERS: usize = 32;
const BACKENDS: [&str; 3] = ["fast", "slow", "stream"];

type HttpClient = Client<HttpConnector, Empty<Bytes>>;
type Endpoint = tower_lb::endpoint::Weighted<InFlight<SetAuthority<HttpClient>>>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let started = Instant::now();
    let mut addrs = Vec::new();
    for name in BACKENDS {
        addrs.push(serve(name).await?);
    }
    println!(
        "{REQUESTS} requests from {CALLERS} callers per picker; backends: fast, slow (4 ms), stream (5 frames, 1 ms apart)\n"
    );
    println!(
        "{:<24} {:>7} {:>7} {:>7} {:>9} {:>9}",
        "picker", "fast", "slow", "stream", "p50", "p99"
    );

    let user = HeaderName::from_static("x-user");
    run("round robin", RoundRobin::new(), &addrs).await?;
    run("weighted rr (2,1,1)", WeightedRoundRobin::new(), &addrs).await?;
    run("least connections", LeastConnections::new(), &addrs).await?;
    run("p2c (in flight)", P2c::new(), &addrs).await?;
    run("ip hash", IpHash::new(), &addrs).await?;
    run(
        "consistent hash",
        ConsistentHash::new(Header::new(user.clone())),
        &addrs,
    )
    .await?;
    let bounded = ConsistentHash::new(Header::new(user.clone())).bounded_load(1.25)?;
    run("bounded hash (c=1.25)", bounded, &addrs).await?;
    run("maglev", Maglev::new(Header::new(user)), &addrs).await?;
    println!("\nshares are of all requests; latency is until the last body frame.");

    llm::compare().await?;
    println!("\ndone in {:.1?}", started.elapsed());
    Ok(())
}

/// Sends the requests through a fresh balancer with `picker` and prints one
/// row of the table.
async fn run<P>(name: &str, picker: P, addrs: &[SocketAddr]) -> Result<(), BoxError>
where
    P: Pick<Request<Empty<Bytes>>, Endpoint>,
{
    let (endpoints, discover) = discover::channel();
    let balance = Balance::new(InFlightDiscover::new(discover), picker);
    insert_backends(&endpoints, addrs);
    balance.wait_for(|keys| keys.len() == addrs.len()).await;

    let mut callers = Vec::new();
    for caller in 0..CALLERS {
        let balance = balance.clone();
        callers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for i in (caller..REQUESTS).step_by(CALLERS) {
                seen.push(one_request(balance.clone(), i).await?);
            }
            Ok::<_, BoxError>(seen)
        }));
    }
    let mut latencies = Vec::with_capacity(REQUESTS);
    let mut shares = [0usize; BACKENDS.len()];
    for caller in callers {
        for (backend, latency) in caller.await?? {
            shares[backend] += 1;
            latencies.push(latency);
        }
    }
    latencies.sort_unstable();
    let pct = |share: usize| format!("{:.1}%", 100.0 * share as f64 / REQUESTS as f64);
    let quantile = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!(
        "{name:<24} {:>7} {:>7} {:>7} {:>9.2?} {:>9.2?}",
        pct(shares[0]),
        pct(shares[1]),
        pct(shares[2]),
        quantile(0.50),
        quantile(0.99),
    );
    Ok(())
}

fn insert_backends(
    endpoints: &EndpointSender<SocketAddr, SetAuthority<HttpClient>>,
    addrs: &[SocketAddr],
) {
    let mut connector = HttpConnector::new();
    // Small frames must not wait for delayed acknowledgements.
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new()).build(connector);
    for (i, &addr) in addrs.iter().enumerate() {
        // The first backend weighs 2: only the weighted pickers care.
        let weight = if i == 0 { 2 } else { 1 };
        let endpoint = SetAuthority::from_addr(client.clone(), addr);
        endpoints
            .insert_weighted(addr, endpoint, weight)
            .expect("the balancer is alive");
    }
}

/// One request with a varied client address and user, read to its end;
/// returns which backend answered and how long the whole answer took.
async fn one_request<S, B>(mut balance: S, i: usize) -> Result<(usize, Duration), BoxError>
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>, Error = BoxError>,
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    let mut request = Request::get("/")
        .header("x-user", format!("user-{}", i % 97))
        .body(Empty::new())?;
    let client: SocketAddr = ([10, 0, (i / 250 % 250) as u8, (i % 250) as u8], 40000).into();
    request.extensions_mut().insert(ClientAddr(client));

    let start = Instant::now();
    let response = balance.ready().await?.call(request).await?;
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(Into::into)?
        .to_bytes();
    let latency = start.elapsed();
    let text = String::from_utf8_lossy(&body);
    let backend = BACKENDS
        .iter()
        .position(|name| text.starts_with(name))
        .ok_or_else(|| format!("unexpected answer {text:?}"))?;
    Ok((backend, latency))
}

/// Starts a backend on an ephemeral loopback port.
async fn serve(name: &'static str) -> Result<SocketAddr, BoxError> {
    let handler = move || async move {
        match name {
            "slow" => {
                tokio::time::sleep(Duration::from_millis(4)).await;
                Response::new(Body::from(name))
            }
            "stream" => {
                let frames = futures_util::stream::unfold(0u8, move |n| async move {
                    if n == 5 {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    let frame = if n == 0 {
                        Bytes::from(name)
                    } else {
                        Bytes::from(" ·")
                    };
                    Some((Ok::<_, Infallible>(frame), n + 1))
                });
                Response::new(Body::from_stream(frames))
            }
            _ => Response::new(Body::from(name)),
        }
    };
    let app = Router::new().route("/", get(handler));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}
