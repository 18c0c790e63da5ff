//! The event consumer: each event of the topics becomes its [`message_of`] in the
//! consumer's transaction (the recipient's address kept for mail, the notification and its
//! mail written by the store as the user's preferences say), and once committed, the
//! user's live streams are woken (or sent the progress change).

use std::sync::Arc;

use async_trait::async_trait;
use duovarsity_common::Error;
use duovarsity_common::events::Event;
use duovarsity_common::events::catalog::decode;
use duovarsity_common::events::consumer::Handler;
use duovarsity_proto::events::{
    EnrollmentCompleted, EnrollmentCreated, Envelope, LessonCompleted, LessonProgressed,
    PaymentCaptured, PaymentRefunded, UserRegistered,
};
use duovarsity_proto::notification::LessonProgress;
use sqlx::{Any, Transaction};

use crate::live::LiveHub;
use crate::messages::message_of;
use crate::store::NotificationStore;

/// Turns one event into notifications and mail, inside the consumer's transaction.
pub struct EventHandler {
    pub store: Arc<NotificationStore>,
    pub live: LiveHub,
}

/// The user an event concerns.
fn recipient_of(envelope: &Envelope) -> Option<String> {
    Some(match envelope.r#type.as_str() {
        UserRegistered::TYPE => decode::<UserRegistered>(envelope).ok()?.user_id,
        EnrollmentCreated::TYPE => decode::<EnrollmentCreated>(envelope).ok()?.learner_id,
        LessonCompleted::TYPE => decode::<LessonCompleted>(envelope).ok()?.learner_id,
        EnrollmentCompleted::TYPE => decode::<EnrollmentCompleted>(envelope).ok()?.learner_id,
        PaymentCaptured::TYPE => decode::<PaymentCaptured>(envelope).ok()?.learner_id,
        PaymentRefunded::TYPE => decode::<PaymentRefunded>(envelope).ok()?.learner_id,
        _ => return None,
    })
}

#[async_trait]
impl Handler for EventHandler {
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Any>,
        envelope: &Envelope,
    ) -> Result<(), Error> {
        if envelope.r#type == UserRegistered::TYPE {
            let user: UserRegistered = decode(envelope)?;
            self.store
                .save_recipient(tx, &user.user_id, &user.email, &user.display_name)
                .await?;
        }
        let Some(message) = message_of(envelope)? else {
            return Ok(());
        };
        self.store
            .notify(
                tx,
                &message.recipient,
                message.category,
                &message.title,
                &message.body,
                message.email,
                &envelope.event_id,
            )
            .await
    }

    async fn committed(&self, envelope: &Envelope) {
        if envelope.r#type == LessonProgressed::TYPE {
            if let Ok(change) = decode::<LessonProgressed>(envelope) {
                let progress = LessonProgress {
                    course_id: change.course_id,
                    lesson_id: change.lesson_id,
                    percent: change.percent,
                    position_seconds: change.position_seconds,
                    completed: change.completed,
                };
                self.live.progress(&change.learner_id, progress).await;
            }
        } else if let Some(user) = recipient_of(envelope) {
            self.live.wake(&user).await;
        }
    }
}
