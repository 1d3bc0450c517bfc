//! Recording what is sent to a model server, for the time-to-first-token
//! cost model: a prompt's uncached tokens are queued prefill there from
//! dispatch to first token, held by a guard.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::load::Load;
use tower::Service;

use crate::classify::Busy;
use crate::endpoint::{Endpoint, PrefillGuard, PrefillState};
use crate::error::BoxError;
use crate::pick::llm::PromptRequest;

/// An endpoint wrapper for model servers: records each request it sends
/// into the server's [`PrefillState`], so that
/// [`Scored::ttft`](crate::pick::llm::Scored::ttft) can predict each
/// server's time to first token.
///
/// For each request whose extensions hold its
/// [`PromptBlocks`](crate::pick::llm::PromptBlocks) (the
/// [`AddRequestInfoLayer`](crate::http::AddRequestInfoLayer) puts them
/// there), `call` reserves the prompt's uncached tokens as queued prefill
/// and adds its blocks to the index of the server's cache
/// ([`PrefillState::reserve`]). The reservation is a [`PrefillGuard`] that
/// travels in the response future and then in the response body; it is
/// given back at the body's first data frame, or when the call fails, or
/// when the future or the body is dropped. A streamed answer
/// (`text/event-stream`) also teaches the state the server's speed: the time
/// from dispatch to its first frame. While the body streams, the wrapper
/// reads the answer's `usage` (`prompt_tokens` and
/// `prompt_tokens_details.cached_tokens`, in a JSON answer or the last
/// server-sent event) and tells the state what the server really reused
/// ([`PrefillGuard::reused`]).
///
/// Requests without prompt blocks pass through untouched. Put the wrapper
/// below the balancer, inside [`InFlight`](super::InFlight), and give the
/// same state to [`Weighted::with_prefill`](crate::endpoint::Weighted::with_prefill),
/// where pickers read it:
///
/// ```
/// use tower_lb::endpoint::{Endpoint, PrefillState, Weighted};
/// use tower_lb::load::{InFlight, Prefill};
///
/// let state = PrefillState::default();
/// let server = tower::service_fn(|_: http::Request<String>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
/// });
/// let endpoint = Weighted::new(InFlight::new(Prefill::new(server, state.clone())), 1)
///     .with_prefill(state);
/// assert!(endpoint.prefill().is_some());
/// ```
///
/// # Cost
///
/// Per request: a bisection in the index (`O(log b)` lookups for a prompt
/// of `b` blocks), the insertion of its blocks (`O(b)`), a few atomic
/// additions; no allocation. Per data frame until the usage is found: a
/// scan of the frame's bytes.
#[derive(Clone, Debug)]
pub struct Prefill<S> {
    inner: S,
    state: PrefillState,
}

impl<S> Prefill<S> {
    /// Wraps `inner`, recording into `state`.
    pub fn new(inner: S, state: PrefillState) -> Self {
        Self { inner, state }
    }

    /// The state it records into.
    pub fn state(&self) -> &PrefillState {
        &self.state
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Endpoint> Endpoint for Prefill<S> {
    const CHECKS_AVAILABILITY: bool = S::CHECKS_AVAILABILITY;

    fn weight(&self) -> u32 {
        self.inner.weight()
    }

    fn zone(&self) -> Option<&str> {
        self.inner.zone()
    }

    fn is_available(&self) -> bool {
        self.inner.is_available()
    }

    fn report(&self) -> Option<&crate::endpoint::ReportCell> {
        self.inner.report()
    }

    fn prefill(&self) -> Option<&PrefillState> {
        Some(&self.state)
    }
}

impl<S: Load> Load for Prefill<S> {
    type Metric = S::Metric;

    fn load(&self) -> S::Metric {
        self.inner.load()
    }
}

impl<S, B, RB> Service<http::Request<B>> for Prefill<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Error: Into<BoxError>,
    RB: Body,
{
    type Response = http::Response<PrefillBody<RB>>;
    type Error = BoxError;
    type Future = PrefillFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // Every request with a prompt, however short: it holds a batch slot
        // there and teaches the answer time.
        let guard = request.prompt_blocks().map(|blocks| {
            let floor = (blocks.len() * self.state.config().block_bytes) as u64;
            self.state
                .reserve(blocks.hashes(), blocks.prompt_bytes().max(floor))
        });
        PrefillFuture {
            inner: self.inner.call(request),
            guard,
        }
    }
}

pin_project! {
    /// The response future of [`Prefill`]: holds the request's
    /// [`PrefillGuard`] until the response, then hands it to the body.
    pub struct PrefillFuture<F> {
        #[pin]
        inner: F,
        guard: Option<PrefillGuard>,
    }
}

impl<F, RB, E> Future for PrefillFuture<F>
where
    F: Future<Output = Result<http::Response<RB>, E>>,
    E: Into<BoxError>,
    RB: Body,
{
    type Output = Result<http::Response<PrefillBody<RB>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match ready!(this.inner.poll(cx)) {
            Ok(response) => response,
            Err(error) => {
                let error: BoxError = error.into();
                // Out of time while the server answered others: busy, not
                // broken.
                let busy = is_timeout(&*error)
                    && this
                        .guard
                        .as_ref()
                        .is_some_and(PrefillGuard::server_progressed);
                return Poll::Ready(Err(if busy {
                    Box::new(Busy::new(error))
                } else {
                    error
                }));
            }
        };
        let streamed = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
        let guard = this.guard.take();
        Poll::Ready(Ok(
            response.map(|body| PrefillBody::new(body, guard, streamed))
        ))
    }
}

/// Whether `error` is an attempt's timeout (tower's `Elapsed`, as
/// [`ResponseTimeout`](crate::http::ResponseTimeout) fails).
fn is_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if error.is::<tower::timeout::error::Elapsed>() {
            return true;
        }
        next = error.source();
    }
    false
}

impl<F> fmt::Debug for PrefillFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrefillFuture")
            .field("guard", &self.guard)
            .finish()
    }
}

pin_project! {
    /// A response body that gives its request's prefill reservation back at
    /// the first data frame and reads the answer's usage as it streams.
    pub struct PrefillBody<B> {
        #[pin]
        inner: B,
        guard: Option<PrefillGuard>,
        streamed: bool,
        first_seen: bool,
        usage: Option<UsageScan>,
    }
}

impl<B: Body> PrefillBody<B> {
    fn new(inner: B, mut guard: Option<PrefillGuard>, streamed: bool) -> Self {
        if inner.is_end_stream() {
            // An empty answer: nothing more will come.
            if let Some(guard) = guard.as_mut() {
                guard.answer_end();
            }
            guard = None;
        }
        Self {
            inner,
            guard,
            streamed,
            first_seen: false,
            usage: Some(UsageScan::default()),
        }
    }
}

impl<B: Body> Body for PrefillBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        let Some(guard) = this.guard.as_mut() else {
            return Poll::Ready(frame);
        };
        match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    if !*this.first_seen && data.has_remaining() {
                        *this.first_seen = true;
                        guard.first_token(*this.streamed);
                    }
                    let found = this.usage.as_mut().and_then(|u| u.feed(data.chunk()));
                    if let Some(usage) = found {
                        guard.reused(usage.cached, usage.prompt);
                        guard.generated(usage.completion);
                        // One usage an answer: the rest is not scanned.
                        *this.usage = None;
                    }
                }
                if this.inner.is_end_stream() {
                    guard.answer_end();
                    this.guard.take();
                }
            }
            Some(Err(_)) => {
                this.guard.take();
            }
            None => {
                guard.answer_end();
                this.guard.take();
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

impl<B> fmt::Debug for PrefillBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrefillBody")
            .field("guard", &self.guard)
            .field("streamed", &self.streamed)
            .finish()
    }
}

/// Finds `"prompt_tokens": N` and `"cached_tokens": M` (and
/// `"completion_tokens"`, when it comes first or with them) in an answer's
/// bytes as they stream, across frame boundaries, without parsing the JSON
/// around them.
#[derive(Default)]
struct UsageScan {
    /// The end of the previous frame, for a key split between two.
    carry: Vec<u8>,
    prompt: Option<u64>,
    cached: Option<u64>,
    completion: Option<u64>,
}

/// An answer's usage, as far as routing reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Usage {
    prompt: u64,
    cached: u64,
    /// 0 when not seen.
    completion: u64,
}

const PROMPT_KEY: &[u8] = b"\"prompt_tokens\"";
const CACHED_KEY: &[u8] = b"\"cached_tokens\"";
const COMPLETION_KEY: &[u8] = b"\"completion_tokens\"";
/// Bytes kept from one frame for the next: a key, its colon, white space
/// and a number.
const CARRY: usize = 48;

impl UsageScan {
    /// Reads one frame; the usage once the prompt and cached tokens are
    /// seen.
    fn feed(&mut self, data: &[u8]) -> Option<Usage> {
        if self.carry.is_empty() {
            self.scan(data);
        } else {
            // Only the seam needs the carried bytes.
            let mut seam = std::mem::take(&mut self.carry);
            let carried = seam.len();
            seam.extend_from_slice(&data[..data.len().min(CARRY)]);
            self.scan(&seam);
            seam.truncate(carried);
            self.carry = seam;
            self.scan(data);
        }
        // The last bytes seen, across frames: a short frame adds to what
        // the previous ones left.
        if data.len() >= CARRY {
            self.carry.clear();
            self.carry.extend_from_slice(&data[data.len() - CARRY..]);
        } else {
            self.carry.extend_from_slice(data);
            let excess = self.carry.len().saturating_sub(CARRY);
            self.carry.drain(..excess);
        }
        match (self.prompt, self.cached) {
            (Some(prompt), Some(cached)) => Some(Usage {
                prompt,
                cached,
                completion: self.completion.unwrap_or(0),
            }),
            _ => None,
        }
    }

    fn scan(&mut self, bytes: &[u8]) {
        if self.prompt.is_none() {
            self.prompt = number_after(bytes, PROMPT_KEY);
        }
        if self.cached.is_none() {
            self.cached = number_after(bytes, CACHED_KEY);
        }
        if self.completion.is_none() {
            self.completion = number_after(bytes, COMPLETION_KEY);
        }
    }
}

/// The number after the first `key` in `bytes` that has a colon and a
/// whole number after it.
fn number_after(bytes: &[u8], key: &[u8]) -> Option<u64> {
    let mut from = 0;
    while let Some(at) = find(&bytes[from..], key) {
        let rest = &bytes[from + at + key.len()..];
        let rest = skip_space(rest);
        if let Some(rest) = rest.strip_prefix(b":") {
            let rest = skip_space(rest);
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            // A number cut by the frame's end is read at the seam instead.
            if digits > 0 && digits < rest.len() && digits <= 18 {
                return std::str::from_utf8(&rest[..digits]).ok()?.parse().ok();
            }
        }
        from += at + 1;
    }
    None
}

fn skip_space(bytes: &[u8]) -> &[u8] {
    let n = bytes.iter().take_while(|b| b.is_ascii_whitespace()).count();
    &bytes[n..]
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut i = 0;
    while i + needle.len() <= haystack.len() {
        match haystack[i..].iter().position(|&b| b == first) {
            Some(at) if i + at + needle.len() <= haystack.len() => {
                if &haystack[i + at..i + at + needle.len()] == needle {
                    return Some(i + at);
                }
                i += at + 1;
            }
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http_body_util::BodyExt;
    use tower::{service_fn, ServiceExt};

    use super::*;
    use crate::load::test_body::{channel_body, BodyError, ChannelBody};
    use crate::pick::llm::{BlockConfig, PromptBlocks};

    fn request() -> http::Request<()> {
        let blocks = PromptBlocks::hash(
            BlockConfig::default(),
            "m",
            ["a shared system prompt ".repeat(20)],
        );
        let mut request = http::Request::new(());
        request.extensions_mut().insert(blocks);
        request
    }

    #[tokio::test]
    async fn the_first_frame_gives_the_reservation_back_and_the_usage_is_read() {
        let state = PrefillState::default();
        let (tx, body) = channel_body();
        let mut body = Some(body);
        let server = service_fn(move |_: http::Request<()>| {
            let body = body.take().expect("one call");
            async move {
                Ok::<_, Infallible>(
                    http::Response::builder()
                        .header("content-type", "text/event-stream")
                        .body(body)
                        .unwrap(),
                )
            }
        });
        let response = Prefill::new(server, state.clone())
            .oneshot(request())
            .await
            .unwrap();
        assert_eq!(state.stats().waiting, 1);
        assert!(state.stats().queued_tokens > 0);
        let mut body = response.into_body();
        tx.send(Ok(Bytes::from_static(
            b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n",
        )))
        .unwrap();
        body.frame().await.unwrap().unwrap();
        assert_eq!((state.stats().waiting, state.stats().queued_tokens), (0, 0));
        // The usage chunk, cut in the middle of a key and of a number.
        for part in [
            &b"data: {\"choices\":[],\"usage\":{\"prompt_to"[..],
            b"kens\": 12",
            b"0, \"completion_tokens\":3,\"prompt_tokens_details\":{\"cached_tok",
            b"ens\":64}}}\n\n",
        ] {
            tx.send(Ok(Bytes::copy_from_slice(part))).unwrap();
            body.frame().await.unwrap().unwrap();
        }
        let stats = state.stats();
        assert_eq!(stats.measured_reuse, Some(64.0 / 120.0), "{stats:?}");
        assert_eq!(
            (stats.measured_prompt_tokens, stats.completion_tokens),
            (120, 3)
        );
    }

    #[tokio::test]
    async fn errors_and_drops_give_the_reservation_back() {
        let state = PrefillState::default();
        // The call fails.
        let failing = service_fn(|_: http::Request<()>| async {
            Err::<http::Response<ChannelBody>, _>(BodyError)
        });
        let _ = Prefill::new(failing, state.clone())
            .oneshot(request())
            .await;
        assert_eq!(state.stats().waiting, 0);
        // The future is dropped before the answer.
        let never = service_fn(|_: http::Request<()>| {
            std::future::pending::<Result<http::Response<ChannelBody>, Infallible>>()
        });
        let mut svc = Prefill::new(never, state.clone());
        let future = tower::Service::call(&mut svc, request());
        assert_eq!(state.stats().waiting, 1);
        drop(future);
        assert_eq!(state.stats().waiting, 0);
        // The body fails, or is dropped, before its first frame.
        for fail in [true, false] {
            let (tx, body) = channel_body();
            let mut body = Some(body);
            let server = service_fn(move |_: http::Request<()>| {
                let body = body.take().expect("one call");
                async move { Ok::<_, Infallible>(http::Response::new(body)) }
            });
            let response = Prefill::new(server, state.clone())
                .oneshot(request())
                .await
                .unwrap();
            assert_eq!(state.stats().waiting, 1);
            let mut body = response.into_body();
            if fail {
                tx.send(Err(BodyError)).unwrap();
                assert!(body.frame().await.unwrap().is_err());
            } else {
                drop(body);
            }
            assert_eq!((state.stats().waiting, state.stats().queued_tokens), (0, 0));
        }
    }

    #[tokio::test]
    async fn requests_without_a_prompt_reserve_nothing() {
        let state = PrefillState::default();
        let server = service_fn(|_: http::Request<()>| async {
            Ok::<_, Infallible>(http::Response::new(http_body_util::Empty::<Bytes>::new()))
        });
        let mut svc = Prefill::new(server, state.clone());
        let future = tower::Service::call(&mut svc, http::Request::new(()));
        assert_eq!(state.stats().waiting, 0);
        future.await.unwrap();
        assert_eq!(state.stats().sent_tokens, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_at_a_server_that_answers_others_is_busy_not_broken() {
        use tower::timeout::error::Elapsed;

        let state = PrefillState::default();
        let (go, gone) = tokio::sync::oneshot::channel::<()>();
        let gone = std::sync::Mutex::new(Some(gone));
        let timing_out = tower::service_fn(move |_: http::Request<()>| {
            let gone = gone.lock().unwrap().take();
            async move {
                if let Some(gone) = gone {
                    let _ = gone.await;
                }
                Err::<http::Response<String>, _>(Elapsed::new())
            }
        });
        let mut svc = Prefill::new(timing_out, state.clone());
        let waiting = tokio::spawn(svc.ready().await.unwrap().call(request()));
        tokio::task::yield_now().await;
        // Meanwhile another answer there ends.
        tokio::time::advance(std::time::Duration::from_millis(5)).await;
        let mut other = state.reserve(&[], 64);
        other.answer_end();
        drop(other);
        go.send(()).unwrap();
        let error = waiting.await.unwrap().unwrap_err();
        assert!(crate::classify::is_busy(&*error), "{error}");
        // Nothing moved there since: a timeout is the server's failure.
        let error = svc
            .ready()
            .await
            .unwrap()
            .call(request())
            .await
            .unwrap_err();
        assert!(!crate::classify::is_busy(&*error), "{error}");
        assert!(error.is::<Elapsed>());
    }

    #[test]
    fn usage_is_found_in_a_whole_answer_and_not_in_lookalikes() {
        let mut scan = UsageScan::default();
        assert_eq!(
            scan.feed(
                b"{\"prompt_tokens_details\":{\"cached_tokens\":32},\"prompt_tokens\":100,\"x\":1}"
            ),
            Some(Usage {
                prompt: 100,
                cached: 32,
                completion: 0
            })
        );
        let mut scan = UsageScan::default();
        assert_eq!(
            scan.feed(b"{\"text\":\"\\\"prompt_tokens\\\": not a number\"}"),
            None
        );
        assert_eq!(
            scan.feed(b"{\"prompt_tokens\": 99999999999999999999999}"),
            None
        );
    }
}
