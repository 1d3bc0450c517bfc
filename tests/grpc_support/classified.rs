//! A recorder of what tower-http's gRPC classifier reports through
//! `Trace`'s callbacks.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::HeaderMap;
use tower_http::classify::GrpcFailureClass;

/// The failures `GrpcErrorsAsFailures` found, and the `grpc-status` of each
/// response whose classification had to wait for its trailers.
#[derive(Clone, Default)]
pub struct Classified {
    failures: Arc<Mutex<Vec<GrpcFailureClass>>>,
    trailer_statuses: Arc<Mutex<Vec<Option<String>>>>,
}

impl Classified {
    /// For `TraceLayer::on_failure`.
    pub fn on_failure(&self) -> impl Fn(GrpcFailureClass, Duration, &tracing::Span) + Clone {
        let failures = Arc::clone(&self.failures);
        move |class, _latency, _span| failures.lock().unwrap().push(class)
    }

    /// For `TraceLayer::on_eos`: called only for responses that the
    /// classifier could not judge from their headers.
    pub fn on_eos(&self) -> impl Fn(Option<&HeaderMap>, Duration, &tracing::Span) + Clone {
        let statuses = Arc::clone(&self.trailer_statuses);
        move |trailers, _duration, _span| {
            let status = trailers
                .and_then(|t| t.get("grpc-status"))
                .map(|v| v.to_str().unwrap_or("?").to_owned());
            statuses.lock().unwrap().push(status);
        }
    }

    /// The gRPC codes of the failures so far.
    pub fn failure_codes(&self) -> Vec<i32> {
        let failures = self.failures.lock().unwrap();
        failures
            .iter()
            .map(|failure| match failure {
                GrpcFailureClass::Code(code) => code.get(),
                GrpcFailureClass::Error(error) => panic!("unexpected error class: {error}"),
            })
            .collect()
    }

    /// The trailers' statuses recorded since the last call, sorted.
    pub fn take_trailer_statuses(&self) -> Vec<Option<String>> {
        let mut statuses = std::mem::take(&mut *self.trailer_statuses.lock().unwrap());
        statuses.sort();
        statuses
    }
}
