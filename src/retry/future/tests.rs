use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tower::{Layer, ServiceExt};

use super::*;
use crate::balance::TriedEndpoints;
use crate::retry::RetryLayer;

type Chunks =
    StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, BoxError>>>>;

/// What each attempt received: its body and its trailers.
type Seen = Arc<Mutex<Vec<(Bytes, Option<HeaderMap>)>>>;

fn stream(frames: Vec<Result<Frame<Bytes>, BoxError>>) -> Chunks {
    StreamBody::new(futures_util::stream::iter(frames))
}

/// An inner service that answers 503 to every attempt and records what
/// each one received: body bytes and trailers.
fn recording(
    seen: Seen,
) -> impl Service<
    Request<ReplayBody<Chunks>>,
    Response = Response<()>,
    Error = BoxError,
    Future = impl Send,
> + Clone {
    tower::service_fn(move |req: Request<ReplayBody<Chunks>>| {
        let seen = Arc::clone(&seen);
        async move {
            assert!(req.extensions().get::<TriedEndpoints>().is_some());
            let collected = req.into_body().collect().await?;
            let trailers = collected.trailers().cloned();
            seen.lock().unwrap().push((collected.to_bytes(), trailers));
            let mut response = Response::new(());
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            Ok::<_, BoxError>(response)
        }
    })
}

#[tokio::test(start_paused = true)]
async fn chunks_and_trailers_are_replayed() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let layer = RetryLayer::new(crate::retry::RetryPolicy::new().max_attempts(2))
        .buffer_unknown_length(true);
    let svc = layer.layer(recording(Arc::clone(&seen)));
    let mut trailers = HeaderMap::new();
    trailers.insert("digest", "abc".parse().unwrap());
    let body = stream(vec![
        Ok(Frame::data(Bytes::from("ab"))),
        Ok(Frame::data(Bytes::from("cd"))),
        Ok(Frame::trailers(trailers.clone())),
    ]);
    let response = svc
        .oneshot(Request::get("/").body(body).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    for (bytes, got) in seen.iter() {
        assert_eq!(bytes, "abcd");
        assert_eq!(got.as_ref(), Some(&trailers));
    }
}

#[tokio::test]
async fn a_body_error_while_buffering_fails_the_call_unsent() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let layer = RetryLayer::new(crate::retry::RetryPolicy::new()).buffer_unknown_length(true);
    let svc = layer.layer(recording(Arc::clone(&seen)));
    let body = stream(vec![
        Ok(Frame::data(Bytes::from("ab"))),
        Err("disk gone".into()),
    ]);
    let error = svc
        .oneshot(Request::get("/").body(body).unwrap())
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "disk gone");
    assert!(seen.lock().unwrap().is_empty(), "nothing was sent");
}
