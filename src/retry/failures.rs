//! Which answers are worth another attempt: a set of statuses, or a
//! classifier from tower-http's `classify`.

use std::fmt;
use std::sync::Arc;

use http::Response;

use super::classify::{grpc_status, StatusSet};
use super::RetryReason;
use crate::classify::Classify;

type Judge = dyn Fn(&Response<()>) -> bool + Send + Sync;

/// The policy's rule for responses. One applies at a time: the builder that
/// set it last wins.
#[derive(Clone)]
pub(crate) enum Failures {
    /// Retry the responses with these statuses.
    Statuses(StatusSet),
    /// Retry the responses a classifier calls failures from their head.
    Classifier { judge: Arc<Judge>, name: String },
}

impl Failures {
    pub(crate) fn classifier<C: Classify<Response<()>>>(classifier: C) -> Self {
        let name = std::any::type_name::<C>().to_owned();
        Self::from_fn(name, move |head| classifier.is_failure(head))
    }

    pub(crate) fn from_fn(
        name: String,
        judge: impl Fn(&Response<()>) -> bool + Send + Sync + 'static,
    ) -> Self {
        Self::Classifier {
            judge: Arc::new(judge),
            name,
        }
    }

    /// Why `response` is worth another attempt, or `None` when it is not.
    pub(crate) fn reason<B>(&self, response: &mut Response<B>) -> Option<RetryReason> {
        let status = response.status();
        match self {
            Self::Statuses(set) => set.contains(status).then_some(RetryReason::Status(status)),
            Self::Classifier { judge, .. } => {
                if !with_head(response, |head| judge(head)) {
                    return None;
                }
                Some(match grpc_status(response.headers()) {
                    Some(code) => RetryReason::GrpcStatus(code),
                    None => RetryReason::Classified(status),
                })
            }
        }
    }
}

/// Runs `f` on the head of `response`, lent as a `Response<()>`.
///
/// tower-http's classifiers are generic over the body type, so a policy that
/// is not generic keeps its classifier behind a closure over one body type;
/// the head is all a classifier judges from. The header and extension maps
/// are moved out and back, not copied: nothing is allocated.
fn with_head<B, T>(response: &mut Response<B>, f: impl FnOnce(&Response<()>) -> T) -> T {
    let mut head = Response::new(());
    *head.status_mut() = response.status();
    *head.version_mut() = response.version();
    std::mem::swap(head.headers_mut(), response.headers_mut());
    std::mem::swap(head.extensions_mut(), response.extensions_mut());
    let out = f(&head);
    std::mem::swap(head.headers_mut(), response.headers_mut());
    std::mem::swap(head.extensions_mut(), response.extensions_mut());
    out
}

impl fmt::Debug for Failures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Statuses(set) => fmt::Debug::fmt(set, f),
            Self::Classifier { name, .. } => f.write_str(name),
        }
    }
}

#[cfg(test)]
mod tests {
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
}
