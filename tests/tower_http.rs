//! tower-http layers and the balancer in one `ServiceBuilder`, over real
//! axum backends on 127.0.0.1; tower-http's `classify` deciding what a
//! failure is, per call, per endpoint, and for retries.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::retry::RetryLayer;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_http::classify::{
    ClassifiedResponse, ClassifyResponse, ServerErrorsAsFailures, ServerErrorsFailureClass,
};
use tower_http::set_header::SetRequestHeaderLayer;
use tower_http::trace::TraceLayer;
use tower_lb::discover;
use tower_lb::pick::RoundRobin;
use tower_lb::{Balance, BoxError};

use support::tower_http::{
    self as fleet_support, http_endpoint, Failures, Fleet, RetryOnFailure, HEALTHY,
};
use support::{Backend, BACKEND_HEADER};

const X_CLIENT: HeaderName = HeaderName::from_static("x-client");

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .body(Full::default())
        .expect("a valid request")
}

fn header<'a>(response: &'a Response<impl Sized>, name: &str) -> &'a str {
    response.headers()[name].to_str().expect("an ASCII header")
}

#[tokio::test]
async fn one_service_builder_stacks_tower_http_layers_and_the_balancer() -> Result<(), BoxError> {
    let (fleet, balance) = Fleet::start(&HEALTHY, RoundRobin::new()).await;
    let failures = Failures::default();
    let client = ServiceBuilder::new()
        .layer(TraceLayer::new_for_http().on_failure(failures.record()))
        .timeout(Duration::from_secs(10))
        .layer(SetRequestHeaderLayer::overriding(
            X_CLIENT,
            HeaderValue::from_static("tower-lb"),
        ))
        .service(balance);

    // The whole stack is `Clone`: each task gets its own handle, no Buffer.
    let mut tasks = Vec::new();
    for task in 0..3 {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for i in 0..10 {
                let mut request = get("/");
                if (task + i) % 2 == 0 {
                    // The layer overrides what the caller sent.
                    request
                        .headers_mut()
                        .insert(X_CLIENT, HeaderValue::from_static("spoofed"));
                }
                let response = client.ready().await?.call(request).await?;
                assert_eq!(response.status(), StatusCode::OK);
                assert_eq!(header(&response, "x-seen-x-client"), "tower-lb");
                let server = header(&response, BACKEND_HEADER).to_owned();
                let body = response.into_body().collect().await?.to_bytes();
                assert_eq!(body, server.as_bytes());
                seen.push(server);
            }
            Ok::<_, BoxError>(seen)
        }));
    }
    let mut answers: HashMap<String, usize> = HashMap::new();
    for task in tasks {
        for server in task.await?? {
            *answers.entry(server).or_default() += 1;
        }
    }
    // Round robin's cursor is shared by every clone: an exact split.
    assert_eq!((answers["a"], answers["b"], answers["c"]), (10, 10, 10));
    assert_eq!(fleet.calls(), [10, 10, 10]);
    assert!(failures.taken().is_empty());
    assert_eq!(fleet.in_flight(), [0, 0, 0]);
    Ok(())
}

#[tokio::test]
async fn a_slow_backend_times_out_with_tower_elapsed() -> Result<(), BoxError> {
    let (fleet, balance) = Fleet::start(&HEALTHY, RoundRobin::new()).await;
    let failures = Failures::default();
    let mut client = ServiceBuilder::new()
        .layer(TraceLayer::new_for_http().on_failure(failures.record()))
        .timeout(Duration::from_millis(200))
        .layer(SetRequestHeaderLayer::overriding(
            X_CLIENT,
            HeaderValue::from_static("tower-lb"),
        ))
        .service(balance);

    // The backend never answers `/slow`, so the timeout fires however
    // loaded the machine is.
    let Err(error) = client.ready().await?.call(get("/slow")).await else {
        panic!("the backend never answers, yet the call succeeded");
    };
    assert!(
        error.is::<tower::timeout::error::Elapsed>(),
        "not a timeout: {error}"
    );
    // The request did reach a backend before the timeout.
    support::within("the slow request arrives", fleet.wait_slow()).await;
    assert_eq!(fleet.calls().iter().sum::<usize>(), 1);

    // tower-http classifies the error as a failure too.
    match failures.taken().as_slice() {
        [ServerErrorsFailureClass::Error(message)] => {
            assert!(message.contains("timed out"), "{message}")
        }
        other => panic!("expected one error failure, got {other:?}"),
    }
    // Dropping the timed-out call released its endpoint.
    assert_eq!(fleet.in_flight(), [0, 0, 0]);

    let response = client.ready().await?.call(get("/")).await?;
    assert_eq!(response.status(), StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn server_errors_are_failures_and_other_statuses_are_not() -> Result<(), BoxError> {
    let (fleet, balance) = Fleet::start(&HEALTHY, RoundRobin::new()).await;
    let failures = Failures::default();
    let mut client = ServiceBuilder::new()
        .layer(TraceLayer::new_for_http().on_failure(failures.record()))
        .service(balance.clone());

    // A 500 is a response, not an error, for the balancer and for Trace's
    // caller: only the classifier calls it a failure.
    let response = client.ready().await?.call(get("/status/500")).await?;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let server = header(&response, BACKEND_HEADER).to_owned();
    match failures.taken().as_slice() {
        [ServerErrorsFailureClass::StatusCode(StatusCode::INTERNAL_SERVER_ERROR)] => {}
        other => panic!("expected a 500 failure, got {other:?}"),
    }
    // Until its body is read (or dropped), the answer counts as in flight.
    assert_eq!(fleet.in_flight().iter().sum::<usize>(), 1);
    assert_eq!(response.into_body().collect().await?.to_bytes(), server);

    let response = client.ready().await?.call(get("/status/404")).await?;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(failures.taken().is_empty(), "a 404 is not a server failure");
    drop(response);

    // The same classifier, asked directly about a real response.
    let mut balance = balance;
    let response = balance.ready().await?.call(get("/status/500")).await?;
    match ServerErrorsAsFailures::new().classify_response(&response) {
        ClassifiedResponse::Ready(Err(ServerErrorsFailureClass::StatusCode(status))) => {
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR)
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    drop(response);
    assert_eq!(fleet.in_flight(), [0, 0, 0]);
    Ok(())
}

#[tokio::test]
async fn each_endpoint_failures_are_counted_by_the_classifier() -> Result<(), BoxError> {
    // Classification per endpoint: a `Trace` around each endpoint, inside
    // the balancer, counts that endpoint's failures. This is what passive
    // health checking reads to eject an endpoint.
    let statuses = [
        ("a", StatusCode::OK),
        ("b", StatusCode::OK),
        ("c", StatusCode::SERVICE_UNAVAILABLE),
    ];
    let client = fleet_support::client();
    let (endpoints, discover) = discover::channel();
    let mut balance = Balance::new(discover, RoundRobin::new());
    let mut failed = HashMap::new();
    let mut backends = Vec::new();
    for (id, status) in statuses {
        let backend = Backend::builder(id).status(status).start().await;
        let count = Arc::new(AtomicUsize::new(0));
        let on_failure = {
            let count = Arc::clone(&count);
            move |_: ServerErrorsFailureClass, _: Duration, _: &tracing::Span| {
                count.fetch_add(1, Ordering::SeqCst);
            }
        };
        let endpoint = ServiceBuilder::new()
            .layer(TraceLayer::new_for_http().on_failure(on_failure))
            .service(http_endpoint(&client, backend.addr()));
        endpoints.insert(backend.addr(), endpoint)?;
        failed.insert(id, count);
        backends.push(backend);
    }
    balance.wait_for(|keys| keys.len() == 3).await;

    let mut statuses = Vec::new();
    for _ in 0..30 {
        let response = balance.ready().await?.call(get("/")).await?;
        statuses.push(response.status());
    }
    let unavailable = statuses
        .iter()
        .filter(|&&s| s == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    assert_eq!(unavailable, 10);
    let failed: HashMap<_, _> = failed
        .into_iter()
        .map(|(id, count)| (id, count.load(Ordering::SeqCst)))
        .collect();
    assert_eq!((failed["a"], failed["b"], failed["c"]), (0, 0, 10));
    Ok(())
}

#[tokio::test]
async fn a_classifier_decides_what_is_retried() -> Result<(), BoxError> {
    let statuses = [
        ("a", StatusCode::OK),
        ("b", StatusCode::OK),
        ("c", StatusCode::SERVICE_UNAVAILABLE),
    ];
    let (fleet, balance) = Fleet::start(&statuses, RoundRobin::new()).await;
    let retries = Arc::new(AtomicUsize::new(0));
    let failures = Failures::default();
    let mut client = ServiceBuilder::new()
        .layer(TraceLayer::new_for_http().on_failure(failures.record()))
        .layer(RetryLayer::new(RetryOnFailure {
            classifier: ServerErrorsAsFailures::new(),
            retries_left: 1,
            retries: Arc::clone(&retries),
        }))
        .timeout(Duration::from_secs(10))
        .service(balance);

    for _ in 0..30 {
        let response = client.ready().await?.call(get("/")).await?;
        assert_eq!(response.status(), StatusCode::OK);
        assert_ne!(header(&response, BACKEND_HEADER), "c");
    }
    // Every 503 of the failing backend was retried, and round robin sent
    // the retry on to a healthy one.
    let calls = fleet.calls();
    assert!(calls[2] > 0, "the failing backend was never picked");
    assert_eq!(retries.load(Ordering::SeqCst), calls[2]);
    assert_eq!(calls[0] + calls[1], 30);
    assert!(failures.taken().is_empty(), "the caller saw a failure");
    Ok(())
}
