//! An OpenAI-compatible LLM gateway as one `tower::Service`: [`Router`],
//! built by [`Builder`].
//!
//! ```no_run
//! use std::time::Duration;
//! use tower_lb::llm::{Builder, FlowControl, Router};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_lb::BoxError> {
//! let llm: Router = Builder::new()
//!     .servers(["http://10.0.0.1:8000", "http://10.0.0.2:8000"])
//!     .health_path("/health")
//!     .metrics_path("/metrics")
//!     .flow_control(FlowControl::new().deadline(Duration::from_secs(20)))
//!     .build()?;
//! let app = axum::Router::new().fallback_service(llm);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # What it serves
//!
//! * `POST /v1/chat/completions` and `POST /v1/completions`: routed. The
//!   body is read (the model, the prompt's blocks; 400 when it is not
//!   JSON, 413 above [`Builder::max_body`]), the model checked (404 for a
//!   model no server serves, when models were given), the request waits
//!   its turn when every server is busy ([`FlowControl`]), and goes to the
//!   server with the least predicted time to first token
//!   ([`Scored::ttft`](crate::pick::llm::Scored::ttft)), retried once on
//!   another server within the budget. Answers stream through frame by
//!   frame.
//!   With a prefill pool ([`Builder::prefill_server`]), each request goes
//!   to a prefill server and a decode server instead: see [`disagg`].
//! * `GET /v1/models`: the models given to the builder; without any, asked
//!   of a server.
//! * Any other path: passed on to a server ([`Builder::pass_through`]).
//!
//! # Failover
//!
//! A streamed completion or chat completion whose server's stream ends
//! before its final event (reset, closed, or silent past the
//! [stream idle timeout](Builder::stream_idle_timeout)) is continued on
//! another server: the prompt and the text already delivered go out again
//! (appended to a completion's prompt; a chat's as the assistant's message
//! with vLLM's `"continue_final_message": true,
//! "add_generation_prompt": false`), with `max_tokens` and
//! `max_completion_tokens` reduced by the tokens delivered, and the new
//! stream is spliced into the client's: the first answer's `id`, `created`
//! and `model` on every event, no text repeated or missing, one final
//! event and one `[DONE]`, the usage summed (the first leg's prompt, every
//! leg's completion tokens). A whole answer whose body breaks off is asked
//! again of another server (the router reads whole answers before it
//! answers, up to 16 MiB). At most [`Builder::failovers`] times a request
//! (1 by default); a request lowers it with the [`FAILOVER_HEADER`] header
//! (`x-failover: off`, or a number). Answers with several choices, tool
//! calls or events that are not JSON are not continued. A stream cut and
//! not continued ends with an error event,
//! `data: {"error": {..., "code": "stream_cut"}}`, then closes.
//! [`Router::failover_stats`] counts what failover did; each failover is a
//! `tracing` warning.
//!
//! Every error is an answer in OpenAI's shape,
//! `{"error": {"message", "type", "param", "code"}}`, with `Retry-After`
//! when waiting helps; the servers' load report headers
//! (`endpoint-load-metrics`) stay inside.
//!
//! # Behind each request
//!
//! ```text
//! Router ─► failover (the body read once; each leg sent on as below,
//!           its events spliced into the client's stream)
//!        ─► AddRequestInfo (model, prompt blocks, priority; usage asked)
//!        ─► Admission (model check; the queue: bands, tenants, deadline)
//!        ─► Retry (budgeted) ─► Balance(picker, Scored::ttft by default)
//!        ─► per server: Healthy ─► Weighted (report, prefill state)
//!           ─► InFlight ─► Prefill ─► Orca (reports in answers)
//!           ─► MarkServer (ServedBy in the answer's extensions)
//!           ─► ResponseTimeout ─► SetAuthority(hyper-util client)
//! ```
//!
//! A request holds its place in the fleet until its answer's body ends,
//! whatever ends it: the last event, an error, or a client that goes away.
//! A continuation is a request of its own through the same path (the
//! queue, the retry, the balancer, which avoids the servers the answer
//! already tried).

mod answer;
mod builder;
pub mod disagg;
mod failover;
mod queue;
mod router;
mod served_by;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;

use crate::classify::LateFailures;
use crate::endpoint::Weighted;
use crate::error::BoxError;
use crate::health::Healthy;
use crate::http::{PromptBody, ResponseTimeout, SentBody, SetAuthority};
use crate::load::{InFlight, Prefill};
use crate::pick::BoxPick;
use crate::report::Orca;
use crate::retry::ReplayBody;

pub use self::builder::{BuildError, Builder};
pub use self::disagg::{Disaggregation, PairCount, PdError, PdProtocol, PdStats, Role};
pub use self::failover::{FailoverStats, FAILOVER_HEADER};
pub use self::queue::{
    BandStats, FlowControl, QueueStats, Refused, DEADLINE_HEADER, TENANT_HEADER,
};
pub use self::router::{Router, ServerStatus};
pub use self::served_by::{MarkFuture, MarkServer, ServedBy};

/// A request's body inside the router (boxed once, as it arrives).
pub type RequestBody = UnsyncBoxBody<Bytes, BodyError>;

/// Why reading a client's request body failed.
///
/// A named type rather than [`BoxError`] inside [`RequestBody`]: a boxed
/// trait object there trips the compiler's check that the router's future
/// is `Send` ("implementation ... is not general enough").
#[derive(Debug)]
pub struct BodyError(pub BoxError);

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// The body of every answer: a server's, streamed, or the router's own.
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// A request's body as it is sent to a server: read for its prompt,
/// replayable for a retry.
pub type UpstreamBody = ReplayBody<PromptBody<RequestBody>>;

/// The client every server shares.
pub type HttpClient = Client<HttpConnector, SentBody<UpstreamBody>>;

/// One model server as the router's balancer holds it.
pub type Endpoint = Healthy<
    Weighted<InFlight<Prefill<Orca<MarkServer<ResponseTimeout<SetAuthority<HttpClient>>>>>>>,
    LateFailures,
>;

/// The router's picker: any picker over [`Endpoint`]s, boxed.
pub type Picker = BoxPick<http::Request<UpstreamBody>, Endpoint>;
