//! A minimal HTTP backend for trying out and benchmarking the proxy example:
//! every `GET` answers `hello from ADDR`.
//!
//! ```sh
//! cargo run --release --example hello_backend -- --listen 127.0.0.1:9001
//! ```
//!
//! It runs on one thread (a current-thread tokio runtime), prints
//! `listening on ADDR` once it accepts connections (port 0 picks a free
//! port), and answers `GET /health` with `ok`.

use std::net::SocketAddr;
use std::process::ExitCode;

use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use tokio::net::TcpListener;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = match (args.next().as_deref(), args.next(), args.next()) {
        (Some("--listen"), Some(addr), None) => match addr.parse() {
            Ok(addr) => addr,
            Err(_) => {
                eprintln!("hello_backend: `{addr}` is not a socket address");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("usage: hello_backend --listen ADDR");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(serve(listen)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hello_backend: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(listen: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let hello: &'static str = Box::leak(format!("hello from {addr}\n").into_boxed_str());
    let app = Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .fallback(get(move || async move { hello }));
    println!("listening on {addr}");
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await
}
