//! What the client-facing server counts, when asked to: its answers by
//! status, the time to each answer's head and to its end. Prometheus types
//! (prometheus-client), registered on the binary's `/metrics` page.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Status {
    status: u16,
}

/// Answers by status and their timing; cloning shares them.
#[derive(Clone, Debug)]
pub struct Traffic {
    answers: Family<Status, Counter>,
    head: Histogram,
    duration: Histogram,
}

impl Default for Traffic {
    fn default() -> Self {
        Self::new()
    }
}

fn seconds() -> Histogram {
    // 100 µs to about 13 s.
    Histogram::new(exponential_buckets(0.000_1, 2.0, 18))
}

impl Traffic {
    pub fn new() -> Self {
        Self {
            answers: Family::default(),
            head: seconds(),
            duration: seconds(),
        }
    }

    /// Registers the three metrics as `{prefix}_answers` (a counter by
    /// status), `{prefix}_answer_head_seconds` and
    /// `{prefix}_answer_duration_seconds`.
    pub fn register(&self, registry: &mut Registry, prefix: &str) {
        registry.register(
            format!("{prefix}_answers"),
            "Answers to clients by status, the gateway's own refusals included",
            self.answers.clone(),
        );
        registry.register(
            format!("{prefix}_answer_head_seconds"),
            "Time from a request's arrival to its answer's head",
            self.head.clone(),
        );
        registry.register(
            format!("{prefix}_answer_duration_seconds"),
            "Time from a request's arrival to its answer's last byte",
            self.duration.clone(),
        );
    }

    /// Counts an answer with `status` to a request that arrived at
    /// `arrived`, now at its head; its body, timed to its end.
    pub fn answered<B>(&self, status: u16, arrived: Instant, body: B) -> Timed<B> {
        self.answers.get_or_create(&Status { status }).inc();
        self.head.observe(arrived.elapsed().as_secs_f64());
        Timed {
            inner: body,
            end: Some((self.duration.clone(), arrived)),
        }
    }
}

pin_project! {
    /// An answer's body, timed to its end (its last frame, an error, or
    /// the client going away) when counted.
    pub struct Timed<B> {
        #[pin]
        inner: B,
        end: Option<(Histogram, Instant)>,
    }

    impl<B> PinnedDrop for Timed<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some((histogram, arrived)) = this.project().end.take() {
                histogram.observe(arrived.elapsed().as_secs_f64());
            }
        }
    }
}

impl<B> Timed<B> {
    /// A body that is not counted.
    pub fn untimed(inner: B) -> Self {
        Self { inner, end: None }
    }
}

impl<B: Body<Data = Bytes>> Body for Timed<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let frame = std::task::ready!(this.inner.as_mut().poll_frame(cx));
        let ended = match &frame {
            Some(Ok(_)) => this.inner.is_end_stream(),
            _ => true,
        };
        if ended {
            if let Some((histogram, arrived)) = this.end.take() {
                histogram.observe(arrived.elapsed().as_secs_f64());
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
