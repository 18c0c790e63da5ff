//! The notification service (`duovarsity.notification.v1`): turns platform events into
//! inbox notifications and email, following each user's preferences.
//!
//! - Events arrive through the idempotent consumer (one processed-events table), so a
//!   redelivered event never notifies twice.
//! - A notification and its email are written in the event's transaction; email goes to
//!   `mail_outbox` and the [`mail::Mailer`] sends it afterwards, so a mail server outage
//!   loses nothing.
//! - Preferences are per category (account, learning, billing) and channel (in-app,
//!   email); account email cannot be turned off.
//!
//! - Live: gateways hold the WebSockets; each gateway keeps one `Live` session here
//!   (`session`) carrying its sockets, their users' inbox and progress, and the course
//!   rooms they follow (`rooms`: who may be in one, presence, announcements). [`live`]
//!   is the hub that signals sessions, across replicas through Redis.
//!
//! Rooms: [`grpc`] holds thin handlers; the domain is `inbox` (listing, reading,
//! preferences, presence), `session` and `rooms`, [`messages`] says what each event
//! tells its learner and `consumer` writes it; `convert` is the one place rows become
//! protobuf; [`store`] runs SQL and nothing else.
#![forbid(unsafe_code)]

mod consumer;
mod convert;
pub mod grpc;
mod inbox;
pub mod live;
pub mod mail;
pub mod messages;
mod rooms;
mod session;
pub mod store;

use std::sync::Arc;

use async_trait::async_trait;
use duovarsity_common::clients::CourseClient;
use duovarsity_common::db::{Database, Migrations};
use duovarsity_common::events::consumer::Consumer;
use duovarsity_common::events::outbox::Outbox;
use duovarsity_common::events::{EventBus, topics};
use duovarsity_common::grpc::GrpcServer;
use duovarsity_config::Config;
use duovarsity_module::{BackgroundTask, OpenError, ServiceContext, ServiceModule};
use duovarsity_proto::notification::notification_service_server::NotificationServiceServer;
use tokio_util::sync::CancellationToken;

use crate::consumer::EventHandler;
use crate::grpc::NotificationGrpc;
use crate::live::LiveHub;
use crate::store::NotificationStore;

pub const SERVICE: &str = "notification";
/// The consumer group of the notification service on every topic it reads.
pub const GROUP: &str = "notification";
/// The topics it consumes.
pub const TOPICS: [&str; 5] = [
    topics::USER,
    topics::ENROLLMENT,
    topics::PROGRESS,
    topics::PAYMENT,
    topics::ANNOUNCEMENT,
];

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("notification database: {0}")]
    Database(#[from] duovarsity_common::db::OpenError),
    #[error("DUOVARSITY_MAIL_URL: {0}")]
    Mail(String),
    #[error("DUOVARSITY_REDIS_URL (live fan-out and presence): {0}")]
    Redis(#[from] redis::RedisError),
    #[error("DUOVARSITY_COURSE_SERVICE_URL: {0}")]
    Course(String),
}

pub struct NotificationModule {
    db: Database,
    notifications: Notifications,
    mailer: mail::Mailer,
}

impl NotificationModule {
    async fn start(
        config: &Config,
        flags: duovarsity_common::flags::Flags,
    ) -> Result<Self, StartError> {
        let db = Database::open(&config.database(SERVICE), store::migrations()).await?;
        let mailer = mail::Mailer::from_config(config, db.clone()).map_err(StartError::Mail)?;
        let per_user = config.live_connections_per_user;
        let live = match &config.redis_url {
            Some(url) => LiveHub::connect(url.expose(), per_user).await?,
            None => LiveHub::local(per_user),
        };
        let courses = config
            .service_channel("course", CourseClient::endpoint)
            .map_err(|error| StartError::Course(error.to_string()))?;
        Ok(Self {
            notifications: Notifications {
                store: Arc::new(NotificationStore::new(db.clone())),
                outbox: Outbox::new(store::OUTBOX_TABLE),
                courses: CourseClient::new(courses),
                announcements_per_hour: config.announcements_per_hour,
                stopping: CancellationToken::new(),
                live,
                flags,
            },
            db,
            mailer,
        })
    }
}

#[async_trait]
impl ServiceModule for NotificationModule {
    const NAME: &'static str = SERVICE;
    const GRPC_SERVICES: &'static [&'static str] =
        &[duovarsity_proto::notification::notification_service_server::SERVICE_NAME];

    fn migrations() -> Migrations {
        store::migrations()
    }

    async fn open(context: &ServiceContext) -> Result<Self, OpenError> {
        let flags = context.flags().await?.flags;
        Ok(Self::start(&context.config, flags).await?)
    }

    fn database(&self) -> &Database {
        &self.db
    }

    fn register(&self, server: GrpcServer) -> GrpcServer {
        server.add_service(NotificationServiceServer::new(NotificationGrpc(
            self.notifications.clone(),
        )))
    }

    /// Consumes every topic and sends mail until `shutdown`.
    fn background(
        &self,
        bus: Arc<dyn EventBus>,
        shutdown: CancellationToken,
    ) -> Vec<BackgroundTask> {
        let mut tasks: Vec<BackgroundTask> = Vec::new();
        for topic in TOPICS {
            let consumer = Consumer::new(
                self.db.clone(),
                store::PROCESSED_TABLE,
                bus.clone(),
                topic,
                GROUP,
                EventHandler {
                    store: self.notifications.store.clone(),
                    live: self.notifications.live.clone(),
                },
            );
            let stop = shutdown.clone();
            tasks.push(Box::pin(async move {
                if let Err(error) = consumer.run(stop).await {
                    tracing::error!(%error, topic, "notification consumer stopped");
                }
            }));
        }
        let relay = self
            .notifications
            .outbox
            .relay(self.db.clone(), bus.clone());
        tasks.push(Box::pin(relay.run(shutdown.clone())));
        let stopping = self.notifications.stopping.clone();
        let stop = shutdown.clone();
        tasks.push(Box::pin(async move {
            stop.cancelled().await;
            stopping.cancel();
        }));
        tasks.push(Box::pin(self.mailer.clone().run(shutdown)));
        tasks
    }
}

/// The notification domain: the inbox, live sessions and course rooms.
#[derive(Clone)]
pub struct Notifications {
    store: Arc<NotificationStore>,
    /// Announcement events, published by the relay.
    outbox: Outbox,
    /// Who may be in a course's room (asked with the socket holder's token).
    courses: CourseClient,
    /// Announcements one course may get per hour.
    announcements_per_hour: u32,
    /// Cancelled when shutdown starts: live sessions end, so that gateways reopen them
    /// on another replica at once.
    stopping: CancellationToken,
    live: LiveHub,
    /// `live-progress`: whether a stream carries progress frames.
    flags: duovarsity_common::flags::Flags,
}
