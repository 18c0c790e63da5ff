//! What the caller may do with a lesson: asked of the course service (its
//! `CheckLessonAccess`, with the caller's own token), so the rules live in one place.

use duovarsity_common::Error;
use duovarsity_common::grpc::Onward;
use duovarsity_proto::course::LessonAccess;
use tonic::Request;

use crate::Contents;

impl Contents {
    /// Asks the course service what the caller (its forwarded token) may do with a lesson.
    pub(crate) async fn access<T>(
        &self,
        request: &Request<T>,
        lesson_id: &str,
    ) -> Result<LessonAccess, Error> {
        // Every request naming a lesson declares it a UUID (content.proto), and the
        // validation layer refused any other.
        self.courses
            .lesson_access(&Onward::of(request), lesson_id)
            .await
    }

    pub(crate) async fn readable<T>(
        &self,
        request: &Request<T>,
        lesson_id: &str,
    ) -> Result<LessonAccess, Error> {
        let access = self.access(request, lesson_id).await?;
        if access.can_read || access.can_edit {
            Ok(access)
        } else {
            Err(Error::not_found(format!("lesson {lesson_id}")))
        }
    }

    pub(crate) async fn editable<T>(
        &self,
        request: &Request<T>,
        lesson_id: &str,
    ) -> Result<LessonAccess, Error> {
        let access = self.access(request, lesson_id).await?;
        if access.can_edit {
            Ok(access)
        } else if access.can_read {
            Err(Error::permission_denied(
                "NOT_COURSE_OWNER",
                "only the course's instructor or an admin may edit its content",
            ))
        } else {
            Err(Error::not_found(format!("lesson {lesson_id}")))
        }
    }
}
