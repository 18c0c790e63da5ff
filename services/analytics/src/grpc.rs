//! The gRPC handlers: each takes the caller from the verified claims and calls one domain
//! function of [`Analytics`].

use duovarsity_common::auth::caller;
use duovarsity_proto::analytics::analytics_service_server::AnalyticsService;
use duovarsity_proto::analytics::*;
use tonic::{Request, Response, Status};

use crate::Analytics;

/// `duovarsity.analytics.v1.AnalyticsService`.
#[derive(Clone)]
pub struct AnalyticsGrpc(pub Analytics);

#[tonic::async_trait]
impl AnalyticsService for AnalyticsGrpc {
    async fn get_my_activity(
        &self,
        request: Request<GetMyActivityRequest>,
    ) -> Result<Response<Activity>, Status> {
        let user = caller(&request)?.sub.clone();
        Ok(Response::new(self.0.activity(&user).await?))
    }

    async fn export_my_activity(
        &self,
        request: Request<ExportMyActivityRequest>,
    ) -> Result<Response<ActivityExport>, Status> {
        let user = caller(&request)?.sub.clone();
        Ok(Response::new(self.0.export(&user).await?))
    }

    async fn get_my_preferences(
        &self,
        request: Request<GetMyPreferencesRequest>,
    ) -> Result<Response<Preferences>, Status> {
        let user = caller(&request)?.sub.clone();
        Ok(Response::new(self.0.preferences(&user).await?))
    }

    async fn update_my_preferences(
        &self,
        request: Request<UpdateMyPreferencesRequest>,
    ) -> Result<Response<Preferences>, Status> {
        let user = caller(&request)?.sub.clone();
        let update = request.into_inner();
        Ok(Response::new(
            self.0.update_preferences(&user, update).await?,
        ))
    }

    async fn get_global_leaderboard(
        &self,
        request: Request<GetGlobalLeaderboardRequest>,
    ) -> Result<Response<Leaderboard>, Status> {
        let claims = caller(&request)?.clone();
        let asked = request.into_inner();
        Ok(Response::new(
            self.0
                .global_board(&claims, &asked.week, asked.limit)
                .await?,
        ))
    }

    async fn get_course_leaderboard(
        &self,
        request: Request<GetCourseLeaderboardRequest>,
    ) -> Result<Response<Leaderboard>, Status> {
        let claims = caller(&request)?.clone();
        let asked = request.into_inner();
        Ok(Response::new(
            self.0
                .course_board(&claims, &asked.course_id, &asked.week, asked.limit)
                .await?,
        ))
    }

    async fn get_course_analytics(
        &self,
        request: Request<GetCourseAnalyticsRequest>,
    ) -> Result<Response<CourseAnalytics>, Status> {
        let claims = caller(&request)?.clone();
        let asked = request.into_inner();
        Ok(Response::new(
            self.0
                .course_analytics(&claims, &asked.course_id, &asked.from, &asked.to)
                .await?,
        ))
    }

    async fn get_platform_analytics(
        &self,
        request: Request<GetPlatformAnalyticsRequest>,
    ) -> Result<Response<PlatformAnalytics>, Status> {
        let asked = request.into_inner();
        Ok(Response::new(
            self.0.platform_analytics(&asked.from, &asked.to).await?,
        ))
    }
}
