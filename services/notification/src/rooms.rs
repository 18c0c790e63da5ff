//! Course rooms: who may be in one (its enrolled learners, its instructor, admins, as the
//! course service says now), who is in one (presence), and announcements, which reach
//! the room at once and every enrolled learner's inbox through an event.

use duovarsity_common::Error;
use duovarsity_common::auth::Claims;
use duovarsity_common::events::pending_event;
use duovarsity_common::grpc::Onward;
use duovarsity_common::time::{now_millis, timestamp_from_millis};
use duovarsity_proto::course::EnrollmentStatus;
use duovarsity_proto::events::AnnouncementPosted;
use duovarsity_proto::notification::{
    Announcement, CoursePresence, PostAnnouncementRequest, RoomEvent, room_event,
};

use crate::Notifications;
use crate::live::Signal;
use crate::store::AnnouncementRow;

/// The only kind of room: `course:<course id>`.
const COURSE_ROOM: &str = "course:";
/// Learner ids a presence answer lists at most.
pub const PRESENCE_NAMES: usize = 200;

/// How someone sits in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seat {
    /// An enrolled learner: counted in presence, sees how many.
    Learner,
    /// The course's instructor or an admin: not counted, sees who.
    Staff,
}

/// The course of a room topic, when it names one.
pub fn course_of(topic: &str) -> Option<&str> {
    topic
        .strip_prefix(COURSE_ROOM)
        .filter(|id| uuid::Uuid::parse_str(id).is_ok())
}

pub fn topic_of(course_id: &str) -> String {
    format!("{COURSE_ROOM}{course_id}")
}

/// A refusal's reason code and message, as a socket receives them.
pub fn refusal(error: &Error) -> (&'static str, String) {
    match error {
        Error::NotFound { .. } => ("UNKNOWN_TOPIC", "there is no such course".into()),
        Error::PermissionDenied { reason, message } => (reason, message.clone()),
        Error::Unauthenticated { reason, message } => (reason, message.clone()),
        other => ("UNAVAILABLE", other.to_string()),
    }
}

pub fn announcement_to_proto(row: &AnnouncementRow) -> Announcement {
    Announcement {
        id: row.id.clone(),
        course_id: row.course_id.clone(),
        seq: row.seq,
        author_id: row.author_id.clone(),
        title: row.title.clone(),
        body: row.body.clone(),
        created_at: Some(timestamp_from_millis(row.created_at)),
    }
}

pub fn announcement_event(topic: String, row: &AnnouncementRow) -> RoomEvent {
    RoomEvent {
        topic,
        event: Some(room_event::Event::Announcement(announcement_to_proto(row))),
    }
}

impl Notifications {
    /// Where `claims` (calling with `caller`'s credentials) sits in the course's room:
    /// NOT_FOUND when the caller cannot see the course, PERMISSION_DENIED `NOT_ENROLLED`
    /// without an active or completed enrollment.
    pub(crate) async fn seat(
        &self,
        claims: &Claims,
        caller: &Onward,
        course_id: &str,
    ) -> Result<Seat, Error> {
        let course = self.courses.course(caller, course_id).await?;
        if claims.is_admin() || course.instructor_id == claims.sub {
            return Ok(Seat::Staff);
        }
        let enrollment = self.courses.my_enrollment(caller, course_id).await?;
        let enrolled = enrollment.is_some_and(|e| {
            e.status == EnrollmentStatus::Active as i32
                || e.status == EnrollmentStatus::Completed as i32
        });
        if enrolled {
            Ok(Seat::Learner)
        } else {
            Err(Error::permission_denied(
                "NOT_ENROLLED",
                "only the course's enrolled learners, its instructor and admins may be in its room",
            ))
        }
    }

    /// Posts an announcement (the course's instructor or an admin).
    pub(crate) async fn post_announcement(
        &self,
        claims: &Claims,
        caller: &Onward,
        request: PostAnnouncementRequest,
    ) -> Result<Announcement, Error> {
        let title = request.title.trim();
        let body = request.body.trim();
        if title.is_empty() {
            return Err(Error::invalid("title", "must not be blank"));
        }
        if body.is_empty() {
            return Err(Error::invalid("body", "must not be blank"));
        }
        match self.seat(claims, caller, &request.course_id).await {
            Ok(Seat::Staff) => {}
            Ok(Seat::Learner) | Err(Error::PermissionDenied { .. }) => {
                return Err(Error::permission_denied(
                    "NOT_INSTRUCTOR",
                    "only the course's instructor or an admin may post announcements",
                ));
            }
            Err(error) => return Err(error),
        }
        // Each announcement reaches every enrolled learner's inbox and email: a course
        // gets a bounded number per hour.
        let hour = 3_600_000;
        let now = now_millis();
        let (recent, first) = self
            .store
            .announcements_since(&request.course_id, now - hour)
            .await?;
        if recent >= i64::from(self.announcements_per_hour) {
            let wait = first.map_or(hour, |first| (first + hour - now).max(1000));
            return Err(Error::ResourceExhausted {
                reason: "ANNOUNCEMENT_LIMIT",
                message: format!(
                    "this course had {} announcements in the last hour; the next may be posted later",
                    self.announcements_per_hour
                ),
                retry_after: Some(std::time::Duration::from_millis(
                    u64::try_from(wait).unwrap_or(3_600_000),
                )),
            });
        }
        let row = AnnouncementRow {
            id: uuid::Uuid::now_v7().to_string(),
            course_id: request.course_id.clone(),
            seq: 0,
            author_id: claims.sub.clone(),
            title: title.to_string(),
            body: body.to_string(),
            created_at: now,
        };
        let row = self
            .store
            .post_announcement(&self.outbox, row, |row| {
                pending_event(
                    &row.course_id,
                    &AnnouncementPosted {
                        announcement_id: row.id.clone(),
                        course_id: row.course_id.clone(),
                        seq: row.seq,
                        author_id: row.author_id.clone(),
                        title: row.title.clone(),
                        body: row.body.clone(),
                    },
                )
            })
            .await?;
        metrics::counter!("announcements_posted_total").increment(1);
        self.live
            .signal(Signal::RoomNews(topic_of(&row.course_id)))
            .await;
        Ok(announcement_to_proto(&row))
    }

    /// Who is in the course's room (for those who may be in it): learners see how many,
    /// the instructor and admins also see who.
    pub(crate) async fn course_presence(
        &self,
        claims: &Claims,
        caller: &Onward,
        course_id: String,
    ) -> Result<CoursePresence, Error> {
        let seat = self.seat(claims, caller, &course_id).await?;
        let presence = self
            .live
            .presence(&topic_of(&course_id))
            .await
            .ok_or_else(|| Error::Unavailable {
                message: "presence across replicas is unavailable while Redis is down".into(),
                retry_after: Some(std::time::Duration::from_secs(5)),
            })?;
        Ok(presence_to_proto(
            course_id,
            presence.learners,
            seat == Seat::Staff,
        ))
    }
}

/// A room's presence as sent: the count, and the names (at most [`PRESENCE_NAMES`]) for
/// those who may see them.
pub fn presence_to_proto(course_id: String, learners: Vec<String>, names: bool) -> CoursePresence {
    CoursePresence {
        course_id,
        online: i32::try_from(learners.len()).unwrap_or(i32::MAX),
        learner_ids: if names {
            learners.into_iter().take(PRESENCE_NAMES).collect()
        } else {
            Vec::new()
        },
    }
}
