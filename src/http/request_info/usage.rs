//! Asking a model server for the usage of a streamed answer when the client
//! did not, and keeping that extra event from the client.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// An answer's body on its way to the client: unchanged, or, when the
    /// router asked the server for the usage the client did not ask for,
    /// without the server-sent event that carries only that usage.
    pub struct UsageFilter<B> {
        #[pin]
        inner: B,
        strip: bool,
        pending: BytesMut,
        ended: bool,
    }
}

impl<B> UsageFilter<B> {
    pub(super) fn new(inner: B, strip: bool) -> Self {
        Self {
            inner,
            strip,
            pending: BytesMut::new(),
            ended: false,
        }
    }
}

impl<B> UsageFilter<B> {
    /// Whether the usage event is kept from the client.
    pub fn strips_usage(&self) -> bool {
        self.strip
    }

    /// The server's body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// Unwraps the server's body (and stops filtering).
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B> std::fmt::Debug for UsageFilter<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageFilter")
            .field("strip", &self.strip)
            .finish_non_exhaustive()
    }
}

/// The end of the first complete server-sent event in `bytes` (past its
/// blank line, `\n\n` or `\r\n\r\n`).
pub(crate) fn event_end(bytes: &[u8]) -> Option<usize> {
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Whether an event carries only usage: no choices, a usage object.
fn usage_only(event: &[u8]) -> bool {
    let has = |needle: &[u8]| event.windows(needle.len()).any(|w| w == needle);
    has(b"\"usage\"") && (has(b"\"choices\":[]") || has(b"\"choices\": []"))
}

/// The complete events of `pending`, less the usage-only one; what is left
/// of an event cut by the frame's end stays in `pending`.
fn complete_events(pending: &mut BytesMut) -> BytesMut {
    let mut out = BytesMut::new();
    while let Some(end) = event_end(pending) {
        let event = pending.split_to(end);
        if !usage_only(&event) {
            out.extend_from_slice(&event);
        }
    }
    out
}

impl<B> Body for UsageFilter<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        if !*this.strip {
            return this.inner.poll_frame(cx);
        }
        loop {
            if *this.ended {
                if this.pending.is_empty() {
                    return Poll::Ready(None);
                }
                let rest = this.pending.split();
                if usage_only(&rest) {
                    continue;
                }
                return Poll::Ready(Some(Ok(Frame::data(rest.freeze()))));
            }
            match ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        this.pending.extend_from_slice(&data);
                        let out = complete_events(this.pending);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
                        }
                    }
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => *this.ended = true,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_empty() && (self.ended || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        if self.strip {
            SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    #[tokio::test]
    async fn the_usage_event_is_kept_from_the_client_wherever_frames_cut() {
        let answer = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n\
             data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9}}\n\n\
             data: [DONE]\n\n";
        let bytes = answer.as_bytes();
        for cut in 1..bytes.len() {
            let frames = [&bytes[..cut], &bytes[cut..]].map(|part| {
                Ok::<_, std::convert::Infallible>(Frame::data(Bytes::copy_from_slice(part)))
            });
            let body = UsageFilter::new(StreamBody::new(futures_util::stream::iter(frames)), true);
            let seen = body.collect().await.unwrap().to_bytes();
            assert_eq!(
                seen,
                Bytes::from_static(
                    b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n"
                ),
                "cut at {cut}"
            );
        }
        let untouched =
            UsageFilter::new(http_body_util::Full::new(Bytes::from_static(bytes)), false);
        assert_eq!(untouched.collect().await.unwrap().to_bytes(), bytes);
    }
}
