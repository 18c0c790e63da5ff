//! Signals on the Redis channel between replicas.

use duovarsity_proto::notification::LessonProgress;
use prost::Message as _;

use super::Signal;

/// A signal on the Redis channel: the sending replica's 16-byte origin, a kind byte, the
/// user or topic, then for some kinds a NUL and a payload.
pub(super) fn encode(origin: &[u8; 16], signal: &Signal) -> Vec<u8> {
    let mut message = origin.to_vec();
    let (kind, key, payload): (u8, &str, Option<Vec<u8>>) = match signal {
        Signal::Wake(user) => (b'W', user, None),
        Signal::Progress(user, progress) => (b'P', user, Some(progress.encode_to_vec())),
        Signal::Evict(user, socket) => (b'E', user, Some(socket.as_bytes().to_vec())),
        Signal::RoomNews(topic) => (b'A', topic, None),
        Signal::PresenceChanged(topic) => (b'C', topic, None),
        Signal::Removed(topic, user) => (b'R', topic, Some(user.as_bytes().to_vec())),
        Signal::Resync => (b'S', "", None),
    };
    message.push(kind);
    message.extend(key.as_bytes());
    if let Some(payload) = payload {
        message.push(0);
        message.extend(payload);
    }
    message
}

/// The signal of a message from another replica; None for this replica's own messages
/// and for garbage.
pub(super) fn decode(origin: &[u8; 16], message: &[u8]) -> Option<Signal> {
    let (sender, message) = message.split_at_checked(16)?;
    if sender == origin {
        return None;
    }
    let (&kind, rest) = message.split_first()?;
    let (key, payload) = match rest.iter().position(|byte| *byte == 0) {
        Some(at) => (&rest[..at], Some(&rest[at + 1..])),
        None => (rest, None),
    };
    let key = String::from_utf8(key.to_vec()).ok()?;
    let text = |payload: Option<&[u8]>| String::from_utf8(payload?.to_vec()).ok();
    Some(match kind {
        b'W' => Signal::Wake(key),
        b'P' => Signal::Progress(key, LessonProgress::decode(payload?).ok()?),
        b'E' => Signal::Evict(key, text(payload)?),
        b'A' => Signal::RoomNews(key),
        b'C' => Signal::PresenceChanged(key),
        b'R' => Signal::Removed(key, text(payload)?),
        b'S' => Signal::Resync,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_cross_the_channel_unchanged_and_ours_come_back_as_nothing() {
        let ours = [1u8; 16];
        let theirs = [2u8; 16];
        let signals = [
            Signal::Wake("u1".into()),
            Signal::Progress(
                "u1".into(),
                LessonProgress {
                    course_id: "c".into(),
                    lesson_id: "l".into(),
                    percent: 40,
                    position_seconds: 12,
                    completed: false,
                },
            ),
            Signal::Evict("u1".into(), "s1".into()),
            Signal::RoomNews("course:c".into()),
            Signal::PresenceChanged("course:c".into()),
            Signal::Removed("course:c".into(), "u1".into()),
            Signal::Resync,
        ];
        for signal in signals {
            let message = encode(&theirs, &signal);
            assert_eq!(decode(&ours, &message), Some(signal.clone()));
            assert_eq!(decode(&theirs, &message), None);
        }
        assert_eq!(decode(&ours, b"short"), None);
    }
}
