//! The gRPC handlers: each decodes the request, takes the caller from the verified claims
//! and calls one domain function of [`Notifications`].

use duovarsity_common::auth::caller;
use duovarsity_proto::notification::notification_service_server::NotificationService;
use duovarsity_proto::notification::*;
use tonic::{Request, Response, Status};

use crate::Notifications;
use crate::stream::LiveStream;

/// `duovarsity.notification.v1.NotificationService` over the inbox.
#[derive(Clone)]
pub struct NotificationGrpc(pub Notifications);

#[tonic::async_trait]
impl NotificationService for NotificationGrpc {
    type StreamNotificationsStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<LiveEvent, Status>> + Send + 'static>>;

    async fn stream_notifications(
        &self,
        request: Request<StreamNotificationsRequest>,
    ) -> Result<Response<Self::StreamNotificationsStream>, Status> {
        let claims = caller(&request)?.clone();
        let stream = self.0.stream(&claims, request.into_inner().after_seq)?;
        Ok(Response::new(Box::pin(futures::stream::unfold(
            Some(stream),
            LiveStream::next,
        ))))
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
