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
#![forbid(unsafe_code)]

pub mod live;
pub mod mail;
pub mod store;

use std::sync::Arc;

use async_trait::async_trait;
use duovarsity_common::Error;
use duovarsity_common::auth::caller;
use duovarsity_common::db::{Database, Migrations};
use duovarsity_common::events::catalog::decode;
use duovarsity_common::events::consumer::{Consumer, Handler};
use duovarsity_common::events::{Event, EventBus, topics};
use duovarsity_common::grpc::GrpcServer;
use duovarsity_common::health::Probe;
use duovarsity_common::time::{now_millis, timestamp_from_millis};
use duovarsity_common::validate::page_token;
use duovarsity_config::Config;
use duovarsity_module::{BackgroundTask, OpenError, ServiceContext, ServiceModule};
use duovarsity_proto::events::{
    EnrollmentCompleted, EnrollmentCreated, Envelope, LessonCompleted, LessonProgressed,
    PaymentCaptured, PaymentRefunded, UserRegistered,
};
use duovarsity_proto::notification::notification_service_server::{
    NotificationService, NotificationServiceServer,
};
use duovarsity_proto::notification::*;
use sqlx::{Any, Transaction};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::live::{LiveHub, Signal};
use crate::store::{NotificationRow, NotificationStore};

pub const SERVICE: &str = "notification";
/// The consumer group of the notification service on every topic it reads.
pub const GROUP: &str = "notification";
/// The topics it consumes.
pub const TOPICS: [&str; 4] = [
    topics::USER,
    topics::ENROLLMENT,
    topics::PROGRESS,
    topics::PAYMENT,
];
pub const PROCESSED_TABLE: &str = "notification_processed_events";

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("notification database: {0}")]
    Database(#[from] duovarsity_common::db::OpenError),
    #[error("DUOVARSITY_MAIL_URL: {0}")]
    Mail(String),
    #[error("DUOVARSITY_REDIS_URL (live fan-out and presence): {0}")]
    Redis(#[from] redis::RedisError),
}

pub struct NotificationModule {
    db: Database,
    notifications: Notifications,
    mailer: mail::Mailer,
}

/// A stream rereads the database at least this often even without a wake-up (a safety net
/// for a wake-up lost between replicas).
const STREAM_POLL: std::time::Duration = std::time::Duration::from_secs(30);

impl NotificationModule {
    async fn start(config: &Config) -> Result<Self, StartError> {
        let db = Database::open(&config.database(SERVICE), store::migrations()).await?;
        let mailer = mail::Mailer::from_config(config, db.clone()).map_err(StartError::Mail)?;
        let per_user = config.live_connections_per_user;
        let live = match &config.redis_url {
            Some(url) => LiveHub::connect(url.expose(), per_user).await?,
            None => LiveHub::local(per_user),
        };
        Ok(Self {
            notifications: Notifications {
                store: Arc::new(NotificationStore::new(db.clone())),
                live,
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
        Ok(Self::start(&context.config).await?)
    }

    fn register(&self, server: GrpcServer) -> GrpcServer {
        server.add_service(NotificationServiceServer::new(self.notifications.clone()))
    }

    fn probes(&self) -> Vec<Probe> {
        vec![self.db.probe(SERVICE)]
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
                PROCESSED_TABLE,
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
        tasks.push(Box::pin(self.mailer.clone().run(shutdown)));
        tasks
    }

    async fn close(&self) {
        self.db.close().await;
    }
}

/// Turns one event into notifications and mail, inside the consumer's transaction.
struct EventHandler {
    store: Arc<NotificationStore>,
    live: LiveHub,
}

/// An amount for people: minor units with two decimals and the currency code
/// (`499.00 INR`). Currencies without minor units are rare on the platform and read the
/// same way.
fn money(minor: i64, currency: &str) -> String {
    format!("{}.{:02} {currency}", minor / 100, (minor % 100).abs())
}

/// The user an event concerns.
fn recipient_of(envelope: &Envelope) -> Option<String> {
    Some(match envelope.r#type.as_str() {
        UserRegistered::TYPE => decode::<UserRegistered>(envelope).ok()?.user_id,
        EnrollmentCreated::TYPE => decode::<EnrollmentCreated>(envelope).ok()?.learner_id,
        LessonCompleted::TYPE => decode::<LessonCompleted>(envelope).ok()?.learner_id,
        EnrollmentCompleted::TYPE => decode::<EnrollmentCompleted>(envelope).ok()?.learner_id,
        PaymentCaptured::TYPE => decode::<PaymentCaptured>(envelope).ok()?.learner_id,
        PaymentRefunded::TYPE => decode::<PaymentRefunded>(envelope).ok()?.learner_id,
        _ => return None,
    })
}

#[async_trait]
impl Handler for EventHandler {
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Any>,
        envelope: &Envelope,
    ) -> Result<(), Error> {
        let store = &self.store;
        let event = envelope.event_id.as_str();
        match envelope.r#type.as_str() {
            UserRegistered::TYPE => {
                let user: UserRegistered = decode(envelope)?;
                store
                    .save_recipient(tx, &user.user_id, &user.email, &user.display_name)
                    .await?;
                let body = format!(
                    "Hello {},\n\nwelcome to Duovarsity. Browse the catalog, enroll in a course and pick up where you left off on any device.\n",
                    user.display_name
                );
                store
                    .notify(
                        tx,
                        &user.user_id,
                        "account",
                        "Welcome to Duovarsity",
                        &body,
                        true,
                        event,
                    )
                    .await
            }
            EnrollmentCreated::TYPE => {
                let enrollment: EnrollmentCreated = decode(envelope)?;
                let body = if enrollment.status == "pending_payment" {
                    "Your enrollment is reserved; it starts once the payment goes through."
                        .to_string()
                } else {
                    "You are enrolled. Your first lesson is waiting.".to_string()
                };
                store
                    .notify(
                        tx,
                        &enrollment.learner_id,
                        "learning",
                        "Enrollment confirmed",
                        &body,
                        false,
                        event,
                    )
                    .await
            }
            LessonCompleted::TYPE => {
                let done: LessonCompleted = decode(envelope)?;
                store
                    .notify(
                        tx,
                        &done.learner_id,
                        "learning",
                        "Lesson completed",
                        "Nice work: one more lesson done.",
                        false,
                        event,
                    )
                    .await
            }
            EnrollmentCompleted::TYPE => {
                let done: EnrollmentCompleted = decode(envelope)?;
                let body = format!(
                    "Congratulations on completing your course!\n\nYour certificate number is {}. Anyone can verify it at /v1/certificates/{}.\n",
                    done.certificate_number, done.certificate_number
                );
                store
                    .notify(
                        tx,
                        &done.learner_id,
                        "learning",
                        "Course completed: your certificate",
                        &body,
                        true,
                        event,
                    )
                    .await
            }
            PaymentCaptured::TYPE => {
                let paid: PaymentCaptured = decode(envelope)?;
                let body = format!(
                    "We received your payment of {}.\n\nOrder: {}\nCourse: {}\nPaid with: {}\n\nYour course is unlocked. Your receipts are at /v1/me/receipts.\n",
                    money(paid.amount_minor, &paid.currency),
                    paid.order_id,
                    paid.course_id,
                    paid.provider
                );
                store
                    .notify(
                        tx,
                        &paid.learner_id,
                        "billing",
                        "Payment received: your receipt",
                        &body,
                        true,
                        event,
                    )
                    .await
            }
            PaymentRefunded::TYPE => {
                let refund: PaymentRefunded = decode(envelope)?;
                let access = if refund.full {
                    "The order is fully refunded, so your access to the course has ended."
                } else {
                    "Your access to the course is unchanged."
                };
                let body = format!(
                    "We refunded {} of order {} (refunded so far: {}).\n\n{access}\n",
                    money(refund.amount_minor, &refund.currency),
                    refund.order_id,
                    money(refund.refunded_total_minor, &refund.currency),
                );
                store
                    .notify(
                        tx,
                        &refund.learner_id,
                        "billing",
                        "Refund issued",
                        &body,
                        true,
                        event,
                    )
                    .await
            }
            // Other events of these topics are not for learners.
            _ => Ok(()),
        }
    }

    async fn committed(&self, envelope: &Envelope) {
        if envelope.r#type == LessonProgressed::TYPE {
            if let Ok(change) = decode::<LessonProgressed>(envelope) {
                let progress = LessonProgress {
                    course_id: change.course_id,
                    lesson_id: change.lesson_id,
                    percent: change.percent,
                    position_seconds: change.position_seconds,
                    completed: change.completed,
                };
                self.live.progress(&change.learner_id, progress).await;
            }
        } else if let Some(user) = recipient_of(envelope) {
            self.live.wake(&user).await;
        }
    }
}

/// The gRPC handlers.
#[derive(Clone)]
pub struct Notifications {
    store: Arc<NotificationStore>,
    live: LiveHub,
}

fn category_name(category: i32) -> Option<&'static str> {
    match Category::try_from(category).ok()? {
        Category::Account => Some("account"),
        Category::Learning => Some("learning"),
        Category::Billing => Some("billing"),
        Category::Unspecified => None,
    }
}

fn category_from_name(name: &str) -> Result<Category, Error> {
    match name {
        "account" => Ok(Category::Account),
        "learning" => Ok(Category::Learning),
        "billing" => Ok(Category::Billing),
        other => Err(Error::internal(
            "notification store: unknown stored value",
            &format!("category = {other:?}"),
        )),
    }
}

fn to_proto(row: &NotificationRow) -> Result<Notification, Error> {
    Ok(Notification {
        id: row.id.clone(),
        category: category_from_name(&row.category)? as i32,
        title: row.title.clone(),
        body: row.body.clone(),
        created_at: Some(timestamp_from_millis(row.created_at)),
        read_at: row.read_at.map(timestamp_from_millis),
        seq: row.seq,
    })
}

/// One live stream, pulled by the server as its client reads: the inbox after the last
/// sequence number sent (in pages of 100) whenever it is woken (or every
/// [`STREAM_POLL`]), and progress changes as they come. A stream is its state and this
/// function, with no task or queue of its own: an idle one costs its few fields, and
/// dropping it (the client went away) detaches it from the hub.
struct LiveStream {
    store: Arc<NotificationStore>,
    user: String,
    last: i64,
    attached: live::Attached,
    queue: std::collections::VecDeque<LiveEvent>,
    reread: bool,
}

impl LiveStream {
    /// The next event, or the error that ends the stream (`None` afterwards).
    async fn next(state: Option<Self>) -> Option<(Result<LiveEvent, Status>, Option<Self>)> {
        let mut stream = state?;
        loop {
            if let Some(event) = stream.queue.pop_front() {
                return Some((Ok(event), Some(stream)));
            }
            if stream.reread {
                let rows = match stream.store.after(&stream.user, stream.last, 100).await {
                    Ok(rows) => rows,
                    Err(error) => return Some((Err(Status::from(error)), None)),
                };
                for row in &rows {
                    match to_proto(row) {
                        Ok(notification) => stream.queue.push_back(LiveEvent {
                            event: Some(live_event::Event::Notification(notification)),
                        }),
                        Err(error) => return Some((Err(Status::from(error)), None)),
                    }
                    stream.last = row.seq;
                }
                // A full page: there may be more.
                stream.reread = rows.len() == 100;
                continue;
            }
            // Until there is news in the inbox; progress passes straight through.
            let signal = tokio::select! {
                signal = stream.attached.next() => signal,
                () = tokio::time::sleep(STREAM_POLL) => Signal::Wake,
            };
            match signal {
                Signal::Wake => stream.reread = true,
                Signal::Progress(progress) => stream.queue.push_back(LiveEvent {
                    event: Some(live_event::Event::Progress(progress)),
                }),
            }
        }
    }
}

#[tonic::async_trait]
impl NotificationService for Notifications {
    type StreamNotificationsStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<LiveEvent, Status>> + Send + 'static>>;

    async fn stream_notifications(
        &self,
        request: Request<StreamNotificationsRequest>,
    ) -> Result<Response<Self::StreamNotificationsStream>, Status> {
        let user = caller(&request)?.sub.clone();
        let after = request.into_inner().after_seq.max(0);
        let attached = self.live.attach(&user)?;
        let stream = LiveStream {
            store: self.store.clone(),
            user,
            last: after,
            attached,
            queue: std::collections::VecDeque::new(),
            reread: true,
        };
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
        let request = request.into_inner();
        let limit = duovarsity_common::validate::page_size(request.page_size, 20);
        let before = if request.page_token.is_empty() {
            None
        } else {
            Some(page_token::decode(&request.page_token).ok_or_else(|| {
                Error::invalid("page_token", "is not a token returned by ListNotifications")
            })?)
        };
        let mut rows = self
            .store
            .list(&user, before.as_deref(), request.unread_only, limit + 1)
            .await?;
        let next_page_token = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last()
                .map(|r| page_token::encode(&r.id))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListNotificationsResponse {
            notifications: rows.iter().map(to_proto).collect::<Result<_, _>>()?,
            next_page_token,
            unread_count: self.store.unread_count(&user).await?,
        }))
    }

    async fn get_presence(
        &self,
        request: Request<GetPresenceRequest>,
    ) -> Result<Response<Presence>, Status> {
        let claims = caller(&request)?.clone();
        let user_id = request.into_inner().user_id;
        if claims.sub != user_id && !claims.is_admin() {
            return Err(Error::permission_denied(
                "NOT_YOURS",
                "only the user themself or an admin may see presence",
            )
            .into());
        }
        let connections =
            self.live
                .connections(&user_id)
                .await
                .ok_or_else(|| Error::Unavailable {
                    message: "presence across replicas is unavailable while Redis is down"
                        .to_string(),
                    retry_after: Some(std::time::Duration::from_secs(5)),
                })?;
        let connections = i32::try_from(connections).unwrap_or(i32::MAX);
        Ok(Response::new(Presence {
            user_id,
            online: connections > 0,
            connections,
        }))
    }

    async fn get_unread_count(
        &self,
        request: Request<GetUnreadCountRequest>,
    ) -> Result<Response<UnreadCount>, Status> {
        let user = caller(&request)?.sub.clone();
        Ok(Response::new(UnreadCount {
            count: self.store.unread_count(&user).await?,
        }))
    }

    async fn mark_read(
        &self,
        request: Request<MarkReadRequest>,
    ) -> Result<Response<Notification>, Status> {
        let user = caller(&request)?.sub.clone();
        let id = request.into_inner().id;
        let row = self
            .store
            .mark_read(&user, &id, now_millis())
            .await?
            .ok_or_else(|| Error::not_found(format!("notification {id}")))?;
        Ok(Response::new(to_proto(&row)?))
    }

    async fn mark_all_read(
        &self,
        request: Request<MarkAllReadRequest>,
    ) -> Result<Response<UnreadCount>, Status> {
        let user = caller(&request)?.sub.clone();
        self.store.mark_all_read(&user, now_millis()).await?;
        Ok(Response::new(UnreadCount {
            count: self.store.unread_count(&user).await?,
        }))
    }

    async fn get_preferences(
        &self,
        request: Request<GetPreferencesRequest>,
    ) -> Result<Response<Preferences>, Status> {
        let user = caller(&request)?.sub.clone();
        Ok(Response::new(self.preferences(&user).await?))
    }

    async fn update_preferences(
        &self,
        request: Request<Preferences>,
    ) -> Result<Response<Preferences>, Status> {
        let user = caller(&request)?.sub.clone();
        for channel in request.into_inner().channels {
            let category = category_name(channel.category)
                .ok_or_else(|| Error::invalid("channels.category", "must be a category"))?;
            if category == "account" && !channel.email {
                return Err(Error::invalid(
                    "channels.email",
                    "account and security email cannot be turned off",
                )
                .into());
            }
            self.store
                .set_preference(&user, category, channel.in_app, channel.email)
                .await?;
        }
        Ok(Response::new(self.preferences(&user).await?))
    }
}

impl Notifications {
    async fn preferences(&self, user: &str) -> Result<Preferences, Error> {
        let mut channels = Vec::new();
        for category in ["account", "learning", "billing"] {
            let (in_app, email) = self.store.preference(user, category).await?;
            channels.push(ChannelPreference {
                category: category_from_name(category)? as i32,
                in_app,
                email,
            });
        }
        Ok(Preferences { channels })
    }
}
