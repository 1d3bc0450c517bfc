//! A backend on 127.0.0.1 that can be switched, while it serves, to
//! answering 500 or to hanging (it reads the request and never answers).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use axum::http::StatusCode;
use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::serve_app::serve_app;

/// How a [`Flaky`] backend answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// 200 with its name.
    Up = 0,
    /// 500 with its name.
    Fail = 1,
    /// Never: the request is read and held until the backend stops.
    Hang = 2,
}

#[derive(Debug)]
struct State {
    name: String,
    mode: AtomicU8,
    arrived: AtomicUsize,
}

/// A switchable backend; every request, health probes included, is
/// answered by its current mode and counted on arrival.
#[derive(Debug)]
pub struct Flaky {
    addr: SocketAddr,
    state: Arc<State>,
    server: JoinHandle<()>,
}

impl Flaky {
    pub async fn start(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("an address");
        let state = Arc::new(State {
            name: name.to_owned(),
            mode: AtomicU8::new(Mode::Up as u8),
            arrived: AtomicUsize::new(0),
        });
        let server = tokio::spawn(serve(listener, Arc::clone(&state)));
        Self {
            addr,
            state,
            server,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set(&self, mode: Mode) {
        self.state.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// Requests that have arrived, answered or not.
    pub fn arrived(&self) -> usize {
        self.state.arrived.load(Ordering::SeqCst)
    }
}

impl Drop for Flaky {
    fn drop(&mut self) {
        // Takes the listener and every held connection with it.
        self.server.abort();
    }
}

async fn serve(listener: TcpListener, state: Arc<State>) {
    let app = Router::new().fallback(move || {
        let state = Arc::clone(&state);
        async move {
            state.arrived.fetch_add(1, Ordering::SeqCst);
            match state.mode.load(Ordering::SeqCst) {
                0 => (StatusCode::OK, state.name.clone()),
                1 => (StatusCode::INTERNAL_SERVER_ERROR, state.name.clone()),
                _ => std::future::pending().await,
            }
        }
    });
    serve_app(listener, app).await;
}
