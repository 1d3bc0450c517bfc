//! Disaggregated serving: the server as a prefill server, a decode server,
//! or both, and the KV hand-over between them over loopback.
//!
//! * **SGLang** (`--pd-protocol sglang`). A router sends the same request,
//!   with `bootstrap_host`, `bootstrap_port` (the prefill server's
//!   bootstrap port) and `bootstrap_room` (a number), to a prefill server
//!   and a decode server at once. The prefill server prefills, puts the
//!   room's KV up on its bootstrap port and answers one token. The decode
//!   server asks `http://bootstrap_host:bootstrap_port/kv/ROOM` for the
//!   room; the bootstrap port holds the question until the room is filled,
//!   at most `--kv-timeout`; then the decode server spends
//!   `--kv-per-token` per prompt token on the hand-over and streams the
//!   answer. A room nobody fills in time is a 500 `kv_transfer_failed`.
//! * **vLLM** (`--pd-protocol vllm`, NIXL's shape). A router sends the
//!   prefill server the request with `max_tokens` 1 and
//!   `kv_transfer_params: {"do_remote_decode": true, ...}`; the answer
//!   carries `kv_transfer_params` naming where the cache is
//!   (`remote_engine_id`, `remote_block_ids`, `remote_host`,
//!   `remote_port`). The router sends the original request with those
//!   parameters to a decode server, which pulls the blocks from
//!   `remote_host:remote_port`. Parameters the server does not know, or
//!   blocks the named prefill server does not hold, are a 400
//!   `invalid_kv_transfer_params`.
//!
//! A prefill server keeps a room's KV for `--kv-timeout`, then drops it.
//! A request without hand-over fields is served whole, whatever the role
//! (a router that skips disaggregation for short prompts sends those).
//! `/get_server_info` announces `disaggregation_mode` and
//! `disaggregation_bootstrap_port` as SGLang does; `/stats` counts the
//! legs under `pd`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Path;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::engine::Engine;
use crate::openai::{self, Api, ApiError, Generate, Head, Usage};

/// Which legs of a disaggregated request the server takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Role {
    /// Prefill and decode legs both (and whole requests).
    Both,
    /// Prefill legs: the prompt, then the KV up for a decode server.
    Prefill,
    /// Decode legs: the KV from a prefill server, then the answer.
    Decode,
}

/// How the two servers of a request learn of each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Protocol {
    /// `bootstrap_host`, `bootstrap_port`, `bootstrap_room` in both legs.
    Sglang,
    /// `kv_transfer_params` out of the prefill answer, into the decode leg.
    Vllm,
}

/// The command line's disaggregation settings.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct PdArgs {
    /// The legs this server takes.
    #[arg(long, value_enum, default_value = "both")]
    pub(crate) role: Role,
    /// The hand-over protocol.
    #[arg(long = "pd-protocol", value_enum, default_value = "sglang")]
    pub(crate) protocol: Protocol,
    /// The bootstrap port decode servers pull KV from (prefill and both
    /// roles; 0: any free port, announced in `/get_server_info`).
    #[arg(long, default_value_t = 0)]
    pub(crate) bootstrap_port: u16,
    /// Hand-over time per prompt token.
    #[arg(long, default_value = "2us", value_parser = humantime::parse_duration)]
    pub(crate) kv_per_token: Duration,
    /// How long a room's KV waits for its decode server, and a decode
    /// server for its room.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub(crate) kv_timeout: Duration,
}

/// Legs served and hand-overs that failed.
#[derive(Debug, Default)]
struct Counters {
    prefill_legs: AtomicU64,
    decode_legs: AtomicU64,
    whole: AtomicU64,
    kv_sent: AtomicU64,
    kv_expired: AtomicU64,
    handover_failures: AtomicU64,
}

/// The server's disaggregation state.
#[derive(Debug)]
pub(crate) struct Pd {
    args: PdArgs,
    /// The bootstrap listener's address (prefill and both roles).
    bootstrap: Option<SocketAddr>,
    engine_id: String,
    rooms: Rooms,
    next_block: AtomicU64,
    client: Client<HttpConnector, Empty<Bytes>>,
    counters: Counters,
}

static PD: OnceLock<Arc<Pd>> = OnceLock::new();

fn pd() -> Option<&'static Arc<Pd>> {
    PD.get()
}

/// Sets the role up: binds and serves the bootstrap port when the role
/// prefills. Call once, before serving.
pub(crate) async fn start(args: PdArgs, listen: SocketAddr) -> std::io::Result<()> {
    let bootstrap = match args.role {
        Role::Decode => None,
        Role::Both | Role::Prefill => {
            let listener =
                tokio::net::TcpListener::bind((listen.ip(), args.bootstrap_port)).await?;
            let addr = listener.local_addr()?;
            let app = Router::new()
                .route("/kv/{key}", get(pull))
                .route("/health", get(|| async { "ok" }));
            tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            Some(addr)
        }
    };
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(args.kv_timeout));
    let pd = Pd {
        engine_id: format!("engine-{}", std::process::id()),
        bootstrap,
        rooms: Rooms::default(),
        next_block: AtomicU64::new(1),
        client: Client::builder(TokioExecutor::new()).build(connector),
        counters: Counters::default(),
        args,
    };
    let _ = PD.set(Arc::new(pd));
    Ok(())
}

/// `disaggregation_mode` and `disaggregation_bootstrap_port`, for
/// `/get_server_info`.
pub(crate) fn server_info(info: &mut Value) {
    let Some(pd) = pd() else { return };
    let mode = match pd.args.role {
        Role::Both => "null",
        Role::Prefill => "prefill",
        Role::Decode => "decode",
    };
    info["disaggregation_mode"] = json!(mode);
    info["disaggregation_bootstrap_port"] = json!(pd.bootstrap.map(|a| a.port()));
    info["disaggregation_protocol"] = json!(match pd.args.protocol {
        Protocol::Sglang => "sglang",
        Protocol::Vllm => "vllm",
    });
}

/// The legs served, for `/stats`.
pub(crate) fn stats() -> Value {
    let Some(pd) = pd() else { return Value::Null };
    let c = &pd.counters;
    json!({
        "role": format!("{:?}", pd.args.role).to_lowercase(),
        "prefill_legs": c.prefill_legs.load(Relaxed),
        "decode_legs": c.decode_legs.load(Relaxed),
        "whole": c.whole.load(Relaxed),
        "kv_sent": c.kv_sent.load(Relaxed),
        "kv_expired": c.kv_expired.load(Relaxed),
        "handover_failures": c.handover_failures.load(Relaxed),
        "rooms_held": pd.rooms.len(),
    })
}

// ===== the legs =====

/// Where a decode leg finds its KV.
#[derive(Debug)]
pub(crate) struct Source {
    host: String,
    port: u16,
    key: String,
    /// How the failure to find it is answered: SGLang's room that never
    /// came (500), vLLM's parameters that name nothing (400).
    protocol: Protocol,
}

/// What a request is to this server.
#[derive(Debug)]
pub(crate) enum Leg {
    /// Served whole, as without disaggregation.
    Whole,
    /// Prefill, then put the KV up under this key.
    Prefill(String),
    /// Pull the KV, then decode.
    Decode(Source),
}

/// vLLM's `kv_transfer_params` fields the server knows.
const KNOWN_PARAMS: &[&str] = &[
    "do_remote_decode",
    "do_remote_prefill",
    "remote_engine_id",
    "remote_block_ids",
    "remote_host",
    "remote_port",
    "remote_request_id",
    "tp_size",
];

fn invalid_params(message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        "invalid_kv_transfer_params",
        message,
    )
}

/// Reads the hand-over fields of a request body (already parsed once as a
/// generate request, so it is a JSON object).
pub(crate) fn leg(body: &[u8]) -> Result<Leg, ApiError> {
    let Some(pd) = pd() else {
        return Ok(Leg::Whole);
    };
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
        return Ok(Leg::Whole);
    };
    let leg = match pd.args.protocol {
        Protocol::Sglang => sglang_leg(pd, &fields)?,
        Protocol::Vllm => vllm_leg(pd, &fields)?,
    };
    let counter = match &leg {
        Leg::Whole => &pd.counters.whole,
        Leg::Prefill(_) => &pd.counters.prefill_legs,
        Leg::Decode(_) => &pd.counters.decode_legs,
    };
    counter.fetch_add(1, Relaxed);
    Ok(leg)
}

fn sglang_leg(pd: &Pd, fields: &serde_json::Map<String, Value>) -> Result<Leg, ApiError> {
    let Some(room) = fields.get("bootstrap_room").filter(|v| !v.is_null()) else {
        return Ok(Leg::Whole);
    };
    let room = room
        .as_u64()
        .ok_or_else(|| ApiError::invalid("`bootstrap_room` must be a whole number"))?;
    let port = match fields.get("bootstrap_port") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| ApiError::invalid("`bootstrap_port` must be a port number"))?,
        ),
    };
    let host = match fields.get("bootstrap_host") {
        None | Some(Value::Null) => None,
        Some(Value::String(host)) => Some(host.clone()),
        Some(_) => return Err(ApiError::invalid("`bootstrap_host` must be text")),
    };
    let own = pd.bootstrap.is_some_and(|b| port == Some(b.port()));
    let prefill = match pd.args.role {
        Role::Prefill => true,
        Role::Decode => false,
        Role::Both => own,
    };
    if prefill {
        return Ok(Leg::Prefill(room.to_string()));
    }
    let (Some(host), Some(port)) = (host, port) else {
        return Err(ApiError::invalid(
            "a decode server needs `bootstrap_host` and `bootstrap_port` with `bootstrap_room`",
        ));
    };
    Ok(Leg::Decode(Source {
        host,
        port,
        key: room.to_string(),
        protocol: Protocol::Sglang,
    }))
}

fn vllm_leg(pd: &Pd, fields: &serde_json::Map<String, Value>) -> Result<Leg, ApiError> {
    let Some(params) = fields.get("kv_transfer_params").filter(|v| !v.is_null()) else {
        return Ok(Leg::Whole);
    };
    let Value::Object(params) = params else {
        return Err(invalid_params("`kv_transfer_params` must be an object"));
    };
    if let Some(unknown) = params.keys().find(|k| !KNOWN_PARAMS.contains(&k.as_str())) {
        return Err(invalid_params(format!(
            "unknown field {unknown:?} in `kv_transfer_params`"
        )));
    }
    let flag = |name: &str| params.get(name).and_then(Value::as_bool) == Some(true);
    if flag("do_remote_decode") {
        if pd.args.role == Role::Decode {
            return Err(invalid_params(
                "this server decodes only: it does not prefill for a remote decode",
            ));
        }
        let block = pd.next_block.fetch_add(1, Relaxed);
        return Ok(Leg::Prefill(format!("{}-{block}", pd.engine_id)));
    }
    if !flag("do_remote_prefill") {
        return Ok(Leg::Whole);
    }
    if pd.args.role == Role::Prefill {
        return Err(invalid_params(
            "this server prefills only: it does not decode from a remote prefill",
        ));
    }
    let text = |name: &str| {
        params
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| invalid_params(format!("`kv_transfer_params.{name}` must be text")))
    };
    let engine = text("remote_engine_id")?;
    let host = text("remote_host")?.to_owned();
    let port = params
        .get("remote_port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| invalid_params("`kv_transfer_params.remote_port` must be a port"))?;
    let block = params
        .get("remote_block_ids")
        .and_then(Value::as_array)
        .and_then(|ids| ids.first())
        .and_then(Value::as_u64)
        .ok_or_else(|| {
            invalid_params("`kv_transfer_params.remote_block_ids` must be a list of block ids")
        })?;
    Ok(Leg::Decode(Source {
        host,
        port,
        key: format!("{engine}-{block}"),
        protocol: Protocol::Vllm,
    }))
}

/// The prefill leg: waits for a slot, prefills, puts the KV up under `key`
/// and answers one token (vLLM: with `kv_transfer_params`).
pub(crate) async fn prefill(
    engine: Arc<Engine>,
    request: Generate,
    api: Api,
    key: String,
) -> Response {
    let Some(pd) = pd() else {
        return crate::error_response(&ApiError::invalid("not a disaggregated server"));
    };
    let prompt = request.prompt.into_bytes();
    let admitted = engine.admit(&prompt, 1).await;
    tokio::time::sleep(admitted.prefill).await;
    engine.remember(&prompt);
    engine.counters.generated_tokens.fetch_add(1, Relaxed);
    engine.counters.finished.fetch_add(1, Relaxed);
    let usage = Usage {
        prompt_tokens: admitted.prompt_tokens,
        cached_tokens: admitted.cached_tokens,
        completion_tokens: 1,
    };
    drop(admitted);
    pd.fill(&key, usage.prompt_tokens);
    let word = engine.answer(&prompt, 1).concat();
    let head = Head::new(api, engine.config.model.clone());
    if request.stream {
        let mut events = head.chunk(&word, true, Some("length"));
        if request.include_usage {
            events.push_str(&head.usage_chunk(&usage));
        }
        events.push_str(openai::DONE);
        let mut response = Response::new(Body::from(events));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/event-stream"),
        );
        return response;
    }
    let mut whole = head.whole(&word, &usage);
    if pd.args.protocol == Protocol::Vllm {
        let (engine_id, block) = key.rsplit_once('-').unwrap_or((&key, "0"));
        let blocks = usage
            .prompt_tokens
            .div_ceil(crate::cache::BLOCK_TOKENS)
            .max(1);
        let first: u64 = block.parse().unwrap_or(0);
        let ids: Vec<u64> = (0..blocks as u64).map(|i| first + i).collect();
        let bootstrap = pd
            .bootstrap
            .expect("a prefilling role has a bootstrap port");
        whole["kv_transfer_params"] = json!({
            "do_remote_prefill": true,
            "do_remote_decode": false,
            "remote_engine_id": engine_id,
            "remote_block_ids": ids,
            "remote_host": bootstrap.ip().to_string(),
            "remote_port": bootstrap.port(),
            "tp_size": 1,
        });
    }
    crate::json_response(StatusCode::OK, &whole)
}

/// The decode leg's hand-over: pulls the KV from `source` and puts the
/// prompt in this server's cache, taking `--kv-per-token` per token.
pub(crate) async fn receive(prompt: &str, source: Source, engine: &Engine) -> Result<(), ApiError> {
    let Some(pd) = pd() else { return Ok(()) };
    let fail = |message: String| {
        pd.counters.handover_failures.fetch_add(1, Relaxed);
        match source.protocol {
            Protocol::Sglang => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "kv_transfer_failed",
                message,
            ),
            Protocol::Vllm => invalid_params(message),
        }
    };
    let url = format!("http://{}:{}/kv/{}", source.host, source.port, source.key);
    let Ok(uri) = url.parse::<http::Uri>() else {
        return Err(fail(format!("{url:?} is not a URL")));
    };
    // The bootstrap side holds the question up to the same timeout; a
    // little more here lets its answer arrive.
    let limit = pd.args.kv_timeout + Duration::from_millis(500);
    let pulled = tokio::time::timeout(limit, async {
        let response = pd.client.get(uri).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status.is_success() {
            value["tokens"]
                .as_u64()
                .ok_or_else(|| "the bootstrap answer has no `tokens`".to_owned())
        } else {
            Err(value["error"]["message"]
                .as_str()
                .unwrap_or("the bootstrap server refused")
                .to_owned())
        }
    })
    .await;
    let tokens = match pulled {
        Ok(Ok(tokens)) => tokens,
        Ok(Err(why)) => {
            return Err(fail(format!(
                "KV hand-over from {}:{} failed for {}: {why}",
                source.host, source.port, source.key
            )))
        }
        Err(_) => {
            return Err(fail(format!(
                "KV hand-over from {}:{} for {} took longer than {:?}",
                source.host, source.port, source.key, limit
            )))
        }
    };
    tokio::time::sleep(pd.args.kv_per_token * u32::try_from(tokens).unwrap_or(u32::MAX)).await;
    engine.remember(prompt.as_bytes());
    Ok(())
}

// ===== the bootstrap port =====

impl Pd {
    /// The room's KV is ready; it is dropped after `--kv-timeout` if
    /// nobody pulls it.
    fn fill(self: &Arc<Self>, key: &str, tokens: usize) {
        let notify = {
            let mut rooms = self.rooms.lock();
            let room = rooms.entry(key.to_owned()).or_insert_with(Room::new);
            room.tokens = Some(tokens);
            Arc::clone(&room.filled)
        };
        notify.notify_waiters();
        let (pd, key) = (Arc::clone(self), key.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(pd.args.kv_timeout).await;
            let mut rooms = pd.rooms.lock();
            if rooms.get(&key).is_some_and(|r| r.tokens.is_some()) {
                rooms.remove(&key);
                pd.counters.kv_expired.fetch_add(1, Relaxed);
            }
        });
    }
}

/// One room's KV: filled or awaited.
#[derive(Debug)]
struct Room {
    tokens: Option<usize>,
    filled: Arc<Notify>,
}

impl Room {
    fn new() -> Self {
        Self {
            tokens: None,
            filled: Arc::new(Notify::new()),
        }
    }
}

/// The rooms a prefill server holds for decode servers to pull.
#[derive(Debug, Default)]
struct Rooms(Mutex<HashMap<String, Room>>);

impl Rooms {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Room>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    /// Waits for the room's KV (at most `timeout`) and takes it.
    async fn take(&self, key: &str, timeout: Duration) -> Option<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let notify = {
                let mut rooms = self.lock();
                let room = rooms.entry(key.to_owned()).or_insert_with(Room::new);
                if let Some(tokens) = room.tokens {
                    rooms.remove(key);
                    return Some(tokens);
                }
                Arc::clone(&room.filled)
            };
            let notified = notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.lock().get(key).is_some_and(|r| r.tokens.is_some()) {
                continue;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let mut rooms = self.lock();
                match rooms.get(key).and_then(|r| r.tokens) {
                    Some(tokens) => {
                        rooms.remove(key);
                        return Some(tokens);
                    }
                    None => {
                        rooms.remove(key);
                        return None;
                    }
                }
            }
        }
    }
}

/// `GET /kv/{key}` on the bootstrap port: the room's KV once it is ready.
///
/// SGLang's decode server may ask before the prefill leg has even
/// arrived, so the question waits up to `--kv-timeout`; vLLM's asks after
/// the prefill answered, so an unknown key is answered at once.
async fn pull(Path(key): Path<String>) -> Result<Response, Infallible> {
    let Some(pd) = pd() else {
        return Ok(crate::json_response(StatusCode::NOT_FOUND, &Value::Null));
    };
    let timeout = match pd.args.protocol {
        Protocol::Sglang => pd.args.kv_timeout,
        Protocol::Vllm => Duration::ZERO,
    };
    Ok(match pd.rooms.take(&key, timeout).await {
        Some(tokens) => {
            pd.counters.kv_sent.fetch_add(1, Relaxed);
            crate::json_response(StatusCode::OK, &json!({"tokens": tokens}))
        }
        None => crate::json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": {"message": format!(
                "no prefill filled {key} within {timeout:?}"),
                "type": "server_error", "code": "kv_not_found"}}),
        ),
    })
}
