//! Answers that survive a dying server: a streamed answer cut before its
//! end is continued on another server, and a whole answer cut mid-body is
//! asked again.
//!
//! # Streams
//!
//! A streamed completion or chat completion whose server's stream ends
//! before its final event (the connection reset or closed, or no event for
//! the [stream idle timeout](super::Builder::stream_idle_timeout)) is
//! continued on another server:
//!
//! * the request goes out again with the text already delivered: appended
//!   to the `prompt` (`/v1/completions`), or as the assistant's message,
//!   continued in place with vLLM's `"continue_final_message": true,
//!   "add_generation_prompt": false` (`/v1/chat/completions`);
//!   `max_tokens`, `max_completion_tokens` and `min_tokens` are reduced by
//!   the tokens delivered (one an event, as servers stream them);
//! * the servers already tried for this request are avoided while another
//!   is available;
//! * the new stream is spliced into the client's: its events carry the
//!   first answer's `id`, `created` and `model`; a chat's opening role-only
//!   delta is dropped; the usage counts the first leg's prompt and every
//!   leg's completion tokens (`total_tokens` as the server counted it);
//!   exactly one final event and one `[DONE]` reach the client, and no
//!   event is half sent (events pass whole, so a cut inside an event loses
//!   nothing the client saw);
//! * an answer that had delivered every token it asked for when cut gets
//!   its final event (`finish_reason: "length"`) and `[DONE]` from the
//!   router; one cut after its final event gets `[DONE]` (without the
//!   usage event, when the client asked for one: the server never sent
//!   it).
//!
//! At most [`Builder::failovers`](super::Builder::failovers) continuations
//! a request (1 by default; 0 turns failover off). A request can lower
//! that, never raise it, with the [`FAILOVER_HEADER`] header: `off` (or
//! `0`) for none, a number for at most that many; other values leave the
//! setting as it is. The header stays inside the router.
//!
//! Not continued, whatever the setting: answers with more than one choice
//! (`n` > 1), with tool calls or reasoning in their deltas, with an event
//! that is not JSON, or that the server itself ended with an error event;
//! prompts of token ids. A stream that is cut and not continued (off,
//! exhausted, or not continuable) ends with an error event in OpenAI's
//! shape, `data: {"error": {"message", "type": "server_error", "param",
//! "code": "stream_cut"}}`, then closes: it never hangs. So does one whose
//! continuation could not start (no server, an error answer).
//!
//! # Whole answers
//!
//! A non-streamed answer is read whole by the router before it answers
//! (up to 16 MiB; a larger one passes through as it comes). One whose body
//! breaks off (or stalls past the idle timeout) is asked again of another
//! server, within the same limit of failovers.
//!
//! Every failover is counted ([`Router::failover_stats`](super::Router::failover_stats))
//! and logged as a `tracing` warning.

mod body;
mod transcript;
mod whole;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, Method, Request, Response, Uri, Version};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use tower::ServiceExt;

use self::body::Splice;
use self::transcript::Api;
use super::router::Shared;
use super::{RequestBody, ResponseBody};
use crate::balance::TriedEndpoints;
use crate::classify::LateFailure;
use crate::error::BoxError;
use crate::http::request_info::parse::{self, Shape};
use crate::http::{IdleTimeoutBody, RequestInfoError};

/// The request header that lowers the failovers of one request: `off` or
/// `0` for none, `N` for at most `N` (never more than the router's
/// setting).
pub const FAILOVER_HEADER: &str = "x-failover";

/// What failover has done since the router started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FailoverStats {
    /// Streams cut before their end and continued on another server.
    pub continued: u64,
    /// Streams cut after their last token, finished by the router.
    pub finished: u64,
    /// Whole answers cut mid-body and asked again of another server.
    pub retried_whole: u64,
    /// Requests whose server's connection failed after they were sent and
    /// before the answer's head, sent to another server.
    pub resent: u64,
    /// Cut answers not continued: failover off (by the request or the
    /// router), or an answer that cannot be continued.
    pub not_continued: u64,
    /// Cut answers not continued because their request had used every
    /// failover it had.
    pub exhausted: u64,
    /// Continuations that could not start: no server, or an error answer.
    pub failed: u64,
}

/// The router's failover setting and counters.
#[derive(Debug, Default)]
pub(crate) struct Failover {
    /// Failovers a request may have.
    pub(crate) max: u32,
    /// Request bodies larger than this are refused (the router's limit).
    pub(crate) max_body: usize,
    continued: AtomicU64,
    finished: AtomicU64,
    retried_whole: AtomicU64,
    resent: AtomicU64,
    not_continued: AtomicU64,
    exhausted: AtomicU64,
    failed: AtomicU64,
}

/// One of the counters.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Outcome {
    Continued,
    Finished,
    RetriedWhole,
    Resent,
    NotContinued,
    Exhausted,
    Failed,
}

impl Failover {
    pub(crate) fn new(max: u32, max_body: usize) -> Self {
        Self {
            max,
            max_body,
            ..Self::default()
        }
    }

    pub(crate) fn count(&self, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Continued => &self.continued,
            Outcome::Finished => &self.finished,
            Outcome::RetriedWhole => &self.retried_whole,
            Outcome::Resent => &self.resent,
            Outcome::NotContinued => &self.not_continued,
            Outcome::Exhausted => &self.exhausted,
            Outcome::Failed => &self.failed,
        };
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn stats(&self) -> FailoverStats {
        FailoverStats {
            continued: self.continued.load(Relaxed),
            finished: self.finished.load(Relaxed),
            retried_whole: self.retried_whole.load(Relaxed),
            resent: self.resent.load(Relaxed),
            not_continued: self.not_continued.load(Relaxed),
            exhausted: self.exhausted.load(Relaxed),
            failed: self.failed.load(Relaxed),
        }
    }
}

/// Marks an answer whose body failover manages (idle limits included).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Managed;

/// What it takes to send the request again: its head, its JSON, the
/// servers it tried.
pub(crate) struct Resend {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    tried: TriedEndpoints,
    /// The client's request body (JSON).
    request: Bytes,
    shared: Arc<Shared>,
}

impl Resend {
    /// The request with `body` as its JSON.
    fn request(&self, body: Bytes) -> Request<RequestBody> {
        let mut request = Request::new(request_body(body));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        request.extensions_mut().insert(self.tried.clone());
        request
    }

    /// Sends `body` through the router's path (model check, queue, retry,
    /// balancer), avoiding the servers tried.
    fn send(
        &self,
        body: Bytes,
    ) -> super::router::BoxFuture<Result<Response<ResponseBody>, BoxError>> {
        let request = self.request(body);
        let shared = Arc::clone(&self.shared);
        Box::pin(async move { routed(&shared, request).await })
    }
}

fn request_body(bytes: Bytes) -> RequestBody {
    Full::new(bytes).map_err(|e| match e {}).boxed_unsync()
}

/// Sends `request` through the routed path.
async fn routed(
    shared: &Shared,
    request: Request<RequestBody>,
) -> Result<Response<ResponseBody>, BoxError> {
    shared
        .routed
        .clone()
        .oneshot(request)
        .await
        .map(|r| r.map(|b| b.map_err(Into::into).boxed_unsync()))
}

/// A leg's body, ended with an error after the idle timeout without a
/// frame (the stall counts as its server's failure), and the way to count
/// a cut of it against its server.
pub(crate) fn leg_body(
    shared: &Shared,
    extensions: &mut http::Extensions,
    body: ResponseBody,
) -> (ResponseBody, Option<LateFailure>) {
    let late = extensions.remove::<LateFailure>();
    let body = match shared.stream_idle {
        Some(idle) => IdleTimeoutBody::new(body, idle)
            .report_to(late.clone())
            .boxed_unsync(),
        None => body,
    };
    (body, late)
}

/// Whether `error` is a server's connection failing once the request was
/// sent, before the answer's head (the retry layer does not resend a POST
/// that may have reached its server; failover does, as a new leg).
fn lost_after_sending(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(client) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
            return !client.is_connect();
        }
        next = e.source();
    }
    false
}

/// Failovers the request may have: the router's setting, lowered by the
/// request's [`FAILOVER_HEADER`].
fn budget(headers: &HeaderMap, max: u32) -> u32 {
    let Some(value) = headers.get(FAILOVER_HEADER) else {
        return max;
    };
    let value = value.to_str().unwrap_or("").trim();
    if value.eq_ignore_ascii_case("off") {
        return 0;
    }
    value.parse::<u32>().map_or(max, |n| n.min(max))
}

/// What failover needs to know of a request before sending it.
#[derive(Debug, PartialEq)]
struct Facts {
    /// It asks for a stream.
    stream: bool,
    /// Failover can continue it: one choice (`n` and `best_of` absent, null
    /// or 1), and a text prompt without `echo` (one string, or a list of
    /// one) or a list of messages.
    can: bool,
}

/// The [`Facts`] of a JSON body, read in place; `None` when it is not a
/// JSON object. A key given twice counts as the last one.
fn facts(api: Api, body: &[u8]) -> Option<Facts> {
    let (mut stream, mut one_choice, mut echo) = (false, [true, true], false);
    let (mut prompt, mut messages) = (false, false);
    parse::fields(body, |key, shape| match key {
        "stream" => stream = shape == Shape::Bool(true),
        "n" | "best_of" => {
            one_choice[usize::from(key == "best_of")] =
                matches!(shape, Shape::Null | Shape::Count(1));
        }
        "echo" => echo = shape == Shape::Bool(true),
        "prompt" => {
            prompt = matches!(shape, Shape::Str(_) | Shape::Array { len: 1, strings: 1 });
        }
        "messages" => messages = matches!(shape, Shape::Array { .. }),
        _ => {}
    })?;
    let can = one_choice == [true, true]
        && match api {
            Api::Completions => !echo && prompt,
            Api::Chat => messages,
        };
    Some(Facts { stream, can })
}

/// Sends a routed request (`/v1/completions`, `/v1/chat/completions`) with
/// failover: see [the module docs](self).
pub(crate) async fn send(
    shared: Arc<Shared>,
    mut request: Request<RequestBody>,
) -> Result<Response<ResponseBody>, BoxError> {
    // The header is the router's: it stays inside.
    let budget = budget(request.headers(), shared.failover.max);
    request
        .headers_mut()
        .remove(HeaderName::from_static(FAILOVER_HEADER));
    let api = match request.uri().path() {
        "/v1/completions" => Api::Completions,
        _ => Api::Chat,
    };
    let declared_other = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let essence = v
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            essence != "application/json" && !essence.ends_with("+json")
        });
    let too_large = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > shared.failover.max_body as u64);
    if shared.failover.max == 0 || declared_other || too_large {
        // Nothing to continue (the routed path answers 415 and 413 as it
        // always does); a cut stream still ends with an error event.
        let response = routed(&shared, request).await?;
        return Ok(splice(&shared, response, api, None, (0, 0)));
    }
    let (mut parts, body) = request.into_parts();
    let bytes = match Limited::new(body, shared.failover.max_body).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<LengthLimitError>() => {
            return Err(RequestInfoError::TooLarge {
                limit: shared.failover.max_body,
            }
            .into())
        }
        Err(error) => return Err(RequestInfoError::Body(error).into()),
    };
    // Read without a tree of values (a tree of a large body costs many
    // times its size, for the whole answer); the tree is built only when a
    // continuation is.
    let Some(Facts { stream, can }) = facts(api, &bytes) else {
        // Not a JSON object: the routed path refuses it as it always does.
        let request = Request::from_parts(parts, request_body(bytes));
        let response = routed(&shared, request).await?;
        return Ok(splice(&shared, response, api, None, (0, 0)));
    };
    let tried = TriedEndpoints::new();
    parts.extensions.insert(tried.clone());
    let mut headers = parts.headers.clone();
    headers.remove(CONTENT_LENGTH);
    let resend = Resend {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        version: parts.version,
        headers,
        tried,
        request: bytes.clone(),
        shared: Arc::clone(&shared),
    };
    let first = Request::from_parts(parts, request_body(bytes.clone()));
    let mut left = budget;
    let mut response = routed(&shared, first).await;
    while let Err(error) = &response {
        if left == 0 || !lost_after_sending(&**error) {
            break;
        }
        left -= 1;
        shared.failover.count(Outcome::Resent);
        tracing::warn!(%error, "a server failed before its answer's head; asking another");
        response = resend.send(bytes.clone()).await;
    }
    let response = response?;
    if !stream && left > 0 && response.status().is_success() {
        return whole::read(response, resend, bytes, budget, left).await;
    }
    // An answer that cannot be continued counts as one with failover off.
    let budget = if can { (budget, left) } else { (0, 0) };
    Ok(splice(&shared, response, api, Some(resend), budget))
}

/// A successful stream of server-sent events with its body spliced (cuts
/// continued or ended with an error event); any other answer as it is.
fn splice(
    shared: &Arc<Shared>,
    response: Response<ResponseBody>,
    api: Api,
    resend: Option<Resend>,
    budget: (u32, u32),
) -> Response<ResponseBody> {
    let sse = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
    if !response.status().is_success() || !sse {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let (body, late) = leg_body(shared, &mut parts.extensions, body);
    let splice = Splice::new(
        api,
        (body, late),
        Arc::clone(&shared.failover),
        resend,
        budget,
    );
    parts.extensions.insert(Managed);
    parts.headers.remove(CONTENT_LENGTH);
    Response::from_parts(parts, splice.boxed_unsync())
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn a_request_lowers_its_failovers_and_never_raises_them() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(FAILOVER_HEADER, value.parse().unwrap());
            budget(&headers, 2)
        };
        assert_eq!(budget(&HeaderMap::new(), 2), 2);
        assert_eq!(with("off"), 0);
        assert_eq!(with("OFF"), 0);
        assert_eq!(with("0"), 0);
        assert_eq!(with("1"), 1);
        assert_eq!(with("100"), 2);
        // Anything else: the router's setting.
        assert_eq!(with("on"), 2);
        assert_eq!(with("-1"), 2);
        let mut headers = HeaderMap::new();
        headers.insert(
            FAILOVER_HEADER,
            http::HeaderValue::from_bytes(b"\xff").unwrap(),
        );
        assert_eq!(budget(&headers, 2), 2);
    }

    fn continuable(api: Api, body: &Value) -> bool {
        facts(api, &serde_json::to_vec(body).unwrap()).is_some_and(|f| f.can)
    }

    #[test]
    fn only_requests_of_one_text_answer_are_continued() {
        let chat = |extra: Value| {
            let mut body = serde_json::json!({"messages": []});
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            continuable(Api::Chat, &body)
        };
        assert_eq!(
            facts(Api::Chat, br#"{"stream":true,"messages":[]}"#),
            Some(Facts {
                stream: true,
                can: true
            })
        );
        assert_eq!(facts(Api::Chat, b"[1]"), None);
        assert!(chat(serde_json::json!({})));
        assert!(chat(serde_json::json!({"n": 1})));
        assert!(chat(serde_json::json!({"n": null})));
        assert!(!chat(serde_json::json!({"n": 2})));
        assert!(!chat(serde_json::json!({"best_of": 3})));
        assert!(!continuable(
            Api::Chat,
            &serde_json::json!({"messages": "hi"})
        ));
        let completion = |body: Value| continuable(Api::Completions, &body);
        assert!(completion(serde_json::json!({"prompt": "Once"})));
        assert!(completion(serde_json::json!({"prompt": ["Once"]})));
        assert!(!completion(
            serde_json::json!({"prompt": ["Once", "Twice"]})
        ));
        assert!(!completion(serde_json::json!({"prompt": [1, 2, 3]})));
        assert!(!completion(
            serde_json::json!({"prompt": "Once", "echo": true})
        ));
        assert!(!completion(serde_json::json!({})));
    }
}
