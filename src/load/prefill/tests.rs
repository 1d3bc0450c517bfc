use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::BodyExt;
use tower::{service_fn, ServiceExt};

use super::*;
use crate::load::test_body::{channel_body, BodyError, ChannelBody};
use crate::pick::llm::{BlockConfig, PromptBlocks};

fn request() -> http::Request<()> {
    let blocks = PromptBlocks::hash(
        BlockConfig::default(),
        "m",
        ["a shared system prompt ".repeat(20)],
    );
    let mut request = http::Request::new(());
    request.extensions_mut().insert(blocks);
    request
}

#[tokio::test]
async fn the_first_frame_gives_the_reservation_back_and_the_usage_is_read() {
    let state = PrefillState::default();
    let (tx, body) = channel_body();
    let mut body = Some(body);
    let server = service_fn(move |_: http::Request<()>| {
        let body = body.take().expect("one call");
        async move {
            Ok::<_, Infallible>(
                http::Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(body)
                    .unwrap(),
            )
        }
    });
    let response = Prefill::new(server, state.clone())
        .oneshot(request())
        .await
        .unwrap();
    assert_eq!(state.stats().waiting, 1);
    assert!(state.stats().queued_tokens > 0);
    let mut body = response.into_body();
    tx.send(Ok(Bytes::from_static(
        b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n",
    )))
    .unwrap();
    body.frame().await.unwrap().unwrap();
    assert_eq!((state.stats().waiting, state.stats().queued_tokens), (0, 0));
    // The usage chunk, cut in the middle of a key and of a number.
    for part in [
        &b"data: {\"choices\":[],\"usage\":{\"prompt_to"[..],
        b"kens\": 12",
        b"0, \"completion_tokens\":3,\"prompt_tokens_details\":{\"cached_tok",
        b"ens\":64}}}\n\n",
    ] {
        tx.send(Ok(Bytes::copy_from_slice(part))).unwrap();
        body.frame().await.unwrap().unwrap();
    }
    let stats = state.stats();
    assert_eq!(stats.measured_reuse, Some(64.0 / 120.0), "{stats:?}");
}

#[tokio::test]
async fn errors_and_drops_give_the_reservation_back() {
    let state = PrefillState::default();
    // The call fails.
    let failing = service_fn(|_: http::Request<()>| async {
        Err::<http::Response<ChannelBody>, _>(BodyError)
    });
    let _ = Prefill::new(failing, state.clone())
        .oneshot(request())
        .await;
    assert_eq!(state.stats().waiting, 0);
    // The future is dropped before the answer.
    let never = service_fn(|_: http::Request<()>| {
        std::future::pending::<Result<http::Response<ChannelBody>, Infallible>>()
    });
    let mut svc = Prefill::new(never, state.clone());
    let future = tower::Service::call(&mut svc, request());
    assert_eq!(state.stats().waiting, 1);
    drop(future);
    assert_eq!(state.stats().waiting, 0);
    // The body fails, or is dropped, before its first frame.
    for fail in [true, false] {
        let (tx, body) = channel_body();
        let mut body = Some(body);
        let server = service_fn(move |_: http::Request<()>| {
            let body = body.take().expect("one call");
            async move { Ok::<_, Infallible>(http::Response::new(body)) }
        });
        let response = Prefill::new(server, state.clone())
            .oneshot(request())
            .await
            .unwrap();
        assert_eq!(state.stats().waiting, 1);
        let mut body = response.into_body();
        if fail {
            tx.send(Err(BodyError)).unwrap();
            assert!(body.frame().await.unwrap().is_err());
        } else {
            drop(body);
        }
        assert_eq!((state.stats().waiting, state.stats().queued_tokens), (0, 0));
    }
}

#[tokio::test]
async fn requests_without_a_prompt_reserve_nothing() {
    let state = PrefillState::default();
    let server = service_fn(|_: http::Request<()>| async {
        Ok::<_, Infallible>(http::Response::new(http_body_util::Empty::<Bytes>::new()))
    });
    let mut svc = Prefill::new(server, state.clone());
    let future = tower::Service::call(&mut svc, http::Request::new(()));
    assert_eq!(state.stats().waiting, 0);
    future.await.unwrap();
    assert_eq!(state.stats().sent_tokens, 0);
}

#[test]
fn usage_is_found_in_a_whole_answer_and_not_in_lookalikes() {
    let mut scan = UsageScan::default();
    assert_eq!(
        scan.feed(
            b"{\"prompt_tokens_details\":{\"cached_tokens\":32},\"prompt_tokens\":100,\"x\":1}"
        ),
        Some((100, 32))
    );
    let mut scan = UsageScan::default();
    assert_eq!(
        scan.feed(b"{\"text\":\"\\\"prompt_tokens\\\": not a number\"}"),
        None
    );
    assert_eq!(
        scan.feed(b"{\"prompt_tokens\": 99999999999999999999999}"),
        None
    );
}
