//! Why a request's body was refused.

use std::fmt;

use http::StatusCode;

use crate::error::BoxError;

/// A request [`AddRequestInfo`](super::AddRequestInfo) refused.
#[derive(Debug)]
#[non_exhaustive]
pub enum RequestInfoError {
    /// The body is larger than the limit.
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The body claims to be JSON and is not.
    Malformed {
        /// What the parser said, with the line and column.
        message: String,
    },
    /// Reading the body failed.
    Body(BoxError),
    /// The body's `model` is there but not a string.
    BadModel,
    /// With [`require_json`](super::AddRequestInfoLayer::require_json): the
    /// body is not JSON, whatever its `content-type` says.
    NotJson,
}

impl RequestInfoError {
    /// The status to answer with: 413, 415 for a body that is not JSON
    /// where JSON is required, 400 for malformed JSON, a `model` that is
    /// not a string, or a body that could not be read.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotJson => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Malformed { .. } | Self::Body(_) | Self::BadModel => StatusCode::BAD_REQUEST,
        }
    }
}

impl fmt::Display for RequestInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { limit } => {
                write!(f, "the request body is larger than {limit} bytes")
            }
            Self::Malformed { message } => {
                write!(f, "the request body is not valid JSON: {message}")
            }
            Self::Body(_) => f.write_str("the request body could not be read"),
            Self::BadModel => f.write_str("the request's `model` is not a string"),
            Self::NotJson => f.write_str("the request body must be JSON"),
        }
    }
}

impl std::error::Error for RequestInfoError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Body(e) => Some(&**e),
            _ => None,
        }
    }
}
