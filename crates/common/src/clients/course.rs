//! The course service, as the content, payment and discovery services ask it: a course's
//! price, instructor and outline, the caller's enrollment, and what the caller may do with
//! a lesson.

use std::time::Duration;

use duovarsity_proto::course::course_service_client::CourseServiceClient;
use duovarsity_proto::course::{
    CheckLessonAccessRequest, Course, CourseOutline, Enrollment, GetCourseRequest,
    GetMyEnrollmentRequest, LessonAccess,
};
use futures::future::BoxFuture;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};

use crate::error::Error;
use crate::grpc::{Onward, never_sent};
use crate::telemetry::spans::{GrpcClientTrace, TracedChannel};

/// How long a call may wait for a connection to the course service.
const CONNECT_DEADLINE: Duration = Duration::from_secs(2);
/// How long one call may take (less when the caller has less left).
const CALL_DEADLINE: Duration = Duration::from_secs(3);
/// Calls refused before the course service saw them are asked again this many times.
const NEVER_SENT_RETRIES: u32 = 2;

type Client = CourseServiceClient<TracedChannel>;

/// A client of `duovarsity.course.v1.CourseService`.
#[derive(Clone)]
pub struct CourseClient {
    channel: TracedChannel,
}

impl CourseClient {
    /// Over a channel to the course service (the configuration builds it, with
    /// [`CourseClient::endpoint`]).
    pub fn new(channel: Channel) -> Self {
        Self {
            channel: GrpcClientTrace::new(channel),
        }
    }

    /// The limits of a channel to the course service.
    pub fn endpoint(endpoint: Endpoint) -> Endpoint {
        endpoint
            .connect_timeout(CONNECT_DEADLINE)
            .timeout(CALL_DEADLINE)
    }

    /// The course with its sections and lessons in order, as the caller may see it
    /// (NOT_FOUND for a draft of someone else).
    pub async fn outline(&self, caller: &Onward, course_id: &str) -> Result<CourseOutline, Error> {
        let request = GetCourseRequest {
            id: course_id.to_string(),
        };
        self.call(caller, request, |mut client, request| {
            Box::pin(async move { client.get_course(request).await })
        })
        .await?
        .ok_or_else(|| Error::not_found(format!("course {course_id}")))
    }

    /// The course as the caller may see it (NOT_FOUND for a draft of someone else).
    pub async fn course(&self, caller: &Onward, course_id: &str) -> Result<Course, Error> {
        self.outline(caller, course_id)
            .await?
            .course
            .ok_or_else(|| Error::internal("course service", &"an outline without a course"))
    }

    /// The caller's enrollment in the course, if any.
    pub async fn my_enrollment(
        &self,
        caller: &Onward,
        course_id: &str,
    ) -> Result<Option<Enrollment>, Error> {
        let request = GetMyEnrollmentRequest {
            course_id: course_id.to_string(),
        };
        self.call(caller, request, |mut client, request| {
            Box::pin(async move { client.get_my_enrollment(request).await })
        })
        .await
    }

    /// What the caller may do with a lesson (NOT_FOUND when there is no such lesson).
    pub async fn lesson_access(
        &self,
        caller: &Onward,
        lesson_id: &str,
    ) -> Result<LessonAccess, Error> {
        let request = CheckLessonAccessRequest {
            lesson_id: lesson_id.to_string(),
        };
        self.call(caller, request, |mut client, request| {
            Box::pin(async move { client.check_lesson_access(request).await })
        })
        .await?
        .ok_or_else(|| Error::not_found(format!("lesson {lesson_id}")))
    }

    /// One call on the caller's behalf: `None` when the course service says NOT_FOUND.
    async fn call<M: Clone, R>(
        &self,
        caller: &Onward,
        message: M,
        method: impl Fn(Client, Request<M>) -> BoxFuture<'static, Result<Response<R>, Status>>,
    ) -> Result<Option<R>, Error> {
        let mut retries = NEVER_SENT_RETRIES;
        loop {
            let request = caller
                .request(message.clone(), CALL_DEADLINE)
                .map_err(|status| unavailable(&status))?;
            match method(CourseServiceClient::new(self.channel.clone()), request).await {
                Ok(response) => return Ok(Some(response.into_inner())),
                Err(status) if status.code() == Code::NotFound => return Ok(None),
                Err(status) if never_sent(&status) && retries > 0 => {
                    retries -= 1;
                    tracing::debug!(%status, "the course service never saw the call; asking again");
                }
                Err(status) => return Err(unavailable(&status)),
            }
        }
    }
}

fn unavailable(status: &Status) -> Error {
    tracing::warn!(%status, "course service call failed");
    Error::Unavailable {
        message: "the course service is unavailable; retry shortly".into(),
        retry_after: Some(Duration::from_secs(1)),
    }
}
