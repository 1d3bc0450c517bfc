//! A tonic channel behind the retry layer.
//!
//! `tonic::transport::Channel` serves `http::Request<tonic::body::Body>`
//! only, and the retry layer hands its endpoints
//! `http::Request<ReplayBody<tonic::body::Body>>`. `tonic::body::Body::new`
//! takes any body of `Bytes`, so each endpoint maps the request's body on
//! its way in; a replayed body is a reference to the buffered bytes, not a
//! copy.

use tonic::body::Body;
use tonic::transport::Channel;
use tower::util::MapRequest;
use tower_lb::retry::ReplayBody;

/// A channel that takes the requests of the retry layer.
pub type ReplayChannel =
    MapRequest<Channel, fn(http::Request<ReplayBody<Body>>) -> http::Request<Body>>;

/// Wraps `channel` to take the requests of the retry layer.
pub fn replay_channel(channel: Channel) -> ReplayChannel {
    MapRequest::new(channel, |request| request.map(Body::new))
}
