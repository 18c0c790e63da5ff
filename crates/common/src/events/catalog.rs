//! The event catalog: every topic and event type of the platform, declared once. Producers
//! build events with [`super::pending_event`] from a typed payload, and consumers match on
//! [`Event::TYPE`] and decode with [`decode`], so a topic or type name cannot be misspelt in
//! one place and right in another.

use duovarsity_proto::events::{
    AiUsage, AnnouncementPosted, CourseArchived, CoursePublished, CourseUpdated,
    EnrollmentActivated, EnrollmentCompleted, EnrollmentCreated, EnrollmentRevoked, Envelope,
    LessonCompleted, LessonDeleted, LessonProgressed, LessonPublished, PaymentCaptured,
    PaymentRefunded, SettingsReloaded, UserProfileUpdated, UserRegistered,
};

use crate::Error;

/// Topics, one per aggregate, versioned.
pub mod topics {
    pub const USER: &str = "user.v1";
    pub const COURSE: &str = "course.v1";
    pub const LESSON: &str = "lesson.v1";
    pub const ENROLLMENT: &str = "enrollment.v1";
    pub const PROGRESS: &str = "progress.v1";
    pub const PAYMENT: &str = "payment.v1";
    pub const AI: &str = "ai.v1";
    pub const SETTINGS: &str = "settings.v1";
    pub const ANNOUNCEMENT: &str = "announcement.v1";
}

/// A payload of `duovarsity.events.v1` with the topic it travels on and its type name.
pub trait Event: prost::Message + Default {
    const TOPIC: &'static str;
    /// The envelope's `type`, for example `user.registered`.
    const TYPE: &'static str;
    /// The payload's full protobuf name (the `Any` type URL ends with it).
    const FULL_NAME: &'static str;
}

macro_rules! catalog {
    ($($payload:ident => $topic:path, $type:literal;)*) => {
        $(
            impl Event for $payload {
                const TOPIC: &'static str = $topic;
                const TYPE: &'static str = $type;
                const FULL_NAME: &'static str =
                    concat!("duovarsity.events.v1.", stringify!($payload));
            }
        )*
        /// Every event type, with its topic.
        pub const ALL: &[(&str, &str)] = &[$(($type, $topic)),*];
    };
}

catalog! {
    UserRegistered => topics::USER, "user.registered";
    UserProfileUpdated => topics::USER, "user.profile_updated";
    CoursePublished => topics::COURSE, "course.published";
    CourseUpdated => topics::COURSE, "course.updated";
    CourseArchived => topics::COURSE, "course.archived";
    LessonPublished => topics::LESSON, "lesson.published";
    LessonDeleted => topics::LESSON, "lesson.deleted";
    EnrollmentCreated => topics::ENROLLMENT, "enrollment.created";
    EnrollmentActivated => topics::ENROLLMENT, "enrollment.activated";
    EnrollmentCompleted => topics::ENROLLMENT, "enrollment.completed";
    EnrollmentRevoked => topics::ENROLLMENT, "enrollment.revoked";
    LessonProgressed => topics::PROGRESS, "progress.lesson_progressed";
    LessonCompleted => topics::PROGRESS, "progress.lesson_completed";
    PaymentCaptured => topics::PAYMENT, "payment.captured";
    PaymentRefunded => topics::PAYMENT, "payment.refunded";
    AiUsage => topics::AI, "ai.usage";
    SettingsReloaded => topics::SETTINGS, "settings.reloaded";
    AnnouncementPosted => topics::ANNOUNCEMENT, "announcement.posted";
}

/// The envelope's payload as `E`, refusing a payload of another type.
pub fn decode<E: Event>(envelope: &Envelope) -> Result<E, Error> {
    let any = envelope
        .payload
        .as_ref()
        .ok_or_else(|| Error::invalid("payload", "is missing"))?;
    if !any.type_url.ends_with(E::FULL_NAME) {
        return Err(Error::invalid(
            "payload",
            format!("is a {}, expected {}", any.type_url, E::FULL_NAME),
        ));
    }
    E::decode(any.value.as_slice()).map_err(|e| Error::invalid("payload", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_payload_names_a_message_of_the_descriptor_set() {
        let pool = duovarsity_proto::descriptor_pool();
        for name in [
            UserRegistered::FULL_NAME,
            UserProfileUpdated::FULL_NAME,
            AiUsage::FULL_NAME,
            CoursePublished::FULL_NAME,
            CourseUpdated::FULL_NAME,
            CourseArchived::FULL_NAME,
            LessonPublished::FULL_NAME,
            LessonDeleted::FULL_NAME,
            EnrollmentCreated::FULL_NAME,
            EnrollmentActivated::FULL_NAME,
            EnrollmentCompleted::FULL_NAME,
            EnrollmentRevoked::FULL_NAME,
            LessonProgressed::FULL_NAME,
            PaymentCaptured::FULL_NAME,
            PaymentRefunded::FULL_NAME,
            LessonCompleted::FULL_NAME,
            SettingsReloaded::FULL_NAME,
        ] {
            assert!(pool.get_message_by_name(name).is_some(), "{name}");
        }
        for (event_type, topic) in ALL {
            let aggregate = topic.trim_end_matches(".v1");
            assert!(event_type.starts_with(aggregate), "{event_type} on {topic}");
        }
    }
}
