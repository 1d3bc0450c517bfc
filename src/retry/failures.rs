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
mod tests;
