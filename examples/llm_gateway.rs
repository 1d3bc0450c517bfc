//! An LLM gateway inside an axum service: `tower_lb::llm::Router` serves the
//! OpenAI routes, the app keeps its own.
//!
//! ```sh
//! cargo run --features llm --example model_server -- --listen 127.0.0.1:8001 &
//! cargo run --features llm --example model_server -- --listen 127.0.0.1:8002 &
//! cargo run --features llm --example llm_gateway
//! curl -s localhost:8080/v1/chat/completions -H 'content-type: application/json' \
//!   -d '{"model":"emulated","messages":[{"role":"user","content":"Hi"}]}'
//! ```

use std::time::Duration;

use axum::routing::get;
use tower_lb::llm::{Builder, FlowControl};

#[tokio::main]
async fn main() -> Result<(), tower_lb::BoxError> {
    let llm = Builder::new()
        .servers(["http://127.0.0.1:8001", "http://127.0.0.1:8002"])
        .health_path("/health")
        .flow_control(FlowControl::new().deadline(Duration::from_secs(20)))
        .build()?;
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .fallback_service(llm);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    axum::serve(listener, app).await?;
    Ok(())
}
