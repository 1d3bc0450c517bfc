//! A small gRPC service, written by hand (no build script, no codegen), and
//! a typed client for it, for the tests of a tonic client over the balancer.
//!
//! The service is `who.Who`:
//!
//! * `Ask` (unary) answers with the server's id;
//! * `Watch` (server streaming) sends the server's id, then ends, or stays
//!   open until the client lets go (`hold`).
//!
//! A server in [`Mode::Unavailable`] answers `Ask` with the gRPC status
//! `UNAVAILABLE` (in the response headers: a "trailers-only" response), and
//! `Watch` with its id followed by `UNAVAILABLE` in the trailers. Both are
//! HTTP 200 responses: only the gRPC status tells the failure.

#![allow(dead_code, unused_imports)] // each test crate uses its own part of the support

mod classified;
mod fleet;
#[path = "../support/fleet.rs"]
mod fleet_start;
mod replay;

pub use self::classified::Classified;
pub use self::fleet::{Endpoint, Fleet, GrpcBalance, HEALTHY};
pub use self::replay::{replay_channel, ReplayChannel};

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use http::uri::PathAndQuery;
use tonic::body::Body;
use tonic::client::GrpcService;
use tonic::metadata::MetadataValue;
use tonic::server::{ServerStreamingService, UnaryService};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic::{Status, Streaming};
use tonic_prost::ProstCodec;
use tower::Service;
use tower_lb::BoxError;

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

/// How a server answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Healthy,
    Unavailable,
}

/// One running server.
#[derive(Debug)]
pub struct Backend {
    pub id: &'static str,
    pub addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    asks: Asks,
}

/// Each `Ask` a server decoded: the `x-user` metadata and the message.
type Asks = Arc<Mutex<Vec<(Option<String>, Call)>>>;

impl Backend {
    /// Calls this server has received, of either method.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// The `Ask` calls this server has decoded, in order: each one's
    /// `x-user` metadata and request message.
    pub fn asks(&self) -> Vec<(Option<String>, Call)> {
        self.asks.lock().unwrap().clone()
    }

    /// A lazily connecting tonic channel to this server.
    pub fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("a valid URI")
            .connect_lazy()
    }
}

/// Starts a `who.Who` server on an ephemeral loopback port; it runs until the
/// test's runtime shuts down.
pub async fn start(id: &'static str, mode: Mode) -> Backend {
    let incoming = TcpIncoming::bind(([127, 0, 0, 1], 0).into())
        .expect("bind a loopback port")
        .with_nodelay(Some(true));
    let addr = incoming.local_addr().expect("a bound address");
    let calls = Arc::new(AtomicUsize::new(0));
    let asks = Asks::default();
    let who = Who {
        id,
        mode,
        calls: Arc::clone(&calls),
        asks: Arc::clone(&asks),
    };
    tokio::spawn(Server::builder().serve_with_incoming(who, incoming));
    Backend {
        id,
        addr,
        calls,
        asks,
    }
}

/// The server: routes by path to the two methods, as generated code would.
#[derive(Clone)]
struct Who {
    id: &'static str,
    mode: Mode,
    calls: Arc<AtomicUsize>,
    asks: Asks,
}

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
                    who.calls.fetch_add(1, Ordering::SeqCst);
                    grpc.unary(who, request).await
                }
                WATCH => {
                    who.calls.fetch_add(1, Ordering::SeqCst);
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
        self.asks.lock().unwrap().push((user, request.into_inner()));
        ready(match self.mode {
            Mode::Healthy => Ok(tonic::Response::new(self.answer())),
            Mode::Unavailable => Err(self.unavailable()),
        })
    }
}

impl Who {
    fn answer(&self) -> Answer {
        Answer {
            server: self.id.to_owned(),
        }
    }

    fn unavailable(&self) -> Status {
        Status::unavailable(format!("server {} is shutting down", self.id))
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
        let stream = match (who.mode, request.get_ref().hold) {
            (Mode::Unavailable, _) => first
                .chain(stream::once(ready(Err(who.unavailable()))))
                .boxed(),
            (Mode::Healthy, true) => first.chain(stream::pending()).boxed(),
            (Mode::Healthy, false) => first.boxed(),
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
