//! A whole (non-streamed) answer, read by the router before it answers, and
//! asked again of another server when its body breaks off.

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::header::CONTENT_LENGTH;
use http::Response;
use http_body::Frame;
use http_body_util::{BodyExt, BodyStream, StreamBody};

use super::{leg_body, Outcome, Resend};
use crate::error::BoxError;
use crate::llm::ResponseBody;

/// A whole answer larger than this passes through as it comes, without
/// failover: the router does not hold more of it.
const MAX_HELD: usize = 16 << 20;

/// Reads `response` whole; when its body breaks off, sends `request` (the
/// client's body) again, up to `budget` times. A body that breaks off with
/// no failover left is the request's error (the client gets 502: nothing
/// of the answer was sent yet).
pub(super) async fn read(
    mut response: Response<ResponseBody>,
    resend: Resend,
    request: Bytes,
    budget: u32,
    mut left: u32,
) -> Result<Response<ResponseBody>, BoxError> {
    let failover = &resend.shared.failover;
    loop {
        let (mut parts, body) = response.into_parts();
        let (mut body, late) = leg_body(&resend.shared, &mut parts.extensions, body);
        let mut read = BytesMut::new();
        let error = loop {
            match body.frame().await {
                None => {
                    let read = read.freeze();
                    parts.headers.insert(CONTENT_LENGTH, read.len().into());
                    return Ok(Response::from_parts(
                        parts,
                        crate::llm::answer::full_bytes(read),
                    ));
                }
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    read.extend_from_slice(&data);
                    if read.len() > MAX_HELD {
                        let first = Frame::data(read.freeze());
                        let rest = futures_util::stream::once(async move { Ok(first) })
                            .chain(BodyStream::new(body));
                        parts.headers.remove(CONTENT_LENGTH);
                        let body = StreamBody::new(rest).boxed_unsync();
                        return Ok(Response::from_parts(parts, body));
                    }
                }
                Some(Err(error)) => {
                    // Broken off: its server failed this answer (a stall
                    // past the idle limit is counted by the idle timer).
                    if let (Some(late), false) = (late, super::body::is_stall(&*error)) {
                        late.failed();
                    }
                    break error;
                }
            }
        };
        if left == 0 {
            failover.count(if budget == 0 {
                Outcome::NotContinued
            } else {
                Outcome::Exhausted
            });
            return Err(error);
        }
        left -= 1;
        failover.count(Outcome::RetriedWhole);
        tracing::warn!(
            %error,
            failover = budget.saturating_sub(left),
            "a whole answer broke off; asking another server"
        );
        response = resend.send(request.clone()).await?;
        if !response.status().is_success() {
            return Ok(response);
        }
    }
}
