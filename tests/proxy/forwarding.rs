//! What reaches the backend and what comes back: headers and streamed bodies.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::task::block_in_place;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_streams_bodies_and_rewrites_headers() {
    let backend = Backend::start("only").await;
    let proxy = block_in_place(|| Proxy::start(&["--backend", &backend.addr().to_string()]));
    let client = client();

    // Headers: X-Forwarded-For appended, Host kept, hop-by-hop dropped
    // (with the header that Connection names).
    let request = Request::post(proxy.url("/echo"))
        .header("host", "api.example")
        .header("x-forwarded-for", "203.0.113.7")
        .header("connection", "x-secret")
        .header("x-secret", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic eA==")
        .body(Full::new(Bytes::from_static(b"small body")))
        .unwrap();
    let answer = send(&client, request).await.expect("an answer");
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "small body");
    assert_eq!(
        answer.headers["x-seen-x-forwarded-for"],
        "203.0.113.7, 127.0.0.1"
    );
    assert_eq!(answer.headers["x-seen-host"], "api.example");
    let hop: Vec<&str> = [
        "connection",
        "keep-alive",
        "proxy-authorization",
        "x-secret",
        "te",
    ]
    .into_iter()
    .filter(|name| answer.headers.contains_key(format!("x-seen-{name}")))
    .collect();
    assert_eq!(
        hop,
        [] as [&str; 0],
        "hop-by-hop headers reached the backend"
    );

    // A large upload of unknown length streams through and back.
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    let frames = (0..32)
        .map(move |_| Ok::<_, std::convert::Infallible>(http_body::Frame::data(chunk.clone())));
    let upload = StreamBody::new(futures_util::stream::iter(frames));
    let streaming = Client::builder(TokioExecutor::new()).build_http();
    let response = streaming
        .request(Request::post(proxy.url("/echo")).body(upload).unwrap())
        .await
        .expect("an answer");
    assert_eq!(response.status(), StatusCode::OK);
    let echoed = response
        .into_body()
        .collect()
        .await
        .expect("the body")
        .to_bytes();
    assert_eq!(echoed.len(), 32 * 64 * 1024);
    assert!(echoed.iter().all(|&b| b == b'x'));

    // The answer streams: its first frame arrives while the backend holds
    // back the rest.
    backend.frames().release(1);
    let response = client
        .request(
            Request::get(proxy.url("/stream/3"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .expect("an answer");
    let mut body = response.into_body();
    let first = within("the first frame, before the backend finishes", body.frame())
        .await
        .expect("a frame")
        .expect("no error");
    assert_eq!(first.into_data().unwrap(), "only:0\n");
    backend.frames().open();
    let rest = body.collect().await.expect("the rest").to_bytes();
    assert_eq!(rest, "only:1\nonly:2\n");
}
