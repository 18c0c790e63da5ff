//! Live streams of a user's inbox and progress.

use std::sync::Arc;

use duovarsity_common::flags::{FlagContext, Flags};
use duovarsity_proto::notification::{LiveEvent, live_event};
use tonic::Status;

use crate::convert::notification_to_proto;
use crate::live::{self, Signal};
use crate::store::NotificationStore;

/// A stream rereads the database at least this often even without a wake-up (a safety net
/// for a wake-up lost between replicas).
const STREAM_POLL: std::time::Duration = std::time::Duration::from_secs(30);

/// The flag that lets progress frames through a live stream.
const LIVE_PROGRESS: &str = "live-progress";

/// Whether a stream's holder gets progress frames (`live-progress`, evaluated per frame
/// so that a change applies to open streams at once).
pub struct ProgressFilter {
    pub(crate) flags: Flags,
    pub(crate) tier: String,
    pub(crate) role: String,
}

impl ProgressFilter {
    fn passes(&self, user: &str, course_id: &str) -> bool {
        let context = FlagContext {
            user_id: Some(user),
            tier: Some(&self.tier),
            role: Some(&self.role),
            course_id: Some(course_id),
        };
        self.flags.enabled(LIVE_PROGRESS, &context)
    }
}

/// One live stream, pulled by the server as its client reads: the inbox after the last
/// sequence number sent (in pages of 100) whenever it is woken (or every
/// [`STREAM_POLL`]), and progress changes as they come. A stream is its state and this
/// function, with no task or queue of its own: an idle one costs its few fields, and
/// dropping it (the client went away) detaches it from the hub.
pub struct LiveStream {
    pub(crate) store: Arc<NotificationStore>,
    pub(crate) user: String,
    pub(crate) progress: ProgressFilter,
    pub(crate) last: i64,
    pub(crate) attached: live::Attached,
    pub(crate) queue: std::collections::VecDeque<LiveEvent>,
    pub(crate) reread: bool,
}

impl LiveStream {
    /// The next event, or the error that ends the stream (`None` afterwards).
    pub async fn next(state: Option<Self>) -> Option<(Result<LiveEvent, Status>, Option<Self>)> {
        let mut stream = state?;
        loop {
            if let Some(event) = stream.queue.pop_front() {
                return Some((Ok(event), Some(stream)));
            }
            if stream.reread {
                let rows = match stream.store.after(&stream.user, stream.last, 100).await {
                    Ok(rows) => rows,
                    Err(error) => return Some((Err(Status::from(error)), None)),
                };
                for row in &rows {
                    match notification_to_proto(row) {
                        Ok(notification) => stream.queue.push_back(LiveEvent {
                            event: Some(live_event::Event::Notification(notification)),
                        }),
                        Err(error) => return Some((Err(Status::from(error)), None)),
                    }
                    stream.last = row.seq;
                }
                // A full page: there may be more.
                stream.reread = rows.len() == 100;
                continue;
            }
            // Until there is news in the inbox; progress passes straight through.
            let signal = tokio::select! {
                signal = stream.attached.next() => signal,
                () = tokio::time::sleep(STREAM_POLL) => Signal::Wake,
            };
            match signal {
                Signal::Wake => stream.reread = true,
                Signal::Progress(progress) => {
                    if stream.progress.passes(&stream.user, &progress.course_id) {
                        stream.queue.push_back(LiveEvent {
                            event: Some(live_event::Event::Progress(progress)),
                        });
                    }
                }
            }
        }
    }
}
