//! The HTTP stack's own ceiling, with no disk at all: the benchmark in `bench/` runs W1 and W3
//! against this too, so that snapkeep's ratios to nginx can be read against what tokio, hyper
//! and axum reach on the same machine before snapkeep does anything.
//!
//! It answers the two routes of the hot path the way snapkeep does, from memory:
//! `GET /api/backup/{session}/latest` with one fixed ~4 KiB JSON document, and
//! `POST /api/backup/{session}` by reading the whole body and answering `201` with a short JSON.
//!
//! ```sh
//! cargo run --release --example http_floor -- 127.0.0.1:8099
//! ```

use axum::Router;
use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};

#[tokio::main]
async fn main() {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8099".into());
    let document = Bytes::from(format!("{{\"pad\":\"{}\"}}", "x".repeat(4085)));
    let app = Router::new()
        .route(
            "/api/backup/{session}/latest",
            get(move || {
                let document = document.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], document) }
            }),
        )
        .route(
            "/api/backup/{session}",
            post(|body: Bytes| async move {
                let answer = format!("{{\"bytes\":{}}}", body.len());
                (
                    StatusCode::CREATED,
                    [(header::CONTENT_TYPE, "application/json")],
                    answer,
                )
                    .into_response()
            }),
        );
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .expect("cannot listen");
    println!("listening on {}", listener.local_addr().unwrap());
    axum::serve(listener, app).await.expect("server failed");
}
