//! A session's rooms: joins (authorized off the session's loop, at most
//! [`JOINS_IN_FLIGHT`] at once, the rest waiting their turn), leaving, resuming a room's
//! announcements, rereading them when signalled, and presence at most once a second.

use duovarsity_common::Error;
use duovarsity_common::grpc::Onward;
use duovarsity_proto::notification::{
    RoomEvent, TopicJoined, TopicRefused, live_delivery, room_event, socket_delivery,
};
use uuid::Uuid;

use std::collections::HashMap;

use super::{Ended, JOINS_IN_FLIGHT, JoinAnswer, MAX_TOPICS, RESUME_LIMIT, RoomFollow, Session};
use crate::rooms::{self, Seat};

impl Session {
    pub(super) async fn refuse_topic(
        &self,
        socket: Uuid,
        topic: String,
        reason: &str,
        message: String,
    ) -> Result<(), Ended> {
        metrics::counter!("live_topic_refusals_total", "reason" => reason.to_string()).increment(1);
        self.to_socket(
            socket,
            socket_delivery::Event::TopicRefused(TopicRefused {
                topic,
                reason: reason.to_string(),
                message,
            }),
        )
        .await
    }

    pub(super) async fn join(
        &mut self,
        socket: Uuid,
        topic: String,
        after_seq: i64,
        token: String,
    ) -> Result<(), Ended> {
        let Some(state) = self.sockets.get(&socket) else {
            return Ok(());
        };
        if rooms::course_of(&topic).is_none() {
            return self
                .refuse_topic(
                    socket,
                    topic,
                    "UNKNOWN_TOPIC",
                    "topics are course:<course id>".into(),
                )
                .await;
        }
        if state.topics.contains(&topic) || state.asking.contains(&topic) {
            return Ok(());
        }
        if state.topics.len() + state.asking.len() >= MAX_TOPICS {
            let message = format!("a socket may follow at most {MAX_TOPICS} topics");
            return self
                .refuse_topic(socket, topic, "TOO_MANY_TOPICS", message)
                .await;
        }
        if let Some(state) = self.sockets.get_mut(&socket) {
            state.asking.insert(topic.clone());
        }
        self.waiting.push_back((socket, topic, after_seq, token));
        self.next_join();
        Ok(())
    }

    /// Starts waiting joins while there are places: the course service answers off the
    /// session's loop, so one slow answer holds up no other socket, and at most
    /// [`JOINS_IN_FLIGHT`] calls are out at once.
    pub(super) fn next_join(&mut self) {
        while self.pending_joins < JOINS_IN_FLIGHT {
            let Some((socket, topic, after_seq, token)) = self.waiting.pop_front() else {
                return;
            };
            let Some(state) = self.sockets.get(&socket) else {
                continue;
            };
            if !state.asking.contains(&topic) {
                continue; // left before its turn
            }
            self.pending_joins += 1;
            let (service, verifier) = (self.service.clone(), self.verifier.clone());
            let user = state.user.clone();
            let course_id = rooms::course_of(&topic).unwrap_or_default().to_string();
            let answers = self.joins.clone();
            tokio::spawn(async move {
                // The token the join came with: the holder's role as of now.
                let seat = match verifier.verify(&token).await {
                    Ok(claims) if claims.sub == user => {
                        service
                            .seat(&claims, &Onward::bearer(&token), &course_id)
                            .await
                    }
                    _ => Err(Error::unauthenticated(
                        "TOKEN_INVALID",
                        "the socket's token did not verify",
                    )),
                };
                let _ = answers
                    .send(JoinAnswer {
                        socket,
                        topic,
                        after_seq,
                        seat,
                    })
                    .await;
            });
        }
    }

    pub(super) async fn joined(&mut self, answer: JoinAnswer) -> Result<(), Ended> {
        let JoinAnswer {
            socket,
            topic,
            after_seq,
            seat,
        } = answer;
        let asked = self
            .sockets
            .get_mut(&socket)
            .is_some_and(|state| state.asking.remove(&topic));
        if !asked {
            return Ok(()); // the socket closed or left the topic meanwhile
        }
        let seat = match seat {
            Ok(seat) => seat,
            Err(error) => {
                let (reason, message) = rooms::refusal(&error);
                return self.refuse_topic(socket, topic, reason, message).await;
            }
        };
        let Some(state) = self.sockets.get_mut(&socket) else {
            return Ok(());
        };
        if !state.topics.insert(topic.clone()) {
            return Ok(());
        }
        let user = state.user.clone();
        if !self.rooms.contains_key(&topic) {
            self.service.live.follow(self.id, true, &topic);
            let course_id = rooms::course_of(&topic).unwrap_or_default();
            let last_seq = self
                .service
                .store
                .last_announcement(course_id)
                .await
                .unwrap_or(0);
            self.rooms.insert(
                topic.clone(),
                RoomFollow {
                    last_seq,
                    sockets: HashMap::new(),
                    dirty: true,
                    sent_version: 0,
                },
            );
        }
        let room = self.rooms.get_mut(&topic).expect("followed above");
        room.sockets.insert(socket, seat);
        room.dirty = true;
        let upto = room.last_seq;
        metrics::counter!("live_topic_joins_total").increment(1);
        self.to_socket(
            socket,
            socket_delivery::Event::Joined(TopicJoined {
                topic: topic.clone(),
                seq: upto,
                sees_who: seat == Seat::Staff,
            }),
        )
        .await?;
        self.resume_room(socket, &topic, after_seq.max(0), upto)
            .await?;
        if seat == Seat::Learner {
            self.service
                .live
                .membership(&topic, &user, socket, true)
                .await;
        }
        Ok(())
    }

    /// What the socket missed of a room's announcements, between `after` and `upto`.
    async fn resume_room(
        &self,
        socket: Uuid,
        topic: &str,
        after: i64,
        upto: i64,
    ) -> Result<(), Ended> {
        if after == 0 || after >= upto {
            return Ok(());
        }
        let mut from = after;
        if upto - after > RESUME_LIMIT {
            from = upto - RESUME_LIMIT;
            self.to_socket(socket, socket_delivery::Event::Gap(topic.to_string()))
                .await?;
        }
        let course_id = rooms::course_of(topic).unwrap_or_default();
        let rows = self
            .service
            .store
            .announcements_after(course_id, from, RESUME_LIMIT as u32)
            .await
            .unwrap_or_default();
        for row in rows.iter().filter(|row| row.seq <= upto) {
            let event = rooms::announcement_event(topic.to_string(), row);
            self.to_socket(socket, socket_delivery::Event::RoomEvent(event))
                .await?;
        }
        Ok(())
    }

    pub(super) async fn leave(&mut self, socket: Uuid, topic: &str) {
        let Some(state) = self.sockets.get_mut(&socket) else {
            return;
        };
        state.asking.remove(topic);
        if state.topics.remove(topic) {
            let user = state.user.clone();
            self.leave_room(socket, topic, &user).await;
        }
    }

    /// Takes the socket out of the room's follow (and the room's presence).
    pub(super) async fn leave_room(&mut self, socket: Uuid, topic: &str, user: &str) {
        let Some(room) = self.rooms.get_mut(topic) else {
            return;
        };
        let seat = room.sockets.remove(&socket);
        if room.sockets.is_empty() {
            self.rooms.remove(topic);
            self.service.live.unfollow(self.id, true, topic);
        }
        if seat == Some(Seat::Learner) {
            self.service
                .live
                .membership(topic, user, socket, false)
                .await;
        }
    }

    /// Sends the room's announcements after the last one sent.
    pub(super) async fn reread_room(&mut self, topic: &str) -> Result<(), Ended> {
        let Some(room) = self.rooms.get(topic) else {
            return Ok(());
        };
        let course_id = rooms::course_of(topic).unwrap_or_default();
        let rows = match self
            .service
            .store
            .announcements_after(course_id, room.last_seq, RESUME_LIMIT as u32)
            .await
        {
            Ok(rows) => rows,
            Err(error) => {
                tracing::warn!(%error, "could not read a room's announcements");
                return Ok(());
            }
        };
        for row in &rows {
            self.send(live_delivery::Delivery::Room(rooms::announcement_event(
                topic.to_string(),
                row,
            )))
            .await?;
        }
        if let (Some(room), Some(last)) = (self.rooms.get_mut(topic), rows.last()) {
            room.last_seq = room.last_seq.max(last.seq);
        }
        Ok(())
    }

    /// Sends each changed room's presence (at most once per [`PRESENCE_EVERY`]).
    pub(super) async fn presence(&mut self) -> Result<(), Ended> {
        let live = &self.service.live;
        let dirty: Vec<String> = self
            .rooms
            .iter_mut()
            .filter_map(|(topic, room)| {
                let version = live.presence_version(topic);
                let changed = std::mem::take(&mut room.dirty) || version != room.sent_version;
                room.sent_version = version;
                changed.then(|| topic.clone())
            })
            .collect();
        for topic in dirty {
            let Some(presence) = self.service.live.presence(&topic).await else {
                continue;
            };
            let course_id = rooms::course_of(&topic).unwrap_or_default().to_string();
            // With the names: the gateway leaves them out for learners' sockets.
            let presence = rooms::presence_to_proto(course_id, presence.learners, true);
            self.send(live_delivery::Delivery::Room(RoomEvent {
                topic,
                event: Some(room_event::Event::Presence(presence)),
            }))
            .await?;
        }
        Ok(())
    }
}
