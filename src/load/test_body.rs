//! Test fixtures for the load wrappers: a response body whose frames the
//! test sends one at a time, and an endpoint that can be unavailable.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use tokio::sync::mpsc;

/// The error a [`ChannelBody`] yields when the test sends one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BodyError;

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("body failed")
    }
}

impl std::error::Error for BodyError {}

/// Sends frames (or an error) to the paired [`ChannelBody`]; dropping it ends
/// the body.
pub(crate) type FrameSender = mpsc::UnboundedSender<Result<Bytes, BodyError>>;

/// A body that yields what its [`FrameSender`] sends, and ends when the
/// sender is dropped.
#[derive(Debug)]
pub(crate) struct ChannelBody {
    rx: mpsc::UnboundedReceiver<Result<Bytes, BodyError>>,
}

pub(crate) fn channel_body() -> (FrameSender, ChannelBody) {
    let (tx, rx) = mpsc::unbounded_channel();
    (tx, ChannelBody { rx })
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.rx
            .poll_recv(cx)
            .map(|item| item.map(|result| result.map(Frame::data)))
    }
}

/// An endpoint of weight `.0` that is available while `.1` holds, like one
/// behind a health check.
#[derive(Clone, Debug)]
pub(crate) struct Gated(pub(crate) u32, pub(crate) bool);

impl crate::endpoint::Endpoint for Gated {
    const CHECKS_AVAILABILITY: bool = true;

    fn weight(&self) -> u32 {
        self.0
    }

    fn is_available(&self) -> bool {
        self.1
    }
}
