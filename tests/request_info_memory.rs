//! Reading a request body for routing costs memory in proportion to the
//! body, not to the number of values in it: one 1 MiB JSON array of small
//! entries once cost about 30 MB as a tree of values.

mod support;

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower::{service_fn, Layer, ServiceExt};
use tower_lb::http::{AddRequestInfoLayer, PromptBody};
use tower_lb::pick::llm::PromptBlocks;

use support::alloc::{peak, reset_peak, Counting};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The most bytes held at once, beyond what was held before, while the
/// layer reads `body` and the inner service reads the request.
async fn peak_while_reading(body: Vec<u8>) -> (usize, bool) {
    let layer = AddRequestInfoLayer::new()
        .max_body(2 << 20)
        .ask_for_usage(true);
    let service = layer.layer(service_fn(
        |request: Request<PromptBody<Full<Bytes>>>| async move {
            let blocks = request.extensions().get::<PromptBlocks>().is_some();
            let body = request.into_body().collect().await.unwrap().to_bytes();
            drop(body);
            let answer = Response::builder()
                .header("x-blocks", if blocks { "yes" } else { "no" })
                .body(Full::new(Bytes::new()))
                .unwrap();
            Ok::<_, Infallible>(answer)
        },
    ));
    let request = Request::post("/v1/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let before = support::alloc::allocated();
    reset_peak();
    let answer = service.oneshot(request).await.unwrap();
    (
        peak().saturating_sub(before),
        answer.headers()["x-blocks"] == "yes",
    )
}

/// `{"model":"m","stream":true,"prompt":[1,1,1,…]}` (or a `messages` array
/// of empty objects) of about `size` bytes.
fn many_small_values(size: usize, messages: bool) -> Vec<u8> {
    let (field, entry) = if messages {
        ("messages", "{},")
    } else {
        ("prompt", "1,")
    };
    let mut body = format!(r#"{{"model":"m","stream":true,"{field}":["#).into_bytes();
    while body.len() + entry.len() < size {
        body.extend_from_slice(entry.as_bytes());
    }
    body.pop();
    body.extend_from_slice(b"]}");
    body
}

#[tokio::test(flavor = "current_thread")]
async fn one_mebibyte_of_small_values_costs_a_few_mebibytes() {
    const MIB: usize = 1 << 20;
    for messages in [false, true] {
        let body = many_small_values(MIB, messages);
        let len = body.len();
        // What a tree of values costs, for comparison.
        let before = support::alloc::allocated();
        reset_peak();
        let tree: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let tree_held = peak().saturating_sub(before);
        drop(tree);
        let (held, _) = peak_while_reading(body).await;
        eprintln!("messages: {messages}: a {len}-byte body: read with {held} bytes at most; a tree of it: {tree_held}");
        assert!(held * 4 < tree_held, "{held} against a tree's {tree_held}");
        // The body itself (given, then collected, then rewritten once to
        // ask for the usage) and nothing per value.
        assert!(
            held < 5 * len,
            "messages: {messages}: {held} bytes held for a {len}-byte body"
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_large_chat_prompt_is_still_read() {
    let text = "tides ".repeat(100_000);
    let body = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{text}"}}]}}"#);
    let (held, blocks) = peak_while_reading(body.into_bytes()).await;
    assert!(blocks);
    assert!(held < 5 * 600_000 + (1 << 20), "{held}");
}

/// The whole LLM gateway (`llm::Router`, failover on) reading one such body
/// on its way to a server: the server's answer is tiny, so what is held is
/// the body's copies, not a tree of it.
#[tokio::test(flavor = "current_thread")]
async fn the_llm_router_reads_a_large_body_without_a_tree() {
    use tower_lb::llm::Builder;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(|| async {
        (
            [("content-type", "application/json")],
            r#"{"id":"cmpl-1","object":"text_completion","created":1,"model":"m","choices":[{"index":0,"text":"x","finish_reason":"stop"}]}"#,
        )
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let url = format!("http://{server}");
    let llm = Builder::new()
        .servers([url.as_str()])
        .max_body(2 << 20)
        .build()
        .unwrap();
    llm.balance().wait_for(|keys| keys.len() == 1).await;
    let send = |body: Vec<u8>| {
        let request = Request::post("/v1/completions")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        llm.clone().oneshot(request)
    };
    // A first request, so that connections and buffers are in place.
    let warm = send(br#"{"model":"m","prompt":"hi"}"#.to_vec())
        .await
        .unwrap();
    assert_eq!(warm.status(), http::StatusCode::OK);
    let _ = warm.into_body().collect().await.unwrap();

    let mut body = br#"{"model":"m","prompt":["#.to_vec();
    while body.len() < 1 << 20 {
        body.extend_from_slice(b"1,");
    }
    body.pop();
    body.extend_from_slice(b"]}");
    let len = body.len();
    let before = support::alloc::allocated();
    reset_peak();
    let answer = send(body).await.unwrap();
    assert_eq!(answer.status(), http::StatusCode::OK);
    let _ = answer.into_body().collect().await.unwrap();
    let held = peak().saturating_sub(before);
    eprintln!("llm::Router: a {len}-byte body read with {held} bytes at most");
    // Copies of the body (the client's, the router's, the server's read)
    // and nothing per value (a tree: about 16 times the body).
    assert!(held < 6 * len, "{held} bytes held for a {len}-byte body");
}
