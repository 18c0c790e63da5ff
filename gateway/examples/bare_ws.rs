//! The baseline of `scripts/bench-live.sh`: a bare tokio WebSocket broadcast server with
//! the same sockets and the same frames as the platform's `/v1/ws`, and nothing else (no
//! token, no upstream session, no authorization, no presence).
//!
//! `cargo run --release -p duovarsity-gateway --example bare_ws -- ADDR`
//!
//! - `GET /ws`: a socket; `{"subscribe": {"topic": T}}` adds it to room T (answered
//!   `{"subscribed": {"topic": T, "seq": "0"}}`).
//! - `POST /publish?topic=T` with a body: the body, as one text frame, to every socket of
//!   room T (each socket has a bounded queue of 256 frames; a full one drops the frame).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::routing::{get, post};
use futures::{SinkExt as _, StreamExt as _};
use tokio::sync::mpsc;

type Rooms = Arc<Mutex<HashMap<String, Vec<mpsc::Sender<Utf8Bytes>>>>>;

#[derive(serde::Deserialize)]
struct Topic {
    topic: String,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let Some(addr) = std::env::args().nth(1) else {
        eprintln!("usage: bare_ws ADDR");
        std::process::exit(2);
    };
    let rooms = Rooms::default();
    let router = axum::Router::new()
        .route("/ws", get(socket))
        .route("/publish", post(publish))
        .with_state(rooms);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    axum::serve(listener, router).await
}

async fn publish(State(rooms): State<Rooms>, Query(topic): Query<Topic>, body: String) {
    let frame = Utf8Bytes::from(body);
    let mut rooms = rooms.lock().expect("rooms lock");
    if let Some(sockets) = rooms.get_mut(&topic.topic) {
        sockets.retain(|socket| {
            !matches!(
                socket.try_send(frame.clone()),
                Err(mpsc::error::TrySendError::Closed(_))
            )
        });
    }
}

async fn socket(State(rooms): State<Rooms>, upgrade: WebSocketUpgrade) -> axum::response::Response {
    upgrade
        .read_buffer_size(512)
        .write_buffer_size(0)
        .on_upgrade(move |socket| serve(socket, rooms))
}

async fn serve(socket: WebSocket, rooms: Rooms) {
    let (mut sink, mut source) = socket.split();
    let (sender, mut frames) = mpsc::channel::<Utf8Bytes>(256);
    loop {
        tokio::select! {
            Some(frame) = frames.recv() => {
                if sink.send(Message::Text(frame)).await.is_err() {
                    break;
                }
            }
            incoming = source.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    let Ok(frame) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
                    let Some(topic) = frame["subscribe"]["topic"].as_str() else { continue };
                    rooms.lock().expect("rooms lock").entry(topic.to_string()).or_default().push(sender.clone());
                    let ack = serde_json::json!({"subscribed": {"topic": topic, "seq": "0"}});
                    if sink.send(Message::Text(ack.to_string().into())).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
}
