//! Checks streamed chats through an LLM router while its servers die: each
//! answer must arrive whole (one final event, `[DONE]`, one `id`, no error
//! event, no cut) and equal, word for word, the answer a server gives
//! without any failure.
//!
//! ```sh
//! cargo run --release --example llm_failover_check -- \
//!     --target http://127.0.0.1:8080 --reference http://127.0.0.1:8009 \
//!     --chats 640 --in-flight 32 --max-tokens 100
//! ```
//!
//! `--reference` is an `examples/model_server` with the same `--seed` as the
//! router's servers, outside the router: its words are a function of the
//! context, so it gives every chat's uninterrupted answer. `benches/
//! llm_failover.sh` runs it while it kills the router's servers in turn.
//!
//! The result is one JSON line on stdout: `chats`, `ok`, `failed` (no
//! answer, or not 200), `cut` (an error event, a broken stream, no final
//! event or no `[DONE]`), `mismatched` (text other than the uninterrupted
//! answer's: words missing, repeated or different; or ids that change),
//! `bad_usage` (completion tokens other than the uninterrupted answer's),
//! `wall_s`. The exit status is 0 when every chat is `ok`.

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

#[derive(Debug, Parser)]
#[command(name = "llm_failover_check")]
struct Cli {
    /// The router, `http://HOST:PORT`.
    #[arg(long)]
    target: String,
    /// A model server outside the router, same seed as the router's.
    #[arg(long)]
    reference: String,
    /// Chats in all.
    #[arg(long, default_value_t = 640)]
    chats: usize,
    /// Chats streaming at once.
    #[arg(long, default_value_t = 32)]
    in_flight: usize,
    /// Tokens an answer.
    #[arg(long, default_value_t = 100)]
    max_tokens: u32,
    /// One answer may take this long before it counts as cut.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    answer_limit: Duration,
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// What became of one chat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    Failed,
    Cut,
    Mismatched,
    BadUsage,
}

fn chat(i: usize, max_tokens: u32, stream: bool) -> Value {
    json!({
        "messages": [
            {"role": "system", "content": "Answer in four-letter words. ".repeat(8)},
            {"role": "user", "content": format!("Tell story number {i}.")},
        ],
        "max_tokens": max_tokens,
        "stream": stream,
        "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null },
    })
}

async fn post(client: &HttpClient, base: &str, body: &Value) -> Result<(u16, Bytes), String> {
    let request = http::Request::post(format!("{base}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let response = client.request(request).await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("cut: {e}"))?
        .to_bytes();
    Ok((status, body))
}

/// The uninterrupted answer: its text and completion tokens.
async fn reference(client: &HttpClient, base: &str, i: usize, max: u32) -> (String, Value) {
    let (status, body) = post(client, base, &chat(i, max, false))
        .await
        .unwrap_or_else(|e| panic!("the reference server failed: {e}"));
    assert_eq!(status, 200, "the reference server answered {status}");
    let answer: Value = serde_json::from_slice(&body).expect("JSON from the reference");
    let text = answer["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (text, answer["usage"]["completion_tokens"].clone())
}

async fn check(client: &HttpClient, cli: &Cli, i: usize) -> Outcome {
    let (expected, tokens) = reference(client, &cli.reference, i, cli.max_tokens).await;
    let sent = tokio::time::timeout(
        cli.answer_limit,
        post(client, &cli.target, &chat(i, cli.max_tokens, true)),
    )
    .await;
    let (status, body) = match sent {
        Err(_) => return Outcome::Cut,
        Ok(Err(e)) if e.starts_with("cut") => return Outcome::Cut,
        Ok(Err(_)) => return Outcome::Failed,
        Ok(Ok(answer)) => answer,
    };
    if status != 200 {
        return Outcome::Failed;
    }
    let text = String::from_utf8_lossy(&body);
    let events: Vec<Value> = text
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let data = e.trim().strip_prefix("data: ").unwrap_or(e.trim());
            serde_json::from_str(data).unwrap_or_else(|_| Value::String(data.to_owned()))
        })
        .collect();
    let chunks: Vec<&Value> = events.iter().filter(|e| e.is_object()).collect();
    let finals = chunks
        .iter()
        .filter_map(|e| e["choices"].get(0))
        .filter(|c| !c["finish_reason"].is_null())
        .count();
    let dones = events.iter().filter(|e| *e == "[DONE]").count();
    if chunks.iter().any(|e| e.get("error").is_some())
        || finals != 1
        || dones != 1
        || events.last() != Some(&Value::String("[DONE]".into()))
    {
        return Outcome::Cut;
    }
    let mut ids: Vec<&Value> = chunks.iter().map(|e| &e["id"]).collect();
    ids.dedup();
    let spliced: String = chunks
        .iter()
        .filter_map(|e| e["choices"].get(0))
        .filter_map(|c| c["delta"]["content"].as_str())
        .collect();
    if spliced != expected || ids.len() != 1 {
        return Outcome::Mismatched;
    }
    let usage = chunks
        .iter()
        .find_map(|e| e.get("usage").filter(|u| !u.is_null()));
    if usage.map(|u| &u["completion_tokens"]) != Some(&tokens) {
        return Outcome::BadUsage;
    }
    Outcome::Ok
}

fn main() -> ExitCode {
    let cli = Arc::new(Cli::parse());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let client: HttpClient = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let next = Arc::new(AtomicUsize::new(0));
        let counts: Arc<[AtomicUsize; 5]> = Arc::new(Default::default());
        let started = Instant::now();
        let mut workers = Vec::new();
        for _ in 0..cli.in_flight.max(1) {
            let (client, cli, next, counts) = (
                client.clone(),
                Arc::clone(&cli),
                Arc::clone(&next),
                Arc::clone(&counts),
            );
            workers.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Relaxed);
                    if i >= cli.chats {
                        return;
                    }
                    let outcome = check(&client, &cli, i).await;
                    if outcome != Outcome::Ok {
                        eprintln!("chat {i}: {outcome:?}");
                    }
                    counts[outcome as usize].fetch_add(1, Relaxed);
                }
            }));
        }
        for worker in workers {
            let _ = worker.await;
        }
        let count = |o: Outcome| counts[o as usize].load(Relaxed);
        println!(
            "{}",
            json!({
                "chats": cli.chats,
                "ok": count(Outcome::Ok),
                "failed": count(Outcome::Failed),
                "cut": count(Outcome::Cut),
                "mismatched": count(Outcome::Mismatched),
                "bad_usage": count(Outcome::BadUsage),
                "wall_s": started.elapsed().as_secs_f64(),
            })
        );
        if count(Outcome::Ok) == cli.chats {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    })
}
