//! An emulated inference server on 127.0.0.1 whose load the test sets: its
//! queue, running requests, KV-cache use, adapters and ORCA figures, served
//! as a Prometheus page (vLLM or SGLang names) and as ORCA load reports on
//! every answer.
//!
//! For the AI routing tests (`tests/ai_routing.rs`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Which names the metrics page uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Names {
    Vllm,
    Sglang,
}

/// What the server says about its load.
#[derive(Clone, Debug, Default)]
pub struct Load {
    pub queue: u32,
    pub running: u32,
    pub kv: f32,
    pub adapters: Vec<String>,
    pub max_adapters: u32,
    pub qps: f32,
    pub utilization: f32,
    /// Sent verbatim as the `endpoint-load-metrics` header instead of a
    /// report built from the figures above.
    pub raw_report: Option<String>,
    /// Served verbatim as the metrics page instead of one built above.
    pub raw_page: Option<String>,
    /// No report header at all.
    pub silent: bool,
}

struct Shared {
    id: String,
    model: String,
    names: Names,
    load: Mutex<Load>,
    served: AtomicUsize,
    scrapes: AtomicUsize,
    scraped: Notify,
}

/// A running model server; stops when dropped.
pub struct ModelServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ModelServer {
    /// Starts a server named `id` serving `model`, with `names` on its page.
    pub async fn start(id: &str, model: &str, names: Names) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("address");
        let shared = Arc::new(Shared {
            id: id.to_owned(),
            model: model.to_owned(),
            names,
            load: Mutex::new(Load::default()),
            served: AtomicUsize::new(0),
            scrapes: AtomicUsize::new(0),
            scraped: Notify::new(),
        });
        let app = Router::new()
            .route("/metrics", get(page))
            .fallback(answer)
            .with_state(Arc::clone(&shared));
        let task = tokio::spawn(serve(listener, app));
        Self { addr, shared, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn base(&self) -> http::Uri {
        format!("http://{}", self.addr).parse().expect("a URI")
    }

    /// Sets what the server reports from now on.
    pub fn set(&self, load: Load) {
        *self.shared.load.lock().unwrap() = load;
    }

    /// Changes what the server reports from now on.
    pub fn update(&self, change: impl FnOnce(&mut Load)) {
        change(&mut self.shared.load.lock().unwrap());
    }

    /// Requests answered (not counting scrapes).
    pub fn served(&self) -> usize {
        self.shared.served.load(Ordering::Relaxed)
    }

    /// Metrics pages served.
    pub fn scrapes(&self) -> usize {
        self.shared.scrapes.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` pages have been served in all (bounded by
    /// [`within`](super::within)).
    pub async fn wait_scrapes(&self, n: usize) {
        super::within("metrics pages served", self.scraped(n)).await;
    }

    async fn scraped(&self, n: usize) {
        loop {
            let notified = self.shared.scraped.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.scrapes() >= n {
                return;
            }
            notified.await;
        }
    }
}

/// Serves `app` on every connection until the task is aborted, which
/// drops the listener and every open connection with it.
async fn serve(listener: TcpListener, app: Router) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        while connections.try_join_next().is_some() {}
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        connections.spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn page(State(shared): State<Arc<Shared>>) -> Response {
    let body = {
        let load = shared.load.lock().unwrap();
        match (&load.raw_page, shared.names) {
            (Some(raw), _) => raw.clone(),
            (None, Names::Vllm) => format!(
                "# TYPE vllm:num_requests_waiting gauge\n\
                 vllm:num_requests_waiting{{model_name=\"{m}\"}} {q}\n\
                 vllm:num_requests_running{{model_name=\"{m}\"}} {r}\n\
                 vllm:kv_cache_usage_perc{{model_name=\"{m}\"}} {kv}\n\
                 vllm:lora_requests_info{{max_lora=\"{max}\",running_lora_adapters=\"{a}\",waiting_lora_adapters=\"\"}} 1.7e9\n",
                m = shared.model,
                q = load.queue,
                r = load.running,
                kv = load.kv,
                max = load.max_adapters,
                a = load.adapters.join(","),
            ),
            (None, Names::Sglang) => format!(
                "sglang:num_queue_reqs{{model_name=\"{m}\"}} {q}\n\
                 sglang:num_running_reqs{{model_name=\"{m}\"}} {r}\n\
                 sglang:token_usage{{model_name=\"{m}\"}} {kv}\n",
                m = shared.model,
                q = load.queue,
                r = load.running,
                kv = load.kv,
            ),
        }
    };
    shared.scrapes.fetch_add(1, Ordering::Relaxed);
    shared.scraped.notify_waiters();
    (StatusCode::OK, body).into_response()
}

async fn answer(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    shared.served.fetch_add(1, Ordering::Relaxed);
    let load = shared.load.lock().unwrap().clone();
    let mut response = (StatusCode::OK, shared.id.clone()).into_response();
    let asked = headers.contains_key("endpoint-load-metrics-format");
    if asked && !load.silent {
        let report = load.raw_report.clone().unwrap_or_else(|| {
            format!(
                "TEXT application_utilization={u}, rps_fractional={qps}, named_metrics.num_requests_waiting={q}, named_metrics.num_requests_running={r}, named_metrics.kv_cache_usage_perc={kv}",
                u = load.utilization,
                qps = load.qps,
                q = load.queue,
                r = load.running,
                kv = load.kv,
            )
        });
        if let Ok(value) = http::HeaderValue::from_str(&report) {
            response
                .headers_mut()
                .insert("endpoint-load-metrics", value);
        }
    }
    response
}
