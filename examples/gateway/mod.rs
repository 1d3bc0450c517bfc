//! What an HTTP gateway over tower-lb needs besides its command line, its
//! picker and its status: the balancing stack over a list or a file of
//! backends, the client-facing server, the admin listener, and forwarding
//! to a backend with a reverse proxy's header rules (`forward`, `rules`);
//! for every listener,
//! connection limits and time limits (`listener`, `guard`), the graceful
//! drain (`drain`), and giving memory back after bursts (`memory`).
//!
//! This folder is no example of its own (cargo builds `examples/*.rs` and
//! `examples/*/main.rs` only); an example includes it as a module:
//!
//! ```ignore
//! #[path = "../gateway/mod.rs"]
//! mod gateway;
//! ```

pub(crate) mod admin;
pub(crate) mod connect;
pub(crate) mod drain;
pub(crate) mod forward;
pub(crate) mod guard;
pub(crate) mod listener;
pub(crate) mod memory;
pub(crate) mod rules;
pub(crate) mod server;

use tokio::runtime::{Builder, Runtime};

/// The tokio runtime for `workers` threads (at least one).
///
/// One worker gets a current-thread runtime, which skips the work-stealing
/// scheduler's cross-thread bookkeeping on every wake-up.
pub(crate) fn runtime(workers: usize) -> std::io::Result<Runtime> {
    if workers <= 1 {
        Builder::new_current_thread().enable_all().build()
    } else {
        Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    }
}
