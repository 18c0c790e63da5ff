//! The gRPC handlers: each decodes the request, takes the caller from the verified claims
//! (the auth layer has already enforced the method's `access` option) and calls one domain
//! function of [`Courses`].

use duovarsity_common::Error;
use duovarsity_common::auth::{caller, optional_caller};
use duovarsity_common::grpc::http_cacheable;
use duovarsity_proto::course::course_service_server::CourseService;
use duovarsity_proto::course::*;
use tonic::{Request, Response, Status};

use crate::{Courses, OUTLINE_CACHE, SLUG_CACHE};

/// How long a public course outline may be reused without asking (browsers, proxies and
/// the gateway's edge cache, which also drops it at once when the course changes).
const PUBLIC_OUTLINE_CACHING: &str = "public, max-age=60";

/// An entity tag for `bytes`: their SHA-256, so every replica and every release tags the
/// same answer alike (`DefaultHasher` promises neither).
fn content_tag(bytes: &[u8]) -> String {
    duovarsity_common::digest::sha256_hex(bytes)
}

/// `duovarsity.course.v1.CourseService` over the course domain.
#[derive(Clone)]
pub struct CourseGrpc(pub Courses);

#[tonic::async_trait]
impl CourseService for CourseGrpc {
    async fn create_course(
        &self,
        request: Request<CreateCourseRequest>,
    ) -> Result<Response<Course>, Status> {
        let owner = caller(&request)?.sub.clone();
        let input = request
            .into_inner()
            .course
            .ok_or_else(|| Error::invalid("course", "is required"))?;
        Ok(Response::new(self.0.create_course(&owner, &input).await?))
    }

    async fn update_course(
        &self,
        request: Request<UpdateCourseRequest>,
    ) -> Result<Response<Course>, Status> {
        let claims = caller(&request)?.clone();
        Ok(Response::new(
            self.0.update_course(&claims, request.into_inner()).await?,
        ))
    }

    async fn publish_course(
        &self,
        request: Request<PublishCourseRequest>,
    ) -> Result<Response<Course>, Status> {
        let claims = caller(&request)?.clone();
        Ok(Response::new(
            self.0.publish_course(&claims, request.into_inner()).await?,
        ))
    }

    async fn archive_course(
        &self,
        request: Request<ArchiveCourseRequest>,
    ) -> Result<Response<Course>, Status> {
        let claims = caller(&request)?.clone();
        Ok(Response::new(
            self.0.archive_course(&claims, request.into_inner()).await?,
        ))
    }

    async fn get_course(
        &self,
        request: Request<GetCourseRequest>,
    ) -> Result<Response<CourseOutline>, Status> {
        let claims = optional_caller(&request).cloned();
        let asked = request.get_ref().id.clone();
        let outline = self
            .0
            .get_course(claims.as_ref(), request.into_inner())
            .await?;
        let published = outline
            .course
            .as_ref()
            .filter(|course| course.status == CourseStatus::Published as i32)
            .map(|course| course.id.clone());
        let mut response = Response::new(outline);
        // What an anonymous caller sees of a published course is the same for everyone:
        // the gateway may cache it, until the outline (or the slug) is invalidated.
        if let (None, Some(course_id)) = (&claims, published) {
            let etag = content_tag(&prost::Message::encode_to_vec(response.get_ref()));
            let mut tags = vec![(OUTLINE_CACHE, course_id.as_str())];
            if asked != course_id {
                tags.push((SLUG_CACHE, asked.as_str()));
            }
            http_cacheable(&mut response, &etag, PUBLIC_OUTLINE_CACHING, &tags);
        }
        Ok(response)
    }

    async fn list_courses(
        &self,
        request: Request<ListCoursesRequest>,
    ) -> Result<Response<ListCoursesResponse>, Status> {
        Ok(Response::new(
            self.0.list_courses(request.into_inner()).await?,
        ))
    }

    async fn set_prerequisites(
        &self,
        request: Request<SetPrerequisitesRequest>,
    ) -> Result<Response<CourseOutline>, Status> {
        let claims = caller(&request)?.clone();
        Ok(Response::new(
            self.0
                .set_prerequisites(&claims, request.into_inner())
                .await?,
        ))
    }

    async fn create_section(
        &self,
        request: Request<CreateSectionRequest>,
    ) -> Result<Response<Section>, Status> {
        let claims = caller(&request)?.clone();
        Ok(Response::new(
            self.0.create_section(&claims, request.into_inner()).await?,
        ))
    }

    async fn update_section(
        &self,
        request: Request<UpdateSectionRequest>,
    ) -> Result<Response<Section>, Status> {
        let claims = caller(&request)?.clone();
        Ok(Response::new(
            self.0.update_section(&claims, request.into_inner()).await?,
        ))
    }

    async fn delete_section(
        &self,
        request: Request<DeleteSectionRequest>,
    ) -> Result<Response<DeleteSectionResponse>, Status> {
        let claims = caller(&request)?.clone();
        Ok(Response::new(
            self.0.delete_section(&claims, request.into_inner()).await?,
        ))
    }

    async fn reorder_sections(
        &self,
        request: Request<ReorderSectionsRequest>,
    ) -> Result<Response<CourseOutline>, Status> {
        let claims = caller(&request)?.clone();
        Ok(Response::new(
            self.0
                .reorder_sections(&claims, request.into_inner())
                .await?,
        ))
    }

    async fn create_lesson(
        &self,
        request: Request<CreateLessonRequest>,
    ) -> Result<Response<Lesson>, Status> {
        let claims = caller(&request)?.clone();
        Ok(Response::new(
            self.0.create_lesson(&claims, request.into_inner()).await?,
        ))
    }

    async fn update_lesson(
        &self,
        request: Request<UpdateLessonRequest>,
    ) -> Result<Response<Lesson>, Status> {
        let claims = caller(&request)?.clone();
        Ok(Response::new(
            self.0.update_lesson(&claims, request.into_inner()).await?,
        ))
    }

    async fn delete_lesson(
        &self,
        request: Request<DeleteLessonRequest>,
    ) -> Result<Response<DeleteLessonResponse>, Status> {
        let claims = caller(&request)?.clone();
        Ok(Response::new(
            self.0.delete_lesson(&claims, request.into_inner()).await?,
        ))
    }

    async fn reorder_lessons(
        &self,
        request: Request<ReorderLessonsRequest>,
    ) -> Result<Response<Section>, Status> {
        let claims = caller(&request)?.clone();
        Ok(Response::new(
            self.0
                .reorder_lessons(&claims, request.into_inner())
                .await?,
        ))
    }

    async fn enroll(
        &self,
        request: Request<EnrollRequest>,
    ) -> Result<Response<Enrollment>, Status> {
        let claims = caller(&request)?.clone();
        Ok(Response::new(
            self.0.enroll(&claims, request.into_inner()).await?,
        ))
    }

    async fn get_my_enrollment(
        &self,
        request: Request<GetMyEnrollmentRequest>,
    ) -> Result<Response<Enrollment>, Status> {
        let claims = caller(&request)?.clone();
        Ok(Response::new(
            self.0
                .get_my_enrollment(&claims, request.into_inner())
                .await?,
        ))
    }

    async fn list_my_enrollments(
        &self,
        request: Request<ListMyEnrollmentsRequest>,
    ) -> Result<Response<ListMyEnrollmentsResponse>, Status> {
        let claims = caller(&request)?.clone();
        Ok(Response::new(
            self.0
                .list_my_enrollments(&claims, request.into_inner())
                .await?,
        ))
    }

    async fn get_course_stats(
        &self,
        request: Request<GetCourseStatsRequest>,
    ) -> Result<Response<CourseStats>, Status> {
        let claims = caller(&request)?.clone();
        Ok(Response::new(
            self.0
                .get_course_stats(&claims, request.into_inner())
                .await?,
        ))
    }

    async fn record_progress(
        &self,
        request: Request<RecordProgressRequest>,
    ) -> Result<Response<RecordProgressResponse>, Status> {
        let claims = caller(&request)?.clone();
        Ok(Response::new(
            self.0
                .record_progress(&claims, request.into_inner())
                .await?,
        ))
    }

    async fn get_course_progress(
        &self,
        request: Request<GetCourseProgressRequest>,
    ) -> Result<Response<CourseProgress>, Status> {
        let claims = caller(&request)?.clone();
        Ok(Response::new(
            self.0
                .get_course_progress(&claims, request.into_inner())
                .await?,
        ))
    }

    async fn get_certificate(
        &self,
        request: Request<GetCertificateRequest>,
    ) -> Result<Response<Certificate>, Status> {
        Ok(Response::new(
            self.0.get_certificate(request.into_inner()).await?,
        ))
    }

    async fn check_lesson_access(
        &self,
        request: Request<CheckLessonAccessRequest>,
    ) -> Result<Response<LessonAccess>, Status> {
        let claims = optional_caller(&request).cloned();
        Ok(Response::new(
            self.0
                .check_lesson_access(claims.as_ref(), request.into_inner())
                .await?,
        ))
    }
}
