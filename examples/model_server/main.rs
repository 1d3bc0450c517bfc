//! An emulated inference server with no model weights, for tests and
//! benchmarks of LLM routing.
//!
//! ```sh
//! cargo run --release --example model_server -- --listen 127.0.0.1:8001 \
//!     --cache-tokens 20000 --batch 8 --prefill-per-token 100us --decode-per-token 5ms
//! ```
//!
//! It serves `/v1/completions` and `/v1/chat/completions` in OpenAI's
//! shapes, whole or streamed as server-sent events (one token an event):
//! a unique `id` per answer (`chatcmpl-…`, `cmpl-…`), `created`, `object`
//! (`chat.completion`, `chat.completion.chunk`, `text_completion`), the
//! assistant's `role` in the first streamed delta; `usage` (with
//! `prompt_tokens_details.cached_tokens`, the prompt tokens the prefix cache
//! held) in whole answers, and in streams only when the request asks with
//! `"stream_options": {"include_usage": true}`: then as a last chunk with no
//! choices before `data: [DONE]`. Every error is
//! `{"error": {"message", "type", "code"}}`: 400 for a body it cannot read,
//! 404 `model_not_found` for another model, 404 and 405 for unknown paths
//! and methods, 413 for bodies over 8 MiB. It behaves like a serving engine
//! where routing can see it:
//!
//! * **Prefix cache.** The prompt (a chat rendered with its roles) is cut
//!   into blocks of 16 tokens of 4 bytes, named by chained hashes, and
//!   looked up in an LRU cache of `--cache-tokens` tokens. Only the
//!   uncached tokens are prefilled; the prompt and the answer are cached
//!   afterwards, so the next turn of a chat finds its whole history.
//! * **Batch.** At most `--batch` requests run; the rest wait in order. A
//!   request whose client goes away leaves the queue (or the batch) then and
//!   there.
//! * **Time.** The first token comes after `--prefill-per-token` × uncached
//!   prompt tokens; then one token every `--decode-per-token`.
//! * **Load.** `/metrics` in vLLM's names (`vllm:num_requests_waiting`,
//!   `vllm:num_requests_running`, `vllm:kv_cache_usage_perc`,
//!   `vllm:prefix_cache_queries_total`, `vllm:prefix_cache_hits_total`);
//!   an ORCA `endpoint-load-metrics` header on answers to requests that
//!   carry `endpoint-load-metrics-format: TEXT` (or `JSON`).
//! * **Its own hit rate.** `GET /stats` (JSON: requests, prompt and cached
//!   tokens, hit rate, cache blocks); `POST /flush_cache` empties the cache
//!   and zeroes the counters.
//! * **Disaggregated roles.** `--role prefill|decode|both` and
//!   `--pd-protocol sglang|vllm`: a prefill server hands a request's KV
//!   over to a decode server through its bootstrap port, taking
//!   `--kv-per-token` per prompt token; a hand-over whose other side
//!   never comes fails within `--kv-timeout` (see `disagg.rs`).
//! * **Worker endpoints** that routers call at registration: `/health`,
//!   `/v1/models`, `/get_model_info` and `/model_info`,
//!   `/get_server_info` and `/server_info`.
//!
//! Answers are deterministic: each word is a function of `--seed` and the
//! context before it (the prompt, or the chat rendered with its roles, and
//! the words so far), so the same request gives the same words whichever
//! server answers, and a continuation gives the rest of the same answer:
//! a completion whose prompt ends with the first `k` words of an answer, or
//! a chat whose last message is the assistant's first `k` words with
//! `"continue_final_message": true, "add_generation_prompt": false` (vLLM's
//! fields; the message is continued in place, not answered), goes on with
//! word `k + 1`, and its prompt counts `k` tokens more. For tests of
//! servers that die mid-answer, `--die-after-tokens N` and
//! `POST /admin/cut_streams` cut answers on purpose (see `faults.rs`).
//! The first line on stdout is `model_server listening on http://ADDR`,
//! for scripts that pass port 0.

mod cache;
mod disagg;
mod engine;
mod faults;
mod openai;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::Router;
use clap::Parser;
use futures_util::{stream, StreamExt};
use http::{header, HeaderMap, HeaderValue, StatusCode};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::engine::{Admitted, Config, Engine};
use crate::faults::Cut;
use crate::openai::{Api, ApiError, Head, Usage};

/// Request bodies beyond this are refused with 413.
const MAX_BODY: usize = 8 << 20;

/// An emulated inference server: prefix cache, batch, prefill and decode
/// time, token streaming; no weights.
#[derive(Debug, Parser)]
#[command(name = "model_server")]
struct Cli {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// The model name it serves.
    #[arg(long, default_value = "emulated")]
    model: String,
    /// Prefix cache size in tokens.
    #[arg(long, default_value_t = 20_000)]
    cache_tokens: usize,
    /// Requests that run at once; more wait.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Prefill time per uncached prompt token.
    #[arg(long, default_value = "100us", value_parser = humantime::parse_duration)]
    prefill_per_token: Duration,
    /// Time per generated token.
    #[arg(long, default_value = "5ms", value_parser = humantime::parse_duration)]
    decode_per_token: Duration,
    /// Seed of the answers' words.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Cuts every answer after this many tokens, as a server that dies
    /// mid-answer would (a fault for tests; see `POST /admin/cut_streams`
    /// for one at a chosen moment).
    #[arg(long)]
    die_after_tokens: Option<usize>,
    /// Disaggregated serving: the role and the KV hand-over.
    #[command(flatten)]
    pd: disagg::PdArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("model_server: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("model_server: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(cli: Cli) -> std::io::Result<()> {
    let engine = Engine::new(Config {
        model: cli.model,
        cache_tokens: cli.cache_tokens,
        batch: cli.batch,
        prefill_per_token: cli.prefill_per_token,
        decode_per_token: cli.decode_per_token,
        seed: cli.seed,
        die_after_tokens: cli.die_after_tokens,
    });
    let listener = tokio::net::TcpListener::bind(cli.listen).await?;
    disagg::start(cli.pd, cli.listen).await?;
    println!(
        "model_server listening on http://{}",
        listener.local_addr()?
    );
    // Tokens are small writes: Nagle's algorithm would hold each behind the
    // client's delayed ACK.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(engine)).await
}

fn router(engine: Arc<Engine>) -> Router {
    Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat))
        .route("/health", get(|| async { "ok" }))
        .route("/v1/models", get(models))
        .route("/get_model_info", get(model_info))
        .route("/model_info", get(model_info))
        .route("/get_server_info", get(server_info))
        .route("/server_info", get(server_info))
        .route("/metrics", get(metrics))
        .route("/stats", get(stats))
        .route("/flush_cache", post(flush).get(flush))
        .route("/admin/cut_streams", post(cut_streams))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(engine)
}

async fn completions(state: State<Arc<Engine>>, headers: HeaderMap, body: Body) -> Response {
    generate(state, headers, body, Api::Completions).await
}

async fn chat(state: State<Arc<Engine>>, headers: HeaderMap, body: Body) -> Response {
    generate(state, headers, body, Api::Chat).await
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    let mut response = Response::new(Body::from(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn error_response(error: &ApiError) -> Response {
    json_response(error.status, &error.body())
}

async fn not_found() -> Response {
    error_response(&ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "not_found",
        "no such path",
    ))
}

async fn method_not_allowed() -> Response {
    error_response(&ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        "method_not_allowed",
        "this path does not take that method",
    ))
}

/// The ORCA report asked for by `endpoint-load-metrics-format`, if any.
fn load_report(engine: &Engine, headers: &HeaderMap) -> Option<HeaderValue> {
    let format = headers.get("endpoint-load-metrics-format")?.as_bytes();
    let kv = engine.kv_usage();
    let waiting = engine.waiting.load(Relaxed);
    let running = engine.running.load(Relaxed);
    let text = if format.eq_ignore_ascii_case(b"JSON") {
        format!(
            "JSON {}",
            json!({"named_metrics": {"kv_cache_usage_perc": kv,
                "num_requests_waiting": waiting, "num_requests_running": running}})
        )
    } else {
        format!(
            "TEXT named_metrics.kv_cache_usage_perc={kv:.4}, \
             named_metrics.num_requests_waiting={waiting}, \
             named_metrics.num_requests_running={running}"
        )
    };
    HeaderValue::from_str(&text).ok()
}

/// A streamed answer on its way: the admitted request (its slot), its
/// words and the next one to send.
struct Streaming {
    admitted: Admitted,
    engine: Arc<Engine>,
    head: Head,
    prompt: Vec<u8>,
    words: Vec<String>,
    next: usize,
    include_usage: bool,
    first_token: Instant,
    /// Cut after this many tokens (`--die-after-tokens`).
    cut_after: Option<usize>,
    /// Changes when `POST /admin/cut_streams` cuts every open stream.
    cut: tokio::sync::watch::Receiver<u64>,
}

impl Streaming {
    /// The next event and the state after it (`None` after `[DONE]`).
    async fn next_event(mut self) -> Option<(Result<Bytes, Cut>, Option<Self>)> {
        let done = || Some((Ok(Bytes::from_static(openai::DONE.as_bytes())), None));
        let count = self.words.len();
        let event = if self.next < count {
            let event = if self.cut_after == Some(self.next) {
                None
            } else {
                self.token().await
            };
            match event {
                Some(event) => event,
                None => {
                    // Once more pending first, so the events sent before
                    // the cut are flushed to the client: a cut after `N`
                    // tokens delivers `N`.
                    tokio::task::yield_now().await;
                    return Some((Err(Cut), None));
                }
            }
        } else if self.next == count {
            self.finish();
            if !self.include_usage {
                return done();
            }
            self.head.usage_chunk(&usage(&self.admitted, count))
        } else {
            return done();
        };
        self.next += 1;
        Some((Ok(Bytes::from(event)), Some(self)))
    }

    /// Token `next`, at its time; `None` when the stream is cut first.
    async fn token(&mut self) -> Option<String> {
        let decode = self.engine.config.decode_per_token;
        tokio::select! {
            () = tokio::time::sleep_until(self.first_token + decode * self.next as u32) => {}
            _ = self.cut.changed() => return None,
        }
        if self.next == 0 {
            // The prompt's blocks are in the cache once prefill ends.
            self.engine.remember(&self.prompt);
        }
        self.engine.counters.generated_tokens.fetch_add(1, Relaxed);
        let last = self.next + 1 == self.words.len();
        Some(self.head.chunk(
            &self.words[self.next],
            self.next == 0,
            last.then_some("length"),
        ))
    }

    /// The answer is complete: the chat so far goes into the cache.
    fn finish(&mut self) {
        let mut text = std::mem::take(&mut self.prompt);
        text.extend(self.words.concat().bytes());
        text.push(b'\n');
        self.engine.remember(&text);
        self.engine.counters.finished.fetch_add(1, Relaxed);
    }
}

fn usage(admitted: &Admitted, completion_tokens: usize) -> Usage {
    Usage {
        prompt_tokens: admitted.prompt_tokens,
        cached_tokens: admitted.cached_tokens,
        completion_tokens,
    }
}

async fn generate(
    State(engine): State<Arc<Engine>>,
    headers: HeaderMap,
    body: Body,
    api: Api,
) -> Response {
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return error_response(&ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "request_too_large",
            format!("request bodies are limited to {MAX_BODY} bytes"),
        ));
    };
    let request = match openai::parse(api, &body) {
        Ok(request) => request,
        Err(error) => return error_response(&error),
    };
    if let Some(model) = &request.model {
        if model != &engine.config.model {
            return error_response(&ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
                format!(
                    "the model {model:?} does not exist; this server serves {:?}",
                    engine.config.model
                ),
            ));
        }
    }
    match disagg::leg(&body) {
        Ok(disagg::Leg::Whole) => {}
        Ok(disagg::Leg::Prefill(key)) => return disagg::prefill(engine, request, api, key).await,
        Ok(disagg::Leg::Decode(source)) => {
            if let Err(error) = disagg::receive(&request.prompt, source, &engine).await {
                return error_response(&error);
            }
        }
        Err(error) => return error_response(&error),
    }
    let prompt = request.prompt.into_bytes();
    let admitted = engine.admit(&prompt, request.max_tokens).await;
    let started = Instant::now();
    let words = engine.answer(&prompt, request.max_tokens);
    let head = Head::new(api, engine.config.model.clone());
    let report = load_report(&engine, &headers);
    let first_token = started + admitted.prefill;

    let mut response = if request.stream {
        let cut_after = engine.faults.cut_after(words.len());
        let streaming = Streaming {
            admitted,
            head,
            prompt,
            words,
            next: 0,
            include_usage: request.include_usage,
            first_token,
            cut_after,
            cut: engine.faults.watch(),
            engine,
        };
        let events = stream::unfold(Some(streaming), |streaming| async move {
            streaming?.next_event().await
        });
        let mut response = Response::new(Body::from_stream(events));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        response
    } else {
        let count = words.len() as u32;
        let decode = engine.config.decode_per_token;
        if let Some(cut) = engine.faults.cut_after(words.len()) {
            tokio::time::sleep_until(first_token + decode * cut as u32).await;
            return cut_whole(&head, &words.concat(), &usage(&admitted, words.len()));
        }
        tokio::time::sleep_until(first_token + decode * count.saturating_sub(1)).await;
        let text = words.concat();
        let mut remembered = prompt;
        remembered.extend(text.bytes());
        remembered.push(b'\n');
        engine.remember(&remembered);
        engine.counters.finished.fetch_add(1, Relaxed);
        engine
            .counters
            .generated_tokens
            .fetch_add(u64::from(count), Relaxed);
        let usage = usage(&admitted, words.len());
        drop(admitted);
        json_response(StatusCode::OK, &head.whole(&text, &usage))
    };
    if let Some(report) = report {
        response
            .headers_mut()
            .insert("endpoint-load-metrics", report);
    }
    response
}

/// A whole answer whose body stops half way (`--die-after-tokens`).
fn cut_whole(head: &Head, text: &str, usage: &Usage) -> Response {
    let whole = head.whole(text, usage).to_string().into_bytes();
    let half = Bytes::copy_from_slice(&whole[..whole.len() / 2]);
    // Pending once after the first half, so that half reaches the client.
    let cut = stream::once(async {
        tokio::task::yield_now().await;
        Err(Cut)
    });
    let parts = stream::iter([Ok(half)]).chain(cut);
    let mut response = Response::new(Body::from_stream(parts));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `POST /admin/cut_streams`: drops every stream open now.
async fn cut_streams(State(engine): State<Arc<Engine>>) -> Response {
    let cut = engine.faults.cut_streams();
    json_response(StatusCode::OK, &json!({"cut": cut}))
}

async fn models(State(engine): State<Arc<Engine>>) -> Response {
    let model = &engine.config.model;
    json_response(
        StatusCode::OK,
        &json!({"object": "list", "data": [{"id": model, "object": "model", "owned_by": "model_server"}]}),
    )
}

async fn model_info(State(engine): State<Arc<Engine>>) -> Response {
    let model = &engine.config.model;
    json_response(
        StatusCode::OK,
        &json!({"model_path": model, "tokenizer_path": model, "is_generation": true}),
    )
}

async fn server_info(State(engine): State<Arc<Engine>>) -> Response {
    let config = &engine.config;
    let mut info = json!({
            "model_path": config.model,
            "tokenizer_path": config.model,
            "served_model_name": config.model,
            "dp_size": 1,
            "tp_size": 1,
            "max_running_requests": config.batch,
            "max_total_num_tokens": config.cache_tokens,
            "page_size": cache::BLOCK_TOKENS,
            "version": "model_server",
    });
    disagg::server_info(&mut info);
    json_response(StatusCode::OK, &info)
}

async fn stats(State(engine): State<Arc<Engine>>) -> Response {
    let c = &engine.counters;
    let (blocks, capacity) = engine.cache_blocks();
    json_response(
        StatusCode::OK,
        &json!({
            "requests": c.requests.load(Relaxed),
            "finished": c.finished.load(Relaxed),
            "prompt_tokens": c.prompt_tokens.load(Relaxed),
            "cached_tokens": c.cached_tokens.load(Relaxed),
            "generated_tokens": c.generated_tokens.load(Relaxed),
            "hit_rate": engine.hit_rate(),
            "waiting": engine.waiting.load(Relaxed),
            "running": engine.running.load(Relaxed),
            "cache_blocks": blocks,
            "cache_capacity_blocks": capacity,
            "pd": disagg::stats(),
        }),
    )
}

async fn flush(State(engine): State<Arc<Engine>>) -> Response {
    engine.flush();
    json_response(StatusCode::OK, &json!({"flushed": true}))
}

async fn metrics(State(engine): State<Arc<Engine>>) -> Response {
    let c = &engine.counters;
    let label = format!("{{model_name={:?}}}", engine.config.model);
    let lines = [
        (
            "vllm:num_requests_waiting",
            "gauge",
            engine.waiting.load(Relaxed) as f64,
        ),
        (
            "vllm:num_requests_running",
            "gauge",
            engine.running.load(Relaxed) as f64,
        ),
        ("vllm:kv_cache_usage_perc", "gauge", engine.kv_usage()),
        (
            "vllm:prefix_cache_queries_total",
            "counter",
            c.prompt_tokens.load(Relaxed) as f64,
        ),
        (
            "vllm:prefix_cache_hits_total",
            "counter",
            c.cached_tokens.load(Relaxed) as f64,
        ),
        (
            "vllm:prompt_tokens_total",
            "counter",
            c.prompt_tokens.load(Relaxed) as f64,
        ),
        (
            "vllm:generation_tokens_total",
            "counter",
            c.generated_tokens.load(Relaxed) as f64,
        ),
        (
            "vllm:request_success_total",
            "counter",
            c.finished.load(Relaxed) as f64,
        ),
    ];
    let mut page = String::new();
    for (name, kind, value) in lines {
        page.push_str(&format!("# TYPE {name} {kind}\n{name}{label} {value}\n"));
    }
    let mut response = Response::new(Body::from(page));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}
