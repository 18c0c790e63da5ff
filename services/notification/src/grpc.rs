//! The gRPC handlers: each decodes the request, takes the caller from the verified claims
//! and calls one domain function of [`Notifications`].

use std::sync::Arc;

use duovarsity_common::auth::{TokenVerifier, caller};
use duovarsity_common::grpc::Onward;
use duovarsity_proto::notification::notification_service_server::NotificationService;
use duovarsity_proto::notification::*;
use tonic::{Request, Response, Status, Streaming};

use crate::Notifications;

/// `duovarsity.notification.v1.NotificationService` over the inbox.
#[derive(Clone)]
pub struct NotificationGrpc(pub Notifications);

#[tonic::async_trait]
impl NotificationService for NotificationGrpc {
    type LiveStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<LiveDelivery, Status>> + Send + 'static>,
    >;

    async fn live(
        &self,
        request: Request<Streaming<LiveCommand>>,
    ) -> Result<Response<Self::LiveStream>, Status> {
        let verifier = request
            .extensions()
            .get::<Arc<TokenVerifier>>()
            .cloned()
            .ok_or_else(|| Status::internal("the server has no token verifier"))?;
        let commands = request.into_inner();
        Ok(Response::new(Box::pin(
            self.0.live_session(verifier, commands),
        )))
    }

    async fn post_announcement(
        &self,
        request: Request<PostAnnouncementRequest>,
    ) -> Result<Response<Announcement>, Status> {
        let claims = caller(&request)?.clone();
        let onward = Onward::of(&request);
        Ok(Response::new(
            self.0
                .post_announcement(&claims, &onward, request.into_inner())
                .await?,
        ))
    }

    async fn get_course_presence(
        &self,
        request: Request<GetCoursePresenceRequest>,
    ) -> Result<Response<CoursePresence>, Status> {
        let claims = caller(&request)?.clone();
        let onward = Onward::of(&request);
        let course_id = request.into_inner().course_id;
        Ok(Response::new(
            self.0.course_presence(&claims, &onward, course_id).await?,
        ))
    }

    async fn list_notifications(
        &self,
        request: Request<ListNotificationsRequest>,
    ) -> Result<Response<ListNotificationsResponse>, Status> {
        let user = caller(&request)?.sub.clone();
        Ok(Response::new(
            self.0.list(&user, request.into_inner()).await?,
        ))
    }

    async fn get_presence(
        &self,
        request: Request<GetPresenceRequest>,
    ) -> Result<Response<Presence>, Status> {
        let claims = caller(&request)?.clone();
        let user_id = request.into_inner().user_id;
        Ok(Response::new(self.0.presence(&claims, user_id).await?))
    }

    async fn get_unread_count(
        &self,
        request: Request<GetUnreadCountRequest>,
    ) -> Result<Response<UnreadCount>, Status> {
        let user = caller(&request)?.sub.clone();
        Ok(Response::new(self.0.unread(&user).await?))
    }

    async fn mark_read(
        &self,
        request: Request<MarkReadRequest>,
    ) -> Result<Response<Notification>, Status> {
        let user = caller(&request)?.sub.clone();
        let id = request.into_inner().id;
        Ok(Response::new(self.0.mark_read(&user, &id).await?))
    }

    async fn mark_all_read(
        &self,
        request: Request<MarkAllReadRequest>,
    ) -> Result<Response<UnreadCount>, Status> {
        let user = caller(&request)?.sub.clone();
        Ok(Response::new(self.0.mark_all_read(&user).await?))
    }

    async fn get_preferences(
        &self,
        request: Request<GetPreferencesRequest>,
    ) -> Result<Response<Preferences>, Status> {
        let user = caller(&request)?.sub.clone();
        Ok(Response::new(self.0.preferences(&user).await?))
    }

    async fn update_preferences(
        &self,
        request: Request<Preferences>,
    ) -> Result<Response<Preferences>, Status> {
        let user = caller(&request)?.sub.clone();
        Ok(Response::new(
            self.0
                .update_preferences(&user, request.into_inner())
                .await?,
        ))
    }
}
