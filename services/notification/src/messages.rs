//! What each event says to its learner: the notification's category, title and body, and
//! whether it also goes out as email. Pure: the consumer ([`crate::consumer`]) writes it.

use duovarsity_common::Error;
use duovarsity_common::events::Event;
use duovarsity_common::events::catalog::decode;
use duovarsity_proto::events::{
    EnrollmentCompleted, EnrollmentCreated, Envelope, LessonCompleted, PaymentCaptured,
    PaymentRefunded, UserRegistered,
};

/// One notification for one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub recipient: String,
    /// A stored category name (`account`, `learning`, `billing`).
    pub category: &'static str,
    pub title: String,
    pub body: String,
    /// Sent as email too (when the user's preferences allow).
    pub email: bool,
}

impl Message {
    fn new(
        recipient: String,
        category: &'static str,
        title: &str,
        body: String,
        email: bool,
    ) -> Self {
        Self {
            recipient,
            category,
            title: title.to_string(),
            body,
            email,
        }
    }
}

/// An amount for people: minor units with two decimals and the currency code
/// (`499.00 INR`). Currencies without minor units are rare on the platform and read the
/// same way.
fn money(minor: i64, currency: &str) -> String {
    format!("{}.{:02} {currency}", minor / 100, (minor % 100).abs())
}

/// The message an event makes, if it makes one (other events of the topics are not for
/// learners).
pub fn message_of(envelope: &Envelope) -> Result<Option<Message>, Error> {
    Ok(Some(match envelope.r#type.as_str() {
        UserRegistered::TYPE => {
            let user: UserRegistered = decode(envelope)?;
            let body = format!(
                "Hello {},\n\nwelcome to Duovarsity. Browse the catalog, enroll in a course and pick up where you left off on any device.\n",
                user.display_name
            );
            Message::new(user.user_id, "account", "Welcome to Duovarsity", body, true)
        }
        EnrollmentCreated::TYPE => {
            let enrollment: EnrollmentCreated = decode(envelope)?;
            let body = if enrollment.status == "pending_payment" {
                "Your enrollment is reserved; it starts once the payment goes through."
            } else {
                "You are enrolled. Your first lesson is waiting."
            };
            Message::new(
                enrollment.learner_id,
                "learning",
                "Enrollment confirmed",
                body.to_string(),
                false,
            )
        }
        LessonCompleted::TYPE => {
            let done: LessonCompleted = decode(envelope)?;
            Message::new(
                done.learner_id,
                "learning",
                "Lesson completed",
                "Nice work: one more lesson done.".to_string(),
                false,
            )
        }
        EnrollmentCompleted::TYPE => {
            let done: EnrollmentCompleted = decode(envelope)?;
            let body = format!(
                "Congratulations on completing your course!\n\nYour certificate number is {}. Anyone can verify it at /v1/certificates/{}.\n",
                done.certificate_number, done.certificate_number
            );
            Message::new(
                done.learner_id,
                "learning",
                "Course completed: your certificate",
                body,
                true,
            )
        }
        PaymentCaptured::TYPE => {
            let paid: PaymentCaptured = decode(envelope)?;
            let body = format!(
                "We received your payment of {}.\n\nOrder: {}\nCourse: {}\nPaid with: {}\n\nYour course is unlocked. Your receipts are at /v1/me/receipts.\n",
                money(paid.amount_minor, &paid.currency),
                paid.order_id,
                paid.course_id,
                paid.provider
            );
            Message::new(
                paid.learner_id,
                "billing",
                "Payment received: your receipt",
                body,
                true,
            )
        }
        PaymentRefunded::TYPE => {
            let refund: PaymentRefunded = decode(envelope)?;
            let access = if refund.full {
                "The order is fully refunded, so your access to the course has ended."
            } else {
                "Your access to the course is unchanged."
            };
            let body = format!(
                "We refunded {} of order {} (refunded so far: {}).\n\n{access}\n",
                money(refund.amount_minor, &refund.currency),
                refund.order_id,
                money(refund.refunded_total_minor, &refund.currency),
            );
            Message::new(refund.learner_id, "billing", "Refund issued", body, true)
        }
        _ => return Ok(None),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use duovarsity_common::events::pending_event;

    fn envelope_of<E: duovarsity_common::events::Event>(payload: &E) -> Envelope {
        use prost::Message as _;
        Envelope::decode(pending_event("aggregate", payload).record.payload).unwrap()
    }

    #[test]
    fn amounts_read_as_money() {
        assert_eq!(money(49_900, "INR"), "499.00 INR");
        assert_eq!(money(5, "USD"), "0.05 USD");
    }

    #[test]
    fn each_learner_event_says_its_own_thing_and_others_say_nothing() {
        let refund = message_of(&envelope_of(&PaymentRefunded {
            learner_id: "ana".into(),
            order_id: "o1".into(),
            amount_minor: 25_000,
            refunded_total_minor: 49_900,
            currency: "INR".into(),
            full: true,
            ..Default::default()
        }))
        .unwrap()
        .unwrap();
        assert_eq!(refund.recipient, "ana");
        assert_eq!((refund.category, refund.email), ("billing", true));
        assert!(
            refund.body.contains("250.00 INR of order o1"),
            "{}",
            refund.body
        );
        assert!(refund.body.contains("access to the course has ended"));
        let lesson = message_of(&envelope_of(&LessonCompleted {
            learner_id: "ana".into(),
            ..Default::default()
        }))
        .unwrap()
        .unwrap();
        assert_eq!((lesson.category, lesson.email), ("learning", false));
        let progressed = duovarsity_proto::events::LessonProgressed {
            learner_id: "ana".into(),
            ..Default::default()
        };
        assert_eq!(message_of(&envelope_of(&progressed)).unwrap(), None);
    }
}
