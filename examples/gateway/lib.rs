//! What an HTTP gateway over tower-lb needs besides its command line, its
//! picker and its status: the balancing stack over a list or a file of
//! backends, the client-facing server, the admin listener, and forwarding
//! to a backend with a reverse proxy's header rules (`forward`, `rules`);
//! for every listener,
//! connection limits and time limits (`listener`, `guard`), the graceful
//! drain (`drain`), giving memory back after bursts (`memory`), and the
//! count of answers by status and time (`traffic`).
//!
//! A library of the workspace, not published: `examples/proxy` and
//! `examples/llm_router` depend on it (a dev-dependency of tower-lb), so
//! each uses the parts it needs and nothing is compiled twice.

pub mod admin;
pub mod connect;
pub mod drain;
pub mod forward;
pub mod guard;
pub mod listener;
pub mod memory;
pub mod rules;
pub mod server;
pub mod traffic;

use tokio::runtime::{Builder, Runtime};

/// The tokio runtime for `workers` threads (at least one).
///
/// One worker gets a current-thread runtime, which skips the work-stealing
/// scheduler's cross-thread bookkeeping on every wake-up.
pub fn runtime(workers: usize) -> std::io::Result<Runtime> {
    if workers <= 1 {
        Builder::new_current_thread().enable_all().build()
    } else {
        Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    }
}
