use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{service_fn, Layer, ServiceExt};

use super::*;
use crate::pick::llm::{PromptBlocks, RequestInfo};

/// What the inner service saw: the body, the model, the number of blocks.
async fn seen(
    layer: AddRequestInfoLayer,
    request: Request<Full<Bytes>>,
) -> Result<(Bytes, Option<String>, Option<usize>), BoxError> {
    let service = layer.layer(service_fn(
        |request: Request<PromptBody<Full<Bytes>>>| async move {
            let facts = request.extensions().get::<RequestInfo>().cloned();
            let blocks = request
                .extensions()
                .get::<PromptBlocks>()
                .map(PromptBlocks::len);
            let body = request.into_body().collect().await.unwrap().to_bytes();
            let model = facts.and_then(|f| f.model.map(String::from));
            Ok::<_, Infallible>(Response::new((body, model, blocks)))
        },
    ));
    Ok(service.oneshot(request).await?.into_body().into_inner())
}

fn json(body: &str) -> Request<Full<Bytes>> {
    Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

#[tokio::test]
async fn chat_messages_become_facts_and_the_body_passes_unchanged() {
    let system = "s".repeat(300);
    let body = format!(
        r#"{{"model":"llama","stream":true,"messages":[{{"role":"system","content":"{system}"}},{{"role":"user","content":[{{"type":"text","text":"hi"}}]}}]}}"#
    );
    let (forwarded, model, blocks) = seen(AddRequestInfoLayer::new(), json(&body)).await.unwrap();
    assert_eq!(forwarded, body.as_bytes());
    assert_eq!(model.as_deref(), Some("llama"));
    assert_eq!(blocks, Some(4));
}

#[tokio::test]
async fn roles_are_part_of_the_prompt() {
    let config = crate::pick::llm::BlockConfig::default();
    let text = "t".repeat(200);
    let as_role = |role: &str| {
        let body = serde_json::json!({"messages": [{"role": role, "content": text}]});
        parse::facts(&body, config).1.unwrap()
    };
    assert_ne!(as_role("system").hashes()[0], as_role("user").hashes()[0]);
}

#[tokio::test]
async fn malformed_json_is_refused_with_400_and_a_clear_message() {
    let error = seen(
        AddRequestInfoLayer::new(),
        json(r#"{"model": "llama", "prompt": "#),
    )
    .await
    .unwrap_err();
    let error = error.downcast_ref::<RequestInfoError>().unwrap();
    assert_eq!(error.status(), StatusCode::BAD_REQUEST);
    assert!(
        error.to_string().contains("not valid JSON") && error.to_string().contains("column"),
        "{error}"
    );
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_413() {
    let big = format!(r#"{{"prompt":"{}"}}"#, "x".repeat(2000));
    let layer = AddRequestInfoLayer::new().max_body(1000);
    // Declared by content-length, refused before reading.
    let mut request = json(&big);
    request
        .headers_mut()
        .insert("content-length", big.len().into());
    let error = seen(layer.clone(), request).await.unwrap_err();
    assert_eq!(
        error.downcast_ref::<RequestInfoError>().unwrap().status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // Found while reading.
    let error = seen(layer, json(&big)).await.unwrap_err();
    assert_eq!(
        error.downcast_ref::<RequestInfoError>().unwrap().status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
}

#[tokio::test]
async fn bodies_that_are_not_json_are_routed_without_facts() {
    let request = Request::post("/upload")
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from_static(b"{ not json")))
        .unwrap();
    let (forwarded, model, blocks) = seen(AddRequestInfoLayer::new(), request).await.unwrap();
    assert_eq!(
        (&forwarded[..], model, blocks),
        (&b"{ not json"[..], None, None)
    );
    // No content-type and not JSON: the same.
    let request = Request::post("/x")
        .body(Full::new(Bytes::from_static(b"plain")))
        .unwrap();
    let (forwarded, _, blocks) = seen(AddRequestInfoLayer::new(), request).await.unwrap();
    assert_eq!((&forwarded[..], blocks), (&b"plain"[..], None));
}

#[tokio::test]
async fn the_model_header_fills_in_for_a_body_without_one() {
    let mut request = json(r#"{"input":"embed me"}"#);
    request
        .headers_mut()
        .insert("x-model", "bge".parse().unwrap());
    let (_, model, blocks) = seen(AddRequestInfoLayer::new(), request).await.unwrap();
    assert_eq!((model.as_deref(), blocks), (Some("bge"), None));
}

mod no_panics {
    use proptest::prelude::*;

    use super::super::future::request;
    use super::super::Settings;
    use crate::pick::llm::BlockConfig;

    fn parts() -> http::request::Parts {
        http::Request::new(()).into_parts().0
    }

    fn settings(blocks: BlockConfig, json: bool, strict: bool) -> Settings {
        Settings {
            blocks,
            json,
            ask_usage: json,
            strict,
            per_token: Some(std::time::Duration::from_millis(1)),
        }
    }

    proptest! {
        /// Whatever the body, reading it ends in a request or an error.
        #[test]
        fn any_bytes(body in proptest::collection::vec(any::<u8>(), 0..512), json: bool) {
            let _ = request::<()>(parts(), body.into(), settings(BlockConfig::default(), json, json));
        }

        /// JSON of any shape under the known keys, and any block settings.
        #[test]
        fn any_shape(
            text in "[\\[\\]{}\",:a-z0-9 ]{0,200}",
            block_size in 0usize..100,
            max_blocks in 0usize..10,
        ) {
            let config = BlockConfig { block_size, max_blocks };
            for key in ["prompt", "messages", "model"] {
                let body = format!("{{\"{key}\": {text}}}");
                let _ = request::<()>(parts(), body.clone().into(), settings(config, true, false));
                let _ = request::<()>(parts(), body.into(), settings(config, true, true));
            }
        }
    }
}
