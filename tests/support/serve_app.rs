//! An axum app served over HTTP/1 on a bound listener, for test backends
//! that stop by aborting the task that serves them.
//!
//! Not part of `support`: the support modules of other test binaries
//! include this file with `#[path]`.

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// Serves `app` on every connection `listener` accepts, until the task
/// running this future is aborted.
///
/// The connections live in this future's own set, so aborting that task
/// drops the listener and, with the set, every open connection. A failed
/// accept is skipped rather than ending the loop, so a backend only stops
/// when its test says so.
pub async fn serve_app(listener: TcpListener, app: Router) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        // Reaps finished connections so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
        let service = TowerToHyperService::new(app.clone());
        connections.spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
