//! A socket's mailbox: the frames waiting to be written to it (shared bytes, rendered once
//! for every socket), bounded in frames and bytes, and the close code it must end with.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU16, Ordering};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::Notify;

/// Frames that may wait in one socket's mailbox.
pub const MAILBOX_FRAMES: usize = 256;
/// Bytes that may wait in one socket's mailbox (the frames are shared between sockets;
/// this bounds how far behind a client may fall).
pub const MAILBOX_BYTES: usize = 1024 * 1024;
/// What waits to be written to one socket, and why it must close.
#[derive(Default)]
pub struct Mailbox {
    queue: Mutex<Queue>,
    ready: Notify,
    close: AtomicU16,
}

#[derive(Default)]
struct Queue {
    frames: VecDeque<Utf8Bytes>,
    bytes: usize,
}

impl Mailbox {
    /// Queues a frame; false when the mailbox is full (the socket is then closed as
    /// lagging).
    pub(super) fn push(&self, frame: Utf8Bytes) -> bool {
        {
            let mut queue = self.queue.lock().expect("mailbox lock");
            if queue.frames.len() >= MAILBOX_FRAMES || queue.bytes + frame.len() > MAILBOX_BYTES {
                drop(queue);
                self.close(super::CLOSE_LAGGING);
                return false;
            }
            queue.bytes += frame.len();
            queue.frames.push_back(frame);
        }
        self.ready.notify_one();
        true
    }

    /// Asks the socket to close with `code` (the first code asked wins).
    pub fn close(&self, code: u16) {
        let _ = self
            .close
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire);
        self.ready.notify_one();
    }

    /// The close code asked for, if any.
    pub fn close_code(&self) -> Option<u16> {
        match self.close.load(Ordering::Acquire) {
            0 => None,
            code => Some(code),
        }
    }

    /// Waits until there is something to write or the socket must close.
    pub async fn ready(&self) {
        self.ready.notified().await;
    }

    /// Everything waiting, oldest first (the mailbox keeps no buffer while idle).
    pub fn take(&self) -> VecDeque<Utf8Bytes> {
        let mut queue = self.queue.lock().expect("mailbox lock");
        queue.bytes = 0;
        std::mem::take(&mut queue.frames)
    }
}
