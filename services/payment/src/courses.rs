//! What the payment service asks the course service (through the shared
//! [`CourseClient`], with the caller's access token forwarded): a course's price and
//! instructor (the price is never taken from the client) and the caller's enrollment.

use duovarsity_proto::course::{Enrollment, EnrollmentStatus};

pub use duovarsity_common::clients::CourseClient as Courses;
/// The caller's credentials and remaining deadline, passed on to the course service.
pub use duovarsity_common::grpc::Onward as Caller;

/// Whether an enrollment waits for payment.
pub fn awaits_payment(enrollment: &Enrollment) -> bool {
    enrollment.status == EnrollmentStatus::PendingPayment as i32
}

/// Whether an enrollment already grants access.
pub fn has_access(enrollment: &Enrollment) -> bool {
    enrollment.status == EnrollmentStatus::Active as i32
        || enrollment.status == EnrollmentStatus::Completed as i32
}
