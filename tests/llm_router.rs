//! `examples/llm_router` in front of `examples/model_server`s, all as child
//! processes on 127.0.0.1: streaming, model routing, bad bodies, and a
//! server that dies mid-answer.
//!
//! `cargo test --features llm,reports --test llm_router` builds both
//! examples first (with the test's profile and target directory).

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
use tokio::net::TcpStream;

use support::examples::send_to as send;
use support::examples::Process;
use support::within;

/// The examples' directory, after building them once per test run.
fn examples_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        support::examples::build(&["llm_router", "model_server"], &["llm", "reports"])
    })
}

fn model_server(model: &str, decode: &str) -> Process {
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--model",
        model,
        "--decode-per-token",
        decode,
    ];
    Process::start(examples_dir(), "model_server", &args)
}

fn router(backends: &[String], extra: &[&str]) -> Process {
    let mut args: Vec<String> = vec!["--listen".into(), "127.0.0.1:0".into()];
    for backend in backends {
        args.extend(["--backend".into(), backend.clone()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    Process::start(examples_dir(), "llm_router", &args)
}

/// Sends `body` to `path`, returning the response with its streaming body.
async fn post(addr: SocketAddr, path: &str, body: String) -> http::Response<Incoming> {
    let request = Request::post(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    send(addr, request).await
}

fn chat(model: &str, tokens: u32) -> String {
    json!({"model": model, "stream": true, "max_tokens": tokens,
           "messages": [{"role": "system", "content": "Be brief. ".repeat(30)},
                        {"role": "user", "content": "Name a colour."}]})
    .to_string()
}

/// The next SSE event's data, or `None` at the end; an `Err` for a broken
/// stream.
async fn next_event(body: &mut Incoming, pending: &mut Vec<u8>) -> Result<Option<String>, String> {
    loop {
        if let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = pending.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&event).trim().to_owned();
            return Ok(Some(
                text.strip_prefix("data: ").unwrap_or(&text).to_owned(),
            ));
        }
        match body.frame().await {
            None => return Ok(None),
            Some(Err(e)) => return Err(e.to_string()),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    pending.extend_from_slice(&data);
                }
            }
        }
    }
}

#[tokio::test]
async fn events_pass_frame_by_frame() {
    // 20 tokens 100 ms apart: the last is produced 2 s after the first.
    let server = model_server("m", "100ms");
    let router = router(&[server.url()], &[]);
    let started = Instant::now();
    let response = within(
        "the answer's head",
        post(router.addr, "/v1/chat/completions", chat("m", 20)),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut pending = Vec::new();
    let first = within("the first event", next_event(&mut body, &mut pending))
        .await
        .unwrap()
        .unwrap();
    let first_at = started.elapsed();
    assert!(first.contains("chat.completion.chunk"), "{first}");
    assert!(
        first_at < Duration::from_millis(1000),
        "the first token took {first_at:?}"
    );
    let mut events = 1;
    while let Some(event) = within("the next event", next_event(&mut body, &mut pending))
        .await
        .unwrap()
    {
        events += 1;
        if event == "[DONE]" {
            break;
        }
    }
    assert_eq!(events, 21);
    assert!(started.elapsed() >= Duration::from_millis(1900));
}

#[tokio::test]
async fn a_model_goes_only_to_the_servers_that_serve_it() {
    let (a, b) = (model_server("alpha", "1ms"), model_server("beta", "1ms"));
    let router = router(
        &[format!("{}#alpha", a.url()), format!("{}#beta", b.url())],
        &[],
    );
    for _ in 0..10 {
        let response = within(
            "an answer",
            post(router.addr, "/v1/chat/completions", chat("beta", 2)),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        let body = within("the body", response.into_body().collect())
            .await
            .unwrap()
            .to_bytes();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains(r#""model":"beta""#), "{text}");
    }
    let response = within(
        "an answer",
        post(router.addr, "/v1/chat/completions", chat("gamma", 2)),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn malformed_and_oversized_bodies_are_refused() {
    let server = model_server("m", "1ms");
    let router = router(&[server.url()], &["--max-body", "2000"]);
    let response = within(
        "400",
        post(router.addr, "/v1/completions", r#"{"prompt": "#.into()),
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = within("its body", response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    let error: Value = serde_json::from_slice(&body).unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("not valid JSON") && message.contains("column"),
        "{message}"
    );

    let big = json!({"prompt": "x".repeat(5000)}).to_string();
    let response = within("413", post(router.addr, "/v1/completions", big)).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn a_server_killed_mid_stream_cuts_the_stream_and_never_hangs() {
    let mut server = model_server("m", "200ms");
    let router = router(&[server.url()], &[]);
    let response = within(
        "the answer's head",
        post(router.addr, "/v1/chat/completions", chat("m", 50)),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut pending = Vec::new();
    within("the first event", next_event(&mut body, &mut pending))
        .await
        .unwrap()
        .unwrap();
    server.kill();
    // The rest: an error (a cut chunked stream) or an error event, within
    // the bound, and never `[DONE]`.
    let outcome = within("the end of the stream", async {
        loop {
            match next_event(&mut body, &mut pending).await {
                Err(error) => return format!("cut: {error}"),
                Ok(None) => return "ended".to_owned(),
                Ok(Some(event)) if event == "[DONE]" => return "done".to_owned(),
                Ok(Some(event)) if event.contains("error") => {
                    return format!("error event: {event}")
                }
                Ok(Some(_)) => {}
            }
        }
    })
    .await;
    assert!(
        outcome.starts_with("cut") || outcome.starts_with("error event"),
        "{outcome}"
    );
}

/// Sends a low-priority request; `None` if no answer head came within
/// `wait` (it is queued: the client gives up on it).
async fn low_priority(addr: SocketAddr, wait: Duration) -> Option<http::Response<Incoming>> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = Request::post("/v1/chat/completions")
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .header("x-priority", "-1")
        .body(Full::new(Bytes::from(chat("m", 1))))
        .unwrap();
    tokio::time::timeout(wait, sender.send_request(request))
        .await
        .ok()
        .map(Result::unwrap)
}

#[tokio::test]
async fn low_priority_requests_get_429_when_every_server_is_saturated() {
    // One request runs at a time, for 40 tokens 250 ms apart; the others
    // wait.
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--model",
        "m",
        "--decode-per-token",
        "250ms",
        "--batch",
        "1",
    ];
    let server = Process::start(examples_dir(), "model_server", &args);
    // Without the router's queue (`--max-waiting 0`): with it, requests
    // wait at the router instead (tests/llm_gateway.rs). x-priority is
    // believed only from trusted sources.
    let router = router(
        &[server.url()],
        &["--max-waiting", "0", "--trusted-source", "127.0.0.1"],
    );
    let mut long = Vec::new();
    for _ in 0..7 {
        let addr = router.addr;
        long.push(tokio::spawn(async move {
            post(addr, "/v1/chat/completions", chat("m", 40)).await
        }));
    }
    // Until the server holds one running and six waiting.
    within("six requests waiting at the server", async {
        loop {
            let tcp = TcpStream::connect(server.addr).await.unwrap();
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                    .await
                    .unwrap();
            tokio::spawn(connection);
            let request = Request::get("/stats")
                .header("host", server.addr.to_string())
                .body(Full::new(Bytes::new()))
                .unwrap();
            let body = sender
                .send_request(request)
                .await
                .unwrap()
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes();
            let stats: Value = serde_json::from_slice(&body).unwrap();
            if stats["waiting"].as_u64() >= Some(6) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // Seven in flight, above the default bound of 5, once the server's last
    // report (from the first answer's head) is stale: low priority is shed.
    let shed = within("a 429", async {
        loop {
            if let Some(response) = low_priority(router.addr, Duration::from_millis(100)).await {
                if response.status() == StatusCode::TOO_MANY_REQUESTS {
                    return response;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(shed.headers().contains_key("retry-after"));
    for task in long {
        task.abort();
    }
}

/// A free port on 127.0.0.1 for a listener the example binds itself.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Every event of a streamed answer, `[DONE]` included.
async fn all_events(response: http::Response<Incoming>) -> Vec<String> {
    let mut body = response.into_body();
    let mut pending = Vec::new();
    let mut events = Vec::new();
    while let Some(event) = next_event(&mut body, &mut pending).await.unwrap() {
        events.push(event);
    }
    events
}

#[tokio::test]
async fn the_router_learns_what_servers_reused_and_clients_see_only_what_they_asked() {
    support::within("usage learnt", async {
        let a = model_server("emulated", "1ms");
        let b = model_server("emulated", "1ms");
        let admin = format!("127.0.0.1:{}", free_port());
        let router = router(&[a.url(), b.url()], &["--admin", &admin]);
        for turn in 0..6 {
            let response = post(router.addr, "/v1/chat/completions", chat("emulated", 4)).await;
            assert_eq!(response.status(), StatusCode::OK);
            let events = all_events(response).await;
            assert_eq!(
                events.last().map(String::as_str),
                Some("[DONE]"),
                "turn {turn}"
            );
            assert!(
                events.iter().all(|e| !e.contains("\"usage\"")),
                "the client did not ask for the usage: {events:?}"
            );
        }
        // A client that asks gets it.
        let asked = json!({"model": "emulated", "stream": true, "max_tokens": 4,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "Name a colour."}]});
        let events =
            all_events(post(router.addr, "/v1/chat/completions", asked.to_string()).await).await;
        assert!(
            events.iter().any(|e| e.contains("\"cached_tokens\"")),
            "{events:?}"
        );

        let status = get_json(admin.parse().unwrap(), "/status").await;
        let backends = status["backends"].as_array().unwrap();
        let measured: Vec<f64> = backends
            .iter()
            .filter_map(|b| b["measured_reuse"].as_f64())
            .collect();
        assert!(!measured.is_empty(), "{status}");
        // The same system prompt six times: the server that held it said so.
        assert!(measured.iter().any(|&m| m > 0.3), "{status}");
        for b in backends {
            assert!(b["expected_reuse"].is_number(), "{status}");
            assert_eq!(b["waiting_first_token"], 0, "{status}");
        }
    })
    .await;
}

async fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    support::examples::json_of(addr, http::Method::GET, path).await
}

async fn get_text(addr: SocketAddr, path: &str) -> String {
    support::examples::text_of(addr, http::Method::GET, path).await
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_count_the_requests_sent() {
    support::within("metrics", async {
        let a = model_server("emulated", "1ms");
        let admin = format!("127.0.0.1:{}", free_port());
        let router = router(&[format!("{}#emulated", a.url())], &["--admin", &admin]);
        for _ in 0..5 {
            let response = post(router.addr, "/v1/chat/completions", chat("emulated", 3)).await;
            assert_eq!(response.status(), StatusCode::OK);
            all_events(response).await;
        }
        let completion = json!({"model": "emulated", "prompt": "Once", "max_tokens": 2});
        let response = post(router.addr, "/v1/completions", completion.to_string()).await;
        assert_eq!(response.status(), StatusCode::OK);
        let _ = response.into_body().collect().await.unwrap();
        let unknown = post(router.addr, "/v1/chat/completions", chat("other", 1)).await;
        assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
        let _ = unknown.into_body().collect().await.unwrap();

        let text = get_text(admin.parse().unwrap(), "/metrics").await;
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
        let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
            scrape
                .samples
                .iter()
                .filter(|s| {
                    s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
                })
                .map(|s| match s.value {
                    prometheus_parse::Value::Counter(v)
                    | prometheus_parse::Value::Gauge(v)
                    | prometheus_parse::Value::Untyped(v) => v,
                    _ => 0.0,
                })
                .sum()
        };
        assert_eq!(
            value(
                "llm_router_requests_total",
                &[("route", "chat"), ("status", "200")]
            ),
            5.0,
            "{text}"
        );
        assert_eq!(
            value(
                "llm_router_requests_total",
                &[("route", "completions"), ("status", "200")]
            ),
            1.0,
            "{text}"
        );
        assert_eq!(
            value(
                "llm_router_requests_total",
                &[("route", "chat"), ("status", "404")]
            ),
            1.0,
            "{text}"
        );
        assert_eq!(value("llm_router_queue_admitted_total", &[]), 6.0, "{text}");
        assert_eq!(value("llm_router_in_service", &[]), 0.0, "{text}");
        let server = a.addr.to_string();
        assert_eq!(
            value(
                "llm_router_requests_total",
                &[("route", "chat"), ("server", &server), ("status", "200")]
            ),
            5.0,
            "{text}"
        );

        assert!(
            value(
                "llm_router_server_prompt_tokens_total",
                &[("server", &server)]
            ) > 0.0,
            "{text}"
        );
        // 5 chats of 3 tokens and a completion of 2, as their usage said.
        assert_eq!(
            value(
                "llm_router_server_completion_tokens_total",
                &[("server", &server)]
            ),
            17.0,
            "{text}"
        );
        assert!(
            value(
                "llm_router_server_answered_prompt_tokens_total",
                &[("server", &server)]
            ) > 0.0,
            "{text}"
        );
        assert!(
            text.contains("llm_router_time_to_first_token_seconds_bucket"),
            "{text}"
        );
        assert!(
            text.contains("llm_router_server_report_age_seconds"),
            "{text}"
        );
    })
    .await;
}

#[tokio::test]
async fn sigterm_drains_twenty_streams_in_flight_and_cuts_none() {
    support::within("the drain", async {
        let a = model_server("emulated", "20ms");
        let b = model_server("emulated", "20ms");
        let router = router(&[a.url(), b.url()], &["--drain-timeout", "10s"]);
        let mut streams = Vec::new();
        for _ in 0..20 {
            let response = post(router.addr, "/v1/chat/completions", chat("emulated", 40)).await;
            assert_eq!(response.status(), StatusCode::OK);
            streams.push(tokio::spawn(all_events(response)));
        }
        // Every stream has started (its head came); 40 tokens 20 ms apart
        // are still to come.
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &router.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(killed.success());
        for stream in streams {
            let events = stream.await.unwrap();
            assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        }
        // New connections are refused once draining, and the router exits.
        let mut router = router;
        let status = tokio::task::spawn_blocking(move || router.wait().unwrap())
            .await
            .unwrap();
        assert!(status.success(), "{status:?}");
    })
    .await;
}
