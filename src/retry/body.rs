//! The request body as the retry layer hands it on: replayable bytes, or the
//! caller's stream sent once.

use std::fmt;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// A request body after the [`Retry`](super::Retry) layer: either the
    /// caller's body buffered whole into [`Bytes`], which every attempt
    /// replays byte for byte, or the caller's body streamed through once.
    ///
    /// Endpoint services behind the retry layer take `http::Request<ReplayBody<B>>`
    /// (a hyper client is a `Client<_, ReplayBody<B>>`). Its data is `Bytes`;
    /// a streamed body's chunks are converted with `Buf::copy_to_bytes`, which
    /// copies nothing when they already are `Bytes`.
    ///
    /// Which bodies are buffered is described in the [module docs](super#bodies).
    /// A body is never truncated: when the cap is crossed while buffering, the
    /// bytes read so far go first and the rest of the stream follows, and the
    /// request is not retried.
    pub struct ReplayBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        // Whole in memory: each attempt gets a clone (a reference count).
        Replay { data: Option<Bytes>, trailers: Option<HeaderMap> },
        // The caller's body, untouched.
        Stream { #[pin] body: B },
        // The cap was crossed while buffering: what was read, then the rest.
        Spilled { prefix: Option<Bytes>, rest: Pin<Box<B>> },
    }
}

impl<B> ReplayBody<B> {
    pub(crate) fn replay(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        Self {
            kind: Kind::Replay {
                data: (!data.is_empty()).then_some(data),
                trailers,
            },
        }
    }

    pub(crate) fn stream(body: B) -> Self {
        Self {
            kind: Kind::Stream { body },
        }
    }

    pub(crate) fn spilled(prefix: Bytes, rest: Pin<Box<B>>) -> Self {
        Self {
            kind: Kind::Spilled {
                // Nothing read yet: no empty data frame ahead of the rest.
                prefix: (!prefix.is_empty()).then_some(prefix),
                rest,
            },
        }
    }

    /// Whether this body can be sent again: it was buffered whole.
    pub fn is_replayable(&self) -> bool {
        matches!(self.kind, Kind::Replay { .. })
    }

    /// A copy for another attempt, if the body is replayable.
    pub(crate) fn try_clone(&self) -> Option<Self> {
        match &self.kind {
            Kind::Replay { data, trailers } => Some(Self {
                kind: Kind::Replay {
                    data: data.clone(),
                    trailers: trailers.clone(),
                },
            }),
            _ => None,
        }
    }
}

/// An empty body, replayable.
impl<B> Default for ReplayBody<B> {
    fn default() -> Self {
        Self::replay(Bytes::new(), None)
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Replay { data, trailers } => f
                .debug_struct("ReplayBody::Replay")
                .field("len", &data.as_ref().map_or(0, Bytes::len))
                .field("trailers", &trailers.is_some())
                .finish(),
            Kind::Stream { .. } => f.write_str("ReplayBody::Stream"),
            Kind::Spilled { .. } => f.write_str("ReplayBody::Spilled"),
        }
    }
}

fn to_bytes<D: Buf>(frame: Frame<D>) -> Frame<Bytes> {
    frame.map_data(|mut data| data.copy_to_bytes(data.remaining()))
}

impl<B: Body> Body for ReplayBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Replay { data, trailers } => Poll::Ready(
                data.take()
                    .map(Frame::data)
                    .or_else(|| trailers.take().map(Frame::trailers))
                    .map(Ok),
            ),
            KindProj::Stream { body } => {
                Poll::Ready(ready!(body.poll_frame(cx)).map(|frame| frame.map(to_bytes)))
            }
            KindProj::Spilled { prefix, rest } => match prefix.take() {
                Some(prefix) => Poll::Ready(Some(Ok(Frame::data(prefix)))),
                None => Poll::Ready(
                    ready!(rest.as_mut().poll_frame(cx)).map(|frame| frame.map(to_bytes)),
                ),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Replay { data, trailers } => data.is_none() && trailers.is_none(),
            Kind::Stream { body } => body.is_end_stream(),
            Kind::Spilled { prefix, rest } => prefix.is_none() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Replay { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Stream { body } => body.size_hint(),
            Kind::Spilled { prefix, rest } => {
                let extra = prefix.as_ref().map_or(0, |p| p.len() as u64);
                let rest = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower().saturating_add(extra));
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper.saturating_add(extra));
                }
                hint
            }
        }
    }
}

/// The bytes of a body read so far. One chunk is kept as is (a `Full`
/// body's only frame costs no copy); more are joined.
#[derive(Debug, Default)]
pub(crate) struct Collected {
    first: Option<Bytes>,
    joined: BytesMut,
    len: usize,
    pub(crate) trailers: Option<HeaderMap>,
}

impl Collected {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn push(&mut self, mut data: impl Buf) {
        let chunk = data.copy_to_bytes(data.remaining());
        self.len += chunk.len();
        if self.first.is_none() && self.joined.is_empty() {
            self.first = Some(chunk);
            return;
        }
        if let Some(first) = self.first.take() {
            self.joined.extend_from_slice(&first);
        }
        self.joined.extend_from_slice(&chunk);
    }

    pub(crate) fn into_bytes(self) -> Bytes {
        match self.first {
            Some(first) => first,
            None => self.joined.freeze(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn replay_yields_data_then_trailers_for_every_clone() {
        let mut trailers = HeaderMap::new();
        trailers.insert("checksum", "abc".parse().unwrap());
        let body: ReplayBody<String> = ReplayBody::replay(Bytes::from("hello"), Some(trailers));
        assert!(body.is_replayable());
        assert_eq!(body.size_hint().exact(), Some(5));
        let again = body.try_clone().unwrap();
        for body in [body, again] {
            let collected = body.collect().await.unwrap();
            assert_eq!(collected.trailers().unwrap()["checksum"], "abc");
            assert_eq!(collected.to_bytes(), "hello");
        }
    }

    #[tokio::test]
    async fn spilled_bodies_keep_every_byte() {
        let body = ReplayBody::spilled(Bytes::from("head-"), Box::pin(String::from("tail")));
        assert!(!body.is_replayable() && body.try_clone().is_none());
        assert_eq!(body.size_hint().exact(), Some(9));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "head-tail");
        let streamed = ReplayBody::stream(String::from("once"));
        assert_eq!(streamed.collect().await.unwrap().to_bytes(), "once");
    }

    #[test]
    fn collected_joins_only_when_needed() {
        let mut one = Collected::default();
        let bytes = Bytes::from_static(b"abc");
        one.push(bytes.clone());
        assert_eq!(one.into_bytes().as_ptr(), bytes.as_ptr(), "no copy");
        let mut many = Collected::default();
        for chunk in ["ab", "cd", "e"] {
            many.push(chunk.as_bytes());
        }
        assert_eq!(many.len(), 5);
        assert_eq!(many.into_bytes(), "abcde");
    }
}
