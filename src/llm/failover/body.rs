//! The client's stream: the first server's events, then each
//! continuation's, spliced; or an error event where a cut is not continued.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http::Response;
use http_body::{Body, Frame, SizeHint};
use serde_json::json;

use super::transcript::{Api, Remaining, Transcript};
use super::{leg_body, Failover, Outcome, Resend};
use crate::classify::LateFailure;
use crate::error::BoxError;
use crate::http::request_info::event_end;
use crate::http::BodyIdle;
use crate::llm::router::BoxFuture;
use crate::llm::ResponseBody;

/// Whether a leg's error is its stall past the idle limit (which the idle
/// timer counts against the server already).
pub(super) fn is_stall(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if error.is::<BodyIdle>() {
            return true;
        }
        next = error.source();
    }
    false
}

/// An error event in OpenAI's shape.
fn error_event(message: &str) -> Bytes {
    let event = json!({"error": {
        "message": message, "type": "server_error", "param": null, "code": "stream_cut",
    }});
    Bytes::from(format!("data: {event}\n\n"))
}

/// The client's answer body across legs.
pub(crate) struct Splice {
    /// The leg streaming now.
    leg: Option<ResponseBody>,
    /// Counts a cut of that leg against its server.
    late: Option<LateFailure>,
    /// A continuation on its way to its answer's head.
    next: Option<BoxFuture<Result<Response<ResponseBody>, BoxError>>>,
    /// Bytes of an event not complete yet.
    pending: BytesMut,
    transcript: Transcript,
    resend: Option<Resend>,
    counters: Arc<Failover>,
    /// Failovers the request had, and has left.
    budget: u32,
    left: u32,
    /// Sent last, then the body ends.
    tail: Option<Bytes>,
    ended: bool,
}

impl Splice {
    /// `budget`: the failovers the request had, and has left.
    pub(crate) fn new(
        api: Api,
        (leg, late): (ResponseBody, Option<LateFailure>),
        counters: Arc<Failover>,
        resend: Option<Resend>,
        (budget, left): (u32, u32),
    ) -> Self {
        let (budget, left) = if resend.is_some() {
            (budget, left)
        } else {
            (0, 0)
        };
        Self {
            leg: Some(leg),
            late,
            next: None,
            pending: BytesMut::new(),
            transcript: Transcript::new(api),
            resend,
            counters,
            budget,
            left,
            tail: None,
            ended: false,
        }
    }

    fn count(&self, outcome: Outcome) {
        self.counters.count(outcome);
    }

    /// The complete events in `pending`, as the client gets them.
    fn drain_events(&mut self) -> BytesMut {
        let mut out = BytesMut::new();
        while let Some(end) = event_end(&self.pending) {
            let event = self.pending.split_to(end).freeze();
            if let Some(event) = self.transcript.event(event) {
                out.extend_from_slice(&event);
            }
        }
        out
    }

    /// The leg ended (`clean`: at its end of stream, else with an error;
    /// `reported`: its server's failure is counted already, a stall past
    /// the idle limit): finish, continue on another server, or end with an
    /// error event.
    fn leg_ended(&mut self, clean: bool, reported: bool, why: &str) {
        self.leg = None;
        let late = self.late.take();
        if clean && !self.pending.is_empty() {
            // A last event without its blank line.
            let rest = self.pending.split().freeze();
            let mut event = BytesMut::from(&rest[..]);
            event.extend_from_slice(b"\n\n");
            if let Some(event) = self.transcript.event(event.freeze()) {
                self.tail = Some(event);
            }
        }
        self.pending.clear();
        if self.transcript.done() {
            self.ended = true;
            return;
        }
        if self.transcript.complete() {
            // The final event came, `[DONE]` did not.
            self.push_tail(Bytes::from_static(b"data: [DONE]\n\n"));
            self.ended = true;
            return;
        }
        // Cut before its end: its server failed this answer.
        if let (Some(late), false) = (late, reported) {
            late.failed();
        }
        self.ended = true;
        let resend = match &self.resend {
            Some(resend) if self.transcript.continuable() && self.left > 0 => resend,
            _ => {
                let outcome = if self.budget == 0 || !self.transcript.continuable() {
                    Outcome::NotContinued
                } else {
                    Outcome::Exhausted
                };
                self.not_continued(outcome, why);
                return;
            }
        };
        // The tree of the request, built now that a continuation needs it.
        let Ok(request) = serde_json::from_slice::<serde_json::Value>(&resend.request) else {
            self.not_continued(Outcome::NotContinued, why);
            return;
        };
        let continuation = match self.transcript.remaining(&request) {
            Remaining::None => {
                self.count(Outcome::Finished);
                self.push_tail(self.transcript.final_events());
                return;
            }
            Remaining::Tokens(_) | Remaining::Unlimited => self.transcript.continuation(&request),
        };
        let Some(body) = continuation.and_then(|c| serde_json::to_vec(&c).ok()) else {
            self.not_continued(Outcome::NotContinued, why);
            return;
        };
        let next = resend.send(Bytes::from(body));
        self.left -= 1;
        self.count(Outcome::Continued);
        tracing::warn!(
            tokens = self.transcript.tokens(),
            failover = self.budget.saturating_sub(self.left),
            reason = why,
            "an answer was cut short; continuing it on another server"
        );
        self.next = Some(next);
        self.ended = false;
    }

    /// Ends the answer with an error event, counted as `outcome`.
    fn not_continued(&mut self, outcome: Outcome, why: &str) {
        self.count(outcome);
        tracing::warn!(
            tokens = self.transcript.tokens(),
            failovers = self.budget.saturating_sub(self.left),
            reason = why,
            "an answer was cut short and not continued"
        );
        self.push_tail(error_event(&format!("the answer was cut short: {why}")));
    }

    fn push_tail(&mut self, bytes: Bytes) {
        self.tail = Some(match self.tail.take() {
            Some(before) => {
                let mut both = BytesMut::from(&before[..]);
                both.extend_from_slice(&bytes);
                both.freeze()
            }
            None => bytes,
        });
    }

    /// The continuation's answer came: stream it, or end with why not.
    fn continued(&mut self, answer: Result<Response<ResponseBody>, BoxError>) {
        let Some(shared) = self.resend.as_ref().map(|r| Arc::clone(&r.shared)) else {
            return;
        };
        match answer {
            Ok(response)
                if response.status().is_success()
                    && response
                        .headers()
                        .get(http::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.trim_start().starts_with("text/event-stream")) =>
            {
                let (mut parts, body) = response.into_parts();
                let (leg, late) = leg_body(&shared, &mut parts.extensions, body);
                self.leg = Some(leg);
                self.late = late;
                self.transcript.next_leg();
            }
            Ok(response) => {
                self.count(Outcome::Failed);
                let status = response.status();
                tracing::warn!(%status, "the continuation of a cut answer failed");
                self.push_tail(error_event(&format!(
                    "the answer was cut short and its continuation failed with {status}"
                )));
                self.ended = true;
            }
            Err(error) => {
                self.count(Outcome::Failed);
                tracing::warn!(%error, "the continuation of a cut answer failed");
                self.push_tail(error_event(
                    "the answer was cut short and no server could continue it",
                ));
                self.ended = true;
            }
        }
    }
}

impl Body for Splice {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(next) = this.next.as_mut() {
                let answer = ready!(next.as_mut().poll(cx));
                this.next = None;
                this.continued(answer);
                continue;
            }
            if let Some(leg) = this.leg.as_mut() {
                match ready!(Pin::new(leg).poll_frame(cx)) {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            this.pending.extend_from_slice(&data);
                            let out = this.drain_events();
                            if !out.is_empty() {
                                return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
                            }
                        }
                    }
                    Some(Err(error)) => {
                        let stalled = is_stall(&*error);
                        this.leg_ended(false, stalled, &error.to_string());
                    }
                    None => {
                        this.leg_ended(true, false, "the server closed the stream before its end")
                    }
                }
                continue;
            }
            if let Some(tail) = this.tail.take() {
                return Poll::Ready(Some(Ok(Frame::data(tail))));
            }
            this.ended = true;
            return Poll::Ready(None);
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.tail.is_none() && self.leg.is_none() && self.next.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, StreamBody};
    use proptest::prelude::*;

    use super::*;
    use crate::llm::FailoverStats;

    fn leg(frames: Vec<Result<&[u8], &'static str>>) -> ResponseBody {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = frames
            .into_iter()
            .map(|f| {
                f.map(|b| Frame::data(Bytes::copy_from_slice(b)))
                    .map_err(Into::into)
            })
            .collect();
        StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
    }

    /// What the client reads of `frames` with failover off.
    async fn read(frames: Vec<Result<&[u8], &'static str>>) -> (String, Arc<Failover>) {
        let counters = Arc::new(Failover::new(0, 1024));
        let splice = Splice::new(
            api(),
            (leg(frames), None),
            Arc::clone(&counters),
            None,
            (0, 0),
        );
        let bytes = splice.collect().await.unwrap().to_bytes();
        (String::from_utf8(bytes.to_vec()).unwrap(), counters)
    }

    fn api() -> Api {
        Api::Chat
    }

    /// A leg's server, counting the failures reported against it.
    #[derive(Default)]
    struct Server(std::sync::atomic::AtomicUsize);

    impl crate::classify::LateVerdict for Server {
        fn failed_late(&self) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    #[tokio::test]
    async fn a_cut_counts_against_its_server_and_a_whole_answer_does_not() {
        let failures = |frames: Vec<Result<&'static [u8], &'static str>>| async move {
            let server = Arc::new(Server::default());
            let late =
                LateFailure::new(Arc::clone(&server) as Arc<dyn crate::classify::LateVerdict>);
            let counters = Arc::new(Failover::new(0, 1024));
            let splice = Splice::new(api(), (leg(frames), Some(late)), counters, None, (0, 0));
            let _ = splice.collect().await;
            server.0.load(std::sync::atomic::Ordering::Relaxed)
        };
        let first = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\" a\"},\"finish_reason\":null}]}\n\n";
        assert_eq!(failures(vec![Ok(ANSWER.as_bytes())]).await, 0, "whole");
        assert_eq!(failures(vec![Ok(first)]).await, 1, "closed before its end");
        assert_eq!(failures(vec![Ok(first), Err("reset")]).await, 1, "reset");
    }

    const ANSWER: &str = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\" a\"},\"finish_reason\":null}]}\n\n\
        data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\" b\"},\"finish_reason\":\"length\"}]}\n\n\
        data: [DONE]\n\n";

    #[tokio::test]
    async fn events_pass_unchanged_wherever_frames_cut() {
        let bytes = ANSWER.as_bytes();
        for cut in 0..=bytes.len() {
            let (seen, counters) = read(vec![Ok(&bytes[..cut]), Ok(&bytes[cut..])]).await;
            assert_eq!(seen, ANSWER, "cut at {cut}");
            assert_eq!(counters.stats(), FailoverStats::default());
        }
    }

    #[tokio::test]
    async fn a_cut_not_continued_ends_with_an_error_event_and_no_half_event() {
        let first_event = ANSWER.find("\n\n").unwrap() + 2;
        // Cut inside the second event: its half is never sent.
        let (seen, counters) = read(vec![
            Ok(&ANSWER.as_bytes()[..first_event + 10]),
            Err("reset"),
        ])
        .await;
        let (sent, error) = seen.split_at(first_event);
        assert_eq!(sent, &ANSWER[..first_event]);
        let error: serde_json::Value =
            serde_json::from_str(error.strip_prefix("data: ").unwrap().trim()).unwrap();
        assert_eq!(error["error"]["code"], "stream_cut");
        assert_eq!(error["error"]["type"], "server_error");
        assert!(error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("reset"));
        assert_eq!(counters.stats().not_continued, 1);
        // A clean end before the final event is a cut too.
        let (seen, _) = read(vec![Ok(&ANSWER.as_bytes()[..first_event])]).await;
        let last = seen.trim_end().rsplit("\n\n").next().unwrap();
        let last: serde_json::Value =
            serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(last["error"]["code"], "stream_cut", "{seen}");
        assert!(last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("closed the stream"));
    }

    #[tokio::test]
    async fn an_answer_cut_after_its_final_event_gets_its_done() {
        let done = ANSWER.find("data: [DONE]").unwrap();
        for end in [Err("reset"), Ok(&b""[..])] {
            let (seen, counters) = read(vec![Ok(&ANSWER.as_bytes()[..done]), end]).await;
            assert_eq!(seen, ANSWER);
            assert_eq!(counters.stats(), FailoverStats::default());
        }
        // A last event without its blank line, at a clean end.
        let (seen, _) = read(vec![Ok(ANSWER.trim_end().as_bytes())]).await;
        assert_eq!(seen, ANSWER);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        /// Whatever a server sends, the client's body ends, without a panic.
        #[test]
        fn any_bytes_end(
            parts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..6),
            events in proptest::collection::vec("(data: (\\{\"choices\":\\[\\{\"index\":[01],\"delta\":\\{\"content\":\"x\"\\},\"finish_reason\":(null|\"stop\")\\}\\]\\}|\\[DONE\\]|[a-z{}]{0,8})\n\n)|: c\n\n", 0..6),
            cut: bool,
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let mut frames: Vec<Result<&[u8], &'static str>> = events.iter().map(|e| Ok(e.as_bytes())).collect();
            frames.extend(parts.iter().map(|p| Ok(p.as_slice())));
            if cut {
                frames.push(Err("reset"));
            }
            let counters = Arc::new(Failover::new(0, 1024));
            let splice = Splice::new(Api::Completions, (leg(frames), None), counters, None, (0, 0));
            let out = runtime.block_on(splice.collect());
            prop_assert!(out.is_ok());
        }
    }
}
