use std::convert::Infallible;

use bytes::Bytes;
use http_body::Body;
use http_body_util::{BodyExt, Empty, Full};
use tower::{service_fn, ServiceExt};

use super::*;
use crate::endpoint::{Endpoint, Weighted};
use crate::load::test_body::{channel_body, BodyError, ChannelBody, Gated};
use crate::load::CompleteOnResponse;

/// An endpoint that answers with the body it is given.
fn echo() -> InFlight<
    impl Service<ChannelBody, Response = http::Response<ChannelBody>, Error = Infallible> + Clone,
> {
    InFlight::new(service_fn(|body: ChannelBody| async move {
        Ok::<_, Infallible>(http::Response::new(body))
    }))
}

#[tokio::test]
async fn counts_until_the_last_frame() {
    let mut svc = echo();
    let (tx, body) = channel_body();
    let future = svc.ready().await.unwrap().call(body);
    assert_eq!((svc.in_flight(), svc.requests()), (1, 1));
    assert_eq!(svc.load(), Count(1));

    let mut body = future.await.unwrap().into_body();
    assert_eq!(svc.in_flight(), 1, "headers are not the end of the request");
    tx.send(Ok(Bytes::from_static(b"token"))).unwrap();
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "token");
    assert_eq!(svc.in_flight(), 1, "still streaming");
    assert!(body.is_tracking());

    drop(tx);
    assert!(body.frame().await.is_none());
    assert_eq!(svc.in_flight(), 0);
    assert!(!body.is_tracking());
    assert_eq!(svc.requests(), 1);
}

#[tokio::test]
async fn releases_when_the_body_is_dropped_early() {
    let mut svc = echo();
    let (tx, body) = channel_body();
    let response = svc.call(body).await.unwrap();
    tx.send(Ok(Bytes::from_static(b"partial"))).unwrap();
    let mut body = response.into_body();
    body.frame().await.unwrap().unwrap();
    assert_eq!(svc.in_flight(), 1);
    drop(body);
    assert_eq!(svc.in_flight(), 0);
}

#[tokio::test]
async fn releases_when_the_body_errors() {
    let mut svc = echo();
    let (tx, body) = channel_body();
    let mut body = svc.call(body).await.unwrap().into_body();
    tx.send(Err(BodyError)).unwrap();
    assert_eq!(body.frame().await.unwrap().unwrap_err(), BodyError);
    assert_eq!(svc.in_flight(), 0, "released before the body is dropped");
    drop(tx);
}

#[tokio::test]
async fn releases_at_once_for_a_body_already_ended() {
    let mut svc = InFlight::new(service_fn(|()| async {
        Ok::<_, Infallible>(http::Response::new(Empty::<Bytes>::new()))
    }));
    let response = svc.call(()).await.unwrap();
    assert!(response.body().is_end_stream());
    assert_eq!(svc.in_flight(), 0);
    assert_eq!(svc.requests(), 1);
}

#[tokio::test]
async fn releases_after_a_frame_that_ends_the_body() {
    let mut svc = InFlight::new(service_fn(|()| async {
        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"all"))))
    }));
    let mut body = svc.call(()).await.unwrap().into_body();
    assert_eq!(body.size_hint().exact(), Some(3));
    assert_eq!(svc.in_flight(), 1);
    body.frame().await.unwrap().unwrap();
    // Released without polling for the `None` a reader such as hyper skips.
    assert!(body.is_end_stream());
    assert_eq!(svc.in_flight(), 0);
}

#[tokio::test]
async fn releases_on_a_call_error() {
    let mut svc = InFlight::new(service_fn(|fail: bool| async move {
        if fail {
            Err("refused")
        } else {
            Ok(http::Response::new(Empty::<Bytes>::new()))
        }
    }));
    let future = svc.call(true);
    assert_eq!(svc.in_flight(), 1);
    assert_eq!(future.await.unwrap_err(), "refused");
    assert_eq!(svc.in_flight(), 0);
}

#[tokio::test]
async fn releases_when_the_response_future_is_dropped() {
    let mut svc = echo();
    let (_tx, body) = channel_body();
    let future = svc.call(body);
    assert_eq!(svc.in_flight(), 1);
    drop(future);
    assert_eq!(svc.in_flight(), 0);
}

#[tokio::test]
async fn clones_share_one_count() {
    let mut a = echo();
    let mut b = a.clone();
    let (_tx1, body1) = channel_body();
    let (_tx2, body2) = channel_body();
    let first = a.call(body1).await.unwrap();
    let second = b.call(body2).await.unwrap();
    let counter = a.counter();
    assert_eq!(
        (a.in_flight(), b.in_flight(), counter.in_flight()),
        (2, 2, 2)
    );
    assert_eq!(b.requests(), 2);
    drop(first);
    assert_eq!(b.load(), Count(1));
    drop(second);
    assert_eq!(counter.in_flight(), 0);
    // A fresh wrapper is a different endpoint.
    assert!(!echo().counter().same_as(&counter));
}

#[tokio::test]
async fn complete_on_response_releases_at_the_response() {
    let mut svc = InFlight::with_completion(
        service_fn(|()| async { Ok::<_, Infallible>("done") }),
        CompleteOnResponse::default(),
    );
    let future = svc.call(());
    assert_eq!(svc.in_flight(), 1);
    assert_eq!(future.await.unwrap(), "done");
    assert_eq!(svc.in_flight(), 0);
}

#[tokio::test]
async fn towers_complete_on_response_works_too() {
    let mut svc = InFlight::with_completion(
        service_fn(|()| async { Ok::<_, Infallible>("done") }),
        tower::load::CompleteOnResponse::default(),
    );
    assert_eq!(svc.call(()).await.unwrap(), "done");
    assert_eq!((svc.in_flight(), svc.requests()), (0, 1));
}

#[test]
fn count_converts_and_orders() {
    assert!(Count(1) < Count(2));
    assert_eq!(f64::from(Count(3)), 3.0);
    assert_eq!(usize::from(Count(3)), 3);
    assert_eq!(Count(4).get(), 4);
}

#[test]
fn forwards_weight_and_availability() {
    let plain = InFlight::new(Weighted::new((), 5));
    assert_eq!(plain.weight(), 5);
    assert!(plain.is_available());
    const { assert!(!<InFlight<Weighted<()>> as Endpoint>::CHECKS_AVAILABILITY) };

    let down = InFlight::new(Gated(7, false));
    const { assert!(<InFlight<Gated> as Endpoint>::CHECKS_AVAILABILITY) };
    assert_eq!(down.weight(), 7);
    assert!(!down.is_available());
    assert!(InFlight::new(Gated(7, true)).is_available());
}

#[test]
fn accessors_reach_the_inner_service() {
    let mut svc = InFlight::new(Weighted::new((), 2));
    assert_eq!(svc.get_ref().weight(), 2);
    *svc.get_mut() = Weighted::new((), 3);
    assert_eq!(svc.into_inner().weight(), 3);
    let debug = format!("{:?}", InFlight::new(()));
    assert!(debug.contains("in_flight: 0"), "{debug}");
}
