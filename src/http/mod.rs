//! HTTP: the preset balancer, and the parts to build your own.
//!
//! [`Builder`] makes a [`Balancer`]: a balanced, health-checked, retried
//! HTTP client over a pool of backends, one `Clone` service under one
//! name, ready to keep in axum state.
//!
//! ```no_run
//! use axum::{extract::State, routing::get, Router};
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use tower::ServiceExt;
//! use tower_lb::http::{Balancer, Builder};
//!
//! async fn users(State(pool): State<Balancer>) -> String {
//!     let request = http::Request::get("/users").body(Full::new(Bytes::new())).unwrap();
//!     match pool.oneshot(request).await {
//!         Ok(response) => match response.into_body().collect().await {
//!             Ok(body) => String::from_utf8_lossy(&body.to_bytes()).into_owned(),
//!             Err(error) => format!("the backend's answer broke off: {error}"),
//!         },
//!         Err(error) => format!("no backend answered: {error}"),
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_lb::BoxError> {
//! let pool: Balancer = Builder::new()
//!     .backends(["10.0.0.1:8080".parse()?, "10.0.0.2:8080".parse()?])
//!     .health_path("/healthz")
//!     .build()?;
//! let app: Router = Router::new().route("/", get(users)).with_state(pool);
//! # let _ = app;
//! # Ok(())
//! # }
//! ```
//!
//! Composing by hand instead: a balancer's endpoints are services, one per
//! backend. For HTTP the usual service is one shared client (hyper-util's
//! `Client` pools connections per host) that [`SetAuthority`] points at one
//! backend's address:
//!
//! ```
//! use std::net::SocketAddr;
//! use tower_lb::{discover, http::SetAuthority, pick::RoundRobin, Balance};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_lb::BoxError> {
//! # let client = tower::service_fn(|req: http::Request<()>| async move {
//! #     Ok::<_, std::convert::Infallible>(req.uri().to_string())
//! # });
//! // `client` is a hyper_util::client::legacy::Client in a real program.
//! let (endpoints, discover) = discover::channel();
//! for addr in ["10.0.0.1:8080", "10.0.0.2:8080"] {
//!     let addr: SocketAddr = addr.parse()?;
//!     endpoints.insert(addr, SetAuthority::from_addr(client.clone(), addr))?;
//! }
//! let balance = Balance::new(discover, RoundRobin::new());
//! # let _ = balance;
//! # Ok(())
//! # }
//! ```

mod balancer;
mod hop_by_hop;
pub(crate) mod preset;
#[cfg(feature = "llm")]
pub(crate) mod request_info;
mod response_timeout;
mod saturated;
mod set_authority;
pub(crate) mod source;

pub use self::balancer::{Balancer, Builder, EndpointService, HttpClient, Picker};
pub use self::hop_by_hop::strip_hop_by_hop;
pub use self::preset::{BuildError, Preset, Stack};
#[cfg(feature = "llm")]
pub use self::request_info::{
    AddRequestInfo, AddRequestInfoLayer, PromptBody, RequestInfoError,
    ResponseFuture as AddRequestInfoFuture, UsageFilter, DEFAULT_MAX_BODY,
};
pub use self::response_timeout::{
    BodyIdle, IdleTimeoutBody, OwnDeadline, ResponseFuture as ResponseTimeoutFuture,
    ResponseTimeout, ResponseTimeoutLayer, SentBody,
};
pub use self::saturated::saturated_response;
pub use self::set_authority::{ResponseFuture, SetAuthority};
