//! The proxy example as users run it: a process in front of axum backends.
//!
//! `cargo test --test proxy` builds `examples/proxy` first (see
//! `support::process`); everything listens on 127.0.0.1.

mod balancing;
mod cli;
mod discovery;
mod drain;
mod failover;
mod faults;
mod forwarding;
mod http_rules;
mod limits;
mod memory;
#[cfg(feature = "etcd")]
mod registry;
#[cfg(feature = "reports")]
mod scored;
mod support;
mod timeouts;
