//! The frames of `/v1/ws` (docs/live.md): what clients send, and what the gateway writes,
//! rendered once per message however many sockets receive it.

use axum::extract::ws::Utf8Bytes;
use prost_reflect::{DynamicMessage, SerializeOptions};
use serde::Deserialize;
use serde_json::json;

/// A client's text frame.
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum ClientFrame {
    Subscribe(Subscribe),
    Unsubscribe(Unsubscribe),
    Authenticate {
        #[serde(rename = "accessToken")]
        access_token: String,
    },
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Subscribe {
    pub topic: String,
    /// The last sequence number the client saw of the topic (0: none); a number or, as
    /// proto3 JSON writes 64-bit numbers, a string.
    #[serde(default, deserialize_with = "number_or_string")]
    pub after: i64,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Unsubscribe {
    pub topic: String,
}

fn number_or_string<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Seq {
        Number(i64),
        Text(String),
    }
    match Seq::deserialize(deserializer)? {
        Seq::Number(n) => Ok(n),
        Seq::Text(text) => text.parse().map_err(serde::de::Error::custom),
    }
}

/// The proto3 JSON of a message of the descriptor set, as the REST API renders messages.
pub fn render<M: prost::Message>(full_name: &str, message: &M) -> Utf8Bytes {
    let descriptor = duovarsity_proto::descriptor_pool()
        .get_message_by_name(full_name)
        .expect("live messages are in the descriptor set");
    let message = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())
        .expect("a message decodes as itself");
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::new(&mut out);
    let _ = message.serialize_with_options(
        &mut serializer,
        &SerializeOptions::new().skip_default_fields(false),
    );
    Utf8Bytes::try_from(out).unwrap_or_default()
}

pub const LIVE_EVENT: &str = "duovarsity.notification.v1.LiveEvent";
pub const ROOM_EVENT: &str = "duovarsity.notification.v1.RoomEvent";
pub const NOTIFICATION: &str = "duovarsity.notification.v1.Notification";

fn text(value: serde_json::Value) -> Utf8Bytes {
    Utf8Bytes::from(value.to_string())
}

pub fn subscribed(topic: &str, seq: i64) -> Utf8Bytes {
    // 64-bit numbers as strings, as in every proto3 JSON frame.
    text(json!({"subscribed": {"topic": topic, "seq": seq.to_string()}}))
}

pub fn unsubscribed(topic: &str, reason: Option<&str>) -> Utf8Bytes {
    match reason {
        Some(reason) => text(json!({"unsubscribed": {"topic": topic, "reason": reason}})),
        None => text(json!({"unsubscribed": {"topic": topic}})),
    }
}

pub fn error(topic: Option<&str>, reason: &str, message: &str) -> Utf8Bytes {
    text(json!({"error": {"topic": topic, "reason": reason, "message": message}}))
}

pub fn gap(topic: &str) -> Utf8Bytes {
    text(json!({"gap": {"topic": topic}}))
}

pub fn authenticated(expires_at: u64) -> Utf8Bytes {
    text(json!({"authenticated": {"expiresAt": expires_at}}))
}

/// A notification on its own, as `{"notification": {...}}`.
pub fn notification(notification: &duovarsity_proto::notification::Notification) -> Utf8Bytes {
    let event = duovarsity_proto::notification::LiveEvent {
        event: Some(
            duovarsity_proto::notification::live_event::Event::Notification(notification.clone()),
        ),
    };
    render(LIVE_EVENT, &event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_frames_parse_and_strangers_do_not() {
        let frame: ClientFrame =
            serde_json::from_str(r#"{"subscribe": {"topic": "course:x", "after": 3}}"#).unwrap();
        assert_eq!(
            frame,
            ClientFrame::Subscribe(Subscribe {
                topic: "course:x".into(),
                after: 3
            })
        );
        let frame: ClientFrame =
            serde_json::from_str(r#"{"subscribe": {"topic": "course:x", "after": "7"}}"#).unwrap();
        assert!(matches!(
            frame,
            ClientFrame::Subscribe(Subscribe { after: 7, .. })
        ));
        let frame: ClientFrame =
            serde_json::from_str(r#"{"unsubscribe": {"topic": "course:x"}}"#).unwrap();
        assert_eq!(
            frame,
            ClientFrame::Unsubscribe(Unsubscribe {
                topic: "course:x".into()
            })
        );
        for bad in [
            r#"{"subscribe": {"topic": "course:x", "extra": 1}}"#,
            r#"{"publish": {"topic": "course:x"}}"#,
            r#"{"subscribe": {}}"#,
            r#"{"subscribe": {"topic": "course:x", "after": "seven"}}"#,
            "not json",
        ] {
            assert!(serde_json::from_str::<ClientFrame>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_room_event_renders_as_the_frame_clients_read() {
        use duovarsity_proto::notification::{CoursePresence, RoomEvent, room_event};
        let event = RoomEvent {
            topic: "course:c".into(),
            event: Some(room_event::Event::Presence(CoursePresence {
                course_id: "c".into(),
                online: 2,
                learner_ids: vec![],
            })),
        };
        let frame: serde_json::Value = serde_json::from_str(&render(ROOM_EVENT, &event)).unwrap();
        assert_eq!(
            frame,
            json!({"topic": "course:c", "presence": {"courseId": "c", "online": 2, "learnerIds": []}})
        );
    }
}
