//! The router's own answers: OpenAI's error shape, the model list, and the
//! headers that stay inside.

use std::error::Error;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::json;
use tower::timeout::error::Elapsed;

use super::queue::{QueueError, Refused};
use super::ResponseBody;
use crate::error::{BoxError, NoEndpoints, Saturated};
use crate::health::NoHealthyEndpoints;
use crate::http::RequestInfoError;

/// A request for a model no server serves.
#[derive(Debug)]
pub(crate) struct UnknownModel(pub(crate) String);

impl std::fmt::Display for UnknownModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the model `{}` does not exist", self.0)
    }
}

impl Error for UnknownModel {}

/// An answer in OpenAI's error shape:
/// `{"error": {"message", "type", "param", "code"}}`.
pub(crate) fn error(
    status: StatusCode,
    kind: &str,
    code: &str,
    message: &str,
    retry_after: Option<Duration>,
) -> Response<ResponseBody> {
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(wait) = retry_after {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    response
}

pub(crate) fn full(text: String) -> ResponseBody {
    full_bytes(Bytes::from(text))
}

pub(crate) fn full_bytes(bytes: Bytes) -> ResponseBody {
    Full::new(bytes).map_err(|e| match e {}).boxed_unsync()
}

/// The answer for a request the router could not serve.
pub(crate) fn failure(error: &BoxError) -> Response<ResponseBody> {
    let mut next: Option<&(dyn Error + 'static)> = Some(&**error);
    while let Some(e) = next {
        if let Some(e) = e.downcast_ref::<RequestInfoError>() {
            let code = match e.status() {
                StatusCode::PAYLOAD_TOO_LARGE => "request_too_large",
                StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
                _ => "invalid_json",
            };
            return self::error(
                e.status(),
                "invalid_request_error",
                code,
                &e.to_string(),
                None,
            );
        }
        if let Some(e) = e.downcast_ref::<UnknownModel>() {
            return self::error(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
                &e.to_string(),
                None,
            );
        }
        if let Some(e) = e.downcast_ref::<QueueError>() {
            let (status, code) = match e.refused {
                Refused::Shed => (StatusCode::TOO_MANY_REQUESTS, "queue_full"),
                Refused::Deadline => (StatusCode::SERVICE_UNAVAILABLE, "deadline_exceeded"),
            };
            return self::error(
                status,
                "server_overloaded",
                code,
                &e.to_string(),
                Some(e.retry_after),
            );
        }
        if let Some(e) = e.downcast_ref::<super::disagg::PdError>() {
            let status = if e.timed_out() {
                StatusCode::GATEWAY_TIMEOUT
            } else if matches!(e, super::disagg::PdError::NoDecodeServer) {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::BAD_GATEWAY
            };
            tracing::warn!(error = %e, "disaggregated request failed");
            return self::error(status, "server_error", e.code(), &e.to_string(), None);
        }
        if let Some(e) = e.downcast_ref::<Saturated>() {
            return self::error(
                StatusCode::TOO_MANY_REQUESTS,
                "server_overloaded",
                "saturated",
                "every server is saturated; retry later",
                Some(e.retry_after()),
            );
        }
        if e.is::<NoEndpoints>() || e.is::<NoHealthyEndpoints>() {
            return self::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "no_server",
                "no model server is available",
                Some(Duration::from_secs(1)),
            );
        }
        if e.is::<Elapsed>() {
            return self::error(
                StatusCode::GATEWAY_TIMEOUT,
                "server_error",
                "timeout",
                "the model server did not answer in time",
                None,
            );
        }
        next = e.source();
    }
    tracing::warn!(%error, "request failed");
    self::error(
        StatusCode::BAD_GATEWAY,
        "server_error",
        "bad_gateway",
        "no model server could be reached",
        None,
    )
}

const LOAD_METRICS: HeaderName = HeaderName::from_static("endpoint-load-metrics");
const LOAD_METRICS_BIN: HeaderName = HeaderName::from_static("endpoint-load-metrics-bin");
const LOAD_METRICS_FORMAT: HeaderName = HeaderName::from_static("endpoint-load-metrics-format");

/// Removes what the servers tell the router of their load: it is theirs to
/// tell the router, not the router's clients.
pub(crate) fn strip_internal(headers: &mut HeaderMap) {
    headers.remove(LOAD_METRICS);
    headers.remove(LOAD_METRICS_BIN);
    headers.remove(LOAD_METRICS_FORMAT);
}
