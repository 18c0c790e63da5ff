//! The gRPC handlers: each takes the caller (if any) from the verified claims and calls one
//! domain function of [`Discovery`].

use duovarsity_common::auth::{caller, optional_caller};
use duovarsity_common::cache::COURSE_OUTLINE_CACHE;
use duovarsity_common::grpc::{Onward, http_cacheable};
use duovarsity_proto::discovery::discovery_service_server::DiscoveryService;
use duovarsity_proto::discovery::{
    GetMyRecommendationsRequest, ListRelatedCoursesRequest, Recommendations, SearchRequest,
    SearchResponse,
};
use prost::Message as _;
use tonic::{Request, Response, Status};

use crate::{ANSWERS_CACHE, Discovery};

/// How long a course page's related courses may be reused without asking; the edge drops
/// them at once when any course in them changes (they are tagged with each).
const RELATED_CACHING: &str = "public, max-age=300";

/// `duovarsity.discovery.v1.DiscoveryService`.
#[derive(Clone)]
pub struct DiscoveryGrpc(pub Discovery);

#[tonic::async_trait]
impl DiscoveryService for DiscoveryGrpc {
    async fn search(
        &self,
        request: Request<SearchRequest>,
    ) -> Result<Response<SearchResponse>, Status> {
        let caller = optional_caller(&request).cloned();
        let found = self.0.search(caller.as_ref(), request.into_inner()).await?;
        Ok(Response::new(found))
    }

    async fn get_my_recommendations(
        &self,
        request: Request<GetMyRecommendationsRequest>,
    ) -> Result<Response<Recommendations>, Status> {
        let learner = caller(&request)?.sub.clone();
        let onward = Onward::of(&request);
        let asked = request.into_inner();
        Ok(Response::new(
            self.0
                .recommendations(&onward, &learner, asked.limit)
                .await?,
        ))
    }

    async fn list_related_courses(
        &self,
        request: Request<ListRelatedCoursesRequest>,
    ) -> Result<Response<Recommendations>, Status> {
        let asked = request.into_inner();
        let related = self.0.related(&asked.course_id, asked.limit).await?;
        let etag = duovarsity_common::digest::sha256_hex(&related.encode_to_vec());
        // Dropped at the edge when the course service changes one of these courses, and
        // again once discovery has applied the change.
        let courses = std::iter::once(asked.course_id.as_str()).chain(
            related
                .items
                .iter()
                .filter_map(|item| item.course.as_ref())
                .map(|course| course.id.as_str()),
        );
        let tags: Vec<(&str, &str)> = courses
            .flat_map(|id| [(COURSE_OUTLINE_CACHE, id), (ANSWERS_CACHE, id)])
            .collect();
        let mut response = Response::new(related.clone());
        http_cacheable(&mut response, &etag, RELATED_CACHING, &tags);
        Ok(response)
    }
}
