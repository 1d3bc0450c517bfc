//! HTTP helpers for building endpoints.
//!
//! A balancer's endpoints are services, one per backend. For HTTP the usual
//! service is one shared client (hyper-util's `Client` pools connections per
//! host) that [`SetAuthority`] points at one backend's address:
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

mod set_authority;

pub use self::set_authority::{ResponseFuture, SetAuthority};
