//! The inbox: a user's notifications (listed, counted, marked read), their live stream,
//! their preferences per category and channel (account email cannot be turned off), and
//! presence, which only the user themself or an admin may see.

use duovarsity_common::Error;
use duovarsity_common::auth::Claims;
use duovarsity_common::enums::StoredName;
use duovarsity_common::time::{now_millis, timestamp_from_millis};
use duovarsity_common::validate::{page_size, page_token};
use duovarsity_proto::notification::{
    Category, ChannelPreference, ListNotificationsRequest, ListNotificationsResponse, Notification,
    Preferences, Presence, UnreadCount,
};

use crate::Notifications;
use crate::convert::notification_to_proto;

const DEFAULT_PAGE_SIZE: u32 = 20;
/// Every category, in the order preferences list them.
const CATEGORIES: [Category; 3] = [Category::Account, Category::Learning, Category::Billing];

impl Notifications {
    pub(crate) async fn list(
        &self,
        user: &str,
        request: ListNotificationsRequest,
    ) -> Result<ListNotificationsResponse, Error> {
        let limit = page_size(request.page_size, DEFAULT_PAGE_SIZE);
        let before = page_token::cursor(&request.page_token, "ListNotifications", |id| {
            Some(id.to_string())
        })?;
        let rows = self
            .store
            .list(user, before.as_deref(), request.unread_only, limit + 1)
            .await?;
        let (rows, next_page_token) = page_token::page(rows, limit, |r| r.id.clone());
        Ok(ListNotificationsResponse {
            notifications: rows
                .iter()
                .map(notification_to_proto)
                .collect::<Result<_, _>>()?,
            next_page_token,
            unread_count: self.store.unread_count(user).await?,
        })
    }

    pub(crate) async fn presence(
        &self,
        claims: &Claims,
        user_id: String,
    ) -> Result<Presence, Error> {
        if claims.sub != user_id && !claims.is_admin() {
            return Err(Error::permission_denied(
                "NOT_YOURS",
                "only the user themself or an admin may see presence",
            ));
        }
        let sockets = self
            .live
            .sockets(&user_id)
            .await
            .ok_or_else(|| Error::Unavailable {
                message: "presence across replicas is unavailable while Redis is down".to_string(),
                retry_after: Some(std::time::Duration::from_secs(5)),
            })?;
        let connections = i32::try_from(sockets.len()).unwrap_or(i32::MAX);
        let online = connections > 0;
        let last_seen = if online {
            Some(now_millis())
        } else {
            self.store.last_seen(&user_id).await?
        };
        Ok(Presence {
            user_id,
            online,
            connections,
            last_seen: last_seen.map(timestamp_from_millis),
            // Socket ids are UUIDv7: they say when each opened.
            sockets_opened_at: sockets
                .iter()
                .filter_map(|id| uuid::Uuid::parse_str(id).ok()?.get_timestamp())
                .map(|at| {
                    let (secs, nanos) = at.to_unix();
                    let millis = secs.saturating_mul(1000) + u64::from(nanos / 1_000_000);
                    timestamp_from_millis(i64::try_from(millis).unwrap_or(i64::MAX))
                })
                .collect(),
        })
    }

    pub(crate) async fn unread(&self, user: &str) -> Result<UnreadCount, Error> {
        Ok(UnreadCount {
            count: self.store.unread_count(user).await?,
        })
    }

    pub(crate) async fn mark_read(&self, user: &str, id: &str) -> Result<Notification, Error> {
        let row = self
            .store
            .mark_read(user, id, now_millis())
            .await?
            .ok_or_else(|| Error::not_found(format!("notification {id}")))?;
        notification_to_proto(&row)
    }

    pub(crate) async fn mark_all_read(&self, user: &str) -> Result<UnreadCount, Error> {
        self.store.mark_all_read(user, now_millis()).await?;
        self.unread(user).await
    }

    pub(crate) async fn preferences(&self, user: &str) -> Result<Preferences, Error> {
        let mut channels = Vec::new();
        for category in CATEGORIES {
            let name = category.stored_name().unwrap_or_default();
            let (in_app, email) = self.store.preference(user, &name).await?;
            channels.push(ChannelPreference {
                category: category as i32,
                in_app,
                email,
            });
        }
        Ok(Preferences { channels })
    }

    pub(crate) async fn update_preferences(
        &self,
        user: &str,
        wanted: Preferences,
    ) -> Result<Preferences, Error> {
        for channel in wanted.channels {
            let category = Category::stored_name_of(channel.category)
                .ok_or_else(|| Error::invalid("channels.category", "must be a category"))?;
            if category == "account" && !channel.email {
                return Err(Error::invalid(
                    "channels.email",
                    "account and security email cannot be turned off",
                ));
            }
            self.store
                .set_preference(user, &category, channel.in_app, channel.email)
                .await?;
        }
        self.preferences(user).await
    }
}
