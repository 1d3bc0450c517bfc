//! `examples/llm_router` under attack and under faults, all on 127.0.0.1:
//! each test reproduces one finding of issue 24 (what a client or a sick
//! server did to the router) and shows that it no longer works. Model
//! servers are `examples/model_server` child processes; misbehaving ones
//! are the tests' own backend (`support::server`) or a raw socket here.
//!
//! `cargo test --features llm,reports --test llm_attacks` builds both
//! examples first (with the test's profile and target directory).

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use support::examples::send_to as send;
use support::examples::Process;
use support::within;
use support::Backend;

/// The examples' directory, after building them once per test run.
fn examples_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        support::examples::build(&["llm_router", "model_server"], &["llm", "reports"])
    })
}

/// Resident memory of `process`, in bytes.
fn rss(process: &Process) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", process.id()))
        .expect("/proc is readable");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line");
    kb * 1024
}

fn model_server(model: &str, extra: &[&str]) -> Process {
    let mut args: Vec<String> = ["--listen", "127.0.0.1:0", "--model", model]
        .map(String::from)
        .to_vec();
    args.extend(extra.iter().map(|s| s.to_string()));
    Process::start(examples_dir(), "model_server", &args)
}

/// A router over `backends`; its admin port, when `admin` is set.
fn router(backends: &[String], extra: &[&str]) -> Process {
    let mut args: Vec<String> = vec!["--listen".into(), "127.0.0.1:0".into()];
    for backend in backends {
        args.extend(["--backend".into(), backend.clone()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    Process::start(examples_dir(), "llm_router", &args)
}

/// A free port on 127.0.0.1 for a listener the example binds itself.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The status of the answer to a POST of `body` to the chat route, read
/// while the body is still being written: a server that answers before
/// the body ends and closes the connection (as a 413 may) cuts the write,
/// not the answer.
async fn status_while_sending(addr: SocketAddr, content_type: &str, body: Vec<u8>) -> StatusCode {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = tcp.into_split();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let writer = tokio::spawn(async move {
        // A server that has answered may close before the body ends.
        let _ = write.write_all(head.as_bytes()).await;
        let _ = write.write_all(&body).await;
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        let n = read.read(&mut buf).await.unwrap();
        assert!(n > 0, "the connection closed before an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    writer.abort();
    let line = String::from_utf8_lossy(&answer);
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not a status line: {line:?}"));
    StatusCode::from_u16(code).unwrap()
}

fn post_request(addr: SocketAddr, path: &str, body: String) -> Request<Full<Bytes>> {
    Request::post(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

async fn post(addr: SocketAddr, path: &str, body: String) -> http::Response<Incoming> {
    send(addr, post_request(addr, path, body)).await
}

async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> http::Response<Incoming> {
    let mut request = Request::get(path).header("host", addr.to_string());
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    send(addr, request.body(Full::new(Bytes::new())).unwrap()).await
}

async fn status_json(admin: SocketAddr) -> Value {
    let body = get(admin, "/status", None)
        .await
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    serde_json::from_slice(&body).unwrap()
}

fn chat(model: &str, tokens: u32, stream: bool) -> String {
    json!({"model": model, "stream": stream, "max_tokens": tokens,
           "messages": [{"role": "user", "content": "Name a colour."}]})
    .to_string()
}

/// Sends raw bytes on a new connection; returns all it reads back until
/// the router closes it (or `wait` passes).
async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    let mut read = Vec::new();
    let _ = tokio::time::timeout(wait, tcp.read_to_end(&mut read)).await;
    String::from_utf8_lossy(&read).into_owned()
}

fn ejections(status: &Value) -> Vec<u64> {
    status["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["ejections"].as_u64().unwrap())
        .collect()
}

// ===== 1. a server that passes /health and fails every completion =====

#[tokio::test]
async fn a_flapping_server_gets_under_one_percent_after_its_first_ejection() {
    let servers: Vec<Process> = (0..3)
        .map(|_| model_server("m", &["--decode-per-token", "1ms"]))
        .collect();
    let sick = Backend::builder("sick")
        .status(StatusCode::INTERNAL_SERVER_ERROR)
        .start()
        .await;
    let mut backends: Vec<String> = servers.iter().map(Process::url).collect();
    backends.push(format!("http://{}", sick.addr()));
    // Short ejections, so the sick server comes back (on probation) often
    // within the test; health checks every second pass all along.
    let router = router(&backends, &["--ejection", "1s"]);
    // Until its first ejection: five failures in a row.
    let sent = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let load = |until: Instant| {
        let (sent, failed) = (Arc::clone(&sent), Arc::clone(&failed));
        let addr = router.addr;
        tokio::spawn(async move {
            while Instant::now() < until {
                let response = post(addr, "/v1/chat/completions", chat("m", 1, false)).await;
                sent.fetch_add(1, Ordering::Relaxed);
                if response.status() != StatusCode::OK {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                let _ = response.into_body().collect().await;
            }
        })
    };
    let warm = Instant::now() + Duration::from_secs(60);
    let first = load(warm);
    within(
        "the sick server's first five requests",
        sick.wait_requests(5),
    )
    .await;
    first.abort();
    let before = (
        sick.requests(),
        sent.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    // Then 8 s of load from four clients: the ejection ends several times.
    let until = Instant::now() + Duration::from_secs(8);
    let clients: Vec<_> = (0..4).map(|_| load(until)).collect();
    for client in clients {
        within("the load", client).await.unwrap();
    }
    let got = sick.requests() - before.0;
    let total = sent.load(Ordering::Relaxed) - before.1;
    eprintln!("after its first ejection the sick server got {got} of {total} requests");
    assert!(total > 400, "only {total} requests were sent");
    assert!(
        got * 100 < total,
        "the sick server got {got} of {total} requests after its first ejection"
    );
    // Each request it got is retried elsewhere, within the retry budget.
    let failures = failed.load(Ordering::Relaxed) - before.2;
    assert!(
        failures <= got,
        "{failures} failures for {got} sick answers"
    );
}

// ===== 2. long non-streamed generations =====

#[tokio::test]
async fn long_non_streamed_answers_eject_nobody() {
    // 4096 tokens at 0.5 ms arrive after about 2 s (or more on a busy
    // machine), far past the 500 ms attempt timeout for a first byte. Each
    // server runs 16 at once, so none waits in a queue.
    let servers: Vec<Process> = (0..3)
        .map(|_| model_server("m", &["--decode-per-token", "500us", "--batch", "16"]))
        .collect();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let router = router(
        &servers.iter().map(Process::url).collect::<Vec<_>>(),
        &[
            "--attempt-timeout",
            "500ms",
            "--time-per-token",
            "10ms",
            "--admin",
            &admin.to_string(),
        ],
    );
    let long: Vec<_> = (0..45)
        .map(|_| {
            let addr = router.addr;
            tokio::spawn(async move {
                let response = post(addr, "/v1/chat/completions", chat("m", 4096, false)).await;
                let status = response.status();
                let headers = format!("{:?}", response.headers());
                let body = response.into_body().collect().await;
                let body = body.map_err(|e| format!("{e} {headers}"));
                let body = match body {
                    Ok(b) => b.to_bytes(),
                    Err(e) => Bytes::from(e),
                };
                let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
                (status, format!("{text} {headers}"))
            })
        })
        .collect();
    let started = Instant::now();
    // A normal request meanwhile is served, by whichever server.
    let short = within(
        "a short request among long ones",
        post(router.addr, "/v1/chat/completions", chat("m", 1, true)),
    )
    .await;
    assert_eq!(short.status(), StatusCode::OK);
    for task in long {
        let (status, body) = tokio::time::timeout(Duration::from_secs(90), task)
            .await
            .expect("a long answer within 90 s")
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert!(started.elapsed() > Duration::from_millis(500));
    let status = status_json(admin).await;
    assert_eq!(ejections(&status), [0, 0, 0], "{status}");
    for backend in status["backends"].as_array().unwrap() {
        assert_eq!(backend["consecutive_failures"], 0, "{status}");
    }
}

// ===== 3. a 200 head, then nothing =====

/// A server that answers `/health` and sends a streamed answer's head and
/// first event, then nothing while the connection stays open.
async fn stalling_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Ok(n) = tcp.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&head);
                    if !text.contains("\r\n\r\n") {
                        continue;
                    }
                    if text.starts_with("GET /health") {
                        let _ = tcp
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .await;
                        head.clear();
                        continue;
                    }
                    let event = "data: {\"choices\":[{\"delta\":{\"content\":\"Red\"}}]}\n\n";
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                         transfer-encoding: chunked\r\n\r\n{:x}\r\n{event}\r\n",
                        event.len()
                    );
                    let _ = tcp.write_all(answer.as_bytes()).await;
                    // Hold the connection, silent.
                    let _ = tcp.read_to_end(&mut Vec::new()).await;
                    return;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_stalled_stream_ends_with_an_error_within_the_idle_limit() {
    let stalling = stalling_server().await;
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let router = router(
        &[format!("http://{stalling}")],
        &["--stream-idle-timeout", "1s", "--admin", &admin.to_string()],
    );
    let started = Instant::now();
    let response = within(
        "the head",
        post(router.addr, "/v1/chat/completions", chat("m", 5, true)),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = within("the end of the stream", response.into_body().collect())
        .await
        .expect("the stream ends cleanly")
        .to_bytes();
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&body);
    assert!(text.starts_with("data: {\"choices\""), "{text}");
    assert!(text.contains("\"error\""), "an error event: {text}");
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(4),
        "{elapsed:?}"
    );
    let status = status_json(admin).await;
    let backend = &status["backends"][0];
    assert_eq!(backend["in_flight"], 0, "{status}");
    assert_eq!(
        backend["consecutive_failures"], 1,
        "the stall counts: {status}"
    );
}

// ===== 4. reported queues that contradict what the router sees =====

#[tokio::test]
async fn leaked_queue_counts_neither_starve_nor_shed() {
    // What 21 abandoned queued requests left behind at three servers whose
    // waiting count leaked: 7, 7 and 13 waiting, nothing running; each
    // answer reports it again.
    let leaked = |id, waiting: &'static str| {
        Backend::builder(id)
            .header("endpoint-load-metrics", waiting)
            .start()
    };
    let servers = [
        leaked(
            "a",
            "TEXT named_metrics.num_requests_waiting=7, named_metrics.num_requests_running=0",
        )
        .await,
        leaked(
            "b",
            "TEXT named_metrics.num_requests_waiting=7, named_metrics.num_requests_running=0",
        )
        .await,
        leaked(
            "victim",
            "TEXT named_metrics.num_requests_waiting=13, named_metrics.num_requests_running=0",
        )
        .await,
    ];
    let backends: Vec<String> = servers
        .iter()
        .map(|s| format!("http://{}", s.addr()))
        .collect();
    let router = router(&backends, &["--trusted-source", "127.0.0.1"]);
    let mut shed = 0;
    for i in 0..240 {
        let mut request = post_request(router.addr, "/v1/chat/completions", chat("m", 1, true));
        if i % 2 == 0 {
            // Low priority: shed only when every server is saturated.
            request
                .headers_mut()
                .insert("x-priority", http::HeaderValue::from_static("-1"));
        }
        let response = within("an answer", send(router.addr, request)).await;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            shed += 1;
        }
        let _ = response.into_body().collect().await;
    }
    assert_eq!(shed, 0);
    let served: Vec<usize> = servers.iter().map(Backend::requests).collect();
    assert!(
        served.iter().all(|&n| n >= 40),
        "every server gets its share: {served:?}"
    );
}

// ===== 5 and 6. routes, bodies and models =====

#[tokio::test]
async fn only_allowed_routes_and_json_bodies_pass() {
    let server = model_server("m", &["--decode-per-token", "1ms"]);
    let router = router(&[server.url()], &[]);
    let addr = router.addr;
    for path in [
        "/flush_cache",
        "/metrics",
        "/stats",
        "/server_info",
        "/v1/../flush_cache",
    ] {
        let response = post(addr, path, "{}".into()).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "POST {path}");
        let response = get(addr, path, None).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "GET {path}");
    }
    assert_eq!(get(addr, "/health", None).await.status(), StatusCode::OK);
    assert_eq!(get(addr, "/v1/models", None).await.status(), StatusCode::OK);

    let text = |body: Vec<u8>| {
        Request::post("/v1/chat/completions")
            .header("host", addr.to_string())
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    let big = status_while_sending(addr, "text/plain", vec![b'x'; 2 << 20]).await;
    assert_eq!(big, StatusCode::PAYLOAD_TOO_LARGE);
    let plain = send(addr, text(chat("unknown", 1, false).into_bytes())).await;
    assert_eq!(plain.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let numeric = json!({"model": 123, "messages": [{"role": "user", "content": "hi"}]});
    let response = post(addr, "/v1/chat/completions", numeric.to_string()).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

// ===== 7. slow uploads =====

#[tokio::test]
async fn a_trickled_upload_is_cut() {
    let server = model_server("m", &["--decode-per-token", "1ms"]);
    let router = router(&[server.url()], &["--body-timeout", "2s"]);
    let mut tcp = TcpStream::connect(router.addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
         content-length: 100\r\n\r\n",
        router.addr
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let cut = within("the cut", async {
        loop {
            // A byte a second, as long as the router takes them.
            if tcp.write_all(b" ").await.is_err() {
                return;
            }
            let mut buf = [0u8; 1024];
            match tokio::time::timeout(Duration::from_secs(1), tcp.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => return,
                Ok(Ok(_)) => {}
                Err(_) => {}
            }
        }
    });
    cut.await;
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(5), "cut after {elapsed:?}");
}

/// The issue's flood: 2,000 connections each holding an upload open with a
/// byte now and then. Every one is cut at the body deadline, and a client
/// that sends its request whole is served meanwhile.
#[tokio::test]
async fn two_thousand_trickled_uploads_are_all_cut() {
    let server = model_server("m", &["--decode-per-token", "1ms"]);
    let router = router(&[server.url()], &["--body-timeout", "2s"]);
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
         content-length: 100\r\n\r\n{{",
        router.addr
    );
    let mut trickling = Vec::with_capacity(2_000);
    for _ in 0..2_000 {
        let mut tcp = TcpStream::connect(router.addr).await.unwrap();
        tcp.write_all(head.as_bytes()).await.unwrap();
        trickling.push(tcp);
    }
    let served = post(
        router.addr,
        "/v1/chat/completions",
        r#"{"model":"m","max_tokens":2,"messages":[{"role":"user","content":"hi"}]}"#.into(),
    )
    .await;
    assert_eq!(served.status(), StatusCode::OK);
    // Each ends: an answer then the close, or the close.
    let mut answered = 0;
    for tcp in &mut trickling {
        let mut seen = Vec::new();
        let mut buf = [0u8; 512];
        loop {
            match within("a trickled upload's end", tcp.read(&mut buf)).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        if seen.starts_with(b"HTTP/1.1 408") {
            answered += 1;
        }
    }
    eprintln!("2,000 trickled uploads cut, {answered} with a 408 first");
}

// ===== 8. memory after a connection flood =====

#[tokio::test]
async fn memory_returns_after_a_connection_flood() {
    let server = model_server("m", &["--decode-per-token", "1ms"]);
    let router = router(&[server.url()], &[]);
    let _ = get(router.addr, "/health", None).await;
    let start = rss(&router);
    let mut connections = Vec::with_capacity(2_000);
    for _ in 0..2_000 {
        let mut tcp = TcpStream::connect(router.addr).await.unwrap();
        let head = format!("GET /health HTTP/1.1\r\nhost: {}\r\n\r\n", router.addr);
        tcp.write_all(head.as_bytes()).await.unwrap();
        connections.push(tcp);
    }
    // Each answered, so the router held all 2,000 at once.
    for tcp in &mut connections {
        let mut buf = [0u8; 256];
        let n = within("an answer", tcp.read(&mut buf)).await.unwrap();
        assert!(n > 0);
    }
    let peak = rss(&router);
    drop(connections);
    eprintln!("router RSS: {start} bytes at start, {peak} during the flood");
    let back = within("RSS back within 20 % of its start", async {
        loop {
            let now = rss(&router);
            if now * 10 <= start * 12 {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(back <= peak);
}

// ===== 9. HTTP rules =====

#[tokio::test]
async fn loose_http_is_refused() {
    let echo = Backend::start("echo").await;
    let router = router(&[format!("http://{}", echo.addr())], &[]);
    let addr = router.addr;
    let wait = Duration::from_secs(5);
    let twice = raw(
        addr,
        b"GET /health HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
        wait,
    )
    .await;
    assert!(twice.starts_with("HTTP/1.1 400"), "{twice}");
    let none = raw(addr, b"GET /health HTTP/1.1\r\n\r\n", wait).await;
    assert!(none.starts_with("HTTP/1.1 400"), "{none}");
    let connect = raw(
        addr,
        b"CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n",
        wait,
    )
    .await;
    assert!(connect.starts_with("HTTP/1.1 405"), "{connect}");
    let huge = format!(
        "GET /health HTTP/1.1\r\nhost: a\r\nx-big: {}\r\n\r\n",
        "x".repeat(100 << 10)
    );
    let answer = raw(addr, huge.as_bytes(), wait).await;
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "{}",
        &answer[..answer.len().min(80)]
    );
    assert_eq!(echo.requests(), 0, "none of these reached the backend");

    // Host and Content-Type cannot be named away; x-priority and x-tenant
    // from an untrusted client do not pass.
    let request = Request::post("/v1/chat/completions")
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .header("connection", "host, content-type")
        .header("x-priority", "9")
        .header("x-tenant", "someone-else")
        .body(Full::new(Bytes::from(chat("m", 1, false))))
        .unwrap();
    let response = send(addr, request).await;
    assert_eq!(response.status(), StatusCode::OK);
    let seen = response.headers();
    assert!(seen.contains_key("x-seen-host"));
    assert_eq!(seen["x-seen-content-type"], "application/json");
    assert!(!seen.contains_key("x-seen-x-priority"));
    assert!(!seen.contains_key("x-seen-x-tenant"));
}

// ===== 10. the admin port =====

#[tokio::test]
async fn idle_admin_connections_do_not_block_status() {
    let server = model_server("m", &["--decode-per-token", "1ms"]);
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let token_file = std::env::temp_dir().join(format!("llm_attacks_token_{}", std::process::id()));
    std::fs::write(&token_file, "s3cret\n").unwrap();
    let router = router(
        &[server.url()],
        &[
            "--admin",
            &admin.to_string(),
            "--admin-token-file",
            token_file.to_str().unwrap(),
            // Long: only closing idle connections at the cap can make room.
            "--admin-idle-timeout",
            "300s",
        ],
    );
    let _ = std::fs::remove_file(&token_file);
    // 65 keep-alive connections, each after one answered request, then
    // idle: the 65th only gets its answer once an idle one made room.
    let mut idle = Vec::new();
    for _ in 0..65 {
        let mut tcp = TcpStream::connect(admin).await.unwrap();
        let head = format!("GET /nothing HTTP/1.1\r\nhost: {admin}\r\n\r\n");
        tcp.write_all(head.as_bytes()).await.unwrap();
        let mut answer = [0u8; 12];
        within("an idle connection's answer", tcp.read_exact(&mut answer))
            .await
            .unwrap();
        assert_eq!(&answer, b"HTTP/1.1 401");
        idle.push(tcp);
    }
    let response = within(
        "/status past 65 idle connections",
        get(admin, "/status", Some("s3cret")),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let unauthorised = within("/status without the token", get(admin, "/status", None)).await;
    assert_eq!(unauthorised.status(), StatusCode::UNAUTHORIZED);
    let wrong = within(
        "/status with another token",
        get(admin, "/status", Some("guess")),
    )
    .await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    drop(idle);
    drop(router);
}
