//! Live notification sockets of a test client, and connections a server refuses.

use super::*;

/// A live notification socket (`GET /v1/ws`) of a test client.
pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl TestPlatform {
    /// The `ws://` URL of the live endpoint with `query` (for example
    /// `access_token=…&after=3`).
    pub fn live_url(&self, query: &str) -> String {
        self.url(&format!("/v1/ws?{query}"))
            .replacen("http://", "ws://", 1)
    }

    /// Opens the live socket of the user holding `token`, resuming after sequence `after`.
    pub async fn live(&self, token: &str, after: i64) -> Socket {
        tokio_tungstenite::connect_async(
            self.live_url(&format!("access_token={token}&after={after}")),
        )
        .await
        .expect("the upgrade succeeds")
        .0
    }

    /// `GET /v1/users/{id}/presence` as the holder of `token` says it (failing the test on
    /// anything but 200).
    pub async fn user_presence(&self, token: &str, user_id: &str) -> serde_json::Value {
        let (status, presence) = self
            .call(
                reqwest::Method::GET,
                &format!("/v1/users/{user_id}/presence"),
                Some(token),
                None,
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::OK, "{presence}");
        presence
    }

    /// How many live connections `user_id` has, as `GET /v1/users/{id}/presence` says to
    /// the holder of `token`.
    pub async fn connections(&self, token: &str, user_id: &str) -> i64 {
        self.user_presence(token, user_id).await["connections"]
            .as_i64()
            .expect("a connection count")
    }

    /// Waits until `user_id` has `expected` live connections, failing with `why` after
    /// `within`.
    pub async fn wait_for_connections(
        &self,
        token: &str,
        user_id: &str,
        expected: i64,
        within: Duration,
        why: &str,
    ) {
        let started = std::time::Instant::now();
        while self.connections(token, user_id).await != expected {
            assert!(started.elapsed() < within, "{why}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Connects to `url` expecting the upgrade to be refused; the HTTP status and body.
pub async fn refused(url: &str) -> (u16, String) {
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => (
            response.status().as_u16(),
            String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned(),
        ),
        Ok(_) => panic!("{url}: the upgrade was accepted"),
        Err(other) => panic!("{url}: expected an HTTP refusal, got {other}"),
    }
}

/// The next JSON text frame of `socket` within `wait`, or None.
pub async fn next_frame(socket: &mut Socket, wait: Duration) -> Option<serde_json::Value> {
    use futures::StreamExt as _;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .ok()??
            .ok()?;
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            return Some(serde_json::from_str(&text).expect("frames are JSON"));
        }
    }
}

/// Sends `{"subscribe": {"topic": topic, "after": after}}` on `socket`.
pub async fn subscribe(socket: &mut Socket, topic: &str, after: i64) {
    send_frame(
        socket,
        serde_json::json!({"subscribe": {"topic": topic, "after": after}}),
    )
    .await;
}

/// Sends one JSON text frame on `socket`.
pub async fn send_frame(socket: &mut Socket, frame: serde_json::Value) {
    use futures::SinkExt as _;
    socket
        .send(tokio_tungstenite::tungstenite::Message::Text(
            frame.to_string().into(),
        ))
        .await
        .expect("the socket takes a frame");
}

/// The first JSON frame of `socket` within `wait` for which `wanted` holds, skipping the
/// others; None when none came.
pub async fn frame_where(
    socket: &mut Socket,
    wait: Duration,
    wanted: impl Fn(&serde_json::Value) -> bool,
) -> Option<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let frame = next_frame(socket, left).await?;
        if wanted(&frame) {
            return Some(frame);
        }
    }
}
