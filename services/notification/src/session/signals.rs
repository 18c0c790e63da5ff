//! A session's reading of inboxes (a resuming socket's missed notifications), and what
//! it does when the hub signals: rereads a user's inbox or a room's
//! announcements after the last one sent, passes progress on (behind `live-progress`),
//! evicts a socket over the cap, takes a learner out of a room, or rereads everything.

use duovarsity_common::flags::{FlagContext, Flags};
use duovarsity_proto::notification::{
    LiveEvent, UserDelivery, live_delivery, live_event, socket_delivery,
};
use uuid::Uuid;

use super::{Ended, LIVE_PROGRESS, RESUME_LIMIT, Session};
use crate::convert::notification_to_proto;
use crate::live::{Pending, Signal};

impl Session {
    /// Everything the hub told since the last time, coalesced.
    pub(super) async fn signals(&mut self, pending: Pending) -> Result<(), Ended> {
        if pending.resync {
            // Rereads every user and room this session follows.
            self.signal(Signal::Resync).await?;
        } else {
            for user in pending.wakes {
                self.reread_inbox(&user).await?;
            }
            for topic in pending.news {
                self.reread_room(&topic).await?;
            }
        }
        for signal in pending.momentary {
            self.signal(signal).await?;
        }
        Ok(())
    }

    pub(super) async fn signal(&mut self, signal: Signal) -> Result<(), Ended> {
        match signal {
            Signal::Wake(user) => self.reread_inbox(&user).await,
            Signal::Progress(user, progress) => {
                let Some(follow) = self.users.get(&user) else {
                    return Ok(());
                };
                let context = FlagContext {
                    user_id: Some(&user),
                    tier: Some(&follow.tier),
                    role: Some(&follow.role),
                    course_id: Some(&progress.course_id),
                };
                if !passes(&self.service.flags, &context) {
                    return Ok(());
                }
                let event = LiveEvent {
                    event: Some(live_event::Event::Progress(progress)),
                };
                self.send(live_delivery::Delivery::User(UserDelivery {
                    user_id: user,
                    event: Some(event),
                }))
                .await
            }
            Signal::Evict(user, socket) => {
                let Ok(socket) = Uuid::parse_str(&socket) else {
                    return Ok(());
                };
                let ours = self
                    .sockets
                    .get(&socket)
                    .is_some_and(|state| state.user == user);
                if !ours {
                    return Ok(());
                }
                metrics::counter!("live_evictions_total").increment(1);
                self.to_socket(socket, socket_delivery::Event::Evicted(true))
                    .await
            }
            Signal::RoomNews(topic) => self.reread_room(&topic).await,
            // Followed through versions, on the presence tick.
            Signal::PresenceChanged(_) => Ok(()),
            Signal::Removed(topic, user) => {
                let sockets: Vec<Uuid> = self
                    .rooms
                    .get(&topic)
                    .map(|room| room.sockets.keys().copied().collect())
                    .unwrap_or_default();
                for socket in sockets {
                    let theirs = self
                        .sockets
                        .get(&socket)
                        .is_some_and(|state| state.user == user);
                    if theirs {
                        self.leave(socket, &topic).await;
                        self.refuse_topic(
                            socket,
                            topic.clone(),
                            "NOT_ENROLLED",
                            "your enrollment in this course ended".into(),
                        )
                        .await?;
                    }
                }
                Ok(())
            }
            Signal::Resync => {
                let users: Vec<String> = self.users.keys().cloned().collect();
                for user in users {
                    self.reread_inbox(&user).await?;
                }
                let topics: Vec<String> = self.rooms.keys().cloned().collect();
                for topic in topics {
                    self.reread_room(&topic).await?;
                    if let Some(room) = self.rooms.get_mut(&topic) {
                        room.dirty = true;
                    }
                }
                Ok(())
            }
        }
    }

    /// Sends the user's notifications after the last one sent, once for all their
    /// sockets on this session.
    pub(super) async fn reread_inbox(&mut self, user: &str) -> Result<(), Ended> {
        loop {
            let Some(follow) = self.users.get(user) else {
                return Ok(());
            };
            let rows = match self.service.store.after(user, follow.last_seq, 100).await {
                Ok(rows) => rows,
                Err(error) => {
                    tracing::warn!(%error, "could not read an inbox for a live session");
                    return Ok(());
                }
            };
            for row in &rows {
                let Ok(notification) = notification_to_proto(row) else {
                    continue;
                };
                self.send(live_delivery::Delivery::User(UserDelivery {
                    user_id: user.to_string(),
                    event: Some(LiveEvent {
                        event: Some(live_event::Event::Notification(notification)),
                    }),
                }))
                .await?;
            }
            if let (Some(follow), Some(last)) = (self.users.get_mut(user), rows.last()) {
                follow.last_seq = follow.last_seq.max(last.seq);
            }
            if rows.len() < 100 {
                return Ok(());
            }
        }
    }

    /// What the socket missed of its user's inbox, between `after` and `upto`.
    pub(super) async fn resume_inbox(
        &self,
        socket: Uuid,
        user: &str,
        after: i64,
        upto: i64,
    ) -> Result<(), Ended> {
        if after >= upto {
            return Ok(());
        }
        let mut from = after;
        if upto - after > RESUME_LIMIT {
            from = upto - RESUME_LIMIT;
            self.to_socket(socket, socket_delivery::Event::Gap(format!("user:{user}")))
                .await?;
        }
        let rows = self
            .service
            .store
            .after(user, from, RESUME_LIMIT as u32)
            .await
            .unwrap_or_default();
        for row in rows.iter().filter(|row| row.seq <= upto) {
            if let Ok(notification) = notification_to_proto(row) {
                self.to_socket(socket, socket_delivery::Event::Missed(notification))
                    .await?;
            }
        }
        Ok(())
    }
}

fn passes(flags: &Flags, context: &FlagContext<'_>) -> bool {
    flags.enabled(LIVE_PROGRESS, context)
}
