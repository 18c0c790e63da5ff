//! Sends what `mail_outbox` holds, through lettre: `.eml` files under the data directory
//! in embedded mode, or an SMTP relay (`smtp://host:port`). A failed send is retried with
//! backoff; after ten attempts the message stays unsent and is counted in
//! `mail_failed_total`. Replicas on one database share the table: a mailer claims a batch
//! (`claimed_until`, one minute) before sending it, so each message goes out once, and a
//! claim left by a mailer that died mid-send expires and the message is sent by another.

use std::time::Duration;

use duovarsity_common::backoff::Backoff;
use duovarsity_common::db::Database;
use duovarsity_common::time::now_millis;
use duovarsity_config::Config;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio_util::sync::CancellationToken;

use crate::store::NotificationStore;

/// How often an idle mailer looks for new mail.
const IDLE_POLL: Duration = Duration::from_millis(200);

/// Tries of one message before the mailer gives it up.
const MAX_ATTEMPTS: i64 = 10;
/// Messages one mailer claims at a time.
const BATCH: i64 = 20;
/// How long a mailer holds the rows it claimed before another may send them.
const CLAIM: Duration = Duration::from_secs(60);

#[derive(Clone)]
enum Transport {
    Files(AsyncFileTransport<Tokio1Executor>),
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
}

#[derive(Clone)]
pub struct Mailer {
    store: NotificationStore,
    transport: Transport,
    from: String,
}

impl Mailer {
    /// `mail_url` unset: files in `<data_dir>/mail`; `smtp://host:port`: a plain SMTP relay.
    pub fn from_config(config: &Config, db: Database) -> Result<Self, String> {
        let transport = match config.mail_url.as_deref() {
            None => {
                let dir = config.data_dir.join("mail");
                std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                Transport::Files(AsyncFileTransport::<Tokio1Executor>::new(dir))
            }
            Some(url) => {
                let rest = url.strip_prefix("smtp://").ok_or_else(|| {
                    "only smtp://host:port is supported in this build".to_string()
                })?;
                let (host, port) = rest.split_once(':').unwrap_or((rest, "25"));
                let port: u16 = port
                    .trim_end_matches('/')
                    .parse()
                    .map_err(|_| format!("bad port in {url}"))?;
                Transport::Smtp(
                    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
                        .port(port)
                        .build(),
                )
            }
        };
        Ok(Self {
            store: NotificationStore::new(db),
            transport,
            from: config.mail_from.clone(),
        })
    }

    /// Sends pending mail until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            let pause = match self.send_pending().await {
                Ok(0) => {
                    backoff.reset();
                    IDLE_POLL
                }
                Ok(_) => continue,
                Err(error) => {
                    tracing::warn!(%error, "sending mail failed; retrying");
                    backoff.next_pause()
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Sends up to a batch of pending messages; returns how many went out.
    pub async fn send_pending(&self) -> Result<usize, String> {
        // Claim a batch first: one atomic UPDATE, whose conditions PostgreSQL re-checks on
        // rows another replica claimed meanwhile, so each row goes to one mailer.
        let now = now_millis();
        let claimed = self
            .store
            .claim_mail(now, now + CLAIM.as_millis() as i64, MAX_ATTEMPTS, BATCH)
            .await
            .map_err(|e| e.to_string())?;
        let mut sent = 0;
        for mail in claimed {
            let id = mail.id;
            let message = Message::builder()
                .from(self.from.parse().map_err(|e| format!("mail_from: {e}"))?)
                .to(Mailbox::new(
                    Some(mail.recipient_name),
                    mail.recipient
                        .parse()
                        .map_err(|e| format!("recipient: {e}"))?,
                ))
                .subject(mail.subject)
                .header(ContentType::TEXT_PLAIN)
                .body(mail.body)
                .map_err(|e| e.to_string())?;
            let result = match &self.transport {
                Transport::Files(files) => files
                    .send(message)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Transport::Smtp(smtp) => smtp
                    .send(message)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            };
            match result {
                Ok(()) => {
                    self.store
                        .mail_sent(&id, now_millis())
                        .await
                        .map_err(|e| e.to_string())?;
                    metrics::counter!("mail_sent_total").increment(1);
                    sent += 1;
                }
                Err(error) => {
                    self.store
                        .mail_failed(&id)
                        .await
                        .map_err(|e| e.to_string())?;
                    metrics::counter!("mail_failed_total").increment(1);
                    return Err(error);
                }
            }
        }
        Ok(sent)
    }
}
