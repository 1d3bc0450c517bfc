//! Helpers for the proxy tests: the proxy as a child process, a client,
//! steady traffic, and the `/status` report. The backends, the bounded
//! wait and the rest come from the shared `tests/support`.
#![allow(dead_code)]

mod process;
pub mod raw;
#[path = "../../support/mod.rs"]
mod shared;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower_lb::BoxError;

pub use self::process::{run_to_exit, Proxy};
pub use self::shared::{backends, model_server, refusing_addr, within, Backend};

/// How long a test waits for something it expects to happen soon.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An answer read to its end.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub async fn send(client: &HttpClient, request: Request<Full<Bytes>>) -> Result<Answer, BoxError> {
    let response = client.request(request).await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

pub async fn get(client: &HttpClient, url: &str) -> Result<Answer, BoxError> {
    send(client, Request::get(url).body(Full::default())?).await
}

/// GET requests sent without pause by a few tasks until stopped.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Never runs for longer than this, whatever the test does.
const TRAFFIC_LIMIT: Duration = Duration::from_secs(60);

impl Traffic {
    pub fn start(client: &HttpClient, url: String, tasks: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let tasks = (0..tasks)
            .map(|_| {
                let (client, url) = (client.clone(), url.clone());
                let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) && started.elapsed() < TRAFFIC_LIMIT {
                        match get(&client, &url).await {
                            Ok(answer) if answer.status == StatusCode::OK => {
                                ok.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(answer) => failures.lock().unwrap().push(format!(
                                "{}: {}",
                                answer.status,
                                answer.text()
                            )),
                            Err(error) => failures.lock().unwrap().push(error.to_string()),
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            ok,
            failures,
            tasks,
        }
    }

    pub fn ok(&self) -> usize {
        self.ok.load(Ordering::SeqCst)
    }

    /// Stops the traffic; returns the requests answered 200 and the failures.
    pub async fn stop(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.expect("a traffic task");
        }
        let failures = std::mem::take(&mut *self.failures.lock().unwrap());
        (self.ok.load(Ordering::SeqCst), failures)
    }

    /// Stops the traffic and asserts that no request failed.
    pub async fn stop_without_failures(self) {
        let (ok, failures) = self.stop().await;
        assert!(
            failures.is_empty(),
            "{} of {} requests failed: {:?}",
            failures.len(),
            ok,
            failures
        );
    }
}

/// One backend as `/status` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub address: SocketAddr,
    pub weight: u64,
    pub healthy: bool,
    pub state: String,
    pub in_flight: u64,
    pub requests: u64,
    pub failures: u64,
    pub ejections: u64,
}

/// Reads `/status` and checks that every field is there with its type.
pub async fn status(client: &HttpClient, proxy: &Proxy) -> Vec<Endpoint> {
    let answer = get(client, &format!("http://{}/status", proxy.admin))
        .await
        .expect("/status answers");
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers["content-type"], "application/json");
    let json: serde_json::Value = serde_json::from_slice(&answer.body)
        .unwrap_or_else(|e| panic!("/status is not JSON ({e}): {}", answer.text()));
    let list = json.as_array().expect("/status is a JSON array");
    list.iter()
        .map(|entry| {
            let field = |name: &str| {
                entry
                    .get(name)
                    .unwrap_or_else(|| panic!("/status entry without `{name}`: {entry}"))
            };
            let number = |name: &str| {
                field(name)
                    .as_u64()
                    .unwrap_or_else(|| panic!("`{name}` is not a count: {entry}"))
            };
            Endpoint {
                address: field("address")
                    .as_str()
                    .and_then(|a| a.parse().ok())
                    .unwrap_or_else(|| panic!("`address` is not a socket address: {entry}")),
                weight: number("weight"),
                healthy: field("healthy").as_bool().expect("`healthy` is a boolean"),
                state: field("state")
                    .as_str()
                    .expect("`state` is a string")
                    .to_owned(),
                in_flight: number("in_flight"),
                requests: number("requests"),
                failures: number("failures"),
                ejections: number("ejections"),
            }
        })
        .collect()
}

/// Checks `condition` until it holds, every 20 ms, [`within`] the shared
/// bound: for conditions that only another process can report, and so
/// nothing here can be notified of (the pause is between two polls of that
/// process, never a wait for an event in this one).
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    within(what, async {
        while !condition().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Replaces `path` in one step, as a backends file should be edited.
pub fn write_atomically(path: &Path, text: &str) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text).expect("write the backends file");
    std::fs::rename(&temporary, path).expect("rename the backends file");
}

/// A fresh directory for one test's files.
pub fn temp_dir(test: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tower-lb-proxy-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a temporary directory");
    dir
}

/// `flags`, then `--backend ADDR` for each of `backends`.
pub fn args<'a>(flags: &[&'a str], backends: &'a [String]) -> Vec<&'a str> {
    let mut args = flags.to_vec();
    for backend in backends {
        args.extend(["--backend", backend.as_str()]);
    }
    args
}
