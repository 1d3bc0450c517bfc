//! gRPC for the tests of a tonic client over the balancer: a small
//! service, written by hand (no build script, no codegen), that a
//! [`Backend`](super::Backend) built with [`grpc`](super::Builder::grpc)
//! serves; a typed client for it; a recorder of tower-http's gRPC
//! classification; a tonic channel behind the retry layer; and a fleet of
//! backends behind a balancer.
//!
//! The service is `who.Who`:
//!
//! * `Ask` (unary) answers with the server's id;
//! * `Watch` (server streaming) sends the server's id, then ends, or stays
//!   open until the client lets go (`hold`).
//!
//! A backend built with a code other than `Ok` (say `Unavailable`)
//! answers `Ask` with that status (in the response headers: a
//! "trailers-only" response), and `Watch` with its id followed by that
//! status in the trailers. Both are HTTP 200 responses: only the gRPC
//! status tells the failure.

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use http::uri::PathAndQuery;
use http::HeaderMap;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::body::Body;
use tonic::client::GrpcService;
use tonic::metadata::MetadataValue;
use tonic::server::{ServerStreamingService, UnaryService};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic::{Code, Status, Streaming};
use tonic_prost::ProstCodec;
use tower::util::MapRequest;
use tower::Service;
use tower_http::classify::GrpcFailureClass;
use tower_lb::discover::EndpointSender;
use tower_lb::endpoint::Weighted;
use tower_lb::load::{Counter, InFlight};
use tower_lb::pick::Prepare;
use tower_lb::retry::ReplayBody;
use tower_lb::{Balance, BoxError};

use super::fleet::{start_fleet, Started};
use super::server::Shared;
use super::Backend;

/// The request of both methods.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Call {
    /// Who is asking; the client also sends it as `x-user` metadata.
    #[prost(string, tag = "1")]
    pub user: String,
    /// `Watch` only: keep the stream open after the first answer.
    #[prost(bool, tag = "2")]
    pub hold: bool,
}

/// The answer: which server handled the call.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Answer {
    #[prost(string, tag = "1")]
    pub server: String,
}

pub const ASK: &str = "/who.Who/Ask";
pub const WATCH: &str = "/who.Who/Watch";

/// The metadata key that consistent hashing reads.
pub const USER: &str = "x-user";

/// An `Ask` a server decoded: the `x-user` metadata and the message.
pub type Asked = (Option<String>, Call);

/// Serves `who.Who` for `shared` on `listener` until `stopped` fires.
pub(super) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    stopped: oneshot::Receiver<()>,
) {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let _ = tokio::select! {
        served = Server::builder().serve_with_incoming(Who(shared), incoming) => served,
        _ = stopped => Ok(()),
    };
}

/// The server: routes by path to the two methods, as generated code would.
#[derive(Clone)]
struct Who(Arc<Shared>);

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl Service<http::Request<Body>> for Who {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let who = self.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<Answer, Call>::default());
            let response = match request.uri().path() {
                ASK => {
                    who.0.arrived();
                    grpc.unary(who, request).await
                }
                WATCH => {
                    who.0.arrived();
                    grpc.server_streaming(Watch(who), request).await
                }
                _ => Status::unimplemented("no such method").into_http(),
            };
            Ok(response)
        })
    }
}

impl UnaryService<Call> for Who {
    type Response = Answer;
    type Future = Ready<Result<tonic::Response<Answer>, Status>>;

    fn call(&mut self, request: tonic::Request<Call>) -> Self::Future {
        let user = request
            .metadata()
            .get(USER)
            .map(|v| v.to_str().unwrap_or("?").to_owned());
        self.0
            .asks
            .lock()
            .unwrap()
            .push((user, request.into_inner()));
        ready(match self.failure() {
            None => Ok(tonic::Response::new(self.answer())),
            Some(status) => Err(status),
        })
    }
}

impl Who {
    fn answer(&self) -> Answer {
        Answer {
            server: self.0.id.to_string(),
        }
    }

    /// The status a failing server answers with; `None` for `Ok`.
    fn failure(&self) -> Option<Status> {
        match self.0.grpc.unwrap_or(Code::Ok) {
            Code::Ok => None,
            code => Some(Status::new(
                code,
                format!("server {} is shutting down", self.0.id),
            )),
        }
    }
}

struct Watch(Who);

impl ServerStreamingService<Call> for Watch {
    type Response = Answer;
    type ResponseStream = BoxStream<'static, Result<Answer, Status>>;
    type Future = Ready<Result<tonic::Response<Self::ResponseStream>, Status>>;

    fn call(&mut self, request: tonic::Request<Call>) -> Self::Future {
        let who = &self.0;
        let first = stream::once(ready(Ok(who.answer())));
        let stream = match (who.failure(), request.get_ref().hold) {
            (Some(status), _) => first.chain(stream::once(ready(Err(status)))).boxed(),
            (None, true) => first.chain(stream::pending()).boxed(),
            (None, false) => first.boxed(),
        };
        ready(Ok(tonic::Response::new(stream)))
    }
}

/// A typed client of `who.Who` over any gRPC transport: a tonic `Channel`,
/// or a balancer of them.
#[derive(Clone, Debug)]
pub struct WhoClient<T> {
    grpc: tonic::client::Grpc<T>,
}

impl<T> WhoClient<T>
where
    T: GrpcService<Body>,
    T::ResponseBody: http_body::Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<BoxError> + Send,
{
    pub fn new(transport: T) -> Self {
        Self {
            grpc: tonic::client::Grpc::new(transport),
        }
    }

    /// Calls `Ask`, with `user` as `x-user` metadata when given; returns the
    /// id of the server that answered.
    pub async fn ask(&mut self, user: Option<&str>) -> Result<String, Status> {
        self.ask_with(request(user, false)?).await
    }

    /// Calls `Ask` `calls` times with no user; asserts that every answer
    /// came from a server other than `failing` and every failure was
    /// `Unavailable`, and returns how many failed.
    pub async fn ask_counting_unavailable(&mut self, calls: usize, failing: &str) -> usize {
        let mut unavailable = 0;
        for _ in 0..calls {
            match self.ask(None).await {
                Ok(server) => assert_ne!(server, failing),
                Err(status) => {
                    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                    unavailable += 1;
                }
            }
        }
        unavailable
    }

    /// Calls `Ask` with a request of the caller's (to carry extensions).
    pub async fn ask_with(&mut self, request: tonic::Request<Call>) -> Result<String, Status> {
        self.ready().await?;
        let codec = ProstCodec::<Call, Answer>::default();
        let path = PathAndQuery::from_static(ASK);
        let answer = self.grpc.unary(request, path, codec).await?;
        Ok(answer.into_inner().server)
    }

    /// Calls `Watch`; the stream's first message is the server's id.
    pub async fn watch(
        &mut self,
        user: Option<&str>,
        hold: bool,
    ) -> Result<Streaming<Answer>, Status> {
        let request = request(user, hold)?;
        self.ready().await?;
        let codec = ProstCodec::<Call, Answer>::default();
        let path = PathAndQuery::from_static(WATCH);
        Ok(self
            .grpc
            .server_streaming(request, path, codec)
            .await?
            .into_inner())
    }

    async fn ready(&mut self) -> Result<(), Status> {
        self.grpc
            .ready()
            .await
            .map_err(|error| Status::from_error(error.into()))
    }
}

/// A request for either method, with `user` as `x-user` metadata when given.
pub fn request(user: Option<&str>, hold: bool) -> Result<tonic::Request<Call>, Status> {
    let mut request = tonic::Request::new(Call {
        user: user.unwrap_or_default().to_owned(),
        hold,
    });
    if let Some(user) = user {
        let value: MetadataValue<_> = user
            .parse()
            .map_err(|_| Status::invalid_argument("user is not valid metadata"))?;
        request.metadata_mut().insert(USER, value);
    }
    Ok(request)
}

// ===== classification =====

/// The failures `GrpcErrorsAsFailures` found, and the `grpc-status` of each
/// response whose classification had to wait for its trailers.
#[derive(Clone, Default)]
pub struct Classified {
    failures: Arc<Mutex<Vec<GrpcFailureClass>>>,
    trailer_statuses: Arc<Mutex<Vec<Option<String>>>>,
}

impl Classified {
    /// For `TraceLayer::on_failure`.
    pub fn on_failure(&self) -> impl Fn(GrpcFailureClass, Duration, &tracing::Span) + Clone {
        let failures = Arc::clone(&self.failures);
        move |class, _latency, _span| failures.lock().unwrap().push(class)
    }

    /// For `TraceLayer::on_eos`: called only for responses that the
    /// classifier could not judge from their headers.
    pub fn on_eos(&self) -> impl Fn(Option<&HeaderMap>, Duration, &tracing::Span) + Clone {
        let statuses = Arc::clone(&self.trailer_statuses);
        move |trailers, _duration, _span| {
            let status = trailers
                .and_then(|t| t.get("grpc-status"))
                .map(|v| v.to_str().unwrap_or("?").to_owned());
            statuses.lock().unwrap().push(status);
        }
    }

    /// The gRPC codes of the failures so far.
    pub fn failure_codes(&self) -> Vec<i32> {
        let failures = self.failures.lock().unwrap();
        failures
            .iter()
            .map(|failure| match failure {
                GrpcFailureClass::Code(code) => code.get(),
                GrpcFailureClass::Error(error) => panic!("unexpected error class: {error}"),
            })
            .collect()
    }

    /// The trailers' statuses recorded since the last call, sorted.
    pub fn take_trailer_statuses(&self) -> Vec<Option<String>> {
        let mut statuses = std::mem::take(&mut *self.trailer_statuses.lock().unwrap());
        statuses.sort();
        statuses
    }
}

// ===== a channel behind the retry layer =====

/// A channel that takes the requests of the retry layer.
///
/// `tonic::transport::Channel` serves `http::Request<tonic::body::Body>`
/// only, and the retry layer hands its endpoints
/// `http::Request<ReplayBody<tonic::body::Body>>`. `tonic::body::Body::new`
/// takes any body of `Bytes`, so each endpoint maps the request's body on
/// its way in; a replayed body is a reference to the buffered bytes, not a
/// copy.
pub type ReplayChannel =
    MapRequest<Channel, fn(http::Request<ReplayBody<Body>>) -> http::Request<Body>>;

/// Wraps `channel` to take the requests of the retry layer.
pub fn replay_channel(channel: Channel) -> ReplayChannel {
    MapRequest::new(channel, |request| request.map(Body::new))
}

// ===== the fleet =====

/// Each endpoint: a tonic channel (or a wrapper around one), counted in
/// flight until its response body (trailers included) ends.
pub type Endpoint<C = Channel> = InFlight<C>;

/// The balancer the tests hand to tonic as its transport.
pub type GrpcBalance<P, C = Channel> = Balance<SocketAddr, Weighted<Endpoint<C>>, P>;

/// Three healthy servers.
pub const HEALTHY: [(&str, Code); 3] = [("a", Code::Ok), ("b", Code::Ok), ("c", Code::Ok)];

/// The running servers, their endpoints' counters (index for index) and the
/// sender that changes the balancer's set.
pub struct Fleet<C = Channel> {
    pub backends: Vec<Backend>,
    pub counters: Vec<Counter>,
    pub endpoints: EndpointSender<SocketAddr, Endpoint<C>>,
}

impl Fleet {
    /// Starts one server per entry of `codes` (its id and how it answers)
    /// and a balancer with `picker` over them, each reached through its own
    /// channel; returns once the balancer knows them all.
    pub async fn start<P: Prepare>(
        codes: &[(&'static str, Code)],
        picker: P,
    ) -> (Self, GrpcBalance<P>) {
        Self::start_with(codes, picker, |channel| channel).await
    }
}

impl<C: Clone + Send + Sync + 'static> Fleet<C> {
    /// As [`Fleet::start`], with each server's channel wrapped by `wrap`.
    pub async fn start_with<P: Prepare>(
        codes: &[(&'static str, Code)],
        picker: P,
        wrap: impl Fn(Channel) -> C,
    ) -> (Self, GrpcBalance<P, C>) {
        let Started {
            backends,
            counters,
            endpoints,
            balance,
        } = start_fleet(
            codes,
            picker,
            |&(id, code)| Backend::builder(id).grpc(code).start(),
            |backend| (backend.addr(), wrap(backend.channel())),
        )
        .await;
        let fleet = Self {
            backends,
            counters,
            endpoints,
        };
        (fleet, balance)
    }

    /// The server with this id.
    pub fn backend(&self, id: &str) -> &Backend {
        self.backends
            .iter()
            .find(|b| b.id() == id)
            .expect("a known server id")
    }

    /// Each endpoint's calls in flight, in the order of `codes`.
    pub fn in_flight(&self) -> Vec<usize> {
        self.counters.iter().map(Counter::in_flight).collect()
    }
}
