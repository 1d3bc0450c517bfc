use http::{StatusCode, Version};
use tower_http::classify::{ServerErrorsAsFailures, StatusInRangeAsFailures};

use super::*;

fn response(status: u16) -> Response<String> {
    let mut response = Response::new(String::from("body"));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    *response.version_mut() = Version::HTTP_2;
    response
        .headers_mut()
        .insert("x-trace", "7".parse().unwrap());
    response.extensions_mut().insert(42u8);
    response
}

#[test]
fn a_classifier_sees_the_head_and_gives_it_back() {
    let seen = Failures::from_fn(String::from("head"), |head| {
        head.status() == StatusCode::INTERNAL_SERVER_ERROR
            && head.version() == Version::HTTP_2
            && head.headers()["x-trace"] == "7"
            && head.extensions().get::<u8>() == Some(&42)
    });
    let mut failed = response(500);
    assert_eq!(
        seen.reason(&mut failed),
        Some(RetryReason::Classified(StatusCode::INTERNAL_SERVER_ERROR))
    );
    assert_eq!(failed.headers()["x-trace"], "7");
    assert_eq!(failed.extensions().get::<u8>(), Some(&42));
    assert_eq!(failed.body(), "body");
    assert_eq!(seen.reason(&mut response(200)), None);
    assert_eq!(format!("{seen:?}"), "head");
}

#[test]
fn tower_http_classifiers_decide() {
    let server_errors = Failures::classifier(ServerErrorsAsFailures::new());
    assert!(server_errors.reason(&mut response(500)).is_some());
    assert!(server_errors.reason(&mut response(503)).is_some());
    assert!(server_errors.reason(&mut response(404)).is_none());
    assert!(format!("{server_errors:?}").contains("ServerErrorsAsFailures"));
    let client_errors = Failures::classifier(StatusInRangeAsFailures::new(400..=499));
    assert!(client_errors.reason(&mut response(429)).is_some());
    assert!(client_errors.reason(&mut response(503)).is_none());
}
