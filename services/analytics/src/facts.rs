//! Events decoded to what analytics needs of them ([`Fact`]), with their moments.

use duovarsity_common::Error;
use duovarsity_common::events::Event;
use duovarsity_common::events::catalog::decode;
use duovarsity_common::time::now_millis;
use duovarsity_proto::events::{
    AiUsage, CoursePublished, EnrollmentActivated, EnrollmentCompleted, EnrollmentCreated,
    EnrollmentRevoked, Envelope, LessonCompleted, LessonProgressed, PaymentCaptured,
    PaymentRefunded, UserProfileUpdated, UserRegistered,
};

/// One event, decoded to what analytics needs of it.
#[derive(Debug, Clone)]
pub enum Fact {
    Profile {
        learner: String,
        name: String,
        zone: String,
        registered: bool,
    },
    Course {
        course: String,
        title: String,
        instructor: String,
    },
    Enrolled {
        course: String,
        learner: String,
    },
    Completed {
        course: String,
        learner: String,
    },
    Revoked {
        course: String,
        learner: String,
    },
    Progressed {
        learner: String,
        course: String,
        lesson: String,
        title: String,
        position: i64,
    },
    LessonDone {
        learner: String,
        course: String,
        lesson: String,
        title: String,
    },
    Paid {
        course: String,
        currency: String,
        captured: i64,
        refunded: i64,
    },
    Ai {
        course: String,
        lesson: String,
        hint: bool,
        cost: i64,
    },
}

impl Fact {
    pub fn of(envelope: &Envelope) -> Result<Option<Fact>, Error> {
        Ok(Some(match envelope.r#type.as_str() {
            UserRegistered::TYPE => {
                let e: UserRegistered = decode(envelope)?;
                Fact::Profile {
                    learner: e.user_id,
                    name: e.display_name,
                    zone: e.time_zone,
                    registered: true,
                }
            }
            UserProfileUpdated::TYPE => {
                let e: UserProfileUpdated = decode(envelope)?;
                Fact::Profile {
                    learner: e.user_id,
                    name: e.display_name,
                    zone: e.time_zone,
                    registered: false,
                }
            }
            CoursePublished::TYPE => {
                let e: CoursePublished = decode(envelope)?;
                Fact::Course {
                    course: e.course_id,
                    title: e.title,
                    instructor: e.instructor_id,
                }
            }
            EnrollmentCreated::TYPE => {
                let e: EnrollmentCreated = decode(envelope)?;
                if e.status != "active" {
                    return Ok(None);
                }
                Fact::Enrolled {
                    course: e.course_id,
                    learner: e.learner_id,
                }
            }
            EnrollmentActivated::TYPE => {
                let e: EnrollmentActivated = decode(envelope)?;
                Fact::Enrolled {
                    course: e.course_id,
                    learner: e.learner_id,
                }
            }
            EnrollmentCompleted::TYPE => {
                let e: EnrollmentCompleted = decode(envelope)?;
                Fact::Completed {
                    course: e.course_id,
                    learner: e.learner_id,
                }
            }
            EnrollmentRevoked::TYPE => {
                let e: EnrollmentRevoked = decode(envelope)?;
                Fact::Revoked {
                    course: e.course_id,
                    learner: e.learner_id,
                }
            }
            LessonProgressed::TYPE => {
                let e: LessonProgressed = decode(envelope)?;
                Fact::Progressed {
                    learner: e.learner_id,
                    course: e.course_id,
                    lesson: e.lesson_id,
                    title: e.lesson_title,
                    position: i64::from(e.position_seconds.max(0)),
                }
            }
            LessonCompleted::TYPE => {
                let e: LessonCompleted = decode(envelope)?;
                Fact::LessonDone {
                    learner: e.learner_id,
                    course: e.course_id,
                    lesson: e.lesson_id,
                    title: e.lesson_title,
                }
            }
            PaymentCaptured::TYPE => {
                let e: PaymentCaptured = decode(envelope)?;
                Fact::Paid {
                    course: e.course_id,
                    currency: e.currency,
                    captured: e.amount_minor,
                    refunded: 0,
                }
            }
            PaymentRefunded::TYPE => {
                let e: PaymentRefunded = decode(envelope)?;
                Fact::Paid {
                    course: e.course_id,
                    currency: e.currency,
                    captured: 0,
                    refunded: e.amount_minor,
                }
            }
            AiUsage::TYPE => {
                let e: AiUsage = decode(envelope)?;
                Fact::Ai {
                    course: e.course_id,
                    lesson: e.lesson_id,
                    hint: e.task == "hint",
                    cost: e.cost_nano_usd,
                }
            }
            _ => return Ok(None),
        }))
    }

    /// The learner whose state (time zone, lessons) applying it reads.
    pub fn learner(&self) -> Option<&str> {
        match self {
            Fact::Enrolled { learner, .. }
            | Fact::Completed { learner, .. }
            | Fact::Progressed { learner, .. }
            | Fact::LessonDone { learner, .. } => Some(learner),
            _ => None,
        }
    }
}

/// The moment of an event (its `occurred_at`, or now when it has none).
pub fn moment(envelope: &Envelope) -> i64 {
    envelope.occurred_at.as_ref().map_or_else(now_millis, |t| {
        t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
    })
}
