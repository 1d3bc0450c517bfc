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
//! Every error is an answer in OpenAI's shape,
//! `{"error": {"message", "type", "param", "code"}}`, with `Retry-After`
//! when waiting helps; the servers' load report headers
//! (`endpoint-load-metrics`) stay inside.
//!
//! # Behind each request
//!
//! ```text
//! Router ─► AddRequestInfo (model, prompt blocks, priority; usage asked)
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

mod answer;
mod builder;
pub mod disagg;
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
