//! What the payment service asks the course service, over gRPC with the caller's access
//! token forwarded: a course's price and instructor (the price is never taken from the
//! client) and the caller's enrollment. Every call has a deadline; a course service that
//! does not answer is UNAVAILABLE, never a hang.

use std::time::Duration;

use duovarsity_common::Error;
use duovarsity_common::telemetry::spans::{GrpcClientTrace, TracedChannel};
use duovarsity_proto::course::course_service_client::CourseServiceClient;
use duovarsity_proto::course::{
    Course, Enrollment, EnrollmentStatus, GetCourseRequest, GetMyEnrollmentRequest,
};

const CONNECT_DEADLINE: Duration = Duration::from_secs(2);
const CALL_DEADLINE: Duration = Duration::from_secs(3);

#[derive(Clone)]
pub struct Courses {
    channel: TracedChannel,
}

/// The caller's credentials and remaining deadline, passed on to the course service.
pub use duovarsity_common::grpc::Onward as Caller;

/// A request on behalf of `caller`, within its deadline and [`CALL_DEADLINE`].
fn ask<T>(caller: &Caller, message: T) -> Result<tonic::Request<T>, Error> {
    caller
        .request(message, CALL_DEADLINE)
        .map_err(|status| unavailable(&status))
}

fn unavailable(status: &tonic::Status) -> Error {
    tracing::warn!(%status, "course service call failed");
    Error::Unavailable {
        message: "the course service is unavailable; retry shortly".into(),
        retry_after: Some(Duration::from_secs(1)),
    }
}

impl Courses {
    pub fn connect(config: &duovarsity_config::Config) -> Result<Self, tonic::transport::Error> {
        let channel = GrpcClientTrace::new(config.service_channel("course", |endpoint| {
            endpoint
                .connect_timeout(CONNECT_DEADLINE)
                .timeout(CALL_DEADLINE)
        })?);
        Ok(Self { channel })
    }

    /// The course as the caller may see it (NOT_FOUND for a draft of someone else).
    pub async fn course(&self, caller: &Caller, course_id: &str) -> Result<Course, Error> {
        let answer = CourseServiceClient::new(self.channel.clone())
            .get_course(ask(
                caller,
                GetCourseRequest {
                    id: course_id.to_string(),
                },
            )?)
            .await;
        match answer {
            Ok(outline) => outline
                .into_inner()
                .course
                .ok_or_else(|| Error::internal("course service", &"an outline without a course")),
            Err(status) if status.code() == tonic::Code::NotFound => {
                Err(Error::not_found(format!("course {course_id}")))
            }
            Err(status) => Err(unavailable(&status)),
        }
    }

    /// The caller's enrollment in the course, if any.
    pub async fn my_enrollment(
        &self,
        caller: &Caller,
        course_id: &str,
    ) -> Result<Option<Enrollment>, Error> {
        let answer = CourseServiceClient::new(self.channel.clone())
            .get_my_enrollment(ask(
                caller,
                GetMyEnrollmentRequest {
                    course_id: course_id.to_string(),
                },
            )?)
            .await;
        match answer {
            Ok(enrollment) => Ok(Some(enrollment.into_inner())),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
            Err(status) => Err(unavailable(&status)),
        }
    }
}

/// Whether an enrollment waits for payment.
pub fn awaits_payment(enrollment: &Enrollment) -> bool {
    enrollment.status == EnrollmentStatus::PendingPayment as i32
}

/// Whether an enrollment already grants access.
pub fn has_access(enrollment: &Enrollment) -> bool {
    enrollment.status == EnrollmentStatus::Active as i32
        || enrollment.status == EnrollmentStatus::Completed as i32
}
