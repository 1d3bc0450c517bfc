//! Routing facts from an OpenAI-compatible request body: the model and the
//! prompt's blocks, for the scoring picker and its prefix scorer.

mod error;
mod future;
pub(crate) mod parse;
mod usage;

use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::Request;
use http_body_util::{Either, Full};
use tower::Service;
use tower_layer::Layer;

use crate::error::BoxError;
use crate::pick::llm::BlockConfig;

pub use self::error::RequestInfoError;
pub use self::future::ResponseFuture;
pub(crate) use self::usage::event_end;
pub use self::usage::UsageFilter;

/// The body the inner service gets: the bytes read, unchanged, or the
/// original body when it was not read.
pub type PromptBody<B> = Either<Full<Bytes>, B>;

/// Request bodies larger than this are refused unless
/// [`AddRequestInfoLayer::max_body`] says otherwise: 1 MiB.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;

/// Reads the JSON body of OpenAI-compatible requests and puts what routing
/// needs in the request's extensions:
///
/// * a [`RequestInfo`](crate::pick::llm::RequestInfo) with the body's `model`
///   (or the `x-model` header's) and the adapter and priority headers;
/// * [`PromptBlocks`](crate::pick::llm::PromptBlocks): the chained block hashes
///   of `prompt` (`/v1/completions`; text or a list of texts) or of
///   `messages` in order, each as its role and its content
///   (`/v1/chat/completions`).
///
/// Then it forwards the body byte for byte (as [`PromptBody::Left`]).
///
/// * A body declared or found larger than the limit (1 MiB by default)
///   fails with [`RequestInfoError::TooLarge`] (413) before the rest is
///   read.
/// * A body whose `content-type` says JSON but that does not parse fails
///   with [`RequestInfoError::Malformed`] (400), whose message says where.
/// * A body whose `content-type` names something else is not read: it is
///   forwarded as it streams ([`PromptBody::Right`]), without prompt facts.
///   So is an empty body. Without a `content-type`, a body that parses as
///   JSON is read like one; one that does not is forwarded without facts.
/// * A JSON body whose `model` is not a string fails with
///   [`RequestInfoError::BadModel`] (400).
/// * A JSON body of another shape (an embeddings request) gets the model
///   only.
///
/// Cost: the body is held in memory until forwarded (at most the limit);
/// parsing is linear in its size, and hashing reads at most
/// [`BlockConfig::max_blocks`] blocks. Trailers of a read body are dropped.
///
/// ```
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
/// use tower_lb::http::{PromptBody, AddRequestInfoLayer};
/// use tower_lb::pick::{llm::{PromptBlocks, ScoredRequest}};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let service = ServiceBuilder::new().layer(AddRequestInfoLayer::new()).service(service_fn(
///     |request: http::Request<PromptBody<String>>| async move {
///         let blocks = request.extensions().get::<PromptBlocks>().map_or(0, |b| b.len());
///         let model = request.info().model.map(str::to_owned);
///         Ok::<_, std::convert::Infallible>(http::Response::new(format!("{model:?} {blocks}")))
///     },
/// ));
/// let body = format!(r#"{{"model":"llama","prompt":"{}"}}"#, "x".repeat(200));
/// let request = http::Request::post("/v1/completions")
///     .header("content-type", "application/json")
///     .body(body)
///     .unwrap();
/// let response = service.oneshot(request).await.unwrap();
/// assert_eq!(response.body().get_ref(), "Some(\"llama\") 3");
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct AddRequestInfoLayer {
    max_body: usize,
    blocks: BlockConfig,
    ask_usage: bool,
    strict: bool,
    per_token: Option<Duration>,
}

/// What reading one body needs to know.
#[derive(Clone, Copy, Debug)]
pub(super) struct Settings {
    pub(super) blocks: BlockConfig,
    /// The body is declared JSON: a parse error is 400.
    pub(super) json: bool,
    pub(super) ask_usage: bool,
    /// Only JSON passes: anything else is 415.
    pub(super) strict: bool,
    pub(super) per_token: Option<Duration>,
}

impl Default for AddRequestInfoLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl AddRequestInfoLayer {
    /// A 1 MiB limit and the default [`BlockConfig`].
    #[must_use]
    pub fn new() -> Self {
        Self {
            max_body: DEFAULT_MAX_BODY,
            blocks: BlockConfig::default(),
            ask_usage: false,
            strict: false,
            per_token: None,
        }
    }

    /// Every request with a body must send JSON: a body declared as
    /// something else, or that does not parse, fails with
    /// [`RequestInfoError::NotJson`] (415); so every body is read, and the
    /// size limit applies to all of them. Off by default (other bodies are
    /// forwarded unread).
    #[must_use]
    pub fn require_json(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// Gives each non-streamed request its own attempt deadline
    /// ([`OwnDeadline`](crate::http::OwnDeadline)): `max_tokens` (or
    /// `max_completion_tokens`) × `per_token`, or none without either
    /// limit. A whole answer arrives only once generated, so the attempt
    /// timeout meant for a first byte would cut long generations and blame
    /// healthy servers for them. Streamed requests keep the attempt's
    /// timeout, to their first byte. Off by default.
    #[must_use]
    pub fn time_per_token(mut self, per_token: Duration) -> Self {
        self.per_token = Some(per_token);
        self
    }

    /// Asks the server for the usage of every streamed answer
    /// (`stream_options.include_usage`) when the client did not, and keeps
    /// that extra last event from the client: the router then learns from
    /// every answer what the server's cache really reused
    /// ([`Prefill`](crate::load::Prefill) reads it). Off by default; the
    /// body is re-serialised when it is changed.
    #[must_use]
    pub fn ask_for_usage(mut self, ask: bool) -> Self {
        self.ask_usage = ask;
        self
    }

    /// Refuses bodies larger than `bytes`.
    #[must_use]
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Cuts prompts into blocks as `config` says; it must match the prefix
    /// scorer's expectations (both default to 64-byte blocks, 256 at most).
    #[must_use]
    pub fn blocks(mut self, config: BlockConfig) -> Self {
        self.blocks = config;
        self
    }
}

impl<S> Layer<S> for AddRequestInfoLayer {
    type Service = AddRequestInfo<S>;

    fn layer(&self, inner: S) -> AddRequestInfo<S> {
        AddRequestInfo {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`AddRequestInfoLayer`].
#[derive(Clone, Debug)]
pub struct AddRequestInfo<S> {
    inner: S,
    layer: AddRequestInfoLayer,
}

impl<S> AddRequestInfo<S> {
    /// Wraps `inner` with the default settings.
    pub fn new(inner: S) -> Self {
        AddRequestInfoLayer::new().layer(inner)
    }
}

/// What the `content-type` header says of the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Declared {
    Json,
    Other,
    Unknown,
}

fn declared<B>(request: &Request<B>) -> Declared {
    let Some(value) = request.headers().get(CONTENT_TYPE) else {
        return Declared::Unknown;
    };
    let essence = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json" || essence.ends_with("+json") {
        Declared::Json
    } else {
        Declared::Other
    }
}

impl<S, B, ResBody> Service<Request<B>> for AddRequestInfo<S>
where
    S: Service<Request<PromptBody<B>>, Response = http::Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<UsageFilter<ResBody>>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let declared = declared(&request);
        let empty = http_body::Body::is_end_stream(request.body());
        let length = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let too_large = length.is_some_and(|n| n > self.layer.max_body as u64);
        if self.layer.strict && declared == Declared::Other && !empty {
            return ResponseFuture::fail(if too_large {
                RequestInfoError::TooLarge {
                    limit: self.layer.max_body,
                }
            } else {
                RequestInfoError::NotJson
            });
        }
        if declared == Declared::Other || empty {
            let request = request.map(Either::Right);
            return ResponseFuture::call(self.inner.call(request));
        }
        if too_large {
            return ResponseFuture::fail(RequestInfoError::TooLarge {
                limit: self.layer.max_body,
            });
        }
        // The service that was made ready is the one that will be called.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::collect(
            request,
            inner,
            self.layer.max_body,
            Settings {
                blocks: self.layer.blocks,
                json: declared == Declared::Json,
                ask_usage: self.layer.ask_usage,
                strict: self.layer.strict,
                per_token: self.layer.per_token,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http::{Request, Response, StatusCode};
    use http_body_util::{BodyExt, Full};
    use tower::{service_fn, Layer, ServiceExt};

    use super::*;
    use crate::pick::llm::{PromptBlocks, RequestInfo};

    /// What the inner service saw: the body, the model, the number of blocks.
    async fn seen(
        layer: AddRequestInfoLayer,
        request: Request<Full<Bytes>>,
    ) -> Result<(Bytes, Option<String>, Option<usize>), BoxError> {
        let service = layer.layer(service_fn(
            |request: Request<PromptBody<Full<Bytes>>>| async move {
                let facts = request.extensions().get::<RequestInfo>().cloned();
                let blocks = request
                    .extensions()
                    .get::<PromptBlocks>()
                    .map(PromptBlocks::len);
                let body = request.into_body().collect().await.unwrap().to_bytes();
                let model = facts.and_then(|f| f.model.map(String::from));
                Ok::<_, Infallible>(Response::new((body, model, blocks)))
            },
        ));
        Ok(service.oneshot(request).await?.into_body().into_inner())
    }

    fn json(body: &str) -> Request<Full<Bytes>> {
        Request::post("/v1/chat/completions")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap()
    }

    #[tokio::test]
    async fn chat_messages_become_facts_and_the_body_passes_unchanged() {
        let system = "s".repeat(300);
        let body = format!(
            r#"{{"model":"llama","stream":true,"messages":[{{"role":"system","content":"{system}"}},{{"role":"user","content":[{{"type":"text","text":"hi"}}]}}]}}"#
        );
        let (forwarded, model, blocks) =
            seen(AddRequestInfoLayer::new(), json(&body)).await.unwrap();
        assert_eq!(forwarded, body.as_bytes());
        assert_eq!(model.as_deref(), Some("llama"));
        assert_eq!(blocks, Some(4));
    }

    #[tokio::test]
    async fn roles_are_part_of_the_prompt() {
        let config = crate::pick::llm::BlockConfig::default();
        let text = "t".repeat(200);
        let as_role = |role: &str| {
            let body = serde_json::json!({"messages": [{"role": role, "content": text}]});
            let body = serde_json::to_vec(&body).unwrap();
            parse::Head::read(&body)
                .unwrap()
                .prompt(&body, config)
                .unwrap()
        };
        assert_ne!(as_role("system").hashes()[0], as_role("user").hashes()[0]);
    }

    #[tokio::test]
    async fn malformed_json_is_refused_with_400_and_a_clear_message() {
        let error = seen(
            AddRequestInfoLayer::new(),
            json(r#"{"model": "llama", "prompt": "#),
        )
        .await
        .unwrap_err();
        let error = error.downcast_ref::<RequestInfoError>().unwrap();
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        assert!(
            error.to_string().contains("not valid JSON") && error.to_string().contains("column"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn oversized_bodies_are_refused_with_413() {
        let big = format!(r#"{{"prompt":"{}"}}"#, "x".repeat(2000));
        let layer = AddRequestInfoLayer::new().max_body(1000);
        // Declared by content-length, refused before reading.
        let mut request = json(&big);
        request
            .headers_mut()
            .insert("content-length", big.len().into());
        let error = seen(layer.clone(), request).await.unwrap_err();
        assert_eq!(
            error.downcast_ref::<RequestInfoError>().unwrap().status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        // Found while reading.
        let error = seen(layer, json(&big)).await.unwrap_err();
        assert_eq!(
            error.downcast_ref::<RequestInfoError>().unwrap().status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }

    #[tokio::test]
    async fn bodies_that_are_not_json_are_routed_without_facts() {
        let request = Request::post("/upload")
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from_static(b"{ not json")))
            .unwrap();
        let (forwarded, model, blocks) = seen(AddRequestInfoLayer::new(), request).await.unwrap();
        assert_eq!(
            (&forwarded[..], model, blocks),
            (&b"{ not json"[..], None, None)
        );
        // No content-type and not JSON: the same.
        let request = Request::post("/x")
            .body(Full::new(Bytes::from_static(b"plain")))
            .unwrap();
        let (forwarded, _, blocks) = seen(AddRequestInfoLayer::new(), request).await.unwrap();
        assert_eq!((&forwarded[..], blocks), (&b"plain"[..], None));
    }

    #[tokio::test]
    async fn the_model_header_fills_in_for_a_body_without_one() {
        let mut request = json(r#"{"input":"embed me"}"#);
        request
            .headers_mut()
            .insert("x-model", "bge".parse().unwrap());
        let (_, model, blocks) = seen(AddRequestInfoLayer::new(), request).await.unwrap();
        assert_eq!((model.as_deref(), blocks), (Some("bge"), None));
    }

    mod no_panics {
        use proptest::prelude::*;

        use super::super::future::request;
        use super::super::Settings;
        use crate::pick::llm::BlockConfig;

        fn parts() -> http::request::Parts {
            http::Request::new(()).into_parts().0
        }

        fn settings(blocks: BlockConfig, json: bool, strict: bool) -> Settings {
            Settings {
                blocks,
                json,
                ask_usage: json,
                strict,
                per_token: Some(std::time::Duration::from_millis(1)),
            }
        }

        proptest! {
            /// Whatever the body, reading it ends in a request or an error.
            #[test]
            fn any_bytes(body in proptest::collection::vec(any::<u8>(), 0..512), json: bool) {
                let _ = request::<()>(parts(), body.into(), settings(BlockConfig::default(), json, json));
            }

            /// JSON of any shape under the known keys, and any block settings.
            #[test]
            fn any_shape(
                text in "[\\[\\]{}\",:a-z0-9 ]{0,200}",
                block_size in 0usize..100,
                max_blocks in 0usize..10,
            ) {
                let config = BlockConfig { block_size, max_blocks };
                for key in ["prompt", "messages", "model"] {
                    let body = format!("{{\"{key}\": {text}}}");
                    let _ = request::<()>(parts(), body.clone().into(), settings(config, true, false));
                    let _ = request::<()>(parts(), body.into(), settings(config, true, true));
                }
            }
        }
    }
}
