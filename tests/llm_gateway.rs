//! `tower_lb::llm::Router` in an axum app in front of
//! `examples/model_server` processes: chat completions, the model list,
//! errors in OpenAI's shape, and flow control under a burst.
//!
//! `cargo test --features llm --test llm_gateway` builds the model server
//! first (with the test's profile and target directory).

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tower_lb::llm::{Builder, FlowControl, Router};

use support::examples::send_to as send;
use support::examples::Process;
use support::within;

/// The tests take turns: the burst measures timings that two other tests'
/// servers on the same cores would blur.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn examples_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| support::examples::build(&["model_server"], &["llm"]))
}

fn model_server(extra: &[&str]) -> Process {
    let mut args = vec!["--listen", "127.0.0.1:0", "--model", "m"];
    args.extend_from_slice(extra);
    Process::start(examples_dir(), "model_server", &args)
}

/// Serves `llm` behind an axum app with a route of its own; returns its
/// address.
async fn serve_axum(llm: Router) -> SocketAddr {
    let app = axum::Router::new()
        .route("/hello", axum::routing::get(|| async { "hello" }))
        .fallback_service(llm);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn post(path: &str, body: &Value, headers: &[(&str, String)]) -> Request<Full<Bytes>> {
    let mut request = Request::post(path)
        .header("host", "gateway")
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, value.as_str());
    }
    request
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn chat(tokens: u32, stream: bool) -> Value {
    json!({"model": "m", "stream": stream, "max_tokens": tokens,
        "messages": [{"role": "user", "content": "Say something."}]})
}

async fn json_body(response: http::Response<Incoming>) -> Value {
    let body = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{e}: {body:?}"))
}

#[tokio::test]
async fn an_axum_app_serves_chat_completions_through_the_router() {
    within("chat through axum", async {
        let _turn = ONE_AT_A_TIME.lock().await;
        let a = model_server(&["--decode-per-token", "1ms"]);
        let b = model_server(&["--decode-per-token", "1ms"]);
        let llm = Builder::new()
            .server_for_model(&a.url(), "m")
            .server_for_model(&b.url(), "m")
            .build()
            .unwrap();
        llm.balance().wait_for(|keys| keys.len() == 2).await;
        let addr = serve_axum(llm.clone()).await;

        let hello = send(
            addr,
            Request::get("/hello")
                .header("host", "x")
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_eq!(hello.status(), StatusCode::OK);

        let answer = send(addr, post("/v1/chat/completions", &chat(4, false), &[])).await;
        assert_eq!(answer.status(), StatusCode::OK);
        assert!(!answer.headers().contains_key("endpoint-load-metrics"));
        let answer = json_body(answer).await;
        assert_eq!(answer["object"], "chat.completion", "{answer}");
        assert!(
            answer["choices"][0]["message"]["content"].is_string(),
            "{answer}"
        );

        let streamed = send(addr, post("/v1/chat/completions", &chat(4, true), &[])).await;
        assert_eq!(streamed.status(), StatusCode::OK);
        assert!(!streamed.headers().contains_key("endpoint-load-metrics"));
        let text = streamed.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&text);
        assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");

        let models = send(
            addr,
            Request::get("/v1/models")
                .header("host", "x")
                .body(Full::default())
                .unwrap(),
        )
        .await;
        let models = json_body(models).await;
        assert_eq!(models["data"][0]["id"], "m", "{models}");

        let unknown = json!({"model": "other", "messages": []});
        let refused = send(addr, post("/v1/chat/completions", &unknown, &[])).await;
        assert_eq!(refused.status(), StatusCode::NOT_FOUND);
        let error = json_body(refused).await;
        assert_eq!(error["error"]["code"], "model_not_found", "{error}");
        assert!(error["error"]["type"].is_string() && error["error"]["message"].is_string());

        let bad = Request::post("/v1/completions")
            .header("host", "x")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(b"{not json")))
            .unwrap();
        let bad = send(addr, bad).await;
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            json_body(bad).await["error"]["type"],
            "invalid_request_error"
        );
    })
    .await;
}

/// One streamed request's times, from its send.
#[derive(Debug)]
struct Outcome {
    name: &'static str,
    status: StatusCode,
    sent: Instant,
    first: Option<Instant>,
    end: Instant,
}

async fn streamed(
    addr: SocketAddr,
    name: &'static str,
    headers: Vec<(&'static str, String)>,
) -> Outcome {
    let sent = Instant::now();
    let response = send(
        addr,
        post("/v1/chat/completions", &chat(14, true), &headers),
    )
    .await;
    let status = response.status();
    let mut body = response.into_body();
    let mut first = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap();
        if status == StatusCode::OK
            && first.is_none()
            && frame
                .data_ref()
                .is_some_and(|d| d.windows(7).any(|w| w == b"content"))
        {
            first = Some(Instant::now());
        }
    }
    Outcome {
        name,
        status,
        sent,
        first,
        end: Instant::now(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_waits_by_priority_fairly_and_within_deadlines() {
    within("the burst", async {
        let _turn = ONE_AT_A_TIME.lock().await;
        // Two servers of two batch slots; an answer of 14 tokens 25 ms apart.
        let a = model_server(&["--batch", "2", "--decode-per-token", "25ms"]);
        let b = model_server(&["--batch", "2", "--decode-per-token", "25ms"]);
        let llm = Builder::new()
            .servers([a.url().as_str(), b.url().as_str()])
            .flow_control(FlowControl::new().server_limit(Some(2)))
            .build()
            .unwrap();
        llm.balance().wait_for(|keys| keys.len() == 2).await;
        let addr = serve_axum(llm.clone()).await;

        let alone = streamed(addr, "alone", vec![]).await;
        assert_eq!(alone.status, StatusCode::OK);
        let unloaded_ttft = alone.first.unwrap() - alone.sent;
        let answer = alone.end - alone.sent;

        let mut tasks = Vec::new();
        let mut spawn = |name: &'static str, headers: Vec<(&'static str, String)>| {
            tasks.push(tokio::spawn(streamed(addr, name, headers)));
        };
        // 16 requests: four times what the servers run at once.
        for _ in 0..10 {
            spawn("heavy", vec![("x-tenant", "heavy".into())]);
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        spawn("light", vec![("x-tenant", "light".into())]);
        tokio::time::sleep(Duration::from_millis(3)).await;
        for _ in 0..2 {
            spawn(
                "high",
                vec![("x-tenant", "heavy".into()), ("x-priority", "5".into())],
            );
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        spawn("light", vec![("x-tenant", "light".into())]);
        for _ in 0..2 {
            spawn(
                "late",
                vec![
                    ("x-tenant", "late".into()),
                    ("x-priority", "-1".into()),
                    ("x-deadline-ms", "800".into()),
                ],
            );
        }
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await.unwrap());
        }

        let slack = Duration::from_millis(150);
        for o in &outcomes {
            assert!(
                [
                    StatusCode::OK,
                    StatusCode::TOO_MANY_REQUESTS,
                    StatusCode::SERVICE_UNAVAILABLE
                ]
                .contains(&o.status),
                "{o:?}"
            );
            match o.name {
                "high" => {
                    // Released first, to a server with a free slot: no
                    // longer than its unloaded TTFT plus one answer.
                    let ttft = o.first.expect("served") - o.sent;
                    assert!(
                        ttft <= unloaded_ttft + answer + slack,
                        "high priority waited {ttft:?} (alone {unloaded_ttft:?}, answer {answer:?})"
                    );
                }
                "late" => {
                    // Behind 13 requests of higher bands: it leaves at its deadline.
                    assert_eq!(o.status, StatusCode::SERVICE_UNAVAILABLE, "{o:?}");
                    assert!(o.end - o.sent < Duration::from_millis(800) + slack, "{o:?}");
                }
                _ => assert_eq!(o.status, StatusCode::OK, "{o:?}"),
            }
        }
        // Of the answers that started while the light tenant waited, about
        // half are its own.
        let light: Vec<&Outcome> = outcomes.iter().filter(|o| o.name == "light").collect();
        let from = light.iter().map(|o| o.sent).min().unwrap();
        let to = light.iter().map(|o| o.first.unwrap()).max().unwrap();
        let started: Vec<&Outcome> = outcomes
            .iter()
            .filter(|o| o.name != "high" && o.first.is_some_and(|f| f > from && f <= to))
            .collect();
        let share = light.len() as f64 / started.len() as f64;
        assert!(
            share >= 0.45,
            "light share {share:.2} of {:?}",
            started.iter().map(|o| o.name).collect::<Vec<_>>()
        );

        let stats = llm.queue_stats().unwrap();
        assert_eq!(stats.in_service, 0, "{stats:?}");
        assert!(stats.bands.iter().all(|b| b.waiting == 0), "{stats:?}");
        println!(
            "alone: ttft {unloaded_ttft:?}, answer {answer:?}; light share {share:.2}; {stats:?}"
        );
    })
    .await;
}

/// The data of each server-sent event, `[DONE]` included.
async fn events(response: http::Response<Incoming>) -> Vec<String> {
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec())
        .unwrap()
        .split("\n\n")
        .filter(|event| !event.trim().is_empty())
        .map(|event| event.strip_prefix("data: ").unwrap_or(event).to_owned())
        .collect()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Checks an error answer's status and OpenAI shape.
async fn assert_error(response: http::Response<Incoming>, status: StatusCode, code: &str) {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = json_body(response).await;
    let error = &body["error"];
    assert!(error["message"].is_string(), "{body}");
    assert!(error["type"].is_string(), "{body}");
    assert_eq!(error["code"], code, "{body}");
}

#[tokio::test]
async fn the_router_speaks_openai_for_chat_and_completions_whole_and_streamed() {
    within("conformance", async {
        let _turn = ONE_AT_A_TIME.lock().await;
        let a = model_server(&["--decode-per-token", "1ms"]);
        let llm = Builder::new()
            .server_for_model(&a.url(), "m")
            .max_body(4096)
            .build()
            .unwrap();
        llm.balance().wait_for(|keys| keys.len() == 1).await;
        let addr = serve_axum(llm).await;
        let chat = |stream: bool, usage: bool| {
            let mut body = json!({"model": "m", "max_tokens": 5, "stream": stream,
                "messages": [{"role": "system", "content": "Be brief. ".repeat(30)},
                             {"role": "user", "content": "Name a colour."}]});
            if usage {
                body["stream_options"] = json!({"include_usage": true});
            }
            body
        };
        let completion = |stream: bool, usage: bool| {
            let mut body = json!({"model": "m", "max_tokens": 5, "stream": stream,
                "prompt": "Once upon a time"});
            if usage {
                body["stream_options"] = json!({"include_usage": true});
            }
            body
        };
        for (path, make, prefix, object, chunk_object) in [
            (
                "/v1/chat/completions",
                &chat as &dyn Fn(bool, bool) -> Value,
                "chatcmpl-",
                "chat.completion",
                "chat.completion.chunk",
            ),
            (
                "/v1/completions",
                &completion,
                "cmpl-",
                "text_completion",
                "text_completion",
            ),
        ] {
            // Whole: unique ids, created, the role, usage.
            let mut ids = Vec::new();
            for _ in 0..2 {
                let response = send(addr, post(path, &make(false, false), &[])).await;
                assert_eq!(response.status(), StatusCode::OK);
                assert!(!response.headers().contains_key("endpoint-load-metrics"));
                let answer = json_body(response).await;
                let id = answer["id"].as_str().unwrap().to_owned();
                assert!(id.starts_with(prefix), "{answer}");
                assert_eq!(answer["object"], object, "{answer}");
                assert!(answer["created"].as_u64().unwrap().abs_diff(unix_now()) < 60);
                if path == "/v1/chat/completions" {
                    assert_eq!(answer["choices"][0]["message"]["role"], "assistant");
                } else {
                    assert!(answer["choices"][0]["text"].is_string(), "{answer}");
                }
                assert_eq!(answer["usage"]["completion_tokens"], 5, "{answer}");
                ids.push(id);
            }
            assert_ne!(ids[0], ids[1]);

            // Streamed, not asking for usage: no usage chunk (the router asks
            // the server for one and keeps it).
            let response = send(addr, post(path, &make(true, false), &[])).await;
            assert!(!response.headers().contains_key("endpoint-load-metrics"));
            let received = events(response).await;
            assert_eq!(
                received.last().map(String::as_str),
                Some("[DONE]"),
                "{received:?}"
            );
            let chunks: Vec<Value> = received[..received.len() - 1]
                .iter()
                .map(|e| serde_json::from_str(e).unwrap())
                .collect();
            assert_eq!(chunks.len(), 5, "{received:?}");
            let id = chunks[0]["id"].as_str().unwrap();
            assert!(
                id.starts_with(prefix) && !ids.iter().any(|i| i == id),
                "{id}"
            );
            for chunk in &chunks {
                assert_eq!(chunk["id"], id);
                assert_eq!(chunk["object"], chunk_object);
                assert!(chunk["created"].is_u64());
                assert!(
                    chunk.get("usage").is_none() || chunk["usage"].is_null(),
                    "{chunk}"
                );
            }
            if path == "/v1/chat/completions" {
                assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
            }

            // Streamed, asking: the last chunk carries the usage, cached
            // tokens included.
            let received = events(send(addr, post(path, &make(true, true), &[])).await).await;
            let last: Value = serde_json::from_str(&received[received.len() - 2]).unwrap();
            assert!(last["usage"]["prompt_tokens"].is_u64(), "{last}");
            assert!(
                last["usage"]["prompt_tokens_details"]["cached_tokens"].is_u64(),
                "{last}"
            );
        }

        // Errors: one shape.
        let bad = Request::post("/v1/chat/completions")
            .header("host", "x")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(b"{\"model\": ")))
            .unwrap();
        assert_error(
            send(addr, bad).await,
            StatusCode::BAD_REQUEST,
            "invalid_json",
        )
        .await;
        let large = json!({"model": "m", "prompt": "x".repeat(5000)});
        assert_error(
            send(addr, post("/v1/completions", &large, &[])).await,
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
        )
        .await;
        let unknown = json!({"model": "nope", "prompt": "hi"});
        assert_error(
            send(addr, post("/v1/completions", &unknown, &[])).await,
            StatusCode::NOT_FOUND,
            "model_not_found",
        )
        .await;
    })
    .await;
}
