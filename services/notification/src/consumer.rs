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
    AnnouncementPosted, EnrollmentActivated, EnrollmentCompleted, EnrollmentCreated,
    EnrollmentRevoked, Envelope, LessonCompleted, LessonProgressed, PaymentCaptured,
    PaymentRefunded, UserRegistered,
};
use duovarsity_proto::notification::LessonProgress;
use sqlx::{Any, Transaction};

use crate::live::{LiveHub, Signal};
use crate::messages::message_of;
use crate::rooms::topic_of;
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
        match envelope.r#type.as_str() {
            UserRegistered::TYPE => {
                let user: UserRegistered = decode(envelope)?;
                self.store
                    .save_recipient(tx, &user.user_id, &user.email, &user.display_name)
                    .await?;
            }
            // Who is enrolled: the inboxes an announcement reaches.
            EnrollmentCreated::TYPE => {
                let created: EnrollmentCreated = decode(envelope)?;
                if created.status == "active" {
                    self.store
                        .add_member(tx, &created.course_id, &created.learner_id)
                        .await?;
                }
            }
            EnrollmentActivated::TYPE => {
                let activated: EnrollmentActivated = decode(envelope)?;
                self.store
                    .add_member(tx, &activated.course_id, &activated.learner_id)
                    .await?;
            }
            EnrollmentCompleted::TYPE => {
                let completed: EnrollmentCompleted = decode(envelope)?;
                self.store
                    .add_member(tx, &completed.course_id, &completed.learner_id)
                    .await?;
            }
            EnrollmentRevoked::TYPE => {
                let revoked: EnrollmentRevoked = decode(envelope)?;
                self.store
                    .remove_member(tx, &revoked.course_id, &revoked.learner_id)
                    .await?;
            }
            AnnouncementPosted::TYPE => {
                let posted: AnnouncementPosted = decode(envelope)?;
                for member in self.store.members(tx, &posted.course_id).await? {
                    self.store
                        .notify(
                            tx,
                            &member,
                            "learning",
                            &posted.title,
                            &posted.body,
                            true,
                            &envelope.event_id,
                        )
                        .await?;
                }
                return Ok(());
            }
            _ => {}
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
        match envelope.r#type.as_str() {
            // Out of the course's room on every replica, told why.
            EnrollmentRevoked::TYPE => {
                if let Ok(revoked) = decode::<EnrollmentRevoked>(envelope) {
                    let topic = topic_of(&revoked.course_id);
                    self.live
                        .signal(Signal::Removed(topic, revoked.learner_id))
                        .await;
                }
                return;
            }
            AnnouncementPosted::TYPE => {
                if let Ok(posted) = decode::<AnnouncementPosted>(envelope) {
                    match self.store.course_members(&posted.course_id).await {
                        Ok(members) => self.live.wake_all(&members).await,
                        Err(error) => {
                            tracing::warn!(%error, "could not wake an announcement's learners (their sessions reread on their safety poll)");
                        }
                    }
                }
                return;
            }
            _ => {}
        }
        if envelope.r#type == LessonProgressed::TYPE {
            if let Ok(change) = decode::<LessonProgressed>(envelope) {
                let progress = LessonProgress {
                    course_id: change.course_id,
                    lesson_id: change.lesson_id,
                    percent: change.percent,
                    position_seconds: change.position_seconds,
                    completed: change.completed,
                };
                self.live
                    .signal(Signal::Progress(change.learner_id, progress))
                    .await;
            }
        } else if let Some(user) = recipient_of(envelope) {
            self.live.signal(Signal::Wake(user)).await;
        }
    }
}
