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
