//! Classified and gRPC retries: the decisions, and how a gRPC call's body
//! is read for replay.

use std::io;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tower::retry::Policy;
use tower::{Layer, ServiceExt};
use tower_http::classify::{GrpcErrorsAsFailures, ServerErrorsAsFailures};

use super::{GrpcCode, ReplayBody, RetryLayer, RetryNonIdempotent, RetryPolicy};
use crate::balance::TriedEndpoints;
use crate::error::BoxError;
use crate::load::test_body::{channel_body, ChannelBody};

type Req = Request<ReplayBody<String>>;

fn req(method: &str) -> Req {
    let body = ReplayBody::replay(Bytes::from("x"), None);
    Request::builder().method(method).body(body).unwrap()
}

fn answer(status: u16, grpc_status: Option<&str>) -> Result<Response<()>, BoxError> {
    let mut builder = Response::builder().status(status);
    if let Some(code) = grpc_status {
        builder = builder.header("grpc-status", code);
    }
    Ok(builder.body(()).unwrap())
}

fn grpc(code: &str) -> Result<Response<()>, BoxError> {
    answer(200, Some(code))
}

/// Whether a fresh request's first failure would be retried.
fn retries(policy: &RetryPolicy, mut req: Req, mut result: Result<Response<()>, BoxError>) -> bool {
    policy.clone().retry(&mut req, &mut result).is_some()
}

#[test]
fn a_classifier_replaces_the_status_set() {
    let statuses = RetryPolicy::new().seed(1);
    assert!(!retries(&statuses, req("GET"), answer(500, None)));
    let classified = statuses.clone().classify(ServerErrorsAsFailures::new());
    assert!(retries(&classified, req("GET"), answer(500, None)));
    assert!(retries(&classified, req("GET"), answer(503, None)));
    assert!(!retries(&classified, req("GET"), answer(404, None)));
    assert!(format!("{classified:?}").contains("ServerErrorsAsFailures"));
    // The last rule set wins.
    let teapots = classified.retry_statuses([StatusCode::IM_A_TEAPOT]);
    assert!(retries(&teapots, req("GET"), answer(418, None)));
    assert!(!retries(&teapots, req("GET"), answer(500, None)));
    let again = teapots.classify(ServerErrorsAsFailures::new());
    assert!(!retries(&again, req("GET"), answer(418, None)));
}

#[test]
fn a_classified_post_is_resent_only_when_opted_in() {
    let classified = RetryPolicy::new()
        .seed(2)
        .classify(ServerErrorsAsFailures::new());
    assert!(!retries(&classified, req("POST"), answer(500, None)));
    let mut opted = req("POST");
    opted.extensions_mut().insert(RetryNonIdempotent);
    assert!(retries(&classified, opted, answer(500, None)));
    let every_post = classified.clone().retry_non_idempotent(true);
    assert!(retries(&every_post, req("POST"), answer(500, None)));

    // Classified failures only: an error after sending still is not resent.
    let unprocessed = classified.retry_classified_non_idempotent(true);
    assert!(retries(&unprocessed, req("POST"), answer(500, None)));
    let timeout: BoxError = Box::new(tower::timeout::error::Elapsed::new());
    assert!(!retries(&unprocessed, req("POST"), Err(timeout)));
    // Nor is a status from a status set.
    let statuses = unprocessed.retry_statuses([StatusCode::SERVICE_UNAVAILABLE]);
    assert!(!retries(&statuses, req("POST"), answer(503, None)));
}

#[test]
fn grpc_retries_unavailable_calls_only() {
    let policy = RetryPolicy::grpc().seed(3);
    assert!(retries(&policy, req("POST"), grpc("14")));
    for code in ["0", "2", "4", "8", "13", "16", "99", "-1", "fourteen"] {
        assert!(!retries(&policy, req("POST"), grpc(code)), "{code}");
    }
    // The status will come in the trailers, after the messages.
    assert!(!retries(&policy, req("POST"), answer(200, None)));
    // No gRPC status at all: the HTTP status as gRPC clients read it.
    for status in [429, 502, 503, 504] {
        assert!(
            retries(&policy, req("POST"), answer(status, None)),
            "{status}"
        );
    }
    for status in [400, 404, 500] {
        assert!(
            !retries(&policy, req("POST"), answer(status, None)),
            "{status}"
        );
    }
    // A call that failed after it was sent is not resent; one never sent is.
    let timeout: BoxError = Box::new(tower::timeout::error::Elapsed::new());
    assert!(!retries(&policy, req("POST"), Err(timeout)));
    let refused: BoxError = io::Error::from(io::ErrorKind::ConnectionRefused).into();
    assert!(retries(&policy, req("POST"), Err(refused)));
    let debug = format!("{policy:?}");
    assert!(debug.contains("gRPC codes [14]"), "{debug}");
    assert!(
        debug.contains("retry_classified_non_idempotent: true"),
        "{debug}"
    );
}

#[test]
fn grpc_codes_are_configurable() {
    let policy =
        RetryPolicy::grpc().grpc_codes([GrpcCode::Unavailable, GrpcCode::ResourceExhausted]);
    assert!(retries(&policy, req("POST"), grpc("8")));
    assert!(retries(&policy, req("POST"), grpc("14")));
    assert!(!retries(&policy, req("POST"), grpc("13")));
    // Unknown codes are read as UNKNOWN; OK is never a failure.
    let unknown = RetryPolicy::grpc().grpc_codes([GrpcCode::Unknown, GrpcCode::Ok]);
    assert!(retries(&unknown, req("POST"), grpc("99")));
    assert!(retries(&unknown, req("POST"), answer(500, None)));
    assert!(!retries(&unknown, req("POST"), grpc("0")));
    let none = RetryPolicy::grpc().grpc_codes([]);
    assert!(!retries(&none, req("POST"), grpc("14")));
    assert!(!retries(&none, req("POST"), answer(503, None)));
    // Without the gRPC resend rule, a POST is not resent.
    let plain = RetryPolicy::new().grpc_codes([GrpcCode::Unavailable]);
    assert!(!retries(&plain, req("POST"), grpc("14")));
    assert!(retries(&plain, req("GET"), grpc("14")));
    // tower-http's own classifier calls every non-OK code a failure.
    let every = RetryPolicy::new().classify(GrpcErrorsAsFailures::new());
    assert!(retries(&every, req("GET"), grpc("3")));
    assert!(!retries(&every, req("GET"), answer(200, None)));
}

/// What each attempt's body held.
type Seen = Arc<Mutex<Vec<(Bytes, bool)>>>;

/// A retry layer over an endpoint that records each attempt's body (and
/// whether it carried a tried set), and answers gRPC `UNAVAILABLE`.
fn unavailable_endpoint(
    seen: Seen,
) -> impl tower::Service<
    Request<ChannelBody>,
    Response = Response<()>,
    Error = BoxError,
    Future = impl Send,
> + Clone {
    let endpoint = tower::service_fn(move |req: Request<ReplayBody<ChannelBody>>| {
        let seen = Arc::clone(&seen);
        async move {
            let tracked = req.extensions().get::<TriedEndpoints>().is_some();
            let bytes = req.into_body().collect().await?.to_bytes();
            seen.lock().unwrap().push((bytes, tracked));
            grpc("14")
        }
    });
    RetryLayer::new(RetryPolicy::grpc().backoff(Default::default(), Default::default()))
        .layer(endpoint)
}

fn call(body: ChannelBody, content_type: &str) -> Request<ChannelBody> {
    Request::post("http://who/who.Who/Ask")
        .header("content-type", content_type)
        .body(body)
        .unwrap()
}

#[tokio::test]
async fn a_grpc_body_that_is_ready_is_replayed() {
    let seen = Seen::default();
    let (tx, body) = channel_body();
    tx.send(Ok(Bytes::from("\0\0\0\0\x02"))).unwrap();
    tx.send(Ok(Bytes::from("hi"))).unwrap();
    drop(tx);
    let svc = unavailable_endpoint(Arc::clone(&seen));
    let response = svc.oneshot(call(body, "application/grpc")).await.unwrap();
    assert_eq!(response.headers()["grpc-status"], "14");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3, "every attempt made");
    assert!(seen
        .iter()
        .all(|(bytes, tracked)| bytes == "\0\0\0\0\x02hi" && *tracked));
}

#[tokio::test]
async fn a_grpc_body_that_waits_is_sent_once_whole() {
    let seen = Seen::default();
    let (tx, body) = channel_body();
    tx.send(Ok(Bytes::from("first"))).unwrap();
    let svc = unavailable_endpoint(Arc::clone(&seen));
    // The rest of the stream comes only after the call has started: the
    // layer must not wait for it.
    let call = tokio::spawn(svc.oneshot(call(body, "application/grpc")));
    tokio::task::yield_now().await;
    tx.send(Ok(Bytes::from(" then more"))).unwrap();
    drop(tx);
    let response = call.await.unwrap().unwrap();
    assert_eq!(response.headers()["grpc-status"], "14");
    assert_eq!(
        *seen.lock().unwrap(),
        [(Bytes::from("first then more"), false)]
    );
}

#[tokio::test]
async fn a_plain_stream_is_still_not_read_ahead() {
    let seen = Seen::default();
    let (tx, body) = channel_body();
    tx.send(Ok(Bytes::from("ready"))).unwrap();
    drop(tx);
    let svc = unavailable_endpoint(Arc::clone(&seen));
    svc.oneshot(call(body, "application/json")).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), [(Bytes::from("ready"), false)]);
}
