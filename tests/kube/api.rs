//! A Kubernetes API server on 127.0.0.1 that speaks the list and watch
//! protocol for the EndpointSlices of one namespace: paged lists with a
//! `resourceVersion`, watches from a version as a stream of JSON events,
//! bookmarks, 410 Gone for a compacted version, and an outage switch.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

type Body = BoxBody<Bytes, Infallible>;

const PATH_PREFIX: &str = "/apis/discovery.k8s.io/v1/namespaces/";

/// One endpoint of a slice: its address and conditions.
#[derive(Clone, Debug)]
pub struct Ep {
    pub ip: &'static str,
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
    pub zone: Option<&'static str>,
    pub node: Option<&'static str>,
}

impl Ep {
    pub fn ready(ip: &'static str) -> Self {
        Self {
            ip,
            ready: Some(true),
            serving: Some(true),
            terminating: Some(false),
            zone: None,
            node: None,
        }
    }

    pub fn draining(ip: &'static str) -> Self {
        Self {
            ready: Some(false),
            serving: Some(true),
            terminating: Some(true),
            ..Self::ready(ip)
        }
    }

    pub fn not_ready(ip: &'static str) -> Self {
        Self {
            ready: Some(false),
            serving: Some(false),
            terminating: Some(false),
            ..Self::ready(ip)
        }
    }

    pub fn zone(mut self, zone: &'static str, node: &'static str) -> Self {
        self.zone = Some(zone);
        self.node = Some(node);
        self
    }
}

/// An EndpointSlice of `service` with one port named `http`.
pub fn slice(name: &str, service: &str, port: u16, endpoints: &[Ep]) -> Value {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|ep| {
            let mut value = json!({
                "addresses": [ep.ip],
                "conditions": {
                    "ready": ep.ready,
                    "serving": ep.serving,
                    "terminating": ep.terminating,
                },
            });
            if let Some(zone) = ep.zone {
                value["zone"] = json!(zone);
            }
            if let Some(node) = ep.node {
                value["nodeName"] = json!(node);
            }
            value
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": { "kubernetes.io/service-name": service },
        },
        "addressType": "IPv4",
        "ports": [{ "name": "http", "port": port, "protocol": "TCP" }],
        "endpoints": endpoints,
    })
}

#[derive(Default)]
struct State {
    rv: u64,
    slices: BTreeMap<String, Value>,
    history: Vec<(u64, &'static str, Value)>,
    /// Watches from a version below this one get 410 Gone.
    compacted: u64,
    watchers: Vec<(String, mpsc::UnboundedSender<Bytes>)>,
    /// Events are kept but not sent to open watches (a partition).
    silenced: bool,
    down: bool,
    lists: usize,
    watches: Vec<u64>,
    gone: usize,
    /// Requests answered: (watches started, requests refused while down).
    seen: Option<tokio::sync::watch::Sender<(usize, usize)>>,
}

/// The API server; stops when dropped.
pub struct FakeApi {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeApi {
    pub async fn start() -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            rv: 100,
            seen: Some(tokio::sync::watch::Sender::new((0, 0))),
            ..State::default()
        }));
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(handle(&state, req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, state, task }
    }

    /// A kube client of this server, over plain HTTP.
    pub fn client(&self) -> kube::Client {
        let url = format!("http://{}", self.addr).parse().unwrap();
        let config = kube::Config::new(url);
        kube::Client::try_from(config).expect("a client for a plain HTTP server")
    }

    /// Creates or replaces a slice; open watches see it.
    pub fn apply(&self, slice: Value) {
        let mut state = self.state.lock().unwrap();
        let name = slice["metadata"]["name"].as_str().unwrap().to_owned();
        let kind = if state.slices.contains_key(&name) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        state.record(kind, name, Some(slice));
    }

    /// Deletes a slice; open watches see it.
    pub fn delete(&self, name: &str) {
        let mut state = self.state.lock().unwrap();
        if state.slices.contains_key(name) {
            state.record("DELETED", name.to_owned(), None);
        }
    }

    /// Sends a bookmark at the current version to open watches.
    pub fn bookmark(&self) {
        let mut state = self.state.lock().unwrap();
        let event = json!({
            "type": "BOOKMARK",
            "object": {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": { "resourceVersion": state.rv.to_string() },
            },
        });
        state.send_all(&event);
    }

    /// Stops sending events to open watches; they are still recorded.
    pub fn partition(&self) {
        self.state.lock().unwrap().silenced = true;
    }

    /// Ends a partition: compacts the history (older versions get 410
    /// Gone) and ends every open watch, so watchers come back with a
    /// version that is gone.
    pub fn heal_with_compaction(&self) {
        let mut state = self.state.lock().unwrap();
        state.compacted = state.rv;
        state.silenced = false;
        state.watchers.clear();
    }

    /// Ends every open watch; watchers resume from their last version.
    pub fn end_watches(&self) {
        self.state.lock().unwrap().watchers.clear();
    }

    /// While down every request gets 503 and open watches end.
    pub fn set_down(&self, down: bool) {
        let mut state = self.state.lock().unwrap();
        state.down = down;
        if down {
            state.watchers.clear();
        }
    }

    /// Waits until `n` watches have started.
    pub async fn wait_watches(&self, n: usize) {
        let mut seen = self.subscribe();
        seen.wait_for(|&(watches, _)| watches >= n).await.unwrap();
    }

    /// Waits until `n` requests have been refused while down.
    pub async fn wait_refused(&self, n: usize) {
        let mut seen = self.subscribe();
        seen.wait_for(|&(_, refused)| refused >= n).await.unwrap();
    }

    fn subscribe(&self) -> tokio::sync::watch::Receiver<(usize, usize)> {
        self.state
            .lock()
            .unwrap()
            .seen
            .as_ref()
            .unwrap()
            .subscribe()
    }

    pub fn lists(&self) -> usize {
        self.state.lock().unwrap().lists
    }

    pub fn gone(&self) -> usize {
        self.state.lock().unwrap().gone
    }

    /// The versions watches started from.
    pub fn watches(&self) -> Vec<u64> {
        self.state.lock().unwrap().watches.clone()
    }
}

impl State {
    fn record(&mut self, kind: &'static str, name: String, slice: Option<Value>) {
        self.rv += 1;
        let object = match slice {
            Some(mut slice) => {
                slice["metadata"]["resourceVersion"] = json!(self.rv.to_string());
                self.slices.insert(name, slice.clone());
                slice
            }
            None => {
                let mut slice = self.slices.remove(&name).unwrap();
                slice["metadata"]["resourceVersion"] = json!(self.rv.to_string());
                slice
            }
        };
        self.history.push((self.rv, kind, object.clone()));
        if !self.silenced {
            let event = json!({ "type": kind, "object": object });
            self.send_all(&event);
        }
    }

    fn send_all(&mut self, event: &Value) {
        let service = event["object"]["metadata"]["labels"]["kubernetes.io/service-name"]
            .as_str()
            .map(str::to_owned);
        let line = Bytes::from(format!("{event}\n"));
        self.watchers.retain(|(selector, tx)| {
            let wanted = service.as_deref().is_none_or(|s| s == selector);
            !wanted || tx.send(line.clone()).is_ok()
        });
    }
}

fn full(status: StatusCode, value: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(value.to_string())).boxed())
        .unwrap()
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

fn handle(state: &Mutex<State>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    let query: BTreeMap<String, String> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), percent_decode(v)))
        .collect();
    let mut state = state.lock().unwrap();
    if state.down {
        if let Some(seen) = &state.seen {
            seen.send_modify(|(_, refused)| *refused += 1);
        }
        return full(
            StatusCode::SERVICE_UNAVAILABLE,
            &status(503, "ServiceUnavailable", "the server is down"),
        );
    }
    let Some(rest) = path.strip_prefix(PATH_PREFIX) else {
        return full(StatusCode::NOT_FOUND, &status(404, "NotFound", path));
    };
    if !rest.ends_with("/endpointslices") {
        return full(StatusCode::NOT_FOUND, &status(404, "NotFound", path));
    }
    let selector = query
        .get("labelSelector")
        .and_then(|s| s.strip_prefix("kubernetes.io/service-name="))
        .unwrap_or("")
        .to_owned();
    let matches = |slice: &Value| {
        slice["metadata"]["labels"]["kubernetes.io/service-name"].as_str() == Some(&selector)
    };
    if query.get("watch").map(String::as_str) == Some("true") {
        let from: u64 = query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        state.watches.push(from);
        if let Some(seen) = &state.seen {
            seen.send_modify(|(watches, _)| *watches += 1);
        }
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        if from < state.compacted {
            state.gone += 1;
            let event = json!({
                "type": "ERROR",
                "object": status(410, "Expired", "too old resource version"),
            });
            let _ = tx.send(Bytes::from(format!("{event}\n")));
        } else {
            for (rv, kind, object) in &state.history {
                if *rv > from && matches(object) {
                    let event = json!({ "type": kind, "object": object });
                    let _ = tx.send(Bytes::from(format!("{event}\n")));
                }
            }
            state.watchers.push((selector, tx));
        }
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            let line = rx.recv().await?;
            Some((Ok::<_, Infallible>(Frame::data(line)), rx))
        });
        return Response::builder()
            .header("content-type", "application/json")
            .body(StreamBody::new(stream).boxed())
            .unwrap();
    }
    // A list, in pages of `limit`, continuing from the offset in `continue`.
    state.lists += 1;
    let items: Vec<Value> = state
        .slices
        .values()
        .filter(|s| matches(s))
        .cloned()
        .collect();
    let offset: usize = query
        .get("continue")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(usize::MAX);
    let end = offset.saturating_add(limit).min(items.len());
    let page = items.get(offset..end).unwrap_or_default().to_vec();
    let mut metadata = json!({ "resourceVersion": state.rv.to_string() });
    if end < items.len() {
        metadata["continue"] = json!(end.to_string());
    }
    full(
        StatusCode::OK,
        &json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSliceList",
            "metadata": metadata,
            "items": page,
        }),
    )
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
