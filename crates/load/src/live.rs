//! A learner session's WebSocket: opened once per session and subscribed to the room of
//! the session's course, it counts the lesson progress frames it receives against the
//! progress changes the session recorded while it was open (timing each from the
//! change's request to the frame), and the room's frames: the subscription's answer,
//! presence and announcements.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;

/// Every session's sockets together.
#[derive(Debug, Default)]
pub struct Tally {
    pub opened: AtomicU64,
    pub refused: AtomicU64,
    /// Sockets that closed before the run ended, and how often they were opened again.
    pub dropped: AtomicU64,
    pub reopened: AtomicU64,
    /// Progress changes recorded while the session's socket was open.
    pub expected: AtomicU64,
    /// Progress frames that matched one of them.
    pub received: AtomicU64,
    /// From the progress request's start to its frame.
    pub delivery_us: Mutex<Vec<u64>>,
    /// Room subscriptions answered `subscribed`, and refused.
    pub subscribed: AtomicU64,
    pub subscribe_errors: AtomicU64,
    /// Presence and announcement frames heard in rooms.
    pub presence_frames: AtomicU64,
    pub announcements_heard: AtomicU64,
}

/// One session's socket: the changes it waits for.
#[derive(Debug, Clone)]
pub struct Socket {
    open: Arc<AtomicBool>,
    /// Per lesson, when each change whose frame has not come yet was sent. Frames are
    /// matched by lesson, not percent: the service keeps the highest percent it has seen.
    pending: Arc<Mutex<HashMap<String, VecDeque<Instant>>>>,
}

impl Socket {
    /// Connects in the background and keeps reading frames until the process ends; a
    /// socket the server closes (a restart) is opened again half a second later, as a
    /// browser tab would. Changes recorded while it is closed are not expected.
    pub fn open(ws_base: &str, token: &str, room: String, tally: &'static Tally) -> Socket {
        let url = format!("{ws_base}/v1/ws?access_token={token}");
        let socket = Socket {
            open: Arc::new(AtomicBool::new(false)),
            pending: Arc::default(),
        };
        let reader = socket.clone();
        tokio::spawn(async move {
            let mut first = true;
            loop {
                match tokio_tungstenite::connect_async(url.as_str()).await {
                    Ok((stream, _)) => {
                        let counter = if first {
                            &tally.opened
                        } else {
                            &tally.reopened
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                        first = false;
                        reader.open.store(true, Ordering::Relaxed);
                        let (mut sink, mut frames) = stream.split();
                        let subscribe = serde_json::json!({"subscribe": {"topic": room}});
                        let _ = sink.send(Message::Text(subscribe.to_string().into())).await;
                        while let Some(Ok(message)) = frames.next().await {
                            if let Message::Text(text) = message {
                                reader.heard(&text, tally);
                            }
                        }
                        reader.open.store(false, Ordering::Relaxed);
                        tally.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        tally.refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        });
        socket
    }

    /// A progress change is about to be recorded: its frame is expected if the socket is
    /// open. Returns whether it is.
    pub fn expect(&self, lesson: &str) -> bool {
        if !self.open.load(Ordering::Relaxed) {
            return false;
        }
        self.pending
            .lock()
            .expect("pending")
            .entry(lesson.to_string())
            .or_default()
            .push_back(Instant::now());
        true
    }

    /// The change was not recorded after all: no frame will come.
    pub fn cancel(&self, lesson: &str) {
        if let Some(sent) = self.pending.lock().expect("pending").get_mut(lesson) {
            sent.pop_back();
        }
    }

    fn heard(&self, text: &str, tally: &Tally) {
        let Ok(frame) = serde_json::from_str::<serde_json::Value>(text) else {
            return;
        };
        let counter = if frame.get("subscribed").is_some() {
            Some(&tally.subscribed)
        } else if frame.get("error").is_some() {
            Some(&tally.subscribe_errors)
        } else if frame.get("presence").is_some() {
            Some(&tally.presence_frames)
        } else if frame.get("announcement").is_some() {
            Some(&tally.announcements_heard)
        } else {
            None
        };
        if let Some(counter) = counter {
            counter.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let progress = &frame["progress"];
        let Some(lesson) = progress["lessonId"].as_str() else {
            return;
        };
        let sent = self
            .pending
            .lock()
            .expect("pending")
            .get_mut(lesson)
            .and_then(VecDeque::pop_front);
        if let Some(sent) = sent {
            tally.received.fetch_add(1, Ordering::Relaxed);
            tally
                .delivery_us
                .lock()
                .expect("delivery")
                .push(sent.elapsed().as_micros() as u64);
        }
    }
}
