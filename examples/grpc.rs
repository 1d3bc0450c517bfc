//! A tonic gRPC client whose transport is a balancer over three tonic
//! servers: round robin, then consistent hashing on the `x-user` metadata.
//!
//! ```sh
//! cargo run --example grpc
//! ```
//!
//! The servers run in this process on 127.0.0.1. The service is written by
//! hand with tonic's generic pieces (`tonic::server::Grpc`, a
//! `UnaryService`, `tonic::client::Grpc::unary` with the prost codec), so
//! there is no `.proto` file and no build script; a generated client works
//! the same way, since it is built on the same `tonic::client::Grpc<T>`.
//!
//! The transport is the crate's gRPC preset, `tower_lb::grpc::Balancer`:
//! one lazily connecting tonic channel per server, health-checked, retried
//! on `UNAVAILABLE`, under one type name. It is the `T` of `Grpc<T>` (and of
//! any generated client), so every call is one pick.

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::uri::PathAndQuery;
use http::HeaderName;
use tonic::body::Body;
use tonic::server::UnaryService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic::Status;
use tonic_prost::ProstCodec;
use tower::Service;
use tower_lb::grpc::{self, Builder};
use tower_lb::pick::{key::Header, ConsistentHash, Pick, RoundRobin};
use tower_lb::retry::ReplayBody;
use tower_lb::BoxError;

/// The request of `who.Who/Ask`.
#[derive(Clone, PartialEq, prost::Message)]
struct Question {
    #[prost(string, tag = "1")]
    user: String,
}

/// The answer: which server handled the call.
#[derive(Clone, PartialEq, prost::Message)]
struct Answer {
    #[prost(string, tag = "1")]
    server: String,
}

const ASK: &str = "/who.Who/Ask";

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut servers = Vec::new();
    for name in ["server-a", "server-b", "server-c"] {
        servers.push(serve(name)?);
    }

    println!("round robin:");
    let balance = balancer(&servers, RoundRobin::new()).await?;
    let mut client = tonic::client::Grpc::new(balance);
    for call in 1..=6 {
        let server = ask(&mut client, None).await?;
        println!("  call {call} -> {server}");
    }

    println!("\nconsistent hashing on x-user:");
    let by_user = ConsistentHash::new(Header::new(HeaderName::from_static("x-user")));
    let balance = balancer(&servers, by_user).await?;
    let mut client = tonic::client::Grpc::new(balance);
    for user in ["alice", "bob", "carol", "dave", "erin"] {
        let mut answers = Vec::new();
        for _ in 0..3 {
            answers.push(ask(&mut client, Some(user)).await?);
        }
        println!("  {user:<6} -> {}", answers.join(", "));
    }
    Ok(())
}

/// The preset with `picker` over one lazily connecting channel per server.
async fn balancer<P>(servers: &[SocketAddr], picker: P) -> Result<grpc::Balancer, BoxError>
where
    P: Pick<http::Request<ReplayBody<Body>>, grpc::EndpointService>,
{
    let channel = Builder::new()
        .backends(servers.iter().copied())
        .picker(picker)
        .build()?;
    channel
        .get_ref()
        .wait_for(|keys| keys.len() == servers.len())
        .await;
    Ok(channel)
}

/// Calls `Ask`, with `user` as `x-user` metadata (a request header, which
/// the consistent-hash picker reads) when given.
async fn ask(
    client: &mut tonic::client::Grpc<grpc::Balancer>,
    user: Option<&str>,
) -> Result<String, BoxError> {
    let mut request = tonic::Request::new(Question {
        user: user.unwrap_or_default().to_owned(),
    });
    if let Some(user) = user {
        request.metadata_mut().insert("x-user", user.parse()?);
    }
    client.ready().await?;
    let codec = ProstCodec::<Question, Answer>::default();
    let answer = client
        .unary(request, PathAndQuery::from_static(ASK), codec)
        .await?;
    Ok(answer.into_inner().server)
}

/// Starts a `who.Who` server on an ephemeral loopback port.
fn serve(name: &'static str) -> Result<SocketAddr, BoxError> {
    let incoming = TcpIncoming::bind(([127, 0, 0, 1], 0).into())?.with_nodelay(Some(true));
    let addr = incoming.local_addr()?;
    tokio::spawn(Server::builder().serve_with_incoming(Who(name), incoming));
    Ok(addr)
}

/// The server: routes by path, as generated code would, to its one method.
#[derive(Clone)]
struct Who(&'static str);

impl Service<http::Request<Body>> for Who {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let who = self.clone();
        Box::pin(async move {
            let response = match request.uri().path() {
                ASK => {
                    let mut grpc =
                        tonic::server::Grpc::new(ProstCodec::<Answer, Question>::default());
                    grpc.unary(who, request).await
                }
                _ => Status::unimplemented("no such method").into_http(),
            };
            Ok(response)
        })
    }
}

impl UnaryService<Question> for Who {
    type Response = Answer;
    type Future = Ready<Result<tonic::Response<Answer>, Status>>;

    fn call(&mut self, _request: tonic::Request<Question>) -> Self::Future {
        ready(Ok(tonic::Response::new(Answer {
            server: self.0.to_owned(),
        })))
    }
}
