use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, Empty, StreamBody};
use tokio::sync::mpsc;
use tower::{service_fn, Service, ServiceExt};

use super::*;

type Chunk = Result<Frame<Bytes>, Infallible>;

/// A body fed by the test, frame by frame; it ends when the sender drops.
fn fed() -> (
    mpsc::Sender<Chunk>,
    StreamBody<futures_util::stream::BoxStream<'static, Chunk>>,
) {
    let (tx, mut rx) = mpsc::channel(1);
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    (tx, StreamBody::new(Box::pin(stream)))
}

/// An endpoint that reads the whole body, then answers after `think`.
fn reader<B>(
    think: Duration,
) -> impl Service<
    Request<B>,
    Response = Response<String>,
    Error = BoxError,
    Future = impl std::future::Future<Output = Result<Response<String>, BoxError>> + Send,
> + Clone
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    service_fn(move |request: Request<B>| async move {
        let body = request.into_body().collect().await.map_err(Into::into)?;
        tokio::time::sleep(think).await;
        Ok::<_, BoxError>(Response::new(format!("{} bytes", body.to_bytes().len())))
    })
}

#[tokio::test(start_paused = true)]
async fn a_slow_upload_is_not_cut_off() {
    let mut timed = ResponseTimeout::new(reader(Duration::from_millis(50)), Duration::from_secs(1));
    let (tx, body) = fed();
    let call = timed.ready().await.unwrap().call(Request::new(body));
    let upload = tokio::spawn(async move {
        // Ten seconds of upload against a one-second response timeout.
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            tx.send(Ok(Frame::data(Bytes::from_static(b"abcd"))))
                .await
                .unwrap();
        }
    });
    let response = call.await.expect("answered");
    assert_eq!(response.body(), "40 bytes");
    upload.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_clock_starts_when_the_body_is_sent() {
    let mut timed = ResponseTimeout::new(reader(Duration::from_secs(3600)), Duration::from_secs(2));
    let (tx, body) = fed();
    let start = tokio::time::Instant::now();
    let call = tokio::spawn(timed.ready().await.unwrap().call(Request::new(body)));
    tokio::time::sleep(Duration::from_secs(5)).await;
    tx.send(Ok(Frame::data(Bytes::from_static(b"x"))))
        .await
        .unwrap();
    drop(tx);
    let error = call.await.unwrap().expect_err("the endpoint never answers");
    assert!(error.is::<Elapsed>(), "{error}");
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(7),
        "5 s sending, then 2 s"
    );
}

#[tokio::test(start_paused = true)]
async fn an_empty_body_starts_the_clock_at_once() {
    let mut timed = ResponseTimeout::new(reader(Duration::from_secs(3600)), Duration::from_secs(2));
    let start = tokio::time::Instant::now();
    let call = timed
        .ready()
        .await
        .unwrap()
        .call(Request::new(Empty::<Bytes>::new()));
    let error = call.await.expect_err("the endpoint never answers");
    assert!(error.is::<Elapsed>(), "{error}");
    assert_eq!(start.elapsed(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn a_request_may_lengthen_its_own_deadline_and_owns_its_end() {
    let timeout = Duration::from_secs(1);
    let mut timed = ResponseTimeout::new(reader(Duration::from_secs(5)), timeout);
    let with = |own: Option<Duration>| {
        let mut request = Request::new(Empty::<Bytes>::new());
        request.extensions_mut().insert(OwnDeadline(own));
        request
    };
    // Five seconds of work within its own ten.
    let call = timed
        .ready()
        .await
        .unwrap()
        .call(with(Some(Duration::from_secs(10))));
    assert_eq!(call.await.unwrap().into_body(), "0 bytes");
    // Past its own three: the request's fault, not the endpoint's.
    let call = timed
        .ready()
        .await
        .unwrap()
        .call(with(Some(Duration::from_secs(3))));
    let error = call.await.unwrap_err();
    assert!(crate::classify::is_request_fault(&*error), "{error}");
    // Shorter than the layer's: the layer's timeout, the endpoint's fault.
    let call = timed
        .ready()
        .await
        .unwrap()
        .call(with(Some(Duration::from_millis(10))));
    let error = call.await.unwrap_err();
    assert!(error.is::<Elapsed>(), "{error}");
    // No limit at all.
    let call = timed.ready().await.unwrap().call(with(None));
    assert_eq!(call.await.unwrap().into_body(), "0 bytes");
}
