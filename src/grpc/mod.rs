//! gRPC: the preset balancer over tonic channels, one named type that a
//! generated tonic client takes as its transport.
//!
//! ```no_run
//! use tower_lb::grpc::{Balancer, Builder};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_lb::BoxError> {
//! let channel: Balancer = Builder::new()
//!     .backends(["10.0.0.1:50051".parse()?, "10.0.0.2:50051".parse()?])
//!     .build()?;
//! // let mut client = my_proto::greeter_client::GreeterClient::new(channel);
//! let client = tonic::client::Grpc::new(channel);
//! # let _ = client;
//! # Ok(())
//! # }
//! ```
//!
//! Each backend is a lazily connecting tonic `Channel` ([`ReplayChannel`]),
//! with the preset's per-attempt timeout, in-flight counting to the end of
//! the response stream, and health: a response whose `grpc-status` (in the
//! head) says the server failed (`UNAVAILABLE`, `INTERNAL`, `UNKNOWN`,
//! `DEADLINE_EXCEEDED`, `RESOURCE_EXHAUSTED`, `DATA_LOSS`) counts against
//! it; codes that describe the call (`INVALID_ARGUMENT`, `NOT_FOUND`, ...)
//! do not. Calls answered `UNAVAILABLE` are retried on another backend
//! ([`RetryPolicy::grpc`](crate::retry::RetryPolicy::grpc)).

mod balancer;
mod channel;

pub use self::balancer::{server_failures, Balancer, Builder, EndpointService, Picker};
pub use self::channel::ReplayChannel;
