//! Who is where, across replicas: each user's open sockets (the per-user cap) and each
//! room's learners (presence). One process keeps them in the hub's state; with Redis they
//! are sorted sets of leases that every replica renews for what it holds.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use duovarsity_common::pubsub::RedisLink;
use redis::AsyncCommands as _;
use uuid::Uuid;

use super::{LEASE_RENEWAL, LiveHub, PRESENCE_TTL, Shared, Signal, State};

/// Who is in a room: learners online, and which (all of them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomPresence {
    pub learners: Vec<String>,
}

impl LiveHub {
    /// Records an open socket of `user`; returns the user's oldest sockets (anywhere)
    /// beyond the cap, which are no longer counted and should be closed.
    pub async fn open_socket(&self, user: &str, id: Uuid) -> Vec<String> {
        let socket = id.to_string();
        let cap = self.inner.per_user as usize;
        let Some(shared) = &self.inner.redis else {
            let evicted: Vec<String> = {
                let mut state = self.state();
                let sockets = state.sockets.entry(user.to_string()).or_default();
                sockets.insert(id);
                let excess = sockets.len().saturating_sub(cap);
                sockets.iter().take(excess).map(Uuid::to_string).collect()
            };
            self.forget_sockets(user, &evicted);
            return evicted;
        };
        self.state()
            .sockets
            .entry(user.to_string())
            .or_default()
            .insert(id);
        let key = sockets_key(user);
        let now = now_secs();
        let mut pipe = redis::pipe();
        pipe.zrembyscore(&key, "-inf", now)
            .ignore()
            .zadd(&key, &socket, now + PRESENCE_TTL.as_secs_f64())
            .ignore()
            .expire(&key, PRESENCE_TTL.as_secs() as i64)
            .ignore()
            .zrange(&key, 0, -1);
        let mut connection = shared.link.connection();
        let Some((mut all,)) = shared
            .link
            .call(
                "live_sockets",
                pipe.query_async::<(Vec<String>,)>(&mut connection),
            )
            .await
        else {
            return Vec::new();
        };
        // UUIDv7 ids sort by when they were made.
        all.sort();
        let evicted = evicted_beyond(all, cap, shared, &key).await;
        self.forget_sockets(user, &evicted);
        evicted
    }

    fn forget_sockets(&self, user: &str, sockets: &[String]) {
        if sockets.is_empty() {
            return;
        }
        let mut state = self.state();
        if let Some(open) = state.sockets.get_mut(user) {
            for socket in sockets {
                if let Ok(id) = Uuid::parse_str(socket) {
                    open.remove(&id);
                }
            }
            if open.is_empty() {
                state.sockets.remove(user);
            }
        }
    }

    /// A socket of `user` closed.
    pub async fn close_socket(&self, user: &str, socket: Uuid) {
        let socket = socket.to_string();
        self.forget_sockets(user, std::slice::from_ref(&socket));
        if let Some(shared) = &self.inner.redis {
            let mut connection = shared.link.connection();
            shared
                .link
                .call(
                    "live_sockets",
                    connection.zrem::<_, _, ()>(sockets_key(user), &socket),
                )
                .await;
        }
    }

    /// The ids of `user`'s open sockets, oldest first (on every replica when Redis is
    /// shared); `None` while Redis, which holds the other replicas' sockets, is down.
    pub async fn sockets(&self, user: &str) -> Option<Vec<String>> {
        let Some(shared) = &self.inner.redis else {
            return Some(
                self.state()
                    .sockets
                    .get(user)
                    .map(|s| s.iter().map(Uuid::to_string).collect())
                    .unwrap_or_default(),
            );
        };
        let mut connection = shared.link.connection();
        let mut sockets: Vec<String> = shared
            .link
            .call(
                "live_sockets",
                connection.zrangebyscore(sockets_key(user), now_secs(), "+inf"),
            )
            .await?;
        sockets.sort();
        Some(sockets)
    }

    /// A learner's socket joined (`true`) or left a room; the room's sessions hear that
    /// its presence changed.
    pub async fn membership(&self, topic: &str, user: &str, id: Uuid, joined: bool) {
        {
            let mut state = self.state();
            let room = state.members.entry(topic.to_string()).or_default();
            if joined {
                room.entry(user.to_string()).or_default().insert(id);
            } else {
                if let Some(sockets) = room.get_mut(user) {
                    sockets.remove(&id);
                    if sockets.is_empty() {
                        room.remove(user);
                    }
                }
                if room.is_empty() {
                    state.members.remove(topic);
                }
            }
        }
        if let Some(shared) = &self.inner.redis {
            let key = room_key(topic);
            let member = format!("{user}/{id}");
            let mut pipe = redis::pipe();
            if joined {
                pipe.zadd(&key, &member, now_secs() + PRESENCE_TTL.as_secs_f64())
                    .ignore()
                    .expire(&key, PRESENCE_TTL.as_secs() as i64)
                    .ignore();
            } else {
                pipe.zrem(&key, &member).ignore();
            }
            let mut connection = shared.link.connection();
            shared
                .link
                .call("live_rooms", pipe.query_async::<()>(&mut connection))
                .await;
        }
        self.signal(Signal::PresenceChanged(topic.to_string()))
            .await;
    }

    /// The learners in a room now (on every replica when Redis is shared), sorted; `None`
    /// while Redis is down.
    pub async fn presence(&self, topic: &str) -> Option<RoomPresence> {
        let mut learners: Vec<String> = match &self.inner.redis {
            None => self
                .state()
                .members
                .get(topic)
                .map(|room| room.keys().cloned().collect())
                .unwrap_or_default(),
            Some(shared) => {
                let mut connection = shared.link.connection();
                let members: Vec<String> = shared
                    .link
                    .call(
                        "live_rooms",
                        connection.zrangebyscore(room_key(topic), now_secs(), "+inf"),
                    )
                    .await?;
                let users: HashSet<String> = members
                    .into_iter()
                    .filter_map(|m| m.split_once('/').map(|(user, _)| user.to_string()))
                    .collect();
                users.into_iter().collect()
            }
        };
        learners.sort();
        Some(RoomPresence { learners })
    }
}

/// Of the user's live sockets (oldest first, `all`), the ones beyond the cap; removed from
/// Redis so that they stop counting at once.
async fn evicted_beyond(all: Vec<String>, cap: usize, shared: &Shared, key: &str) -> Vec<String> {
    let excess = all.len().saturating_sub(cap);
    let evicted: Vec<String> = all.into_iter().take(excess).collect();
    if !evicted.is_empty() {
        let mut connection = shared.link.connection();
        shared
            .link
            .call(
                "live_sockets",
                connection.zrem::<_, _, ()>(key, evicted.clone()),
            )
            .await;
    }
    evicted
}

fn sockets_key(user: &str) -> String {
    format!("duovarsity:live:sockets:{user}")
}

fn room_key(topic: &str) -> String {
    format!("duovarsity:live:room:{topic}")
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// Renews, every [`LEASE_RENEWAL`], the leases of the sockets and room members this
/// replica holds.
pub(super) async fn renew_leases(link: RedisLink, state: Arc<Mutex<State>>) {
    let mut every = tokio::time::interval(LEASE_RENEWAL);
    let mut connection = link.connection();
    loop {
        every.tick().await;
        let until = now_secs() + PRESENCE_TTL.as_secs_f64();
        let ttl = PRESENCE_TTL.as_secs() as i64;
        let mut pipe = redis::pipe();
        {
            let state = state.lock().expect("live hub lock");
            for (user, sockets) in &state.sockets {
                let key = sockets_key(user);
                for socket in sockets {
                    pipe.zadd(&key, socket.to_string(), until).ignore();
                }
                pipe.expire(&key, ttl).ignore();
            }
            for (topic, room) in &state.members {
                let key = room_key(topic);
                for (user, sockets) in room {
                    for socket in sockets {
                        pipe.zadd(&key, format!("{user}/{socket}"), until).ignore();
                    }
                }
                pipe.expire(&key, ttl).ignore();
            }
        }
        link.call("live_leases", pipe.query_async::<()>(&mut connection))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_oldest_sockets_beyond_the_cap_are_evicted() {
        let hub = LiveHub::local(2);
        let ids: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
        let text = |range: std::ops::Range<usize>| -> Vec<String> {
            ids[range].iter().map(Uuid::to_string).collect()
        };
        assert!(hub.open_socket("u", ids[0]).await.is_empty());
        assert!(hub.open_socket("u", ids[1]).await.is_empty());
        assert_eq!(hub.open_socket("u", ids[2]).await, text(0..1));
        assert_eq!(hub.sockets("u").await.unwrap(), text(1..3));
        hub.close_socket("u", ids[1]).await;
        assert!(hub.open_socket("u", ids[3]).await.is_empty());
        assert_eq!(hub.sockets("u").await.unwrap(), text(2..4));
    }
}
