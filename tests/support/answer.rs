//! An endpoint that answers its own address, and a maker for discovery
//! sources that counts how often each address is made.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// How many times a service was made for each address.
pub type Made = Arc<Mutex<HashMap<SocketAddr, usize>>>;

/// An endpoint that answers its own address.
#[derive(Clone, Debug)]
pub struct Answer(SocketAddr);

impl tower::Service<()> for Answer {
    type Response = SocketAddr;
    type Error = Infallible;
    type Future = std::future::Ready<Result<SocketAddr, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: ()) -> Self::Future {
        std::future::ready(Ok(self.0))
    }
}

/// Makes `Answer` endpoints, counting in `made` how often each address is
/// made.
pub fn counting(made: &Made) -> impl FnMut(SocketAddr) -> Answer + Send + 'static {
    let made = Arc::clone(made);
    move |addr| {
        *made.lock().unwrap().entry(addr).or_default() += 1;
        Answer(addr)
    }
}
