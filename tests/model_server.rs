//! `examples/model_server` as a child process on 127.0.0.1: OpenAI's
//! answer shapes, whole and streamed, its error shape, and its queue and
//! batch counts when clients go away.
//!
//! `cargo test --features llm,reports --test model_server` builds the
//! example first (with the test's profile and target directory).

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::net::TcpStream;

use support::examples::Process;
use support::within;

/// The example's directory, after building it once per test run.
fn examples_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| support::examples::build(&["model_server"], &["llm", "reports"]))
}

/// A model server process, killed when dropped.
struct Server(Process);

impl std::ops::Deref for Server {
    type Target = Process;

    fn deref(&self) -> &Process {
        &self.0
    }
}

impl Server {
    /// Starts the model server with `args` on an ephemeral port.
    fn start(args: &[&str]) -> Self {
        let mut all = vec!["--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        Self(Process::start(examples_dir(), "model_server", &all))
    }

    /// A gauge from its `/metrics` page.
    async fn gauge(&self, name: &str) -> f64 {
        let response = send(self.addr, Method::GET, "/metrics", String::new()).await;
        let page = text(response).await;
        page.lines()
            .find(|line| line.starts_with(&format!("{name}{{")))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {page}"))
    }

    /// Polls `/metrics` until `name` reads `value` (bounded by
    /// [`within`]).
    async fn wait_gauge(&self, name: &str, value: f64) {
        within(&format!("{name} = {value}"), async {
            while self.gauge(name).await != value {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
        .await;
    }
}

/// Sends one request on a connection of its own, returning the response
/// with its streaming body.
async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: String,
) -> http::Response<Incoming> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    within("a response head", sender.send_request(request))
        .await
        .unwrap()
}

async fn post(addr: SocketAddr, path: &str, body: &Value) -> http::Response<Incoming> {
    send(addr, Method::POST, path, body.to_string()).await
}

async fn text(response: http::Response<Incoming>) -> String {
    let body = within("a whole body", response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

async fn json_body(response: http::Response<Incoming>) -> Value {
    let body = text(response).await;
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Every event's data of a whole stream, `[DONE]` included.
async fn events(response: http::Response<Incoming>) -> Vec<String> {
    text(response)
        .await
        .split("\n\n")
        .filter(|event| !event.is_empty())
        .map(|event| {
            event
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not an SSE data event: {event:?}"))
                .to_owned()
        })
        .collect()
}

fn messages() -> Value {
    json!([{"role": "system", "content": "Answer in four-letter words. ".repeat(20)},
           {"role": "user", "content": "Name a colour."}])
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn whole_answers_have_openai_ids_objects_and_usage() {
    let server = Server::start(&["--decode-per-token", "1ms"]);
    let chat = json!({"model": "emulated", "max_tokens": 8, "messages": messages()});
    let first = json_body(post(server.addr, "/v1/chat/completions", &chat).await).await;
    let second = json_body(post(server.addr, "/v1/chat/completions", &chat).await).await;

    for answer in [&first, &second] {
        assert!(
            answer["id"].as_str().unwrap().starts_with("chatcmpl-"),
            "{answer}"
        );
        assert_eq!(answer["object"], "chat.completion");
        assert_eq!(answer["model"], "emulated");
        let created = answer["created"].as_u64().unwrap();
        assert!(created.abs_diff(now()) < 60, "{created}");
        assert_eq!(answer["choices"][0]["message"]["role"], "assistant");
        let usage = &answer["usage"];
        assert_eq!(usage["completion_tokens"], 8);
        assert_eq!(
            usage["total_tokens"].as_u64(),
            Some(usage["prompt_tokens"].as_u64().unwrap() + 8)
        );
    }
    assert_ne!(first["id"], second["id"]);
    // The answer follows from the messages; the second request finds the
    // first's prompt in the cache.
    assert_eq!(
        first["choices"][0]["message"]["content"],
        second["choices"][0]["message"]["content"]
    );
    assert_eq!(first["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    let cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    assert!(cached > 0, "{second}");
    assert!(cached <= second["usage"]["prompt_tokens"].as_u64().unwrap());

    let completion = json!({"prompt": "Once upon a time", "max_tokens": 4});
    let answer = json_body(post(server.addr, "/v1/completions", &completion).await).await;
    assert!(
        answer["id"].as_str().unwrap().starts_with("cmpl-"),
        "{answer}"
    );
    assert_eq!(answer["object"], "text_completion");
    assert!(answer["choices"][0]["text"].is_string());
    assert_eq!(answer["usage"]["completion_tokens"], 4);
}

#[tokio::test]
async fn streams_carry_the_role_first_and_usage_only_when_asked() {
    let server = Server::start(&["--decode-per-token", "1ms"]);
    let whole = json!({"max_tokens": 6, "messages": messages()});
    let whole = json_body(post(server.addr, "/v1/chat/completions", &whole).await).await;

    let asked = json!({"max_tokens": 6, "messages": messages(), "stream": true,
                       "stream_options": {"include_usage": true}});
    let events = events(post(server.addr, "/v1/chat/completions", &asked).await).await;
    assert_eq!(events.len(), 6 + 2, "{events:?}");
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..7]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let id = chunks[0]["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-"), "{id}");
    assert_ne!(Some(id), whole["id"].as_str());
    for chunk in &chunks {
        assert_eq!(chunk["id"], id);
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert!(chunk["created"].is_u64());
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks[1..6]
        .iter()
        .all(|c| c["choices"][0]["delta"].get("role").is_none()));
    assert!(chunks[..6].iter().all(|c| c.get("usage").is_none()));
    assert_eq!(chunks[5]["choices"][0]["finish_reason"], "length");
    let streamed: String = chunks[..6]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(whole["choices"][0]["message"]["content"], streamed);
    let last = &chunks[6];
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["completion_tokens"], 6);
    assert_eq!(
        last["usage"]["prompt_tokens"],
        whole["usage"]["prompt_tokens"]
    );
    // The whole answer's request put the prompt in the cache.
    assert!(last["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64() > Some(0));

    let plain = json!({"prompt": "Once upon a time", "max_tokens": 3, "stream": true});
    let events = events_of(&server, &plain).await;
    assert_eq!(events.len(), 3 + 1, "{events:?}");
    for event in &events[..3] {
        let chunk: Value = serde_json::from_str(event).unwrap();
        assert!(
            chunk["id"].as_str().unwrap().starts_with("cmpl-"),
            "{chunk}"
        );
        assert_eq!(chunk["object"], "text_completion");
        assert!(chunk.get("usage").is_none(), "{chunk}");
    }
}

async fn events_of(server: &Server, completion: &Value) -> Vec<String> {
    events(post(server.addr, "/v1/completions", completion).await).await
}

#[tokio::test]
async fn every_error_has_one_shape() {
    let server = Server::start(&[]);
    let cases = [
        (
            Method::POST,
            "/v1/chat/completions",
            "{not json".to_owned(),
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
        ),
        (
            Method::POST,
            "/v1/completions",
            json!({"prompt": 3}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
        ),
        (
            Method::POST,
            "/v1/chat/completions",
            json!({"model": "other", "messages": messages()}).to_string(),
            StatusCode::NOT_FOUND,
            "model_not_found",
        ),
        (
            Method::POST,
            "/v1/embeddings",
            "{}".to_owned(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::GET,
            "/v1/chat/completions",
            String::new(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let response = send(server.addr, method.clone(), path, body).await;
        assert_eq!(response.status(), status, "{method} {path}");
        let error = json_body(response).await;
        let error = &error["error"];
        assert_eq!(error["code"], code, "{method} {path}: {error}");
        assert!(error["message"].is_string(), "{error}");
        assert!(error["type"].is_string(), "{error}");
    }
}

#[tokio::test]
async fn abandoned_requests_leave_the_queue_and_the_batch() {
    const QUEUED: usize = 5;
    // One slot; an answer of 400 tokens 50 ms apart holds it for 20 s.
    let server = Server::start(&["--batch", "1", "--decode-per-token", "50ms"]);
    let long = json!({"messages": messages(), "max_tokens": 400, "stream": true});
    let holder = post(server.addr, "/v1/chat/completions", &long).await;
    assert_eq!(holder.status(), StatusCode::OK);
    server.wait_gauge("vllm:num_requests_running", 1.0).await;

    // The rest wait for the slot; their heads do not come before it.
    let addr = server.addr;
    let queued: Vec<_> = (0..QUEUED)
        .map(|k| {
            let body = json!({"messages": messages(), "max_tokens": 4 + k}).to_string();
            tokio::spawn(
                async move { send(addr, Method::POST, "/v1/chat/completions", body).await },
            )
        })
        .collect();
    server
        .wait_gauge("vllm:num_requests_waiting", QUEUED as f64)
        .await;

    // Their clients go away: the connections close while they wait.
    for task in queued {
        task.abort();
        let _ = task.await;
    }
    server.wait_gauge("vllm:num_requests_waiting", 0.0).await;
    assert_eq!(server.gauge("vllm:num_requests_running").await, 1.0);

    // The running request's client goes away mid-answer.
    drop(holder);
    server.wait_gauge("vllm:num_requests_running", 0.0).await;
    assert_eq!(server.gauge("vllm:num_requests_waiting").await, 0.0);
    assert_eq!(server.gauge("vllm:kv_cache_usage_perc").await, 0.0);
}

/// The text of a whole answer.
fn answer_text(answer: &Value) -> String {
    let choice = &answer["choices"][0];
    choice["message"]["content"]
        .as_str()
        .or(choice["text"].as_str())
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_continuation_gives_the_rest_of_the_same_answer() {
    let server = Server::start(&["--decode-per-token", "1ms"]);
    let whole = |body: Value, path: &'static str| {
        let addr = server.addr;
        async move { json_body(post(addr, path, &body).await).await }
    };
    // Chat: the first 4 words as the assistant's message, continued.
    let full = whole(
        json!({"messages": messages(), "max_tokens": 10}),
        "/v1/chat/completions",
    )
    .await;
    let text = answer_text(&full);
    let cut = text.match_indices(' ').nth(4).unwrap().0;
    let (head, rest) = text.split_at(cut);
    let mut continued = messages();
    continued
        .as_array_mut()
        .unwrap()
        .push(json!({"role": "assistant", "content": head}));
    let next = whole(
        json!({"messages": continued, "max_tokens": 6,
            "continue_final_message": true, "add_generation_prompt": false}),
        "/v1/chat/completions",
    )
    .await;
    assert_eq!(answer_text(&next), rest, "{text}");
    let usage = |v: &Value, key: &str| v["usage"][key].as_u64().unwrap();
    assert_eq!(
        usage(&next, "prompt_tokens"),
        usage(&full, "prompt_tokens") + 4
    );
    // Both flags at once, or a user message last, are refused.
    for body in [
        json!({"messages": continued, "continue_final_message": true}),
        json!({"messages": messages(), "continue_final_message": true,
            "add_generation_prompt": false}),
        json!({"messages": messages(), "continue_final_message": "yes"}),
    ] {
        let response = post(server.addr, "/v1/chat/completions", &body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(json_body(response).await["error"]["message"].is_string());
    }
    // Completions: the prompt followed by the first words.
    let prompt = "Once upon a time";
    let full = whole(
        json!({"prompt": prompt, "max_tokens": 7}),
        "/v1/completions",
    )
    .await;
    let text = answer_text(&full);
    let cut = text.match_indices(' ').nth(3).unwrap().0;
    let (head, rest) = text.split_at(cut);
    let next = whole(
        json!({"prompt": format!("{prompt}{head}"), "max_tokens": 4}),
        "/v1/completions",
    )
    .await;
    assert_eq!(answer_text(&next), rest);
}

#[tokio::test]
async fn answers_are_cut_on_purpose_after_n_tokens_or_on_demand() {
    let dying = Server::start(&["--decode-per-token", "1ms", "--die-after-tokens", "3"]);
    let stream = json!({"messages": messages(), "max_tokens": 8, "stream": true});
    let response = post(dying.addr, "/v1/chat/completions", &stream).await;
    let mut body = response.into_body();
    let mut read = Vec::new();
    let broken = within("the cut", async {
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => read.extend_from_slice(&frame.into_data().unwrap_or_default()),
                Err(_) => return true,
            }
        }
        false
    })
    .await;
    let text = String::from_utf8(read).unwrap();
    assert!(broken, "{text}");
    assert_eq!(text.matches("data: ").count(), 3, "{text}");
    assert!(!text.contains("[DONE]") && !text.contains("finish_reason\":\"length"));
    // An answer of at most N tokens is not cut.
    let short = json!({"messages": messages(), "max_tokens": 3, "stream": true});
    let all = events(post(dying.addr, "/v1/chat/completions", &short).await).await;
    assert_eq!(all.last().unwrap(), "[DONE]");
    // A whole answer's body stops half way.
    let whole = json!({"messages": messages(), "max_tokens": 8});
    let response = post(dying.addr, "/v1/chat/completions", &whole).await;
    assert!(within("a cut body", response.into_body().collect())
        .await
        .is_err());

    // On demand: every stream open now, none later.
    let server = Server::start(&["--decode-per-token", "20ms"]);
    let long = json!({"messages": messages(), "max_tokens": 500, "stream": true});
    let response = post(server.addr, "/v1/chat/completions", &long).await;
    let mut body = response.into_body();
    within("a first token", body.frame())
        .await
        .unwrap()
        .unwrap();
    let cut = json_body(post(server.addr, "/admin/cut_streams", &json!({})).await).await;
    assert_eq!(cut["cut"], 1);
    let ended = within("the cut", async {
        loop {
            match body.frame().await {
                Some(Ok(_)) => {}
                Some(Err(_)) => return "cut",
                None => return "ended",
            }
        }
    })
    .await;
    assert_eq!(ended, "cut");
    let after = events(post(server.addr, "/v1/chat/completions", &short).await).await;
    assert_eq!(after.last().unwrap(), "[DONE]");
}

// ===== disaggregated roles =====

/// A server's `/get_server_info` or `/stats`.
async fn info(server: &Server, path: &str) -> Value {
    json_body(send(server.addr, Method::GET, path, String::new()).await).await
}

#[tokio::test]
async fn sglang_prefill_hands_the_room_to_decode_and_a_lost_room_fails() {
    let prefill = Server::start(&["--role", "prefill", "--pd-protocol", "sglang"]);
    let decode = Server::start(&[
        "--role",
        "decode",
        "--pd-protocol",
        "sglang",
        "--kv-timeout",
        "300ms",
        "--decode-per-token",
        "1ms",
    ]);
    let whole = Server::start(&["--decode-per-token", "1ms"]);
    let announced = info(&prefill, "/get_server_info").await;
    assert_eq!(announced["disaggregation_mode"], "prefill");
    let port = announced["disaggregation_bootstrap_port"].as_u64().unwrap();
    assert_ne!(port, u64::from(prefill.addr.port()));
    assert_eq!(
        info(&decode, "/get_server_info").await["disaggregation_mode"],
        "decode"
    );

    // The router sends both legs at once; the decode leg may come first.
    let mut chat = json!({"max_tokens": 5, "messages": messages(), "stream": true,
        "bootstrap_host": "127.0.0.1", "bootstrap_port": port, "bootstrap_room": 7});
    let decoded = tokio::spawn({
        let (addr, chat) = (decode.addr, chat.clone());
        async move { events(post(addr, "/v1/chat/completions", &chat).await).await }
    });
    let prefilled = events(post(prefill.addr, "/v1/chat/completions", &chat).await).await;
    assert_eq!(prefilled.len(), 2, "one token and [DONE]: {prefilled:?}");
    let decoded = within("the decode leg", decoded).await.unwrap();
    chat.as_object_mut()
        .unwrap()
        .retain(|k, _| !k.starts_with("bootstrap"));
    let expected = events(post(whole.addr, "/v1/chat/completions", &chat).await).await;
    let text = |events: &[String]| -> String {
        events
            .iter()
            .filter_map(|e| serde_json::from_str::<Value>(e).ok())
            .filter_map(|c| {
                c["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect()
    };
    assert_eq!(text(&decoded), text(&expected));
    assert_eq!(decoded.len(), 5 + 1);

    // A room no prefill server fills: the decode leg fails, it does not hang.
    let lost = json!({"max_tokens": 5, "messages": messages(), "bootstrap_host": "127.0.0.1",
        "bootstrap_port": port, "bootstrap_room": 8});
    let response = post(decode.addr, "/v1/chat/completions", &lost).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        json_body(response).await["error"]["code"],
        "kv_transfer_failed"
    );
    // A decode leg that names no prefill server is refused, and so are
    // fields of the wrong kind.
    for bad in [
        json!({"messages": messages(), "bootstrap_room": 9}),
        json!({"messages": messages(), "bootstrap_room": "seven"}),
        json!({"messages": messages(), "bootstrap_room": 9, "bootstrap_port": 70000,
            "bootstrap_host": "127.0.0.1"}),
        json!({"messages": messages(), "bootstrap_room": 9, "bootstrap_port": port,
            "bootstrap_host": 5}),
    ] {
        let response = post(decode.addr, "/v1/chat/completions", &bad).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
    }

    let p = info(&prefill, "/stats").await;
    let d = info(&decode, "/stats").await;
    assert_eq!(p["pd"]["prefill_legs"], 1, "{p}");
    assert_eq!(p["pd"]["kv_sent"], 1, "{p}");
    assert_eq!(d["pd"]["decode_legs"], 2, "{d}");
    assert_eq!(d["pd"]["handover_failures"], 1, "{d}");
    // A request without hand-over fields is served whole by either role.
    let plain = json!({"max_tokens": 2, "prompt": "Once upon a time"});
    let response = post(decode.addr, "/v1/completions", &plain).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn vllm_prefill_answers_transfer_params_that_decode_pulls() {
    let prefill = Server::start(&["--role", "prefill", "--pd-protocol", "vllm"]);
    let decode = Server::start(&[
        "--role",
        "decode",
        "--pd-protocol",
        "vllm",
        "--decode-per-token",
        "1ms",
    ]);
    let whole = Server::start(&["--decode-per-token", "1ms"]);
    let request = json!({"prompt": "Once upon a time ".repeat(10), "max_tokens": 1,
        "kv_transfer_params": {"do_remote_decode": true, "do_remote_prefill": false,
            "remote_engine_id": null, "remote_block_ids": null, "remote_host": null,
            "remote_port": null}});
    let answer = json_body(post(prefill.addr, "/v1/completions", &request).await).await;
    let params = answer["kv_transfer_params"].clone();
    assert_eq!(params["do_remote_prefill"], true, "{answer}");
    assert_eq!(params["remote_host"], "127.0.0.1");
    assert!(params["remote_port"].is_u64());
    assert!(!params["remote_block_ids"].as_array().unwrap().is_empty());

    let original = json!({"prompt": "Once upon a time ".repeat(10), "max_tokens": 4});
    let mut decode_leg = original.clone();
    decode_leg["kv_transfer_params"] = params.clone();
    let decoded = json_body(post(decode.addr, "/v1/completions", &decode_leg).await).await;
    let expected = json_body(post(whole.addr, "/v1/completions", &original).await).await;
    assert_eq!(
        decoded["choices"][0]["text"],
        expected["choices"][0]["text"]
    );
    // The decode server found the prompt in its cache after the hand-over.
    assert!(decoded["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64() > Some(0));

    // The blocks were handed over once; asking again names nothing.
    let response = post(decode.addr, "/v1/completions", &decode_leg).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        json_body(response).await["error"]["code"],
        "invalid_kv_transfer_params"
    );
    // Parameters of the wrong kind are an error.
    for params in [
        json!("remote"),
        json!({"do_remote_prefill": true, "remote_engine_id": "e", "remote_host": "127.0.0.1",
            "remote_block_ids": [1]}),
        json!({"do_remote_prefill": true, "remote_engine_id": "e", "remote_host": "127.0.0.1",
            "remote_port": 1, "remote_block_ids": "all"}),
    ] {
        let mut bad = original.clone();
        bad["kv_transfer_params"] = params;
        let response = post(decode.addr, "/v1/completions", &bad).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    // Unknown parameters are an error.
    let mut odd = original.clone();
    odd["kv_transfer_params"] = params;
    odd["kv_transfer_params"]["secret_sauce"] = json!(1);
    let response = post(decode.addr, "/v1/completions", &odd).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let error = json_body(response).await;
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("secret_sauce"),
        "{error}"
    );
}
