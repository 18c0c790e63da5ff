//! The baseline of `scripts/bench-gateway.sh`: a bare axum server that answers the same
//! JSON bodies the platform does, with nothing in between (no auth, no transcoding, no
//! upstream call), on the same machine and in the same run.
//!
//! `cargo run --release -p duovarsity-gateway --example bare_json -- ADDR DIR` serves
//! `DIR/me.json` at `GET /v1/users/me` and `DIR/course.json` at `GET /v1/courses/{slug}`.

use axum::http::header;
use axum::routing::get;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(dir)) = (args.next(), args.next()) else {
        eprintln!("usage: bare_json ADDR DIR (DIR holds me.json and course.json)");
        std::process::exit(2);
    };
    let read = |name: &str| -> std::io::Result<bytes::Bytes> {
        Ok(std::fs::read(std::path::Path::new(&dir).join(name))?.into())
    };
    let (me, course) = (read("me.json")?, read("course.json")?);
    let json = |body: bytes::Bytes| {
        move || {
            let body = body.clone();
            async move { ([(header::CONTENT_TYPE, "application/json")], body) }
        }
    };
    let router = axum::Router::new()
        .route("/v1/users/me", get(json(me)))
        .route("/v1/courses/{slug}", get(json(course)));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    axum::serve(listener, router).await
}
