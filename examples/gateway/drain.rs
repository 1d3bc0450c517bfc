//! Graceful drain: one signal that every listener and connection watches.
//!
//! When it fires, accept loops stop accepting and each connection finishes
//! the request it is serving (hyper's graceful shutdown: keep-alive off, an
//! idle connection closed at once); [`Connections::closed`] then tells when
//! the last one is gone.
//!
//! [`Connections::closed`]: super::listener::Connections::closed

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::listener::Connections;

/// Starts the drain of everything that holds a [`Drain`].
#[derive(Debug)]
pub struct DrainSignal(watch::Sender<bool>);

/// Watches for the start of the drain.
#[derive(Clone, Debug)]
pub struct Drain(watch::Receiver<bool>);

/// A signal and the first watcher of it.
pub fn channel() -> (DrainSignal, Drain) {
    let (signal, watch) = watch::channel(false);
    (DrainSignal(signal), Drain(watch))
}

impl DrainSignal {
    /// Starts the drain; watchers see it at once.
    pub fn start(&self) {
        self.0.send_replace(true);
    }
}

impl Drain {
    /// Resolves once the drain has started (at once if it already has, or
    /// if the signal is gone: nothing can be served without it).
    pub async fn started(&mut self) {
        let _ = self.0.wait_for(|draining| *draining).await;
    }
}

/// SIGTERM and SIGINT, as the reasons to drain and then to stop at once.
#[derive(Debug)]
pub struct StopSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Listens for both signals from now on (they no longer kill the
    /// process).
    pub fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// The next signal's name.
    pub async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}

/// Waits for a stop signal, then drains: `accepting` (the accept loop)
/// stops, and this returns once every connection has closed or `timeout`
/// has passed. A second signal exits the process at once.
pub async fn on_signal<T>(
    signals: &mut StopSignals,
    drain: DrainSignal,
    accepting: JoinHandle<T>,
    connections: &Connections,
    timeout: Duration,
) {
    let signal = signals.next().await;
    tracing::info!(
        signal,
        connections = connections.open(),
        timeout = ?timeout,
        "draining: no new connections, requests in flight finish"
    );
    drain.start();
    let drained = async {
        let _ = accepting.await;
        connections.closed().await;
    };
    tokio::select! {
        () = drained => tracing::info!("drained; exiting"),
        () = tokio::time::sleep(timeout) => tracing::warn!(
            connections = connections.open(),
            "drain timeout; exiting with connections open"
        ),
        signal = signals.next() => {
            tracing::warn!(signal, "second signal; exiting at once");
            std::process::exit(1);
        }
    }
}
