//! Mid-stream failover: `tower_lb::llm::Router` (in the test, and as
//! `examples/llm_router`) in front of `examples/model_server` processes
//! that cut their answers on purpose (`--die-after-tokens`,
//! `POST /admin/cut_streams`). A cut answer, continued on another server,
//! must equal the answer a server gives without the cut: the emulated
//! server's words are a function of the context.
//!
//! `cargo test --features llm,reports --test llm_failover` builds both
//! examples first (with the test's profile and target directory).

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use tower::ServiceExt;
use tower_lb::llm::{Builder, ResponseBody, Router, ServedBy};
use tower_lb::pick::RoundRobin;

use support::examples::send_to as send;
use support::examples::Process;
use support::within;

fn examples_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        support::examples::build(&["llm_router", "model_server"], &["llm", "reports"])
    })
}

fn model_server(extra: &[&str]) -> Process {
    let mut args = vec!["--listen", "127.0.0.1:0"];
    if !extra.contains(&"--decode-per-token") {
        args.extend(["--decode-per-token", "2ms"]);
    }
    args.extend_from_slice(extra);
    Process::start(examples_dir(), "model_server", &args)
}

/// A router over `servers`, round robin (so which server a request meets
/// first does not depend on chance), `failovers` a request.
async fn router(servers: &[&Process], failovers: u32) -> Router {
    let mut builder = Builder::new()
        .picker(RoundRobin::new())
        .failovers(failovers);
    for server in servers {
        builder = builder.server(&server.url());
    }
    let router = builder.build().unwrap();
    router
        .balance()
        .wait_for(|keys| keys.len() == servers.len())
        .await;
    router
}

#[derive(Clone, Copy, Debug)]
enum Api {
    Chat,
    Completions,
}

impl Api {
    fn path(self) -> &'static str {
        match self {
            Api::Chat => "/v1/chat/completions",
            Api::Completions => "/v1/completions",
        }
    }

    fn request(self, what: &str, tokens: u32, stream: bool) -> Value {
        let mut body = match self {
            Api::Chat => json!({"messages": [
                {"role": "system", "content": "Answer in four-letter words."},
                {"role": "user", "content": what}]}),
            Api::Completions => json!({"prompt": format!("Once upon a time, {what}")}),
        };
        body["max_tokens"] = tokens.into();
        body["stream"] = stream.into();
        if stream {
            body["stream_options"] = json!({"include_usage": true});
        }
        body
    }

    /// The text of one streamed chunk or of a whole answer's choice.
    fn text(self, choice: &Value) -> Option<&str> {
        match self {
            Api::Chat => choice["delta"]["content"]
                .as_str()
                .or(choice["message"]["content"].as_str()),
            Api::Completions => choice["text"].as_str(),
        }
    }
}

fn request(api: Api, body: &Value, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut request = Request::post(api.path())
        .header("host", "router")
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// A streamed answer as a client reads it.
#[derive(Debug)]
struct Stream {
    /// Each event's data, parsed (`[DONE]` as the string).
    events: Vec<Value>,
    /// The body ended with an error instead of its end of stream.
    broken: bool,
}

impl Stream {
    fn chunks(&self) -> impl Iterator<Item = &Value> {
        self.events.iter().filter(|e| e.is_object())
    }

    /// Each event's text, in order.
    fn texts(&self, api: Api) -> Vec<String> {
        self.chunks()
            .filter_map(|e| e["choices"].get(0))
            .filter_map(|c| api.text(c))
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect()
    }

    fn finals(&self) -> usize {
        self.chunks()
            .filter_map(|e| e["choices"].get(0))
            .filter(|c| !c["finish_reason"].is_null())
            .count()
    }

    fn dones(&self) -> usize {
        self.events.iter().filter(|e| *e == "[DONE]").count()
    }

    fn usage(&self) -> Option<&Value> {
        self.chunks()
            .find_map(|e| e.get("usage").filter(|u| !u.is_null()))
    }

    fn error(&self) -> Option<&Value> {
        self.chunks().find_map(|e| e.get("error"))
    }

    /// The checks every answer passes, spliced or not: one id, one
    /// `created`, one model; nothing after `[DONE]`.
    fn assert_whole(&self, api: Api) {
        let field = |key: &str| {
            let mut values: Vec<&Value> = self.chunks().filter_map(|e| e.get(key)).collect();
            values.dedup();
            values.len()
        };
        assert!(
            field("id") == 1 && field("created") == 1 && field("model") == 1,
            "{api:?}: {:#?}",
            self.events
        );
        assert_eq!(self.finals(), 1, "{api:?}: {:#?}", self.events);
        assert_eq!(self.dones(), 1);
        assert_eq!(self.events.last().unwrap(), "[DONE]");
        assert!(!self.broken);
    }
}

async fn read_stream<B>(mut body: B) -> Stream
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    let mut bytes = Vec::new();
    let mut broken = false;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => bytes.extend_from_slice(&frame.into_data().unwrap_or_default()),
            Err(_) => {
                broken = true;
                break;
            }
        }
    }
    let text = String::from_utf8(bytes).unwrap();
    let events = text
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let data = e.trim().strip_prefix("data: ").unwrap_or(e).to_owned();
            serde_json::from_str(&data).unwrap_or(Value::String(data))
        })
        .collect();
    Stream { events, broken }
}

/// Sends `body` through `router` and reads the stream to its end.
async fn stream_through(
    router: &Router,
    api: Api,
    body: &Value,
    headers: &[(&str, &str)],
) -> Stream {
    let response: http::Response<ResponseBody> = router
        .clone()
        .oneshot(request(api, body, headers))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    within("the stream's end", read_stream(response.into_body())).await
}

/// The answer a server gives without a cut.
async fn uninterrupted(server: &Process, api: Api, body: &Value) -> Stream {
    let response = send(server.addr, request(api, body, &[])).await;
    assert_eq!(response.status(), StatusCode::OK);
    let stream = within("the reference", read_stream(response.into_body())).await;
    stream.assert_whole(api);
    stream
}

async fn post_json(addr: SocketAddr, path: &str) -> Value {
    support::examples::json_of(addr, http::Method::POST, path).await
}

async fn stats(server: &Process) -> Value {
    support::examples::json_of(server.addr, http::Method::GET, "/stats").await
}

#[tokio::test]
async fn a_stream_cut_at_token_k_is_continued_into_the_uninterrupted_answer() {
    // Both servers cut every answer after 3 tokens; an answer of 8 is cut
    // after 3, its continuation (5 left) after 3 more, and the last
    // continuation (2 left) ends. Whichever server comes first.
    let a = model_server(&["--die-after-tokens", "3"]);
    let b = model_server(&["--die-after-tokens", "3"]);
    let reference = model_server(&[]);
    let router = router(&[&a, &b], 2).await;
    for api in [Api::Chat, Api::Completions] {
        let body = api.request("name a colour", 8, true);
        let expected = uninterrupted(&reference, api, &body).await;
        let spliced = stream_through(&router, api, &body, &[]).await;
        spliced.assert_whole(api);
        assert_eq!(spliced.texts(api), expected.texts(api), "{api:?}");
        assert_eq!(spliced.texts(api).len(), 8);
        let (usage, expected_usage) = (spliced.usage().unwrap(), expected.usage().unwrap());
        for key in ["prompt_tokens", "completion_tokens", "total_tokens"] {
            assert_eq!(usage[key], expected_usage[key], "{api:?} {key}: {usage}");
        }
        if let Api::Chat = api {
            // The role comes once, in the first delta.
            let roles = spliced
                .chunks()
                .filter(|e| !e["choices"][0]["delta"]["role"].is_null())
                .count();
            assert_eq!(roles, 1);
        }
    }
    let stats = router.failover_stats();
    assert_eq!(stats.continued, 4, "{stats:?}");
    assert_eq!(
        (stats.exhausted, stats.not_continued, stats.failed),
        (0, 0, 0)
    );
}

#[tokio::test]
async fn a_whole_answer_cut_mid_body_is_asked_again() {
    // Round robin: of two requests in a row, one meets `a` first.
    let a = model_server(&["--die-after-tokens", "3"]);
    let b = model_server(&[]);
    let router = router(&[&a, &b], 1).await;
    for api in [Api::Chat, Api::Completions] {
        let body = api.request("count to six", 6, false);
        let expected = send(b.addr, request(api, &body, &[]))
            .await
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes();
        let expected: Value = serde_json::from_slice(&expected).unwrap();
        for _ in 0..2 {
            let response = router
                .clone()
                .oneshot(request(api, &body, &[]))
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let whole = within("the whole answer", response.into_body().collect())
                .await
                .unwrap()
                .to_bytes();
            let whole: Value = serde_json::from_slice(&whole).unwrap();
            assert_eq!(
                api.text(&whole["choices"][0]),
                api.text(&expected["choices"][0])
            );
            assert_eq!(whole["usage"]["completion_tokens"], 6);
        }
    }
    assert!(router.failover_stats().retried_whole >= 2);
}

#[tokio::test]
async fn failover_off_by_request_or_by_config_ends_with_an_error_event() {
    let a = model_server(&["--die-after-tokens", "3"]);
    let b = model_server(&["--die-after-tokens", "3"]);
    let reference = model_server(&[]);
    let on = router(&[&a, &b], 1).await;
    let off = router(&[&a, &b], 0).await;
    for api in [Api::Chat, Api::Completions] {
        let body = api.request("say no", 8, true);
        let expected = uninterrupted(&reference, api, &body).await.texts(api);
        for (router, headers) in [(&on, &[("x-failover", "off")][..]), (&off, &[][..])] {
            let cut = stream_through(router, api, &body, headers).await;
            assert_eq!(cut.texts(api), expected[..3], "{api:?}");
            let error = cut.error().expect("an error event");
            assert_eq!(error["code"], "stream_cut");
            assert_eq!(error["type"], "server_error");
            assert_eq!(cut.events.last().unwrap().get("error"), Some(error));
            assert_eq!((cut.finals(), cut.dones(), cut.broken), (0, 0, false));
        }
        // Not continuable: two choices asked for.
        let mut two = body.clone();
        two["n"] = 2.into();
        let cut = stream_through(&on, api, &two, &[]).await;
        assert_eq!(cut.texts(api), expected[..3], "{api:?}");
        assert_eq!(cut.error().unwrap()["code"], "stream_cut");
        // Exhausted: one failover, cut again; a request cannot ask for more
        // than the router allows.
        let cut = stream_through(&on, api, &body, &[("x-failover", "100")]).await;
        assert_eq!(cut.texts(api), expected[..6], "{api:?}");
        assert_eq!(cut.error().unwrap()["code"], "stream_cut");
        assert_eq!((cut.finals(), cut.dones(), cut.broken), (0, 0, false));
    }
    assert_eq!(on.failover_stats().not_continued, 4);
    assert_eq!(on.failover_stats().exhausted, 2);
    assert_eq!(on.failover_stats().continued, 2);
    assert_eq!(off.failover_stats().not_continued, 2);
    // Legs that reached a server, per route: one with failover off by
    // request, one not continuable, two when exhausted, one with failover
    // off by config.
    let requests = |s: &Value| s["requests"].as_u64().unwrap();
    let sent = requests(&stats(&a).await) + requests(&stats(&b).await);
    assert_eq!(sent, 2 * (1 + 1 + 2 + 1));
}

#[tokio::test]
async fn the_kill_switch_cuts_streams_in_flight_and_every_answer_still_completes() {
    // Three servers, six streamed chats in flight; each server cuts every
    // stream it holds, one server after the other, each time once every
    // stream has delivered more. Three failovers a request: enough for a
    // stream cut on every server.
    let servers: Vec<Process> = (0..3)
        .map(|_| model_server(&["--decode-per-token", "20ms"]))
        .collect();
    let reference = model_server(&[]);
    let router = router(&servers.iter().collect::<Vec<_>>(), 3).await;
    let api = Api::Chat;
    let bodies: Vec<Value> = (0..6)
        .map(|i| api.request(&format!("tell story {i}"), 60, true))
        .collect();
    let mut expected = Vec::new();
    for body in &bodies {
        expected.push(uninterrupted(&reference, api, body).await.texts(api));
    }
    // Each stream tells the test when it delivers; the channel closes when
    // every stream has ended, so a stream that ends early cannot hang it.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let mut tasks = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        let response = router
            .clone()
            .oneshot(request(api, body, &[]))
            .await
            .unwrap();
        assert!(response.extensions().get::<ServedBy>().is_some());
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut body = response.into_body();
            let mut bytes = Vec::new();
            while let Some(frame) = body.frame().await {
                let data = frame.unwrap().into_data().unwrap_or_default();
                bytes.extend_from_slice(&data);
                // Tells the test each time this stream delivers.
                let _ = tx.send(i);
            }
            read_stream(Full::new(Bytes::from(bytes))).await
        }));
    }
    drop(tx);
    for server in &servers {
        // Wait until every stream has delivered since the last cut.
        let mut seen = [false; 6];
        while !seen.iter().all(|s| *s) {
            match within("every stream delivers", rx.recv()).await {
                Some(i) => seen[i] = true,
                None => break,
            }
        }
        let cut = post_json(server.addr, "/admin/cut_streams").await;
        assert!(cut["cut"].as_u64().is_some(), "{cut}");
    }
    for (i, task) in tasks.into_iter().enumerate() {
        let stream = within("a spliced answer", task).await.unwrap();
        stream.assert_whole(api);
        assert_eq!(stream.texts(api), expected[i], "stream {i}");
        let usage = stream.usage().unwrap();
        assert_eq!(usage["completion_tokens"], 60);
    }
    let stats = router.failover_stats();
    assert!(stats.continued >= 1, "{stats:?}");
    assert_eq!(
        (stats.exhausted, stats.not_continued, stats.failed),
        (0, 0, 0)
    );
}

#[tokio::test]
async fn a_server_that_sends_garbage_is_not_continued_elsewhere() {
    // A server whose stream is not JSON, then cut: its text cannot be
    // trusted, so the answer ends with an error event and the healthy
    // server gets no continuation.
    let garbage = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let garbage_addr = garbage.local_addr().unwrap();
    let app = axum::Router::new().fallback(|| async {
        use futures_util::StreamExt;
        let events = futures_util::stream::iter([
            Ok(Bytes::from_static(
                b"data: {\"choices\": [{\"index\": 0, \"delta\": {\"content\": \" x\"}}]}\n\n",
            )),
            Ok(Bytes::from_static(b"data: not json at all\n\n")),
        ]);
        // Pending once before the cut, so the events before it are sent.
        let cut = futures_util::stream::once(async {
            tokio::task::yield_now().await;
            Err(std::io::Error::other("gone"))
        });
        let parts = events.chain(cut);
        http::Response::builder()
            .header("content-type", "text/event-stream")
            .body(axum::body::Body::from_stream(parts))
            .unwrap()
    });
    tokio::spawn(async move { axum::serve(garbage, app).await.unwrap() });
    let healthy = model_server(&[]);
    let router = Builder::new()
        .picker(RoundRobin::new())
        .server(&format!("http://{garbage_addr}"))
        .server(&healthy.url())
        .build()
        .unwrap();
    router.balance().wait_for(|keys| keys.len() == 2).await;
    let api = Api::Chat;
    let body = api.request("hello", 4, true);
    let mut outcomes = Vec::new();
    for _ in 0..2 {
        let stream = stream_through(&router, api, &body, &[]).await;
        outcomes.push(stream.error().is_some());
        if let Some(error) = stream.error() {
            assert_eq!(error["code"], "stream_cut");
            assert!(!stream.broken);
        } else {
            stream.assert_whole(api);
        }
    }
    outcomes.sort();
    assert_eq!(outcomes, [false, true], "{:?}", router.failover_stats());
    assert_eq!(stats(&healthy).await["requests"], 1);
    assert_eq!(router.failover_stats().not_continued, 1);
}

// ===== the command line =====

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn router_process(backends: &[&Process], extra: &[&str]) -> (Process, SocketAddr) {
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut args: Vec<String> = vec!["--listen".into(), "127.0.0.1:0".into()];
    for backend in backends {
        args.extend(["--backend".into(), backend.url()]);
    }
    args.extend(["--admin".into(), admin.to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    (Process::start(examples_dir(), "llm_router", &args), admin)
}

async fn failovers_in_metrics(admin: SocketAddr, outcome: &str) -> f64 {
    let text = support::examples::text_of(admin, http::Method::GET, "/metrics").await;
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
    scrape
        .samples
        .iter()
        .filter(|s| {
            s.metric == "llm_router_failovers_total" && s.labels.get("outcome") == Some(outcome)
        })
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[tokio::test]
async fn the_router_counts_failovers_in_metrics_and_the_flag_turns_them_off() {
    let a = model_server(&["--die-after-tokens", "3"]);
    let b = model_server(&["--die-after-tokens", "3"]);
    let reference = model_server(&[]);
    let api = Api::Completions;
    let body = api.request("the end", 6, true);
    let expected = uninterrupted(&reference, api, &body).await.texts(api);
    let (on, on_admin) = router_process(&[&a, &b], &[]);
    let (off, off_admin) = router_process(&[&a, &b], &["--failovers", "0"]);
    let through = |addr: SocketAddr| {
        let request = request(api, &body, &[]);
        async move {
            let response = send(addr, request).await;
            assert_eq!(response.status(), StatusCode::OK);
            within("the stream", read_stream(response.into_body())).await
        }
    };
    let spliced = through(on.addr).await;
    spliced.assert_whole(api);
    assert_eq!(spliced.texts(api), expected);
    assert_eq!(
        failovers_in_metrics(on_admin, "continued").await,
        1.0,
        "{:?}",
        spliced.events
    );
    let cut = through(off.addr).await;
    assert_eq!(cut.texts(api), expected[..3]);
    assert_eq!(cut.error().unwrap()["code"], "stream_cut");
    assert_eq!(failovers_in_metrics(off_admin, "not_continued").await, 1.0);
    assert_eq!(failovers_in_metrics(off_admin, "continued").await, 0.0);
    // /status counts them too.
    let status = support::examples::json_of(on_admin, http::Method::GET, "/status").await;
    assert_eq!(status["failover"]["continued"], 1, "{status}");
}

#[tokio::test]
async fn a_stream_silent_past_the_idle_limit_is_continued_elsewhere() {
    // A server that sends one token and then nothing: past the router's
    // idle limit its stream counts as cut and is continued on the other.
    let stalled = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stalled_addr = stalled.local_addr().unwrap();
    let app = axum::Router::new().fallback(|| async {
        use futures_util::StreamExt;
        let first = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(
            b"data: {\"id\": \"s\", \"created\": 1, \"model\": \"m\", \"choices\": [{\"index\": 0, \"delta\": {\"role\": \"assistant\", \"content\": \" xyz\"}, \"finish_reason\": null}]}\n\n",
        ))]);
        let parts = first.chain(futures_util::stream::pending());
        http::Response::builder()
            .header("content-type", "text/event-stream")
            .body(axum::body::Body::from_stream(parts))
            .unwrap()
    });
    tokio::spawn(async move { axum::serve(stalled, app).await.unwrap() });
    let healthy = model_server(&[]);
    let router = Builder::new()
        .picker(RoundRobin::new())
        .stream_idle_timeout(Some(std::time::Duration::from_millis(300)))
        .server(&format!("http://{stalled_addr}"))
        .server(&healthy.url())
        .build()
        .unwrap();
    router.balance().wait_for(|keys| keys.len() == 2).await;
    let api = Api::Chat;
    let body = api.request("wait for it", 5, true);
    // What the healthy server says after " xyz".
    let mut rest = body.clone();
    rest["messages"]
        .as_array_mut()
        .unwrap()
        .push(json!({"role": "assistant", "content": " xyz"}));
    rest["continue_final_message"] = true.into();
    rest["add_generation_prompt"] = false.into();
    rest["max_tokens"] = 4.into();
    let mut expected = vec![" xyz".to_owned()];
    expected.extend(uninterrupted(&healthy, api, &rest).await.texts(api));
    let mut continued = 0u64;
    for _ in 0..2 {
        let stream = stream_through(&router, api, &body, &[]).await;
        stream.assert_whole(api);
        if stream.chunks().next().unwrap()["id"] == "s" {
            continued += 1;
            assert_eq!(stream.texts(api), expected);
        }
    }
    // Round robin: of two requests, one at least meets the stalled server.
    assert!(continued >= 1);
    assert_eq!(router.failover_stats().continued, continued);
}

#[tokio::test]
async fn a_request_whose_server_hangs_up_before_answering_is_sent_elsewhere() {
    // A server that reads the request and closes the connection without a
    // word: the retry layer does not resend a POST that reached a server;
    // failover does, once.
    let dropper = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dropper_addr = dropper.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        loop {
            let Ok((mut tcp, _)) = dropper.accept().await else {
                return;
            };
            let mut buffer = [0u8; 4096];
            let _ = tcp.read(&mut buffer).await;
        }
    });
    let healthy = model_server(&[]);
    let router = Builder::new()
        .picker(RoundRobin::new())
        .server(&format!("http://{dropper_addr}"))
        .server(&healthy.url())
        .build()
        .unwrap();
    router.balance().wait_for(|keys| keys.len() == 2).await;
    for (api, stream) in [(Api::Chat, true), (Api::Completions, false)] {
        let body = api.request("answer me", 4, stream);
        for _ in 0..2 {
            let response = router
                .clone()
                .oneshot(request(api, &body, &[]))
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{api:?}");
            let bytes = within("the answer", response.into_body().collect())
                .await
                .unwrap()
                .to_bytes();
            if stream {
                read_stream(Full::new(bytes)).await.assert_whole(api);
            } else {
                let whole: Value = serde_json::from_slice(&bytes).unwrap();
                assert_eq!(whole["usage"]["completion_tokens"], 4);
            }
        }
    }
    assert!(router.failover_stats().resent >= 2);
}
