//! The router service: routes, the queue in front of the balancer, and the
//! router's own answers.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Either};
use pin_project_lite::pin_project;
use serde_json::json;
use tokio::time::Instant;
use tower::{Service, ServiceExt};

use super::answer::{self, UnknownModel};
use super::disagg::{Pd, PdStats, Role};
use super::failover::{self, Failover, FailoverStats, Managed};
use super::queue::{Permit, Queue};
use super::queue::{QueueError, QueueStats, DEADLINE_HEADER, TENANT_HEADER};
use super::{BodyError, Endpoint, Picker, RequestBody, ResponseBody};
use crate::balance::Balance;
use crate::classify::LateFailure;
use crate::endpoint::{Endpoint as _, PrefillStats, ReportSnapshot};
use crate::error::BoxError;
use crate::health::{EndpointHealth, HealthRegistry};
use crate::http::{AddRequestInfo, IdleTimeoutBody, PromptBody};
use crate::pick::llm::ScoredRequest;
use crate::report::PollerHandle;
use crate::retry::Retry;

pub(crate) type Lb = Balance<SocketAddr, Endpoint, Picker>;
pub(crate) type Core = Retry<Lb>;
type Routed = AddRequestInfo<Admission>;
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// An OpenAI-compatible LLM gateway as one `tower::Service`, built by
/// [`Builder`](super::Builder); see [the module docs](super).
///
/// `Clone` (clones share the servers, the queue and what is learnt),
/// `Send` and `Sync`. It never fails: every error is an answer in OpenAI's
/// error shape, so it mounts as it is in axum
/// (`Router::new().fallback_service(llm)`) or in a hyper server.
#[derive(Clone)]
pub struct Router {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) routed: Routed,
    pub(crate) core: Core,
    pub(crate) models: Arc<[String]>,
    pub(crate) pass_through: bool,
    pub(crate) stream_idle: Option<Duration>,
    pub(crate) failover: Arc<Failover>,
    pub(crate) queue: Option<Arc<Queue>>,
    pub(crate) servers: Arc<Mutex<Vec<Server>>>,
    pub(crate) health: HealthRegistry<SocketAddr>,
    /// Disaggregated serving's prefill pool, when it is on.
    pub(crate) pd: Option<Arc<Pd>>,
    /// Ends the queue's timer and the pollers with the last clone.
    pub(crate) _tasks: Tasks,
}

/// What the router keeps of one server for its status.
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    pub(crate) model: Option<String>,
    pub(crate) _poller: Option<PollerHandle>,
}

/// Aborts the router's background tasks when dropped.
#[derive(Default)]
pub(crate) struct Tasks(pub(crate) Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("models", &self.shared.models)
            .field("pass_through", &self.shared.pass_through)
            .field("queue", &self.shared.queue)
            .finish_non_exhaustive()
    }
}

/// One model server as the router sees it, for a status page.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerStatus {
    /// Its address.
    pub addr: SocketAddr,
    /// The model it was configured with, if any.
    pub model: Option<String>,
    /// Its part in disaggregated serving ([`Role::Both`] without it).
    pub role: Role,
    /// Whether health lets requests go there.
    pub available: bool,
    /// Its health: state, consecutive failures, ejections so far.
    pub health: Option<EndpointHealth<SocketAddr>>,
    /// Its last load report, fresh or not (`age` says how old).
    pub report: Option<ReportSnapshot>,
    /// What the router knows of its prefill: requests in flight and waiting
    /// for a first token, batch slots, expected and measured prefix reuse.
    pub prefill: Option<PrefillStats>,
}

impl Router {
    /// Every server in the router's pools now (the prefill pool's too,
    /// under disaggregated serving; a server of role both once), with its
    /// role, its report and what the router knows of it.
    pub fn servers(&self) -> Vec<ServerStatus> {
        let mut all = status(
            self.shared.core.get_ref(),
            &self.shared.servers,
            &self.shared.health,
            |addr| match &self.shared.pd {
                Some(pd) => pd.role_of(addr),
                None => Role::Both,
            },
        );
        if let Some(pd) = &self.shared.pd {
            let prefill = status(
                &pd.parts.prefill,
                &pd.parts.servers,
                &pd.parts.health,
                |addr| pd.role_of(addr),
            );
            // Servers of role both are in both pools: listed once.
            all.extend(prefill.into_iter().filter(|s| s.role == Role::Prefill));
        }
        all
    }

    /// Disaggregated serving's figures (requests each way, failed legs,
    /// the pairs chosen); `None` when it is off.
    pub fn disaggregation(&self) -> Option<PdStats> {
        self.shared.pd.as_ref().map(|pd| pd.stats())
    }

    /// What mid-stream failover has done (see [`Builder::failovers`](super::Builder::failovers)).
    pub fn failover_stats(&self) -> FailoverStats {
        self.shared.failover.stats()
    }

    /// The queue's figures; `None` when flow control is off.
    pub fn queue_stats(&self) -> Option<QueueStats> {
        self.shared.queue.as_ref().map(|q| q.stats())
    }

    /// The balancer: its endpoint set, [`wait_for`](Balance::wait_for) a
    /// condition on it.
    pub fn balance(&self) -> &Balance<SocketAddr, Endpoint, Picker> {
        self.shared.core.get_ref()
    }

    fn models_answer(&self) -> Response<ResponseBody> {
        let data: Vec<_> = self
            .shared
            .models
            .iter()
            .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "tower-lb"}))
            .collect();
        let mut response = Response::new(answer::full(
            json!({"object": "list", "data": data}).to_string(),
        ));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        response
    }
}

/// Every server of one pool, with its report and what the router knows.
fn status(
    pool: &Lb,
    servers: &Mutex<Vec<Server>>,
    health: &HealthRegistry<SocketAddr>,
    role: impl Fn(&SocketAddr) -> Role,
) -> Vec<ServerStatus> {
    let servers = servers.lock().unwrap_or_else(|e| e.into_inner());
    let health = health.snapshot();
    pool.read_endpoints(|keys, services| {
        keys.iter()
            .zip(services)
            .map(|(addr, service)| ServerStatus {
                addr: *addr,
                model: servers
                    .iter()
                    .find(|s| s.addr == *addr)
                    .and_then(|s| s.model.clone()),
                role: role(addr),
                available: service.is_available(),
                health: health.iter().find(|h| h.key() == addr).cloned(),
                report: service
                    .report()
                    .and_then(|cell| cell.last_at(Instant::now())),
                prefill: service.prefill().map(|p| p.stats()),
            })
            .collect()
    })
}

impl<B> Service<Request<B>> for Router
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    // Boxed: one allocation a request, small beside an inference request.
    type Future = BoxFuture<Result<Response<ResponseBody>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let mut request: Request<RequestBody> =
            request.map(|body| body.map_err(|e| BodyError(e.into())).boxed_unsync());
        crate::http::strip_hop_by_hop(request.headers_mut(), false);
        let path = request.uri().path();
        let routed = matches!(path, "/v1/chat/completions" | "/v1/completions");
        if path == "/v1/models" && request.method() == Method::GET && !self.shared.models.is_empty()
        {
            let answer = self.models_answer();
            return Box::pin(async move { Ok(answer) });
        }
        if !routed && !self.shared.pass_through {
            let answer = answer::error(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "unknown_url",
                &format!("unknown path {path}"),
                None,
            );
            return Box::pin(async move { Ok(answer) });
        }
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let result = if routed {
                failover::send(Arc::clone(&shared), request).await
            } else {
                shared
                    .core
                    .clone()
                    .oneshot(request.map(Either::Right))
                    .await
                    .map(|r| r.map(|b| b.map_err(Into::into).boxed_unsync()))
            };
            Ok(match result {
                Ok(mut response) => {
                    crate::http::strip_hop_by_hop(response.headers_mut(), false);
                    answer::strip_internal(response.headers_mut());
                    // Failover limits each leg of the answers it manages.
                    let managed = response.extensions_mut().remove::<Managed>().is_some();
                    match shared.stream_idle {
                        Some(idle) if !managed => idle_limited(response, idle),
                        _ => response,
                    }
                }
                Err(error) => answer::failure(&error),
            })
        })
    }
}

/// The answer's body, ended after `idle` without a frame: a stream of
/// server-sent events with an error event (so the client reads why), any
/// other body with an error. Either way the server's health counts the
/// stall as its failure.
fn idle_limited(response: Response<ResponseBody>, idle: Duration) -> Response<ResponseBody> {
    let (mut parts, body) = response.into_parts();
    let late = parts.extensions.remove::<LateFailure>();
    let sse = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
    let mut body = IdleTimeoutBody::new(body, idle).report_to(late);
    if sse {
        let event = json!({"error": {
            "message": format!("the server sent nothing for {idle:?}; the answer is cut short"),
            "type": "server_error",
            "code": 504,
        }});
        body = body.error_event(format!("data: {event}\n\n"));
    }
    Response::from_parts(parts, body.boxed_unsync())
}

// ===== the queue in front of the balancer =====

/// Checks the model, waits in the queue, then sends the request on.
#[derive(Clone)]
pub(crate) struct Admission {
    pub(crate) inner: Core,
    /// Disaggregated serving, which then sends the request on instead.
    pub(crate) pd: Option<Arc<Pd>>,
    pub(crate) queue: Option<Arc<Queue>>,
    pub(crate) models: Arc<[String]>,
}

impl fmt::Debug for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admission").finish_non_exhaustive()
    }
}

impl Service<Request<PromptBody<RequestBody>>> for Admission {
    type Response = Response<ResponseBody>;
    type Error = BoxError;
    type Future = BoxFuture<Result<Response<ResponseBody>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<PromptBody<RequestBody>>) -> Self::Future {
        let info = request.info();
        if let Some(model) = info.model {
            if !self.models.is_empty() && !self.models.iter().any(|m| m == model) {
                let error: BoxError = UnknownModel(model.to_owned()).into();
                return Box::pin(async move { Err(error) });
            }
        }
        let priority = info.priority;
        let (inner, pd) = (self.inner.clone(), self.pd.clone());
        let Some(queue) = self.queue.clone() else {
            return Box::pin(async move {
                if let Some(pd) = pd {
                    let response = pd.serve(request).await?;
                    return Ok(response.map(|b| Held::new(b, None).boxed_unsync()));
                }
                let response = inner.oneshot(request).await?;
                Ok(response.map(|b| Held::new(b, None).boxed_unsync()))
            });
        };
        let tenant = tenant(request.headers());
        let wait = request
            .headers()
            .get(DEADLINE_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(queue.config.deadline, Duration::from_millis);
        let deadline = Instant::now() + wait;
        Box::pin(async move {
            let permit = queue
                .admit(priority, tenant, deadline)
                .await
                .map_err(|refused| QueueError {
                    refused,
                    retry_after: queue.config.retry_after,
                })?;
            if let Some(pd) = pd {
                let response = pd.serve(request).await?;
                return Ok(response.map(|b| Held::new(b, Some(permit)).boxed_unsync()));
            }
            let response = inner.oneshot(request).await?;
            Ok(response.map(|b| Held::new(b, Some(permit)).boxed_unsync()))
        })
    }
}

/// The tenant: `x-tenant`, else the API key, hashed; 0 without either.
fn tenant(headers: &HeaderMap) -> u64 {
    headers
        .get(TENANT_HEADER)
        .or_else(|| headers.get(http::header::AUTHORIZATION))
        .map_or(0, |v| crate::util::hash_bytes(v.as_bytes()))
}

pin_project! {
    /// An answer's body holding the request's place in the fleet until it
    /// ends: at its last frame, an error, or when dropped.
    pub(crate) struct Held<B> {
        #[pin]
        inner: B,
        permit: Option<Permit>,
    }
}

impl<B: Body> Held<B> {
    fn new(inner: B, permit: Option<Permit>) -> Self {
        let permit = if inner.is_end_stream() { None } else { permit };
        Self { inner, permit }
    }
}

impl<B> Body for Held<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(_)) => {}
            _ => *this.permit = None,
        }
        Poll::Ready(frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
